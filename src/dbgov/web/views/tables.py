"""Tables: per table, who read and wrote it, and which of its columns were masked."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from dbgov.web import queries
from dbgov.web.auth import viewer_of
from dbgov.web.views.common import NotFound, api_json, render, scope, services, window_of


async def _list(request: Request) -> dict[str, object]:
    name, window, _ = window_of(request, "30d")
    who = scope(viewer_of(request))
    rows = await services(request).read(lambda s: queries.tables(s, who, window))
    return {"window": name, "tables": rows}


async def _detail(request: Request) -> dict[str, object]:
    table = request.path_params["table"]
    _, window, _ = window_of(request, "30d")
    who = scope(viewer_of(request))
    data = await services(request).read(lambda s: queries.table_detail(s, who, table, window))
    if data is None:
        raise NotFound(f"no activity on {table!r} that you may see")
    return data


async def page(request: Request) -> Response:
    return render(request, "tables.html", await _list(request), page="tables")


async def detail(request: Request) -> Response:
    return render(request, "table.html", {"t": await _detail(request)}, page="tables")


async def api_list(request: Request) -> Response:
    """Per table: readers, writers (with counts), denied attempts, masked columns."""
    return api_json(request, await _list(request))


async def api_detail(request: Request) -> Response:
    """One table, with its latest statements."""
    return api_json(request, await _detail(request))


routes: list[BaseRoute] = [
    Route("/tables", page, include_in_schema=False),
    Route("/tables/{table:str}", detail, include_in_schema=False),
]
api_routes: list[BaseRoute] = [
    Route("/api/tables", api_list),
    Route("/api/tables/{table:str}", api_detail),
]
