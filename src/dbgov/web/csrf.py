"""CSRF protection for every state-changing request: a double-submit token tied to the session.

Every POST (PUT, PATCH, DELETE) MUST carry the token twice: in the `dbgov_csrf`
cookie, and in the `X-CSRF-Token` header (htmx and fetch) or a `csrf_token`
form field (plain forms). Both MUST equal the token derived from the session's
own secret (`SessionCodec.csrf_token`), so a token stolen from one session is
useless in another, and a site that can set cookies still cannot forge it.
Before login there is no session: the login form is protected by the plain
double submit (cookie equals field), plus SameSite=Strict cookies.

Requests authenticated by an ``Authorization: Bearer`` token (scripts) carry no
ambient credential a third-party page could ride on, so they are exempt.

Refusals answer 403 here, in the middleware, before any view runs.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Final
from urllib.parse import parse_qs

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dbgov.web.auth import BEARER_KEY, SessionCodec, optional_viewer

CSRF_COOKIE: Final = "dbgov_csrf"
CSRF_HEADER: Final = "x-csrf-token"
CSRF_FIELD: Final = "csrf_token"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_FORM_BYTES: Final = 1 << 20


def new_login_token() -> str:
    """A pre-session token for the login form (no session secret exists yet)."""
    return secrets.token_urlsafe(24)


class CSRFMiddleware:
    def __init__(self, app: ASGIApp, codec: SessionCodec) -> None:
        self.app = app
        self.codec = codec

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS or scope.get(BEARER_KEY):
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        headers = Headers(scope=scope)
        given = headers.get(CSRF_HEADER)
        replay: list[Message] = []
        if given is None and headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            body, replay = await _read_body(receive)
            if body is None:
                await _refuse(scope, "request body too large")(scope, receive, send)
                return
            values = parse_qs(body.decode("latin-1"), keep_blank_values=True).get(CSRF_FIELD)
            given = values[0] if values else None
        cookie = conn.cookies.get(CSRF_COOKIE)
        viewer = optional_viewer(conn)
        expected = self.codec.csrf_token(viewer) if viewer is not None else cookie
        if not (
            given
            and cookie
            and expected
            and hmac.compare_digest(given.encode(), cookie.encode())
            and hmac.compare_digest(given.encode(), expected.encode())
        ):
            await _refuse(scope, "missing or wrong CSRF token; reload the page and try again")(
                scope, receive, send
            )
            return
        if replay:
            await self.app(scope, _replayer(replay, receive), send)
        else:
            await self.app(scope, receive, send)


async def _read_body(receive: Receive) -> tuple[bytes | None, list[Message]]:
    """Read the whole request body (to find the form field), keeping it for the app."""
    messages: list[Message] = []
    size = 0
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            return None, messages
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), messages


def _replayer(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


def _refuse(scope: Scope, why: str) -> Response:
    if str(scope.get("path", "")).startswith("/api/"):
        return JSONResponse({"error": "csrf", "detail": why}, status_code=403)
    return PlainTextResponse(f"403 Forbidden: {why}", status_code=403)
