"""Models: per declared model, a timeline of retrains and input changes, with flags.

Every row drills down to its ledger event (`/audit/events/{idx}`, with its
inclusion proof). The changes and flags come from `dbgov.models.report`, the
code behind `dbgov models report`, so page, API and report cannot disagree.

Who sees what follows the dashboard's rule (`types.Viewer`): auditors and dba see
every change; anyone else sees the retrains and their own changes, with a count
of the others. The full report between two retrains covers every identity:
auditors and dba only.

`POST /api/models/{name}/retrain` marks a retrain for training pipelines, with
the same rules as `dbgov models retrain` (`markers.mark_retrain`): owners and
admin groups only. Scripts authenticate with `Authorization: Bearer <token>`
(CSRF-exempt, `csrf.py`); a browser session needs the CSRF token like any POST.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from dbgov.identity.model import Identity
from dbgov.store.sqlite import LedgerStore
from dbgov.web.auth import Forbidden, viewer_of
from dbgov.web.types import Viewer
from dbgov.web.views.common import (
    BadRequest,
    NotFound,
    api_json,
    int_param,
    render,
    scope,
    services,
)

TIMELINE: Final = 200
"""Changes shown per model page, newest first."""


def _registry(request: Request) -> tuple[Any, frozenset[str]]:
    """(the policy's model registry, admin groups); unavailable without a loaded policy."""
    state = services(request).current_policy()
    if state.engine is None:
        why = state.error or "no policy is configured"
        raise NotFound(f"no model registry: {why}")
    return state.engine.models, frozenset(state.engine.admin_groups)


def _model(request: Request) -> Any:
    registry, _ = _registry(request)
    model = registry.get(request.path_params["name"])
    if model is None:
        raise NotFound(f"no model {request.path_params['name']!r} is declared in the policy")
    return model


def _large_rows(model: Any) -> int:
    from dbgov.models.report import DEFAULT_LARGE_ROWS

    return int(model.large_rows or DEFAULT_LARGE_ROWS)


async def _overview(request: Request) -> dict[str, Any]:
    from dbgov.models.markers import markers
    from dbgov.models.report import changes_between

    who = scope(viewer_of(request))
    registry, _ = _registry(request)
    models = list(registry)

    def run(store: LedgerStore) -> list[dict[str, Any]]:
        out = []
        for model in models:
            marks = markers(store, model.name)
            last = marks[-1] if marks else None
            pending = changes_between(
                store,
                model.name,
                last.seal if last else 0,
                None,
                owners=model.owners,
                large_rows=_large_rows(model),
                user=who,
            )
            applied = [c for c in pending if c["outcome"] in ("applied", "unknown")]
            out.append(
                {
                    **model.as_json(),
                    "last_retrain": last.as_json() if last else None,
                    "retrains": len(marks),
                    "changes_since": len(applied),
                    "flagged_since": sum(bool(c["flags"]) for c in applied),
                }
            )
        return out

    return {"models": await services(request).read(run)}


async def _timeline(request: Request) -> dict[str, Any]:
    from dbgov.models.markers import markers
    from dbgov.models.report import FLAGS, changes_between, count_linked

    who = scope(viewer_of(request))
    model = _model(request)
    limit = int_param(request, "limit", TIMELINE, 1, 1000) or TIMELINE

    def run(store: LedgerStore) -> dict[str, Any]:
        marks = markers(store, model.name)
        changes = changes_between(
            store,
            model.name,
            0,
            None,
            owners=model.owners,
            large_rows=_large_rows(model),
            user=who,
            limit=limit,
            newest_first=True,
        )
        hidden = count_linked(store, model.name, not_user=who) if who is not None else 0
        for c in changes:
            # The retrain whose window holds the change: the first seal above it.
            after = next((m for m in marks if c["index"] < m.seal), None)
            c["version"] = after.version if after is not None else None
        items: list[dict[str, Any]] = [
            {"kind": "retrain", "index": m.index, "ts": m.ts, "retrain": m.as_json()} for m in marks
        ]
        items += [
            {"kind": "change", "index": c["index"], "ts": c["ts"], "change": c} for c in changes
        ]
        items.sort(key=lambda i: int(i["index"]), reverse=True)
        return {
            "model": model.as_json(),
            "timeline": items,
            "hidden": hidden,
            "retrains": [m.as_json() for m in marks],
            "flags": dict(FLAGS),
            "sees_all": who is None,
        }

    return await services(request).read(run)


async def page(request: Request) -> Response:
    return render(request, "models.html", await _overview(request), page="models")


async def detail(request: Request) -> Response:
    return render(request, "model.html", await _timeline(request), page="models")


async def api_list(request: Request) -> Response:
    """Declared models: inputs, owners, last retrain, changes since it."""
    return api_json(request, await _overview(request))


async def api_detail(request: Request) -> Response:
    """One model's timeline: retrains and input changes (newest first) with flags."""
    return api_json(request, await _timeline(request))


async def api_report(request: Request) -> Response:
    """Changes to the inputs between two retrains (from, to; default the last two)."""
    from dbgov.models.report import ReportError, build_report

    if not viewer_of(request).sees_all:
        raise Forbidden("the report covers every identity's changes: auditors and dba only")
    model = _model(request)
    q = request.query_params
    large = int_param(request, "large_rows", None, 1, 1 << 40)

    def run(store: LedgerStore) -> dict[str, Any]:
        try:
            return build_report(
                store,
                model.name,
                from_version=q.get("from") or None,
                to_version=q.get("to") or None,
                large_rows=large,
                declared=model,
            ).as_json()
        except ReportError as exc:
            raise NotFound(str(exc)) from None

    return api_json(request, await services(request).read(run))


async def _retrain_body(request: Request) -> dict[str, Any]:
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = await request.json()
        except ValueError:
            raise BadRequest("the body is not valid JSON") from None
    else:
        body = dict(await request.form())
    if not isinstance(body, dict):
        raise BadRequest('send a JSON object: {"version": "7", "note": ..., "fingerprint": true}')
    version = body.get("version")
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)
    if not isinstance(version, str) or not version:
        raise BadRequest('version is required (a string such as "7")')
    note = body.get("note")
    if note is not None and not isinstance(note, str):
        raise BadRequest("note must be a string")
    fingerprint = body.get("fingerprint", False)
    if isinstance(fingerprint, str):
        fingerprint = fingerprint.lower() in ("1", "true", "yes", "on")
    if not isinstance(fingerprint, bool):
        raise BadRequest("fingerprint must be true or false")
    return {"version": version, "note": note, "fingerprint": fingerprint}


def _identity(viewer: Viewer) -> Identity:
    """The viewer as a marker's author: token groups only (the session never has JIT)."""
    return Identity(
        viewer.user, viewer.groups, "token", viewer.issuer, expires_at=viewer.expires_at
    )


async def api_retrain(request: Request) -> Response:
    """Mark a retrain (same rules as `dbgov models retrain`): version, note, fingerprint."""
    from dbgov.models.fingerprint import FingerprintError
    from dbgov.models.markers import RetrainRefused, mark_retrain

    viewer = viewer_of(request)
    model = _model(request)
    _, admin = _registry(request)
    body = await _retrain_body(request)
    if not model.may_mark(viewer.groups, admin):
        raise Forbidden(
            f"{viewer.user} may not mark retrains of {model.name}: only members "
            f"of {', '.join(sorted(model.owners | admin))} may"
        )
    try:
        marker = await mark_retrain(
            services(request).config,
            model,
            _identity(viewer),
            version=body["version"],
            note=body["note"],
            fingerprint=body["fingerprint"],
            admin_groups=admin,
            via="api",
        )
    except RetrainRefused as exc:
        return api_json(request, {"error": "refused", "detail": str(exc)}, status_code=409)
    except FingerprintError as exc:
        return api_json(request, {"error": "fingerprint", "detail": str(exc)}, status_code=502)
    return api_json(request, marker.as_json())


routes: list[BaseRoute] = [
    Route("/models", page, include_in_schema=False),
    Route("/models/{name:str}", detail, include_in_schema=False),
]
api_routes: list[BaseRoute] = [
    Route("/api/models", api_list),
    Route("/api/models/{name:str}", api_detail),
    Route("/api/models/{name:str}/report", api_report),
    Route("/api/models/{name:str}/retrain", api_retrain, methods=["POST"]),
]
