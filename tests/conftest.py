"""Shared fixtures: one real `dbgov up` (embedded PostgreSQL + demo world) per session.

Nothing is mocked: the proxy runs as the user would run it, in its own processes,
and tests talk to it with real clients (psql, pgbench, psycopg, asyncpg) or raw
protocol bytes. The embedded server runs with fsync off (`--fast`) for speed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Dbgov:
    """A running dbgov, as a test sees it."""

    data_dir: Path
    host: str
    port: int
    web_port: int
    state: dict[str, Any]
    proc: subprocess.Popen[bytes] | None = None
    _tokens: dict[tuple[str, tuple[str, ...]], str] = field(default_factory=dict)

    @property
    def admin_dsn(self) -> str:
        return str(self.state["admin_dsn"])

    @property
    def psql(self) -> str:
        return str(self.state["psql"])

    @property
    def pgbench(self) -> str:
        return str(self.state["pgbench"])

    def token(self, user: str, groups: list[str] | None = None, ttl: int = 3600) -> str:
        from dbgov.demo.world import IDENTITIES

        gs = tuple(groups if groups is not None else IDENTITIES.get(user, []))
        key = (user, gs)
        if ttl == 3600 and key in self._tokens:
            return self._tokens[key]
        from dbgov.identity.issuer import LocalIssuer

        issuer = LocalIssuer.from_file(
            self.data_dir / "keys" / "issuer.key", "dbgov-local", "dbgov"
        )
        tok = issuer.issue(user, list(gs), ttl)
        if ttl == 3600:
            self._tokens[key] = tok
        return tok

    def dsn(self, user: str, target: str = "prod", **extra: str) -> str:
        parts = {
            "host": self.host,
            "port": str(self.port),
            "user": user,
            "dbname": target,
            "password": self.token(user) if user != "etl" else self.etl_password(),
            "sslmode": "disable",
            "connect_timeout": "10",
        }
        parts.update(extra)
        return " ".join(f"{k}='{v}'" for k, v in parts.items())

    def app(self, sql: str, params: Any = None, target: str = "prod") -> list[tuple[Any, ...]]:
        """Run SQL directly as the upstream application role (owner of the demo tables)."""
        return self.admin(sql, params, target, user="dbgov_app")

    def etl_password(self) -> str:
        return (self.data_dir / "keys" / "etl.password").read_text().strip()

    def psql_run(
        self,
        user: str,
        sql: str,
        target: str = "prod",
        args: tuple[str, ...] = (),
        check: bool = False,
        password: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        env = dict(
            os.environ,
            PGPASSWORD=password
            if password is not None
            else (self.token(user) if user != "etl" else self.etl_password()),
            PGCONNECT_TIMEOUT="10",
        )
        cmd = [
            self.psql,
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-U",
            user,
            "-d",
            target,
            *args,
            "-c",
            sql,
        ]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        if check and res.returncode != 0:
            raise AssertionError(f"psql failed: {res.stderr}")
        return res

    def admin(
        self, sql: str, params: Any = None, target: str = "prod", user: str = "postgres"
    ) -> list[tuple[Any, ...]]:
        """Run SQL directly on the embedded server (superuser, bypassing dbgov)."""
        import psycopg

        dsn = self.admin_dsn.replace("dbname=postgres", f"dbname={target}")
        dsn = dsn.replace("user=postgres", f"user={user}")
        with psycopg.connect(dsn, autocommit=True) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def events(self, **filters: Any) -> list[dict[str, Any]]:
        """Ledger events (integrated), oldest first, waiting briefly for integration."""
        from dbgov.store.sqlite import LedgerStore

        store = LedgerStore(self.data_dir / "ledger" / "ledger.db", readonly=True)
        try:
            rows = store.search(limit=100_000, **filters)
            return [json.loads(r.body) for r in rows]
        finally:
            store.close()

    def worker_pids(self) -> list[int]:
        """The proxy workers' pids by slot, as `state.json` has them now."""
        state = json.loads((self.data_dir / "state.json").read_text())
        return [int(p) for p in state["workers"]]

    def journal_size(self, pid: int) -> int:
        """Bytes in the newest ledger journal segment of the worker `pid`."""
        segs = sorted((self.data_dir / "ledger" / "journal").glob(f"{pid}-*.jsonl"))
        assert segs, "the worker has a journal segment"
        return segs[-1].stat().st_size

    def log(self) -> str:
        """What this dbgov wrote to its log file (start_dbgov's)."""
        return (self.data_dir.parent / f"{self.data_dir.name}.log").read_text(errors="replace")

    def verify_ledger(self) -> None:
        """`dbgov audit verify` of this data dir, with its own key, passes."""
        verify = subprocess.run(
            [
                sys.executable,
                "-m",
                "dbgov",
                "audit",
                "verify",
                "--data-dir",
                str(self.data_dir),
                "--key",
                str(self.data_dir / "keys" / "ledger.pub"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr

    def wait_backend_kept(self, pid: int, target: str) -> None:
        """Until upstream backend `pid` has answered dbgov's DISCARD ALL: its session
        ended cleanly and the connection is kept for reuse (proxy/reuse.py)."""
        sql = "SELECT state, query FROM pg_stat_activity WHERE pid = %s"
        deadline = time.monotonic() + 10
        while (rows := self.admin(sql, (pid,), target)) != [("idle", "DISCARD ALL")]:
            assert time.monotonic() < deadline, f"backend {pid} was not reset for reuse: {rows}"
            time.sleep(0.02)
        time.sleep(0.05)  # the server reports idle a moment before dbgov reads it

    def wait_events(
        self, pred: Any, timeout: float = 10.0, count: int = 1, **filters: Any
    ) -> list[dict[str, Any]]:
        """Integrated events matching `pred`, once at least `count` are there (or timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            evs = [e for e in self.events(**filters) if pred(e)]
            if len(evs) >= count or time.monotonic() > deadline:
                return evs
            time.sleep(0.05)


def start_dbgov(data_dir: Path, *extra: str, workers: int = 1, config: Path | None = None) -> Dbgov:
    port, web_port = free_port(), free_port()
    cmd = [
        sys.executable,
        "-m",
        "dbgov",
        "up" if config is None else "proxy",
        "--data-dir",
        str(data_dir),
        "--workers",
        str(workers),
    ]
    if config is None:
        cmd += ["--fast", "--listen", f"127.0.0.1:{port}", "--web-listen", f"127.0.0.1:{web_port}"]
    else:
        cmd += ["--config", str(config)]
    cmd += list(extra)
    log = open(data_dir.parent / f"{data_dir.name}.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    state_path = data_dir / "state.json"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"dbgov exited early; see {log.name}:\n" + Path(log.name).read_text()[-3000:]
            )
        if state_path.exists():
            try:
                state = json.loads(state_path.read_text())
            except ValueError:
                state = None
            if state and state.get("pid") == proc.pid:
                host, _, p = str(state["proxy"]).rpartition(":")
                return Dbgov(data_dir, host, int(p), web_port, state, proc)
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("dbgov did not become ready in 90 s")


def start_beside(main: Dbgov, root: Path, workers: int = 1, **overrides: Any) -> Dbgov:
    """`dbgov proxy --config` on `main`'s embedded server, with a data dir of its own
    under `root`, no dashboard, and the config keys in `overrides` (`listen`'s merged)."""
    root.mkdir(parents=True, exist_ok=True)
    raw = json.loads((main.data_dir / "run" / "config.json").read_text())
    listen = {"proxy": f"127.0.0.1:{free_port()}", "web": None, "workers": workers}
    raw.update(
        data_dir=str(root / "data"), listen=listen | overrides.pop("listen", {}), **overrides
    )
    cfg = root / "dbgov.json"
    cfg.write_text(json.dumps(raw))
    return start_dbgov(root / "data", config=cfg, workers=workers)


def stop_dbgov(d: Dbgov) -> None:
    if d.proc is None or d.proc.poll() is not None:
        return
    d.proc.send_signal(signal.SIGINT)
    try:
        d.proc.wait(60)
    except subprocess.TimeoutExpired:
        d.proc.kill()
        d.proc.wait()


@pytest.fixture(scope="session")
def tmp_root() -> Iterator[Path]:
    # Under /tmp with open parents: the embedded server runs as another user when root.
    path = Path(tempfile.mkdtemp(prefix="dbgov-tests-"))
    path.chmod(0o755)
    yield path
    # Servers, ledgers and worlds take ~1.7 GB a run: left behind, repeated runs fill
    # the disk. DBGOV_KEEP_TEST_DIR=1 keeps them for a post-mortem.
    if not os.environ.get("DBGOV_KEEP_TEST_DIR"):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def dbgov(tmp_root: Path) -> Iterator[Dbgov]:
    d = start_dbgov(tmp_root / "main")
    yield d
    stop_dbgov(d)
