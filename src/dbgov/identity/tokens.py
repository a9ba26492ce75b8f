"""Verifying tokens presented as passwords: local issuer and OIDC issuers.

Every refusal is an `AuthError` with a distinct reason (expired, not_yet_valid,
wrong_audience, wrong_issuer, bad_signature, alg_none, user_mismatch,
missing_password, malformed, unknown_key, bad_algorithm, bad_claims) so the audit
can tell attacks apart. PyJWT does the cryptography and claim checks; we pick
the issuer from the token's `iss` and pin each issuer's algorithms, so an
attacker cannot choose the algorithm (`alg: none`, HS256-with-a-public-key).

A client usually presents one token for many connections (pools, jobs, agents),
and a full check costs about 250 us of CPU, most of a new connection's share in
the proxy. So each process remembers the tokens it has accepted (`_Accepted`),
keyed by the exact token text, and a repeat skips the signature and claim parsing
only while every check that could change still passes: the time window, the
user, and the signing key still being the issuer's. Anything else takes the full
path, which decides and gives the precise refusal. Refused tokens are never kept.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jwt

from dbgov.config import OIDCIssuer
from dbgov.identity.issuer import LocalIssuer
from dbgov.identity.model import AuthError, Identity

log = logging.getLogger(__name__)


class TrustedIssuer(Protocol):
    issuer: str
    audience: str
    algorithms: tuple[str, ...]
    groups_claim: str
    method: str

    async def get_key(self, kid: str | None) -> Any: ...


class LocalTrust:
    """The local issuer's public key."""

    groups_claim = "groups"
    method = "token"
    algorithms: tuple[str, ...] = ("EdDSA",)

    def __init__(self, local: LocalIssuer) -> None:
        self.issuer = local.issuer
        self.audience = local.audience
        self._key = local.public_key
        self._kid = local.kid

    async def get_key(self, kid: str | None) -> Any:
        return self._key if kid in (None, self._kid) else None


class OIDCTrust:
    """An OIDC issuer whose JWKS comes from a file or an https URL, cached.

    Fetches run in a thread so a slow identity provider never blocks the proxy's
    event loop. An unknown `kid` triggers at most one refetch per 30 s (key
    rotation), so garbage tokens cannot make us hammer the provider.
    """

    method = "oidc"
    MIN_REFETCH_S = 30.0

    def __init__(self, cfg: OIDCIssuer) -> None:
        self.cfg = cfg
        self.issuer = cfg.issuer
        self.audience = cfg.audience
        self.algorithms = cfg.algorithms
        self.groups_claim = cfg.groups_claim
        self._keys: dict[str | None, Any] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    def _read_jwks(self) -> dict[str, Any]:
        if self.cfg.jwks_file is not None:
            data = Path(self.cfg.jwks_file).read_bytes()
        else:
            assert self.cfg.jwks_url is not None  # validated in config
            req = urllib.request.Request(  # noqa: S310 (config allows https:// only)
                self.cfg.jwks_url, headers={"Accept": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 (https only)
                data = resp.read(1 << 20)
        doc = json.loads(data)
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise ValueError("JWKS document has no keys list")
        return doc

    def _load(self, doc: dict[str, Any]) -> dict[str | None, Any]:
        keys: dict[str | None, Any] = {}
        for jwk in doc["keys"]:
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK(jwk).key
            except (jwt.PyJWKError, jwt.InvalidKeyError, KeyError, ValueError):
                log.warning("%s: skipping unusable JWKS entry %s", self.issuer, jwk.get("kid"))
                continue
            keys[jwk.get("kid")] = key
        return keys

    async def refresh(self, force: bool = False) -> None:
        async with self._lock:
            age = time.monotonic() - self._fetched_at
            if not force and self._keys and age < self.cfg.jwks_refresh_s:
                return
            if force and age < self.MIN_REFETCH_S and self._keys:
                return
            try:
                doc = await asyncio.to_thread(self._read_jwks)
                self._keys = self._load(doc)
                self._fetched_at = time.monotonic()
            except (OSError, ValueError) as exc:
                # Keep serving the cached keys; tokens signed by new keys fail closed.
                log.warning("%s: JWKS refresh failed: %s", self.issuer, exc)
                if not self._keys:
                    self._fetched_at = time.monotonic()

    async def get_key(self, kid: str | None) -> Any:
        await self.refresh()
        if kid in self._keys:
            return self._keys[kid]
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        await self.refresh(force=True)
        return self._keys.get(kid)


@dataclass(frozen=True, slots=True)
class _Accepted:
    """A token that passed the full check, and what a repeat must still match."""

    identity: Identity  # its user is the token's sub
    trust: TrustedIssuer
    kid: str | None
    key: Any  # the key that verified the signature
    valid_from: float  # PyJWT's nbf and iat checks, leeway included
    valid_until: float  # its exp check: valid while now < exp + leeway


class TokenVerifier:
    ACCEPTED_MAX = 4096  # tokens remembered per process (least recently used go)

    def __init__(self, issuers: Sequence[TrustedIssuer], leeway_s: int = 30) -> None:
        self.issuers = {i.issuer: i for i in issuers}
        self.leeway_s = leeway_s
        self._accepted: OrderedDict[str, _Accepted] = OrderedDict()

    async def verify(self, token: str, user: str) -> Identity:
        hit = self._accepted.get(token)
        if hit is not None:
            now = time.time()
            if (
                hit.valid_from <= now < hit.valid_until
                and hit.identity.user == user
                and await hit.trust.get_key(hit.kid) is hit.key
            ):
                if token in self._accepted:  # (get_key may have yielded)
                    self._accepted.move_to_end(token)
                return hit.identity
            self._accepted.pop(token, None)
        return await self._verify(token, user)

    async def _verify(self, token: str, user: str) -> Identity:
        if not token:
            raise AuthError(
                "missing_password",
                f'password authentication failed for user "{user}": no token given',
            )
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:  # also a header PyJWT refuses (a non-string kid, crit)
            raise AuthError("malformed", "token is not a well-formed JWT") from None
        alg = str(header.get("alg", ""))
        if alg.lower() == "none":
            raise AuthError(
                "alg_none", "token refused: unsigned tokens (alg none) are never accepted"
            )
        iss = unverified.get("iss")
        trust = self.issuers.get(iss) if isinstance(iss, str) else None
        if trust is None:
            raise AuthError("wrong_issuer", f"token refused: issuer {iss!r} is not trusted")
        if alg not in trust.algorithms:
            raise AuthError(
                "bad_algorithm", f"token refused: algorithm {alg} not allowed for this issuer"
            )
        key = await trust.get_key(header.get("kid"))
        if key is None:
            raise AuthError("unknown_key", "token refused: signed by an unknown key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=trust.audience,
                issuer=trust.issuer,
                leeway=self.leeway_s,
                options={"require": ["exp", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("expired", "token refused: expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("not_yet_valid", "token refused: not yet valid") from None
        except jwt.InvalidAudienceError:
            raise AuthError("wrong_audience", "token refused: wrong audience") from None
        except jwt.InvalidIssuerError:
            raise AuthError("wrong_issuer", "token refused: wrong issuer") from None
        except jwt.InvalidSignatureError:
            raise AuthError("bad_signature", "token refused: bad signature") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError("bad_claims", f"token refused: missing claim {exc.claim}") from None
        except jwt.PyJWTError as exc:
            raise AuthError("malformed", f"token refused: {exc}") from None
        if claims.get("sub") != user:
            raise AuthError(
                "user_mismatch",
                f'token refused: it was issued to "{claims.get("sub")}", not "{user}"',
            )
        groups = claims.get(trust.groups_claim, [])
        if isinstance(groups, str):
            groups = [groups]
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise AuthError(
                "bad_claims", f"token refused: claim {trust.groups_claim} must be a list of strings"
            )
        exp = claims.get("exp")
        identity = Identity(
            user=user,
            groups=frozenset(groups),
            method=trust.method,
            issuer=trust.issuer,
            token_id=str(claims["jti"]) if "jti" in claims else None,
            expires_at=float(exp) if isinstance(exp, int | float) else None,
        )
        # PyJWT has checked these claims are integers (exp is required).
        starts = [int(claims[c]) for c in ("nbf", "iat") if c in claims]
        self._accepted[token] = _Accepted(
            identity,
            trust,
            header.get("kid"),
            key,
            max(starts, default=float("-inf")) - self.leeway_s,
            int(claims["exp"]) + self.leeway_s,
        )
        if len(self._accepted) > self.ACCEPTED_MAX:
            self._accepted.popitem(last=False)
        return identity
