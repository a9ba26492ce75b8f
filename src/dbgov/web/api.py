"""The JSON API behind every page, and its OpenAPI 3.1 document at `/api/openapi.json`.

Each page module exports `api_routes`; this module only gathers them. The
OpenAPI document is generated from those routes — path, methods, the first
line of each endpoint's docstring as its summary, path parameters from the
route pattern — plus the query parameters listed here, so a route cannot be
added without appearing in the document (tests check both ways).

Authentication: a session cookie from `/login` (browsers; state-changing
requests then need the CSRF token in `X-CSRF-Token`), or
`Authorization: Bearer <dbgov token>` (scripts).
"""

from __future__ import annotations

import re
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from dbgov import __name__ as _pkg
from dbgov.web.views import (
    approvals,
    audit,
    identities,
    live,
    login,
    models,
    policy,
    reports,
    tables,
)

_WINDOW: Final = {
    "name": "window",
    "in": "query",
    "schema": {"type": "string", "enum": ["15m", "1h", "6h", "24h", "7d", "30d"]},
    "description": "time window ending now (or give since/until)",
}
_SINCE: Final = {
    "name": "since",
    "in": "query",
    "schema": {"type": "string", "format": "date-time"},
}
_UNTIL: Final = {
    "name": "until",
    "in": "query",
    "schema": {"type": "string", "format": "date-time"},
}


def _q(name: str, type_: str = "string", description: str = "", **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": type_, **extra}
    return {"name": name, "in": "query", "schema": schema, "description": description}


QUERY_PARAMS: Final[dict[str, list[dict[str, Any]]]] = {
    "/api/live/statements": [
        _q("limit", "integer", "rows, newest first"),
        _q("after", "integer", "only events after this ledger index"),
    ],
    "/api/charts/{kind}": [_WINDOW, _SINCE, _UNTIL],
    "/api/identities": [_WINDOW, _SINCE, _UNTIL],
    "/api/identities/{user}": [_WINDOW, _SINCE, _UNTIL],
    "/api/matrix": [_WINDOW, _SINCE, _UNTIL],
    "/api/tables": [_WINDOW, _SINCE, _UNTIL],
    "/api/tables/{table}": [_WINDOW, _SINCE, _UNTIL],
    "/api/audit/events": [
        _q("user"),
        _q("target"),
        _q("type", description="event type; repeatable"),
        _q("decision", enum=["allow", "deny", "approval"]),
        _q("session"),
        _SINCE,
        _UNTIL,
        _q("text", description="substring of the event as you may see it"),
        _q("table", description="schema.table read or written"),
        _q("access", enum=["read", "write"]),
        _q("limit", "integer"),
        _q("before", "integer", "page: events before this ledger index"),
    ],
    "/api/reports/soc2": [
        _q("from", description="YYYY-MM-DD or ISO time"),
        _q("to", description="YYYY-MM-DD (inclusive) or ISO time"),
    ],
    "/api/stream": [_q("after", "integer", "resume after this ledger index")],
    "/api/models/{name}": [_q("limit", "integer", "changes shown, newest first")],
    "/api/models/{name}/report": [
        _q("from", description="earlier version (default: the retrain before `to`)"),
        _q("to", description="later version (default: the latest retrain)"),
        _q("large_rows", "integer", "flag changes of at least this many rows"),
    ],
}

REQUEST_BODIES: Final[dict[str, dict[str, Any]]] = {
    "/api/approvals/{id}/approve": {"reason": {"type": "string"}},
    "/api/approvals/{id}/deny": {"reason": {"type": "string"}},
    "/api/models/{name}/retrain": {
        "version": {"type": "string"},
        "note": {"type": "string"},
        "fingerprint": {"type": "boolean"},
    },
    "/api/policy/explain": {
        "sql": {"type": "string"},
        "target": {"type": "string"},
        "user": {"type": "string"},
        "groups": {"type": "array", "items": {"type": "string"}},
    },
}

_PARAM = re.compile(r"{(\w+)(?::\w+)?}")


def api_routes() -> list[BaseRoute]:
    routes: list[BaseRoute] = []
    for module in (login, live, identities, tables, approvals, audit, policy, reports, models):
        routes.extend(module.api_routes)
    routes.append(Route("/api/openapi.json", openapi, methods=["GET"]))
    return routes


def openapi_document(routes: list[BaseRoute]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if not isinstance(route, Route) or not route.path.startswith("/api/"):
            continue
        path = _PARAM.sub(r"{\1}", route.path)
        doc = (route.endpoint.__doc__ or "").strip().splitlines()
        for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
            op: dict[str, Any] = {
                "summary": doc[0] if doc else route.name,
                "operationId": f"{method.lower()}_{route.name}",
                "parameters": [
                    {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                    for p in _PARAM.findall(path)
                ]
                + QUERY_PARAMS.get(path, []),
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {
                            "text/event-stream" if path == "/api/stream" else "application/json": {}
                        },
                    },
                    "401": {"description": "not logged in"},
                },
            }
            if method == "POST":
                op["responses"]["403"] = {"description": "CSRF token missing, or refused"}
                props = REQUEST_BODIES.get(path)
                if props:
                    op["requestBody"] = {
                        "content": {
                            "application/json": {"schema": {"type": "object", "properties": props}},
                            "application/x-www-form-urlencoded": {
                                "schema": {"type": "object", "properties": props}
                            },
                        }
                    }
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dbgov dashboard API",
            "version": _version(),
            "description": (__doc__ or "").strip(),
        },
        "components": {
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "dbgov_session"},
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            }
        },
        "security": [{"session": []}, {"bearer": []}],
        "paths": dict(sorted(paths.items())),
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(_pkg)
    except PackageNotFoundError:
        return "0"


async def openapi(request: Request) -> JSONResponse:
    """This document (OpenAPI 3.1)."""
    return JSONResponse(openapi_document(request.app.routes))
