"""The demo world of `dbgov up`: targets, identities and the config that ties them.

Two targets on the embedded server, `prod` (production) and `staging`, same
schema and data (staging is a template copy of prod). Identities come from the
local issuer; `etl` is a SCRAM service account whose password is generated into
the data dir. DESIGN.md, "The demo world", is the spec.
"""

from __future__ import annotations

import secrets
import time
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg

from dbgov.demo.embedded import APP_ROLE, EmbeddedPostgres, ServerInfo
from dbgov.durable import write_atomic, write_private
from dbgov.identity.scram import make_verifier
from dbgov.layout import Layout
from dbgov.proxy.tls import ensure_self_signed

IDENTITIES: dict[str, list[str]] = {
    "alice": ["analysts"],
    "bob": ["ml-engineers"],
    "carol": ["dba"],
    "erin": ["dba"],
    "dave": ["auditors"],
}
SERVICE_ACCOUNT = ("etl", ["pipelines"])
TARGETS = (("prod", "production"), ("staging", "staging"))


def demo_policy_path() -> Path:
    return Path(str(resources.files("dbgov.demo") / "policy.yaml"))


def seed(server: EmbeddedPostgres, info: ServerInfo) -> float:
    """Create prod (demo data) and staging (a template copy). Returns seconds spent."""
    from dbgov.demo.dataset import load

    t0 = time.monotonic()
    with psycopg.connect(info.admin_dsn(), autocommit=True) as conn:
        for db in ("prod", "staging"):
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE prod OWNER "{APP_ROLE}"')
    load(f"host={info.socket_dir} port={info.port} user={APP_ROLE} dbname=prod")
    with psycopg.connect(info.admin_dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE staging TEMPLATE prod OWNER "{APP_ROLE}"')
    server.mark_seeded()
    return time.monotonic() - t0


def etl_credentials(layout: Layout) -> tuple[str, str]:
    """(password, SCRAM verifier) of the demo service account, created once."""
    pw_path = layout.keys / "etl.password"
    if not pw_path.exists():
        write_private(pw_path, secrets.token_urlsafe(18).encode())
    password = pw_path.read_text().strip()
    ver_path = layout.keys / "etl.scram"
    if not ver_path.exists():
        write_atomic(ver_path, make_verifier(password).encode())
    return password, ver_path.read_text().strip()


def embedded_config(
    layout: Layout,
    info: ServerInfo,
    *,
    listen: str,
    web: str | None,
    workers: int,
    ledger_mode: str = "strict",
    policy: Path | None = None,
) -> dict[str, Any]:
    cert, key = ensure_self_signed(layout.tls)
    _, verifier = etl_credentials(layout)
    password_file = layout.keys / "upstream.password"
    return {
        "data_dir": str(layout.root),
        "listen": {"proxy": listen, "web": web, "workers": workers},
        "tls": {"cert": str(cert), "key": str(key)},
        "targets": [
            {
                "name": name,
                "env": env,
                "host": "127.0.0.1",
                "port": info.port,
                "database": name,
                "user": APP_ROLE,
                "password_file": str(password_file),
            }
            for name, env in TARGETS
        ],
        "identity": {
            "service_accounts": [
                {"name": SERVICE_ACCOUNT[0], "groups": SERVICE_ACCOUNT[1], "scram": verifier}
            ]
        },
        "policy": str(policy or demo_policy_path())
        if (policy or demo_policy_path().exists())
        else None,
        "ledger": {"mode": ledger_mode},
    }
