"""Identities: per person, what they did; and the identity x table matrix.

Cells link to the audit search filtered by user, table and access, so every
number on the page drills down to the ledger events behind it.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from dbgov.web import queries
from dbgov.web.auth import viewer_of
from dbgov.web.views.common import NotFound, api_json, render, scope, services, window_of


async def _summary(request: Request) -> dict[str, object]:
    name, window, _ = window_of(request, "30d")
    who = scope(viewer_of(request))
    people, cells = await services(request).read(
        lambda s: (queries.identities(s, who, window), queries.matrix(s, who, window))
    )
    tables = sorted({c["table"] for c in cells})
    grid = {(c["user"], c["table"]): c for c in cells}
    return {"window": name, "identities": people, "matrix": cells, "tables": tables, "grid": grid}


async def page(request: Request) -> Response:
    data = await _summary(request)
    return render(request, "identities.html", data, page="identities")


async def detail(request: Request) -> Response:
    user = request.path_params["user"]
    data = await _detail(request, user)
    return render(request, "identity.html", {"person": data}, page="identities")


async def _detail(request: Request, user: str) -> dict[str, object]:
    _, window, _ = window_of(request, "30d")
    who = scope(viewer_of(request))
    data = await services(request).read(lambda s: queries.identity_detail(s, who, user, window))
    if data is None:
        raise NotFound(f"no activity of {user!r} that you may see")
    return data


async def api_list(request: Request) -> Response:
    """Per identity: sessions, statements by kind, tables, masked reads, denials, approvals."""
    data = await _summary(request)
    return api_json(request, {"window": data["window"], "identities": data["identities"]})


async def api_matrix(request: Request) -> Response:
    """Identity x table cells: reads, writes (statements that ran) and denied attempts."""
    data = await _summary(request)
    return api_json(request, {"window": data["window"], "cells": data["matrix"]})


async def api_detail(request: Request) -> Response:
    """One identity's summary, its matrix row and latest statements."""
    return api_json(request, await _detail(request, request.path_params["user"]))


routes: list[BaseRoute] = [
    Route("/identities", page, include_in_schema=False),
    Route("/identities/{user:str}", detail, include_in_schema=False),
]
api_routes: list[BaseRoute] = [
    Route("/api/identities", api_list),
    Route("/api/matrix", api_matrix),
    Route("/api/identities/{user:str}", api_detail),
]
