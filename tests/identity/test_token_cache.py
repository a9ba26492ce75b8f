"""The verifier's memory of accepted tokens: a repeat skips the signature check, and
never accepts what the full check would refuse (expiry, another user, a key the
issuer no longer trusts, a changed token)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dbgov.config import OIDCIssuer
from dbgov.identity.issuer import LocalIssuer
from dbgov.identity.model import AuthError
from dbgov.identity.tokens import LocalTrust, OIDCTrust, TokenVerifier

ISS, AUD = "https://issuer.test", "dbgov"


@pytest.fixture
def signature_checks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every signature PyJWT verifies, by token."""
    seen: list[str] = []
    real = jwt.api_jws.PyJWS._verify_signature

    def counting(self: Any, signing_input: bytes, *args: Any, **kw: Any) -> None:
        seen.append(signing_input.decode())
        real(self, signing_input, *args, **kw)

    monkeypatch.setattr(jwt.api_jws.PyJWS, "_verify_signature", counting)
    yield seen


def _local() -> LocalIssuer:
    return LocalIssuer(Ed25519PrivateKey.generate(), ISS, AUD)


def _token(key: Any, kid: str | None, user: str = "alice", ttl: int = 600, **over: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISS, "aud": AUD, "sub": user, "groups": ["analysts"], "iat": now}
    claims |= {"nbf": now, "exp": now + ttl, "jti": f"t-{now}-{ttl}-{user}"} | over
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid} if kid else None)


def _refusal(verifier: TokenVerifier, token: str, user: str) -> str:
    with pytest.raises(AuthError) as info:
        asyncio.run(verifier.verify(token, user))
    return info.value.reason


def test_a_repeated_token_is_accepted_without_a_second_signature_check(signature_checks):
    local = _local()
    verifier = TokenVerifier([LocalTrust(local)])
    token = local.issue("alice", ["analysts"], 600)
    first = asyncio.run(verifier.verify(token, "alice"))
    again = [asyncio.run(verifier.verify(token, "alice")) for _ in range(3)]
    assert all(i == first for i in again)
    assert (first.user, first.groups, first.method) == ("alice", frozenset({"analysts"}), "token")
    assert len(signature_checks) == 1


def test_a_remembered_token_for_another_user_is_refused(signature_checks):
    local = _local()
    verifier = TokenVerifier([LocalTrust(local)])
    token = local.issue("alice", ["analysts"], 600)
    asyncio.run(verifier.verify(token, "alice"))
    assert _refusal(verifier, token, "carol") == "user_mismatch"
    assert asyncio.run(verifier.verify(token, "alice")).user == "alice"


def test_a_remembered_token_is_refused_once_it_expires():
    local = _local()
    verifier = TokenVerifier([LocalTrust(local)], leeway_s=0)
    token = _token(local.key, local.kid, ttl=1)
    assert asyncio.run(verifier.verify(token, "alice")).user == "alice"
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    time.sleep(max(0.0, exp - time.time()) + 0.05)
    assert _refusal(verifier, token, "alice") == "expired"


def test_a_changed_token_is_checked_in_full(signature_checks):
    local = _local()
    verifier = TokenVerifier([LocalTrust(local)])
    token = local.issue("alice", ["analysts"], 600)
    asyncio.run(verifier.verify(token, "alice"))
    head, body, sig = token.split(".")
    flipped = sig[:5] + ("A" if sig[5] != "A" else "B") + sig[6:]
    assert _refusal(verifier, f"{head}.{body}.{flipped}", "alice") == "bad_signature"
    forged = _token(Ed25519PrivateKey.generate(), local.kid)
    assert _refusal(verifier, forged, "alice") == "bad_signature"
    assert len(signature_checks) == 3


def _jwks(path: Path, keys: dict[str, Ed25519PrivateKey]) -> None:
    entries = []
    for kid, key in keys.items():
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key()))
        entries.append(jwk | {"kid": kid, "use": "sig", "alg": "EdDSA"})
    path.write_text(json.dumps({"keys": entries}))


def test_a_remembered_token_is_refused_once_its_key_leaves_the_jwks(tmp_path):
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    jwks = tmp_path / "jwks.json"
    _jwks(jwks, {"old": old, "new": new})
    trust = OIDCTrust(OIDCIssuer(name="idp", issuer=ISS, audience=AUD, jwks_file=jwks))
    verifier = TokenVerifier([trust])
    token = _token(old, "old")
    assert asyncio.run(verifier.verify(token, "alice")).method == "oidc"
    _jwks(jwks, {"new": new})  # the provider rotates the old key out
    trust._fetched_at -= trust.cfg.jwks_refresh_s + trust.MIN_REFETCH_S  # its refresh is due
    assert _refusal(verifier, token, "alice") == "unknown_key"
    assert asyncio.run(verifier.verify(_token(new, "new"), "alice")).user == "alice"


def test_the_memory_is_bounded_and_forgotten_tokens_still_verify(monkeypatch, signature_checks):
    monkeypatch.setattr(TokenVerifier, "ACCEPTED_MAX", 3)
    local = _local()
    verifier = TokenVerifier([LocalTrust(local)])
    tokens = [_token(local.key, local.kid, ttl=600 + i) for i in range(5)]
    for t in tokens:
        asyncio.run(verifier.verify(t, "alice"))
    assert len(verifier._accepted) == 3
    asyncio.run(verifier.verify(tokens[0], "alice"))  # forgotten: checked in full again
    asyncio.run(verifier.verify(tokens[4], "alice"))  # remembered
    assert len(signature_checks) == 6


def test_refused_tokens_are_not_remembered():
    local = _local()
    verifier = TokenVerifier([LocalTrust(local)])
    expired = _token(local.key, local.kid, ttl=-3600, iat=int(time.time()) - 7200)
    for _ in range(2):
        assert _refusal(verifier, expired, "alice") == "expired"
    assert _refusal(verifier, "not-a-jwt", "alice") == "malformed"
    assert not verifier._accepted
