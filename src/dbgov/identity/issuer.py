"""dbgov's own token issuer: EdDSA-signed JWTs, key kept in the data dir.

`dbgov token issue --user alice --group analysts --ttl 8h` prints one. The key is
created on first use with mode 0600; the matching public key is all a verifier
(or an auditor) needs.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dbgov.durable import write_private


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            write_private(path, pem)
            return key
        except FileExistsError:
            pass  # another process created it first: use that one
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return loaded


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest()[:12]).decode().rstrip("=")


class LocalIssuer:
    def __init__(self, key: Ed25519PrivateKey, issuer: str, audience: str) -> None:
        self.key = key
        self.public_key = key.public_key()
        self.issuer = issuer
        self.audience = audience
        self.kid = key_id(self.public_key)

    @classmethod
    def from_file(cls, path: Path, issuer: str, audience: str) -> LocalIssuer:
        return cls(load_or_create_key(path), issuer, audience)

    def issue(self, user: str, groups: list[str], ttl_s: int, *, now: float | None = None) -> str:
        now = time.time() if now is None else now
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": user,
            "groups": sorted(set(groups)),
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now) + ttl_s,
            "jti": secrets.token_urlsafe(12),
        }
        return jwt.encode(claims, self.key, algorithm="EdDSA", headers={"kid": self.kid})

    def public_pem(self) -> bytes:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def default_key_path(data_dir: Path) -> Path:
    return data_dir / "keys" / "issuer.key"


def env_token() -> str | None:
    return os.environ.get("DBGOV_TOKEN")
