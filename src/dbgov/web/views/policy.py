"""Policy: the policy file the proxy enforces, and an explain box over it.

Explain is `policy.explain.explain`, the engine's own trace, so the page cannot
drift from enforcement. Anyone may explain for themselves; auditors and dba may
also ask "what if user U in groups G ran this".
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from dbgov.web.auth import viewer_of
from dbgov.web.views.common import BadRequest, api_json, render, services

MAX_SQL = 64 * 1024


def _policy(request: Request) -> dict[str, Any]:
    svc = services(request)
    state = svc.current_policy()
    return {
        "configured": state.configured,
        "path": str(state.path) if state.path else None,
        "text": state.text,
        "error": state.error,
        "loaded": state.engine is not None,
        "targets": [{"name": t.name, "env": t.env} for t in svc.config.targets],
    }


async def _explain(request: Request) -> dict[str, Any]:
    viewer = viewer_of(request)
    svc = services(request)
    if request.headers.get("content-type", "").startswith("application/json"):
        raw = await request.json()
        form: dict[str, Any] = raw if isinstance(raw, dict) else {}
    else:
        form = dict((await request.form()).items())
    sql = str(form.get("sql") or "")
    if not sql.strip() or len(sql) > MAX_SQL:
        raise BadRequest(f"give a statement to explain (at most {MAX_SQL} characters)")
    target_name = str(form.get("target") or svc.config.targets[0].name)
    target = svc.config.target(target_name)
    if target is None:
        raise BadRequest(f"unknown target {target_name!r}")
    user, groups = viewer.user, sorted(viewer.groups)
    as_user = str(form.get("user") or "").strip()
    if as_user and as_user != viewer.user:
        if not viewer.sees_all:
            raise BadRequest("only auditors and dba may explain for another identity")
        user = as_user
        raw_groups = form.get("groups") or ""
        if isinstance(raw_groups, list):
            groups = [str(g) for g in raw_groups]
        else:
            groups = [g.strip() for g in str(raw_groups).split(",") if g.strip()]
    state = svc.current_policy()
    out: dict[str, Any] = {
        "user": user,
        "groups": groups,
        "target": target.name,
        "env": target.env,
        "lines": [],
        "error": None,
    }
    if state.engine is None:
        out["error"] = state.error or "no policy is configured: every statement is allowed"
        return out
    try:
        from dbgov.policy.explain import explain
    except ImportError as exc:
        out["error"] = f"explain is not available ({exc})"
        return out
    lines = explain(state.engine, sql, user, groups, target.name, target.env)
    # "text", not "sql": this is what the viewer typed, shown back to them as typed.
    out["lines"] = [
        {**{k: v for k, v in line.as_dict().items() if k != "sql"}, "text": line.sql}
        for line in lines
    ]
    return out


async def page(request: Request) -> Response:
    return render(request, "policy.html", _policy(request), page="policy")


async def explain_fragment(request: Request) -> Response:
    return render(request, "_explain.html", {"result": await _explain(request)})


async def api_policy(request: Request) -> Response:
    """The configured policy file: path, text, and whether it loads."""
    viewer_of(request)
    return api_json(request, _policy(request))


async def api_explain(request: Request) -> Response:
    """Explain how the policy decides a statement for an identity on a target."""
    return api_json(request, await _explain(request))


routes: list[BaseRoute] = [
    Route("/policy", page, include_in_schema=False),
    Route("/policy/explain", explain_fragment, methods=["POST"], include_in_schema=False),
]
api_routes: list[BaseRoute] = [
    Route("/api/policy", api_policy),
    Route("/api/policy/explain", api_explain, methods=["POST"]),
]
