"""Helpers every page and API view shares: rendering, JSON, parameters, the nav.

Every exit goes through `render`, `api_json` or the SSE encoder, and each of
them passes its data through the viewer's redactor first (`services.redact_tree`):
redaction is applied where data leaves, not remembered by each view.
"""

from __future__ import annotations

import datetime
import json
from importlib import resources
from typing import Any, Final

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.templating import Jinja2Templates

from dbgov.web.auth import viewer_of
from dbgov.web.csrf import CSRF_COOKIE
from dbgov.web.queries import Filters, Window, iso
from dbgov.web.services import Services, redact_tree
from dbgov.web.types import Viewer

NAV: Final = (
    ("live", "/live", "Live"),
    ("identities", "/identities", "Identities"),
    ("tables", "/tables", "Tables"),
    ("approvals", "/approvals", "Approvals"),
    ("audit", "/audit", "Audit"),
    ("policy", "/policy", "Policy"),
    ("reports", "/reports/soc2", "SOC 2"),
    ("models", "/models", "Models"),
)

WINDOWS: Final = {
    "15m": 900,
    "1h": 3600,
    "6h": 6 * 3600,
    "24h": 86400,
    "7d": 7 * 86400,
    "30d": 30 * 86400,
}


class BadRequest(Exception):
    """A parameter the view cannot use; mapped to 400 with this message."""


class NotFound(Exception):
    """Nothing the viewer may see is there; mapped to 404."""


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.files("dbgov.web") / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["short_ts"] = lambda ts: str(ts or "")[:19].replace("T", " ")
    env.filters["tojson_pretty"] = lambda v: json.dumps(
        v, indent=2, sort_keys=True, ensure_ascii=False
    )
    return Jinja2Templates(env=env)


TEMPLATES: Final = _templates()


def render(
    request: Request, name: str, context: dict[str, Any], *, page: str = "", status_code: int = 200
) -> HTMLResponse:
    """A page or fragment, with the viewer's redaction applied to the whole context."""
    viewer = viewer_of(request)
    svc = services(request)
    redactor = svc.redactor(viewer)
    ctx = {k: redact_tree(redactor, v) for k, v in context.items()}
    token = svc.codec.csrf_token(viewer)
    ctx.update(viewer=viewer, csrf=token, nav=NAV, page=page)
    response = TEMPLATES.TemplateResponse(request, name, ctx, status_code=status_code)
    set_csrf_cookie(request, response, token)
    return response


def set_csrf_cookie(request: Request, response: Any, token: str) -> None:
    """The double-submit half scripts may read; SameSite=Strict like the session."""
    from dbgov.web.auth import is_secure

    if request.cookies.get(CSRF_COOKIE) != token:
        response.set_cookie(
            CSRF_COOKIE,
            token,
            httponly=False,
            samesite="strict",
            secure=is_secure(request),
            path="/",
        )


def api_json(request: Request, data: Any, status_code: int = 200) -> JSONResponse:
    viewer = viewer_of(request)
    return JSONResponse(
        redact_tree(services(request).redactor(viewer), data), status_code=status_code
    )


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def window_of(request: Request, default: str = "24h") -> tuple[str, Window, int]:
    """`?window=1h` (or `since`/`until` ISO times): the range, its name and length."""
    q = request.query_params
    if q.get("since") or q.get("until"):
        since, until = q.get("since"), q.get("until")
        for v in (since, until):
            if v and not _is_iso(v):
                raise BadRequest(f"since/until must be ISO 8601 UTC times, got {v!r}")
        lo = datetime.datetime.fromisoformat(since.replace("Z", "+00:00")) if since else None
        hi = datetime.datetime.fromisoformat(until.replace("Z", "+00:00")) if until else now()
        span = int((hi - lo).total_seconds()) if lo else 86400
        return "custom", Window(since, until), max(span, 60)
    name = q.get("window", default)
    if name not in WINDOWS:
        raise BadRequest(f"window must be one of {', '.join(WINDOWS)}")
    seconds = WINDOWS[name]
    return name, Window(since=iso(now() - datetime.timedelta(seconds=seconds))), seconds


def _is_iso(text: str) -> bool:
    try:
        datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def int_param(
    request: Request, name: str, default: int | None, lo: int = 0, hi: int = 10_000
) -> int | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise BadRequest(f"{name} must be between {lo} and {hi}")
    return value


def filters_of(request: Request) -> Filters:
    q = request.query_params
    access = q.get("access") or None
    if access not in (None, "read", "write"):
        raise BadRequest("access must be read or write")
    decision = q.get("decision") or None
    if decision not in (None, "allow", "deny", "approval"):
        raise BadRequest("decision must be allow, deny or approval")
    for key in ("since", "until"):
        v = q.get(key)
        if v and not _is_iso(v):
            raise BadRequest(f"{key} must be an ISO 8601 UTC time")
    return Filters(
        user=q.get("user") or None,
        target=q.get("target") or None,
        types=tuple(t for t in q.getlist("type") if t),
        decision=decision,
        session=q.get("session") or None,
        since=q.get("since") or None,
        until=q.get("until") or None,
        text=q.get("text") or None,
        table=q.get("table") or None,
        access=access,
        before=int_param(request, "before", None, 0, 1 << 62),
    )


def scope(viewer: Viewer) -> str | None:
    return viewer.scope_user()
