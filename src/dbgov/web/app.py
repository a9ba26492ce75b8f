"""The dashboard application: routes and middleware composed by list.

Outermost to innermost (Starlette's `build_middleware_stack`): server errors
(added by Starlette), security headers, session (who is looking), CSRF (refuse
forged actions before any view runs), then the router with exception mapping
innermost. Views raise (`LoginRequired`, `Forbidden`, `NotFound`, `BadRequest`,
`ApprovalsUnavailable`); the handlers here turn those into responses: JSON for
`/api/*`, a redirect to the login page or a short HTML page otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any
from urllib.parse import quote

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from dbgov.config import Config
from dbgov.web import api, metrics
from dbgov.web.approvals_port import ApprovalsUnavailable
from dbgov.web.auth import Forbidden, LoginRequired, SessionMiddleware, optional_viewer
from dbgov.web.csrf import CSRFMiddleware
from dbgov.web.headers import SecurityHeadersMiddleware
from dbgov.web.services import Services
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
from dbgov.web.views.common import TEMPLATES, BadRequest, NotFound


async def healthz(request: Request) -> Response:
    """Liveness and whether the ledger store can be read."""
    svc: Services = request.app.state.services
    try:
        size = await svc.read(lambda s: s.size())
    except Exception as exc:
        return JSONResponse({"ok": False, "ledger": f"unreadable: {exc}"}, status_code=503)
    return JSONResponse({"ok": True, "ledger_size": size, "approvals": svc.approvals.available})


async def metrics_endpoint(request: Request) -> Response:
    registry = request.app.state.metrics
    body = await anyio.to_thread.run_sync(metrics.render, registry)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


def _error(request: Request, status: int, message: str) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse(
            {"error": _ERROR_NAMES.get(status, "error"), "detail": message}, status_code=status
        )
    if optional_viewer(request) is None:
        return PlainTextResponse(f"{status}: {message}", status_code=status)
    return TEMPLATES.TemplateResponse(
        request,
        "error.html",
        {
            "status": status,
            "message": message,
            "viewer": optional_viewer(request),
            "nav": (),
            "page": "",
            "csrf": "",
        },
        status_code=status,
    )


_ERROR_NAMES = {
    400: "bad_request",
    401: "login_required",
    403: "forbidden",
    404: "not_found",
    503: "unavailable",
}


async def _login_required(request: Request, exc: Exception) -> Response:
    if request.url.path.startswith("/api/") or request.method != "GET":
        return _error(request, 401, "log in with a dbgov token first")
    if request.headers.get("hx-request"):
        # An htmx fragment: send the whole page to the login form.
        return Response(status_code=204, headers={"HX-Redirect": "/login"})
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target)}", status_code=303)


async def _forbidden(request: Request, exc: Exception) -> Response:
    return _error(request, 403, str(exc) or "you may not see this")


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error(request, 404, str(exc) or "not found")


async def _bad_request(request: Request, exc: Exception) -> Response:
    return _error(request, 400, str(exc))


async def _unavailable(request: Request, exc: Exception) -> Response:
    return _error(request, 503, str(exc))


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(request, exc.status_code, str(exc.detail))


def page_routes() -> list[BaseRoute]:
    routes: list[BaseRoute] = []
    for module in (login, live, identities, tables, approvals, audit, policy, reports, models):
        routes.extend(module.routes)
    return routes


def build_app(
    config: Config, stop: asyncio.Event | None = None, services: Services | None = None
) -> Starlette:
    """The ASGI app for `config`. `stop` ends open SSE streams when the server stops."""
    svc = services or Services.build(config)
    static = StaticFiles(directory=str(resources.files("dbgov.web") / "static"))
    routes: list[BaseRoute] = [
        *page_routes(),
        *api.api_routes(),
        Route("/healthz", healthz, include_in_schema=False),
        Route("/metrics", metrics_endpoint, include_in_schema=False),
        Mount("/static", app=static, name="static"),
    ]
    middleware = [
        Middleware(SecurityHeadersMiddleware),
        Middleware(SessionMiddleware, codec=svc.codec, verifier=svc.verifier),
        Middleware(CSRFMiddleware, codec=svc.codec),
    ]
    handlers: dict[Any, Any] = {
        LoginRequired: _login_required,
        Forbidden: _forbidden,
        NotFound: _not_found,
        BadRequest: _bad_request,
        ApprovalsUnavailable: _unavailable,
        HTTPException: _http,
    }

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        svc.approvals.start()  # on the serving loop: its journal arms loop timers
        try:
            yield
        finally:
            svc.approvals.close()

    app = Starlette(
        routes=routes, middleware=middleware, exception_handlers=handlers, lifespan=lifespan
    )
    app.state.services = svc
    app.state.stop = stop
    app.state.metrics = metrics.build_registry(metrics.LedgerCollector(svc))
    return app
