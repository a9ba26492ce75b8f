"""Production mode: `dbgov proxy --config`, config errors, OIDC tokens, client
certificates and upstream TLS, against the embedded server of the `dbgov` fixture."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jwt
import psycopg
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from conftest import ROOT, free_port, start_dbgov, stop_dbgov
from dbgov.config import ConfigError, load_config

# ------------------------------------------------------------------ config errors


def _run_proxy(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dbgov", "proxy", "--config", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("targets: [\n  - name: x\n", "not valid YAML"),
        ("targets: []\n", "targets: Tuple should have at least 1 item"),
        (
            "targets:\n  - {name: p, host: h, database: d, user: u, tls: maybe}\n",
            "targets[0].tls: Input should be 'disable', 'require' or 'verify-full'",
        ),
        (
            "targets:\n  - {name: p, host: h, database: d, user: u, tls: verify-full}\n",
            "targets[0]: tls: verify-full needs ca:",
        ),
        (
            "targets:\n  - {name: p, host: h, database: d, user: u, passwrd: x}\n",
            "targets[0].passwrd: Extra inputs are not permitted",
        ),
        (
            "targets:\n  - {name: p, host: h, database: d, user: u, port: 99999}\n",
            "targets[0].port: Input should be less than or equal to 65535",
        ),
        (
            "listen: {proxy: nowhere}\ntargets:\n  - {name: p, host: h, database: d, user: u}\n",
            "listen.proxy: expected HOST:PORT",
        ),
        (
            "targets:\n  - {name: p, host: h, database: d, user: u}\n  - {name: p, host: h, "
            "database: d, user: u}\n",
            "target names must be unique",
        ),
        (
            "ledger: {max_lag_mb: 0}\ntargets:\n  - {name: p, host: h, database: d, user: u}\n",
            "ledger.max_lag_mb: Input should be greater than or equal to 1",
        ),
        (
            "worker_stall_s: -1\ntargets:\n  - {name: p, host: h, database: d, user: u}\n",
            "worker_stall_s: Input should be greater than or equal to 0",
        ),
        (
            "identity:\n  oidc:\n    - {name: c, issuer: i, audience: a, jwks_url: http://x}\n"
            "targets:\n  - {name: p, host: h, database: d, user: u}\n",
            "identity.oidc[0]: jwks_url must be an https:// URL",
        ),
    ],
)
def test_config_errors_name_file_key_and_problem(tmp_path, text, expected):
    path = tmp_path / "dbgov.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(path) in str(exc.value)
    assert expected in str(exc.value)
    res = _run_proxy(path)
    assert res.returncode == 1
    assert expected in res.stderr


def test_example_config_is_valid():
    cfg = load_config(ROOT / "examples" / "dbgov.yaml")
    assert [t.name for t in cfg.targets] == ["prod", "staging"]
    assert cfg.target("prod").tls == "verify-full"


def test_missing_password_env_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("NOPE_PASSWORD", raising=False)
    path = tmp_path / "c.yaml"
    path.write_text(
        "targets:\n  - {name: p, host: h, database: d, user: u, password_env: NOPE_PASSWORD}\n"
    )
    cfg = load_config(path)
    with pytest.raises(ConfigError, match="NOPE_PASSWORD is not set"):
        cfg.target("p").password()


# ------------------------------------------------------------------ a production proxy


def _ca(tmp: Path, name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(ca_key, ca_cert, subject: x509.Name, sans: list[x509.GeneralName], client: bool):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
    )
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    usage = (
        x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH
        if client
        else x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
    )
    b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return key, b.sign(ca_key, hashes.SHA256())


def _pem(obj) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _hba_roles(dbgov) -> dict[str, str]:
    """Roles that log in upstream with md5, cleartext and trust (pg_hba lines first)."""
    pgdata = dbgov.data_dir / "pg" / "data"
    hba = pgdata / "pg_hba.conf"
    text = hba.read_text()
    marker = "# dbgov tests\n"
    if marker not in text:
        lines = (
            marker + "host all up_md5 127.0.0.1/32 md5\n"
            "host all up_clear 127.0.0.1/32 password\n"
            "host all up_trust 127.0.0.1/32 trust\n"
        )
        hba.write_text(lines + text)
    pw = {"up_md5": "md5-secret", "up_clear": "clear-secret", "up_trust": ""}
    for role, secret in pw.items():
        if not dbgov.admin("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)):
            enc = "md5" if role == "up_md5" else "scram-sha-256"
            import psycopg as _pg

            dsn = dbgov.admin_dsn
            with _pg.connect(dsn, autocommit=True) as conn:
                conn.execute(f"SET password_encryption = '{enc}'")
                conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{secret or 'unused'}'")
                conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
            dbgov.admin(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}", target="staging")
            dbgov.admin(f"GRANT CONNECT ON DATABASE staging TO {role}")
    dbgov.admin("SELECT pg_reload_conf()")
    time.sleep(0.3)
    return pw


@pytest.fixture(scope="module")
def prod_proxy(dbgov, tmp_root):
    """A `dbgov proxy --config` in production mode, with OIDC (JWKS file), client
    certificates, and targets that log in upstream with SCRAM, md5, cleartext, trust
    and over TLS with verify-full (the embedded server's build has no TLS, so that
    target is the first dbgov's own TLS listener: client -> dbgov -> TLS -> dbgov)."""
    work = tmp_root / "prodmode"
    work.mkdir()
    work.chmod(0o755)
    secrets = _hba_roles(dbgov)
    cca_key, cca_cert = _ca(work, "test client CA")
    (work / "clients-ca.crt").write_bytes(_pem(cca_cert))
    cl_key, cl_cert = _leaf(
        cca_key,
        cca_cert,
        x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, "carol"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "dba"),
            ]
        ),
        [],
        client=True,
    )
    (work / "carol.crt").write_bytes(_pem(cl_cert))
    (work / "carol.key").write_bytes(_pem(cl_key))
    os.chmod(work / "carol.key", 0o600)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    jwk.update({"kid": "k1", "use": "sig", "alg": "RS256"})
    (work / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    (work / "clear.pw").write_text(secrets["up_clear"])
    cert, key = dbgov.data_dir / "tls" / "server.crt", dbgov.data_dir / "tls" / "server.key"
    pg_port = dbgov.state["embedded_port"]
    port = free_port()

    def target(name: str, user: str, **kw) -> dict:
        return {
            "name": name,
            "env": "staging",
            "host": "127.0.0.1",
            "port": pg_port,
            "database": "staging",
            "user": user,
            **kw,
        }

    cfg = {
        "data_dir": str(work / "data"),
        "listen": {"proxy": f"127.0.0.1:{port}", "web": None, "workers": 1},
        "tls": {"cert": str(cert), "key": str(key), "client_ca": str(work / "clients-ca.crt")},
        "targets": [
            target(
                "plain",
                "dbgov_app",
                password_file=str(dbgov.data_dir / "keys" / "upstream.password"),
            ),
            target("md5", "up_md5", password_env="TEST_MD5_PW"),
            target("clear", "up_clear", password_file=str(work / "clear.pw")),
            target("trust", "up_trust"),
            {
                "name": "chained",
                "env": "production",
                "host": "127.0.0.1",
                "port": dbgov.port,
                "database": "prod",
                "user": "carol",
                "password_env": "TEST_CHAIN_TOKEN",
                "tls": "verify-full",
                "ca": str(cert),
            },
        ],
        "identity": {
            "oidc": [
                {
                    "name": "corp",
                    "issuer": "https://idp.example",
                    "audience": "dbgov",
                    "jwks_file": str(work / "jwks.json"),
                    "groups_claim": "roles",
                    "algorithms": ["RS256"],
                }
            ],
            "client_certs": {"enabled": True},
        },
        "ledger": {"mode": "fsync"},
    }
    (work / "dbgov.yaml").write_text(yaml.safe_dump(cfg))
    os.environ["TEST_MD5_PW"] = secrets["up_md5"]
    os.environ["TEST_CHAIN_TOKEN"] = dbgov.token("carol", ttl=7200)
    d = start_dbgov(work / "data", config=work / "dbgov.yaml")
    d.rsa_key = rsa_key  # type: ignore[attr-defined]
    d.work = work  # type: ignore[attr-defined]
    yield d
    stop_dbgov(d)


def _oidc_token(key, user: str, **over) -> str:
    now = int(time.time())
    claims = {
        "iss": "https://idp.example",
        "aud": "dbgov",
        "sub": user,
        "roles": ["dba"],
        "iat": now,
        "exp": now + 300,
        **over,
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})


def _oidc_dsn(prod_proxy, target: str, user: str = "carol") -> str:
    tok = _oidc_token(prod_proxy.rsa_key, user)
    return (
        f"host=127.0.0.1 port={prod_proxy.port} user={user} dbname={target} "
        f"password={tok} sslmode=require"
    )


@pytest.mark.parametrize("target", ["plain", "md5", "clear", "trust"])
def test_upstream_auth_methods(prod_proxy, target):
    with psycopg.connect(_oidc_dsn(prod_proxy, target)) as conn:
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (5000,)
    opens = prod_proxy.wait_events(
        lambda e: e["user"] == "carol" and e["target"] == target, types=["connection.open"]
    )
    assert opens and opens[-1]["auth"] == "oidc" and opens[-1]["groups"] == ["dba"]


def test_upstream_tls_verify_full(prod_proxy, dbgov):
    with psycopg.connect(_oidc_dsn(prod_proxy, "chained")) as conn:
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (5000,)
    # The inner dbgov saw a TLS connection from the outer one.
    opens = dbgov.wait_events(
        lambda e: e["user"] == "carol" and e.get("tls"), types=["connection.open"]
    )
    assert opens


def test_oidc_wrong_key_refused(prod_proxy):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tok = _oidc_token(other, "carol")
    with pytest.raises(psycopg.OperationalError, match="bad signature"):
        psycopg.connect(
            f"host=127.0.0.1 port={prod_proxy.port} user=carol dbname=plain "
            f"password={tok} sslmode=require"
        )


def test_oidc_hs256_with_public_key_refused(prod_proxy):
    pub = prod_proxy.rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    import base64
    import hashlib
    import hmac

    def b64(d: bytes) -> str:
        return base64.urlsafe_b64encode(d).decode().rstrip("=")

    header = b64(json.dumps({"alg": "HS256", "kid": "k1"}).encode())
    body = b64(
        json.dumps(
            {
                "iss": "https://idp.example",
                "aud": "dbgov",
                "sub": "carol",
                "exp": int(time.time()) + 300,
            }
        ).encode()
    )
    sig = b64(hmac.new(pub, f"{header}.{body}".encode(), hashlib.sha256).digest())
    with pytest.raises(psycopg.OperationalError, match="algorithm HS256 not allowed"):
        psycopg.connect(
            f"host=127.0.0.1 port={prod_proxy.port} user=carol dbname=plain "
            f"password={header}.{body}.{sig} sslmode=require"
        )


def test_client_certificate_identity(prod_proxy):
    w = prod_proxy.work
    dsn = (
        f"host=127.0.0.1 port={prod_proxy.port} user=carol dbname=plain sslmode=require "
        f"sslcert={w / 'carol.crt'} sslkey={w / 'carol.key'}"
    )
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    opens = prod_proxy.wait_events(lambda e: e.get("auth") == "cert", types=["connection.open"])
    assert opens and opens[-1]["groups"] == ["dba"]


def test_plaintext_token_refused_off_loopback_but_tls_works(prod_proxy):
    # Loopback clients may send tokens in plaintext; TLS always works.
    tok = _oidc_token(prod_proxy.rsa_key, "carol")
    with psycopg.connect(
        f"host=127.0.0.1 port={prod_proxy.port} user=carol dbname=plain "
        f"password={tok} sslmode=disable"
    ) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
