"""Dashboard login: the same tokens and issuers as the proxy, a signed session cookie.

A person logs in by pasting a dbgov token (`dbgov token issue`, or one from a
trusted OIDC issuer); it is verified by the proxy's own `TokenVerifier`, so the
dashboard knows exactly the identities the proxy knows. The token itself is then
forgotten: the browser gets a session cookie carrying only user, groups, expiry
and a per-session CSRF secret, signed with HMAC-SHA256 under
`<data_dir>/keys/web.key`. The cookie is HttpOnly (scripts never see it),
SameSite=Strict, Secure when the request came over TLS, and expires with the
token, so a session never outlives the rights it was opened with.

Cookie value: ``base64url(JSON payload) "." base64url(HMAC-SHA256(key, payload))``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from pathlib import Path
from typing import Final

import jwt
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from dbgov.durable import write_private
from dbgov.identity.model import AuthError, Identity
from dbgov.identity.tokens import TokenVerifier
from dbgov.layout import Layout
from dbgov.web.types import Viewer

SESSION_COOKIE: Final = "dbgov_session"
VIEWER_KEY: Final = "dbgov.viewer"
BEARER_KEY: Final = "dbgov.bearer"
MAX_SESSION_S: Final = 12 * 3600
"""A session ends at the token's expiry, and at the latest after this long."""


class LoginRequired(Exception):
    """Raised by views that need a viewer; mapped to 401 (API) or a redirect (pages)."""


class Forbidden(Exception):
    """The viewer is logged in but may not see or do this; mapped to 403."""


def web_key_path(layout: Layout) -> Path:
    return layout.keys / "web.key"


def load_or_create_key(layout: Layout) -> bytes:
    """The cookie signing key, created once (0600) and kept across restarts."""
    path = web_key_path(layout)
    if not path.exists():
        try:
            write_private(path, secrets.token_hex(32).encode())
        except FileExistsError:
            pass  # another process created it first: use theirs
    key = bytes.fromhex(path.read_text().strip())
    if len(key) < 32:
        raise ValueError(f"{path}: web session key is shorter than 32 bytes")
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionCodec:
    """Signs and checks session cookies. Pure apart from the clock it is given."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, b"dbgov-web-session\x00" + payload, hashlib.sha256).digest()

    def new_session(self, identity: Identity, now: float | None = None) -> Viewer:
        now = time.time() if now is None else now
        expires = now + MAX_SESSION_S
        if identity.expires_at is not None:
            expires = min(expires, identity.expires_at)
        # Only the token's own groups: just-in-time grants never reach the dashboard.
        groups = identity.groups - {g for g, _ in identity.grants}
        return Viewer(identity.user, groups, expires, secrets.token_urlsafe(24), identity.issuer)

    def encode(self, viewer: Viewer) -> str:
        payload = json.dumps(
            {
                "u": viewer.user,
                "g": sorted(viewer.groups),
                "e": viewer.expires_at,
                "c": viewer.csrf,
                "i": viewer.issuer,
            },
            separators=(",", ":"),
            sort_keys=True,
        ).encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def decode(self, value: str, now: float | None = None) -> Viewer | None:
        """The viewer a cookie names, or None if it is forged, malformed or expired."""
        body, sep, mac = value.partition(".")
        if not sep:
            return None
        try:
            payload, given = _unb64(body), _unb64(mac)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(self._mac(payload), given):
            return None
        try:
            data = json.loads(payload)
            viewer = Viewer(
                str(data["u"]),
                frozenset(str(g) for g in data["g"]),
                float(data["e"]),
                str(data["c"]),
                str(data["i"]),
            )
        except (ValueError, KeyError, TypeError):
            return None
        if viewer.expires_at <= (time.time() if now is None else now):
            return None
        return viewer

    def csrf_token(self, viewer: Viewer) -> str:
        """The token pages embed and requests echo: bound to this session's secret."""
        return _b64(
            hmac.new(
                self._key, b"dbgov-web-csrf\x00" + viewer.csrf.encode(), hashlib.sha256
            ).digest()
        )


async def verify_login_token(verifier: TokenVerifier, token: str) -> Identity:
    """Verify a pasted token exactly as the proxy would for its own subject.

    The proxy checks the token against the user named at startup; here the user
    is the token's own `sub`, read unverified only to name whom to verify.
    """
    token = token.strip()
    try:
        sub = jwt.decode(token, options={"verify_signature": False}).get("sub")
    except jwt.PyJWTError:
        raise AuthError("malformed", "token is not a well-formed JWT") from None
    if not isinstance(sub, str) or not sub:
        raise AuthError("bad_claims", "token refused: no subject")
    return await verifier.verify(token, sub)


class SessionMiddleware:
    """Attach the viewer to the scope; never refuse.

    The viewer comes from a valid session cookie (browsers) or, for scripts, from
    an ``Authorization: Bearer <token>`` header verified like a login on every
    request. Bearer requests carry no ambient credential, so CSRF does not apply
    to them (`BEARER_KEY`). Refusing is the views' business (`viewer_of` raises
    `LoginRequired`), so public routes need no list here.
    """

    def __init__(self, app: ASGIApp, codec: SessionCodec, verifier: TokenVerifier) -> None:
        self.app = app
        self.codec = codec
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            conn = HTTPConnection(scope)
            viewer: Viewer | None = None
            auth = conn.headers.get("authorization", "")
            if auth[:7].lower() == "bearer ":
                try:
                    identity = await verify_login_token(self.verifier, auth[7:])
                except AuthError:
                    identity = None
                if identity is not None:
                    viewer = self.codec.new_session(identity)
                    scope[BEARER_KEY] = True
            else:
                cookie = conn.cookies.get(SESSION_COOKIE)
                viewer = self.codec.decode(cookie) if cookie else None
            scope[VIEWER_KEY] = viewer
        await self.app(scope, receive, send)


def viewer_of(conn: HTTPConnection) -> Viewer:
    viewer = conn.scope.get(VIEWER_KEY)
    if not isinstance(viewer, Viewer):
        raise LoginRequired
    return viewer


def optional_viewer(conn: HTTPConnection) -> Viewer | None:
    viewer = conn.scope.get(VIEWER_KEY)
    return viewer if isinstance(viewer, Viewer) else None


def is_secure(conn: HTTPConnection) -> bool:
    """Whether the browser reached us over TLS (directly or via a trusted proxy header)."""
    return conn.url.scheme in ("https", "wss")
