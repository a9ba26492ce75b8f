"""Several worker processes sharing the port (issue: performance, functional tests).

- A CancelRequest lands on whichever worker the kernel picks; it still reaches the
  session's backend, wherever that session lives.
- 2,000 client connections are opened, held (a busy subset running queries),
  and closed cleanly.
- The ledger stays one verifiable total order after a multi-worker load.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from conftest import ROOT, Dbgov, start_dbgov, stop_dbgov
from dbgov.proxy.cancel import worker_of
from dbgov.wire.postgres.messages import PROTOCOL_3_0, CancelRequest, Query, StartupMessage
from pgwire import RawClient, error_of


@pytest.fixture(scope="module")
def multi(tmp_root: Path):
    d = start_dbgov(tmp_root / "multi", "--max-connections", "2300", workers=2)
    yield d
    stop_dbgov(d)


def _login(d: Dbgov) -> RawClient:
    c = RawClient(d.host, d.port)
    msgs = c.startup("carol", "staging", d.token("carol"))
    assert msgs[-1].type == b"Z"
    return c


def test_cancel_reaches_the_owning_worker_from_any_worker(multi: Dbgov) -> None:
    # Sessions on both workers (the pid in BackendKeyData names the owner).
    by_worker: dict[int, RawClient] = {}
    spare = []
    for _ in range(40):
        c = _login(multi)
        assert c.key is not None
        w = worker_of(c.key.pid)
        if w in by_worker:
            spare.append(c)
        else:
            by_worker[w] = c
        if len(by_worker) == 2:
            break
    assert set(by_worker) == {0, 1}, "the kernel spreads connections over both workers"
    for c in spare:
        c.close()
    # Eight cancels: each lands on a random worker, so cross-worker routing is exercised
    # (the chance that none crossed is 1/256).
    for _round in range(4):
        for c in by_worker.values():
            assert c.key is not None
            c.send(Query("SELECT pg_sleep(20)").encode())
            time.sleep(0.3)
            s = socket.create_connection((multi.host, multi.port), 5)
            s.sendall(CancelRequest(c.key.pid, c.key.key).encode())
            s.close()
            err = error_of(c.until_ready())
            assert err is not None and err.sqlstate == "57014"
    for c in by_worker.values():
        c.close()


def test_two_thousand_connections(multi: Dbgov) -> None:
    token = multi.token("carol")
    startup = StartupMessage(PROTOCOL_3_0, {"user": "carol", "database": "staging"}).encode()
    errors: list[str] = []

    async def open_one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            reader, writer = await asyncio.open_connection(multi.host, multi.port)
            writer.write(startup)
            await writer.drain()
            head = await reader.readexactly(9)  # AuthenticationCleartextPassword
            if head[:1] != b"R":
                errors.append(f"unexpected {head!r}")
                return None
            pw = token.encode() + b"\x00"
            writer.write(b"p" + (len(pw) + 4).to_bytes(4, "big") + pw)
            await writer.drain()
            buf = b""
            while not buf.endswith(b"Z\x00\x00\x00\x05I"):
                chunk = await reader.read(4096)
                if not chunk:
                    errors.append("closed during login")
                    return None
                buf += chunk
            return reader, writer
        except (OSError, asyncio.IncompleteReadError) as exc:
            errors.append(repr(exc))
            return None

    async def query(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        reader, writer = conn
        writer.write(Query("SELECT count(*) FROM customers").encode())
        await writer.drain()
        buf = b""
        while not buf.endswith(b"Z\x00\x00\x00\x05I"):
            chunk = await reader.read(4096)
            if not chunk:
                errors.append("closed during query")
                return
            buf += chunk
        if b"5000" not in buf:
            errors.append(f"bad answer {buf[:80]!r}")

    async def main() -> int:
        conns = []
        for _wave in range(20):  # open in waves, as a connection storm would
            batch = await asyncio.gather(*(open_one() for _ in range(100)))
            conns.extend(c for c in batch if c is not None)
        held = len(conns)
        # A busy subset works while everyone else stays connected.
        for _ in range(3):
            await asyncio.gather(*(query(c) for c in conns[:200]))
        for _, writer in conns:
            writer.write(b"X\x00\x00\x00\x04")
            writer.close()
        await asyncio.gather(*(w.wait_closed() for _, w in conns), return_exceptions=True)
        return held

    held = asyncio.run(main())
    assert errors == []
    assert held == 2000
    # and the proxy is still fine afterwards
    with psycopg.connect(multi.dsn("carol", "staging")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_ledger_verifies_after_multi_worker_load(multi: Dbgov) -> None:
    run = uuid.uuid4().hex[:8]

    def load(n: int) -> None:
        with psycopg.connect(multi.dsn("carol", "staging"), autocommit=True) as conn:
            for i in range(100):
                conn.execute(
                    "INSERT INTO training_runs (model, started_at) VALUES (%s, now())",
                    (f"mw-{run}-{n}-{i}",),
                )

    threads = [threading.Thread(target=load, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    evs = multi.wait_events(
        lambda e: str(e.get("params", [""])[0]).startswith(f"mw-{run}-"),
        types=["statement"],
        timeout=30,
        count=600,
    )
    assert len(evs) == 600
    workers = {e["session"] for e in evs}
    assert len(workers) == 6
    opens = multi.events(types=["connection.open"])
    assert {e["worker"] for e in opens} == {0, 1}
    verify = subprocess.run(
        [
            sys.executable,
            "-m",
            "dbgov",
            "audit",
            "verify",
            "--data-dir",
            str(multi.data_dir),
            "--key",
            str(multi.data_dir / "keys" / "ledger.pub"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
