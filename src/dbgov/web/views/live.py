"""Live: who is connected now, what they run, and charts of the recent past.

Open sessions are derived from the ledger (see `queries.open_sessions`); the
statement table starts from the latest events and is then fed by SSE
(`sse.live_stream`). Charts read `/api/charts/*`, the same functions as the
API documents.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from dbgov.pids import pid_alive
from dbgov.store.sqlite import LedgerStore
from dbgov.web import queries
from dbgov.web.auth import viewer_of
from dbgov.web.sse import api_stream, live_stream
from dbgov.web.views.common import NotFound, api_json, int_param, render, scope, services, window_of


async def _sessions(request: Request) -> list[dict[str, Any]]:
    svc = services(request)
    who = scope(viewer_of(request))
    state = svc.state()
    return await svc.read(lambda s: queries.open_sessions(s, who, state, pid_alive))


async def page(request: Request) -> Response:
    svc = services(request)
    who = scope(viewer_of(request))
    # The stream's cursor is read first: an event integrated while the page is being
    # built is then sent again by the stream (rows replace by id) instead of lost.
    cursor = await svc.read(lambda s: s.size() - 1)
    sessions = await _sessions(request)
    statements = await svc.read(lambda s: queries.recent_statements(s, who, limit=50))
    return render(
        request,
        "live.html",
        {"sessions": sessions, "statements": statements, "cursor": cursor},
        page="live",
    )


async def sessions_fragment(request: Request) -> Response:
    return render(request, "_sessions.html", {"sessions": await _sessions(request)})


async def api_sessions(request: Request) -> Response:
    """Open sessions: identity, target, client, since, current statement."""
    return api_json(request, {"sessions": await _sessions(request)})


async def api_statements(request: Request) -> Response:
    """Latest statements with their status (allowed, masked, denied, pending, ...)."""
    svc = services(request)
    who = scope(viewer_of(request))
    limit = int_param(request, "limit", 50, 1, 1000) or 50
    after = int_param(request, "after", None, -1, 1 << 62)
    rows = await svc.read(lambda s: queries.recent_statements(s, who, limit=limit, after=after))
    return api_json(request, {"statements": rows})


def _chart(
    kind: str, store: LedgerStore, who: str | None, window: queries.Window, seconds: int
) -> dict[str, Any]:
    width = queries.bucket_seconds(seconds)
    if kind == "statements":
        return queries.statements_over_time(store, who, window, width)
    if kind == "denials":
        return queries.denials_over_time(store, who, window, width)
    return {"identities": queries.top_identities(store, who, window)}


async def api_chart(request: Request) -> Response:
    """Chart data: statements by decision, denials, or top identities over a window."""
    kind = request.path_params["kind"]
    if kind not in ("statements", "denials", "top-identities"):
        raise NotFound(f"no chart {kind!r}; charts: statements, denials, top-identities")
    name, window, seconds = window_of(request)
    svc = services(request)
    who = scope(viewer_of(request))
    data = await svc.read(lambda s: _chart(kind, s, who, window, seconds))
    return api_json(request, {"window": name, **data})


routes: list[BaseRoute] = [
    Route("/live", page, include_in_schema=False),
    Route("/live/sessions", sessions_fragment, include_in_schema=False),
    Route("/live/stream", live_stream, include_in_schema=False),
]
api_routes: list[BaseRoute] = [
    Route("/api/live/sessions", api_sessions),
    Route("/api/live/statements", api_statements),
    Route("/api/charts/{kind:str}", api_chart),
    Route("/api/stream", api_stream),
]
