"""Shared pieces for the approvals tests: a real SQLite control store in tmp, a clock
the test moves, identities as the token verifier would produce them, and an audit
sink that keeps what the service writes (encoded exactly as the ledger would)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from dbgov.approvals.jit import JitPolicy, parse_jit_grants
from dbgov.approvals.service import Approvals
from dbgov.config import Config, config_from_dict
from dbgov.identity import Identity
from dbgov.ledger import events
from dbgov.store.control import ControlStore


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingAudit:
    """The service's audit sink, keeping each event as the ledger would encode it."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.fail: OSError | None = None

    def write_ahead(self, type_: str, event_id: str, **fields: Any) -> OSError | None:
        if self.fail is not None:
            return self.fail
        self.events.append(json.loads(events.encode(events.base(type_, event_id, **fields))))
        return None

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def of(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == type_]


def ident(user: str, *groups: str, issuer: str = "dbgov-local") -> Identity:
    return Identity(user, frozenset(groups), "token", issuer)


BOB = ident("bob", "ml-engineers")
ALICE = ident("alice", "analysts")
CAROL = ident("carol", "dba")
ERIN = ident("erin", "dba")

JIT = [
    {
        "group": "writers",
        "targets": ["prod"],
        "requesters": ["ml-engineers"],
        "approvers": ["dba"],
        "quorum": 1,
        "max_duration": "4h",
    },
]


def make_config(data_dir: Path, **approvals: Any) -> Config:
    return config_from_dict(
        {
            "data_dir": str(data_dir),
            "targets": [
                {
                    "name": "prod",
                    "env": "production",
                    "host": "127.0.0.1",
                    "database": "prod",
                    "user": "app",
                },
                {
                    "name": "staging",
                    "env": "staging",
                    "host": "127.0.0.1",
                    "database": "staging",
                    "user": "app",
                },
            ],
            "approvals": {"validity_s": 3600, "default_timeout_s": 600, **approvals},
        }
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def audit() -> RecordingAudit:
    return RecordingAudit()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture
def svc(config: Config, audit: RecordingAudit, clock: Clock) -> Iterator[Approvals]:
    s = Approvals(
        config,
        ControlStore(config.data_dir / "control.db"),
        audit,
        jit=parse_jit_grants(JIT),
        clock=clock,
    )
    yield s
    s.close()


def other_process(
    config: Config, clock: Clock | None = None, jit: JitPolicy | None = None
) -> Approvals:
    """A second service over the same file, as the CLI or another worker would open."""
    return Approvals(
        config,
        ControlStore(config.data_dir / "control.db"),
        RecordingAudit(),
        jit=jit,
        **({"clock": clock} if clock else {}),
    )


def statement(
    svc: Approvals,
    who: Identity = BOB,
    *,
    target: str = "prod",
    sql: str = "UPDATE feature_store SET value = 0.5 WHERE customer_id = 7",
    params_hash: str = "p1",
    rule: str = "feature-edits-need-dba",
    quorum: int = 1,
    mode: str = "hold",
    timeout_s: float = 600,
    approvers: tuple[str, ...] = ("dba",),
    session: str | None = "s1",
):
    return svc.request_statement(
        who,
        target,
        sql=sql,
        fingerprint="fp1",
        params_hash=params_hash,
        params=None,
        tables=["public.feature_store"],
        rule=rule,
        reason="changes churn-v2 inputs",
        approvers=approvers,
        quorum=quorum,
        mode=mode,
        timeout_s=timeout_s,
        risk="high",
        session=session,
    )


ROOT = Path(__file__).resolve().parents[2]


def dbgov_cmd(
    *args: str, token: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = [sys.executable, "-m", "dbgov"]
    full_env = {k: v for k, v in os.environ.items() if k != "DBGOV_TOKEN"}
    full_env.update(env or {})
    if token is not None:
        full_env["DBGOV_TOKEN"] = token
    return subprocess.run(
        [*base, *args], capture_output=True, text=True, env=full_env, cwd=ROOT, timeout=60
    )


class Hook:
    """A Slack-like endpoint: records each POST, answers with the next queued status."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.delay_s = 0.0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(hook.delay_s)
                status = hook.statuses.pop(0) if hook.statuses else 200
                hook.received.append(
                    {
                        "status": status,
                        "type": self.headers["Content-Type"],
                        "json": json.loads(body),
                    }
                )
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
