"""SCRAM-SHA-256 as a client, for logging in to the upstream (RFC 5802, RFC 7677).

scramp would do, but it derives the salted password (4,096 rounds of PBKDF2) on
every login, which made every client connection pay a full key derivation. The
salted password depends only on (password, salt, iterations), which the server
keeps stable for a role, so it is cached per process. The proof and the check of
the server's signature are computed fresh for every login, as the RFC requires.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from functools import lru_cache

from scramp.core import saslprep

from dbgov.identity.scram import scram_attributes


class ScramError(Exception):
    pass


@lru_cache(maxsize=64)
def _salted_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return client_key, hashlib.sha256(client_key).digest(), server_key


class ScramClient:
    """One client-side exchange. PostgreSQL takes the user from the startup packet,
    so the SCRAM user name is empty, as libpq sends it."""

    def __init__(self, password: str) -> None:
        self.password = password
        self.nonce = base64.b64encode(secrets.token_bytes(18)).decode()
        self.first_bare = f"n=,r={self.nonce}"
        self._server_signature = b""

    def first(self) -> bytes:
        return f"n,,{self.first_bare}".encode()

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        try:
            attrs = scram_attributes(text)
        except ValueError as exc:
            raise ScramError(str(exc)) from None
        nonce, salt, iters = attrs.get("r", ""), attrs.get("s", ""), attrs.get("i", "")
        if not nonce.startswith(self.nonce) or len(nonce) == len(self.nonce):
            raise ScramError("server nonce does not extend ours")
        if not iters.isdigit() or not 1 <= int(iters) <= 1_000_000:
            raise ScramError("bad iteration count")
        client_key, stored_key, server_key = _salted_keys(
            self.password, base64.b64decode(salt, validate=True), int(iters)
        )
        without_proof = f"c=biws,r={nonce}"
        auth = f"{self.first_bare},{text},{without_proof}".encode()
        signature = hmac.new(stored_key, auth, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self._server_signature = hmac.new(server_key, auth, hashlib.sha256).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        try:
            attrs = scram_attributes(server_final.decode())
        except ValueError as exc:
            raise ScramError(str(exc)) from None
        if "e" in attrs:
            raise ScramError(f"server refused: {attrs['e']}")
        got = base64.b64decode(attrs.get("v", ""), validate=True)
        if not self._server_signature or not hmac.compare_digest(got, self._server_signature):
            raise ScramError("server signature mismatch")
