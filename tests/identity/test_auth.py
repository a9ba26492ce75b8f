"""Authentication through the real proxy: every refusal is FATAL 28P01, opens no
upstream connection, and leaves an `auth.failed` event (issue: proxy core, item 5)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time

import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dbgov.identity.issuer import LocalIssuer
from pgwire import RawClient, error_of

pytestmark = pytest.mark.usefixtures("dbgov")


def _local(dbgov) -> LocalIssuer:
    return LocalIssuer.from_file(dbgov.data_dir / "keys" / "issuer.key", "dbgov-local", "dbgov")


def _claims(user: str = "alice", **over):
    now = int(time.time())
    c = {
        "iss": "dbgov-local",
        "aud": "dbgov",
        "sub": user,
        "groups": ["analysts"],
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "t-" + str(now),
    }
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def _sign(dbgov, claims, key=None, headers=None) -> str:
    local = _local(dbgov)
    return jwt.encode(
        claims, key or local.key, algorithm="EdDSA", headers=headers or {"kid": local.kid}
    )


def _alg_none(claims) -> str:
    def b64(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


def _upstream_sessions(dbgov) -> set[int]:
    """Backends dbgov holds. Compared as sets: a kept upstream of an earlier test may
    expire meanwhile, but none may appear for a refused login."""
    return {
        pid
        for (pid,) in dbgov.admin(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'dbgov/%'"
            " AND usename = 'dbgov_app'"
        )
    }


def _attempt(dbgov, user: str, password: str | None, target: str = "prod"):
    c = RawClient(dbgov.host, dbgov.port)
    msgs = c.startup(user, target, password)
    if password is None:
        return None
    rest = c.until_closed()
    c.close()
    return error_of(msgs + rest)


CASES = {
    "expired": lambda d: _sign(
        d,
        _claims(
            exp=int(time.time()) - 3600, iat=int(time.time()) - 7200, nbf=int(time.time()) - 7200
        ),
    ),
    "not_yet_valid": lambda d: _sign(d, _claims(nbf=int(time.time()) + 3600)),
    "wrong_audience": lambda d: _sign(d, _claims(aud="someone-else")),
    "wrong_issuer": lambda d: _sign(d, _claims(iss="https://evil.example")),
    "bad_signature": lambda d: _sign(d, _claims(), key=Ed25519PrivateKey.generate()),
    "alg_none": lambda d: _alg_none(_claims()),
    "user_mismatch": lambda d: _sign(d, _claims(user="carol", groups=["dba"])),
    "missing_password": lambda d: "",
    "malformed": lambda d: "not-a-jwt",
}


@pytest.mark.parametrize("reason", sorted(CASES))
def test_bad_tokens_are_refused_without_upstream(dbgov, reason):
    before = _upstream_sessions(dbgov)
    token = CASES[reason](dbgov)
    err = _attempt(dbgov, "alice", token)
    assert err is not None, "expected an ErrorResponse"
    assert err.severity == "FATAL" and err.sqlstate == "28P01"
    assert err.message.startswith("dbgov:")
    assert _upstream_sessions(dbgov) <= before
    evs = dbgov.wait_events(lambda e: e.get("reason") == reason, types=["auth.failed"])
    assert evs, f"no auth.failed event with reason {reason}"
    assert token not in json.dumps(evs) or token == ""  # tokens never enter the ledger


def test_good_token_works_and_records_connection(dbgov):
    with psycopg.connect(dbgov.dsn("carol")) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "dbgov_app"
    evs = dbgov.wait_events(
        lambda e: e["user"] == "carol" and e.get("auth") == "token", types=["connection.open"]
    )
    assert evs and "dba" in evs[-1]["groups"]


def test_a_token_accepted_before_is_still_refused_for_another_user(dbgov):
    """Workers remember the tokens they accepted (identity/tokens.py): that memory must
    never let a token stand for someone else, on whichever worker it lands."""
    token = dbgov.token("alice")
    for _ in range(4):
        with psycopg.connect(dbgov.dsn("alice", password=token)) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    for _ in range(4):
        err = _attempt(dbgov, "carol", token)
        assert err is not None and (err.severity, err.sqlstate) == ("FATAL", "28P01")
        assert 'issued to "alice"' in err.message


def test_unknown_target_is_3d000(dbgov):
    err = _attempt(dbgov, "carol", dbgov.token("carol"), target="nosuchdb")
    assert err is not None and err.severity == "FATAL" and err.sqlstate == "3D000"


def test_upstream_password_never_reaches_the_client(dbgov):
    secret = (dbgov.data_dir / "keys" / "upstream.password").read_text().strip()
    c = RawClient(dbgov.host, dbgov.port)
    c.startup("carol", "prod", dbgov.token("carol"))
    c.send(b"Q\x00\x00\x00\x0dSELECT 1\x00")
    c.until_ready()
    c.close()
    # every byte the client received during login and a query
    assert secret.encode() not in c.buf


def test_scram_service_account(dbgov):
    with psycopg.connect(dbgov.dsn("etl")) as conn:
        conn.execute(
            "INSERT INTO inference_log (model_version, customer_id, features, score, "
            "latency_ms, created_at) VALUES ('churn-v2.7', 1, '{}', 0.5, 10, now())"
        )
    evs = dbgov.wait_events(lambda e: e["user"] == "etl", types=["connection.open"])
    assert evs and evs[-1]["auth"] == "scram"


def test_scram_wrong_password(dbgov):
    with pytest.raises(psycopg.OperationalError) as exc:
        psycopg.connect(dbgov.dsn("etl", password="wrong"))
    assert "password authentication failed" in str(exc.value)
    assert dbgov.wait_events(
        lambda e: e["user"] == "etl" and e["reason"] == "bad_password", types=["auth.failed"]
    )


def test_psql_with_token(dbgov):
    res = dbgov.psql_run("carol", "SELECT 'hello from psql'", args=("-t", "-A"))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "hello from psql"


def test_psql_bad_token_message(dbgov):
    res = dbgov.psql_run("alice", "SELECT 1", password="garbage")
    assert res.returncode != 0
    assert "dbgov: token is not a well-formed JWT" in res.stderr


def test_token_issue_cli_prints_only_a_token(dbgov):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "dbgov",
            "token",
            "issue",
            "--user",
            "alice",
            "--group",
            "analysts",
            "--ttl",
            "1h",
            "--data-dir",
            str(dbgov.data_dir),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    token = out.strip()
    assert out.count("\n") == 1 and token.count(".") == 2
    with psycopg.connect(
        dbgov.dsn("carol")
        .replace(dbgov.token("carol"), token)
        .replace("user='carol'", "user='alice'")
    ) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def _forged(header: dict, payload: dict | None = None) -> str:
    import base64
    import json

    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(payload or {'sub': 'alice'})}.c2ln"


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "EdDSA", "kid": 7},  # PyJWT refuses a kid that is not a string
        {"alg": "EdDSA", "crit": ["exp"]},  # and critical extensions it does not know
        {"alg": "EdDSA", "crit": "x"},
    ],
    ids=["kid-not-a-string", "crit-unknown", "crit-not-a-list"],
)
def test_hostile_token_headers_are_refused_as_malformed(dbgov, header):
    with pytest.raises(psycopg.OperationalError) as exc:
        psycopg.connect(dbgov.dsn("alice", password=_forged(header)))
    assert "dbgov: token is not a well-formed JWT" in str(exc.value)
    assert "internal error" not in str(exc.value)
