"""SCRAM-SHA-256 for service accounts, terminated at the proxy (RFC 5802, RFC 7677).

Secrets are stored as PostgreSQL-style verifiers (`SCRAM-SHA-256$iter:salt$
StoredKey:ServerKey`), never as passwords; `make_verifier` uses scramp.

The server side of the exchange is written here rather than taken from scramp:
libpq sends an empty SCRAM user name (`n=,r=…`, the startup packet carries the
user, as PostgreSQL's own server expects) and scramp's server refuses empty
names. The exchange is small and follows PostgreSQL's `auth-scram.c`: no
channel binding (we do not advertise SCRAM-SHA-256-PLUS), constant-time proof
comparison, and the same error for every bad password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from scramp import ScramMechanism

from dbgov.config import ServiceAccount
from dbgov.identity.model import AuthError, Identity

MECHANISM = "SCRAM-SHA-256"


@dataclass(frozen=True, slots=True)
class Verifier:
    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes

    @classmethod
    def parse(cls, text: str) -> Verifier:
        head, _, keys = text.partition("$")[2].partition("$")
        iters, _, salt = head.partition(":")
        stored, _, server = keys.partition(":")
        return cls(
            int(iters), base64.b64decode(salt), base64.b64decode(stored), base64.b64decode(server)
        )

    def __str__(self) -> str:
        b64 = base64.b64encode
        return (
            f"{MECHANISM}${self.iterations}:{b64(self.salt).decode()}"
            f"${b64(self.stored_key).decode()}:{b64(self.server_key).decode()}"
        )


def make_verifier(password: str, iterations: int = 4096) -> str:
    salt, stored_key, server_key, iters = ScramMechanism(MECHANISM).make_auth_info(
        password, iteration_count=iterations
    )
    return str(Verifier(iters, salt, stored_key, server_key))


def scram_attributes(message: str) -> dict[str, str]:
    """`k=v,k=v` SCRAM attributes; ValueError on anything else (RFC 5802 section 5.1)."""
    out: dict[str, str] = {}
    for part in message.split(","):
        key, eq, value = part.partition("=")
        if len(key) != 1 or not eq:
            raise ValueError(f"malformed attribute {part!r}")
        out[key] = value
    return out


class ScramExchange:
    """One server-side SCRAM-SHA-256 exchange for `account`."""

    def __init__(self, account: ServiceAccount) -> None:
        self.account = account
        self.v = Verifier.parse(account.scram)
        self._nonce = ""
        self._auth_prefix = ""  # client-first-bare "," server-first
        self._gs2 = ""

    def _fail(self, why: str) -> AuthError:
        return AuthError("scram_failed", f"SCRAM authentication failed: {why}")

    def first(self, client_first: bytes) -> bytes:
        try:
            text = client_first.decode()
        except UnicodeDecodeError:
            raise self._fail("client-first is not UTF-8") from None
        flag, _, rest = text.partition(",")
        authzid, _, bare = rest.partition(",")
        if flag not in ("n", "y") or authzid:
            # 'p' asks for channel binding, which we never advertised.
            raise self._fail("unsupported channel binding or authorization identity")
        self._gs2 = f"{flag},{authzid},"
        try:
            attrs = scram_attributes(bare)
        except ValueError as exc:
            raise self._fail(str(exc)) from None
        client_nonce = attrs.get("r", "")
        if not client_nonce or "m" in attrs:
            raise self._fail("missing nonce or unsupported extension")
        self._nonce = client_nonce + base64.b64encode(secrets.token_bytes(18)).decode()
        server_first = (
            f"r={self._nonce},s={base64.b64encode(self.v.salt).decode()},i={self.v.iterations}"
        )
        self._auth_prefix = f"{bare},{server_first}"
        return server_first.encode()

    def final(self, client_final: bytes) -> bytes:
        bad = AuthError(
            "bad_password", f'password authentication failed for user "{self.account.name}"'
        )
        try:
            text = client_final.decode()
            without_proof, _, proof_part = text.rpartition(",p=")
            attrs = scram_attributes(without_proof)
            proof = base64.b64decode(proof_part, validate=True)
        except (UnicodeDecodeError, ValueError):
            raise self._fail("malformed client-final") from None
        if attrs.get("r") != self._nonce:
            raise self._fail("nonce mismatch")
        if attrs.get("c") != base64.b64encode(self._gs2.encode()).decode():
            raise self._fail("channel binding mismatch")
        auth_message = f"{self._auth_prefix},{without_proof}".encode()
        client_sig = hmac.new(self.v.stored_key, auth_message, hashlib.sha256).digest()
        if len(proof) != len(client_sig):
            raise bad
        client_key = bytes(a ^ b for a, b in zip(proof, client_sig, strict=True))
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), self.v.stored_key):
            raise bad
        server_sig = hmac.new(self.v.server_key, auth_message, hashlib.sha256).digest()
        return f"v={base64.b64encode(server_sig).decode()}".encode()

    def identity(self) -> Identity:
        return Identity(
            user=self.account.name,
            groups=frozenset(self.account.groups),
            method="scram",
            issuer="service-account",
        )
