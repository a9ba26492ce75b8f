"""Logging in with a dbgov token, and out.

The token is posted once, verified with the proxy's issuers, and dropped: only
the signed session cookie (see `auth.py`) remembers who logged in. Failed
logins say why in the page, never echo the token back.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from dbgov.identity.model import AuthError
from dbgov.web.auth import (
    SESSION_COOKIE,
    is_secure,
    optional_viewer,
    verify_login_token,
    viewer_of,
)
from dbgov.web.csrf import CSRF_COOKIE, new_login_token
from dbgov.web.views.common import TEMPLATES, services


def _safe_next(target: str | None) -> str:
    """Only same-site paths: never redirect to another host after login."""
    if not target:
        return "/live"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/live"
    return target


def _login_page(request: Request, error: str | None = None, status_code: int = 200) -> Response:
    token = new_login_token()
    response = TEMPLATES.TemplateResponse(
        request,
        "login.html",
        {
            "csrf": token,
            "error": error,
            "next": _safe_next(request.query_params.get("next")),
            "viewer": None,
            "nav": (),
            "page": "login",
        },
        status_code=status_code,
    )
    response.set_cookie(
        CSRF_COOKIE, token, httponly=False, samesite="strict", secure=is_secure(request), path="/"
    )
    return response


async def login_form(request: Request) -> Response:
    if optional_viewer(request) is not None:
        return RedirectResponse(_safe_next(request.query_params.get("next")), status_code=303)
    return _login_page(request)


async def login(request: Request) -> Response:
    form = await request.form()
    token = str(form.get("token") or "")
    svc = services(request)
    try:
        identity = await verify_login_token(svc.verifier, token)
    except AuthError as exc:
        return _login_page(request, exc.message, status_code=401)
    viewer = svc.codec.new_session(identity)
    target = _safe_next(str(form.get("next") or ""))
    response = RedirectResponse(target, status_code=303)
    max_age = max(1, int(viewer.expires_at - time.time()))
    response.set_cookie(
        SESSION_COOKIE,
        svc.codec.encode(viewer),
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=is_secure(request),
        path="/",
    )
    response.set_cookie(
        CSRF_COOKIE,
        svc.codec.csrf_token(viewer),
        max_age=max_age,
        httponly=False,
        samesite="strict",
        secure=is_secure(request),
        path="/",
    )
    return response


async def logout(request: Request) -> Response:
    viewer_of(request)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=is_secure(request)
    )
    response.delete_cookie(CSRF_COOKIE, path="/", samesite="strict", secure=is_secure(request))
    return response


async def me(request: Request) -> JSONResponse:
    return JSONResponse(viewer_of(request).as_json())


async def index(request: Request) -> Response:
    return RedirectResponse("/live" if optional_viewer(request) else "/login", status_code=303)


routes: list[BaseRoute] = [
    Route("/", index, include_in_schema=False),
    Route("/login", login_form, methods=["GET"], include_in_schema=False),
    Route("/login", login, methods=["POST"], include_in_schema=False),
    Route("/logout", logout, methods=["POST"], include_in_schema=False),
]
api_routes: list[BaseRoute] = [Route("/api/me", me, methods=["GET"])]
