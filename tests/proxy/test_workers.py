"""Several worker processes sharing the port (issue: performance, functional tests).

- A CancelRequest lands on whichever worker the kernel picks; it still reaches the
  session's backend, wherever that session lives.
- 2,000 client connections are opened, held (a busy subset running queries),
  and closed cleanly.
- The ledger stays one verifiable total order after a multi-worker load.
- A worker killed outright takes only its own sessions: the supervisor records its
  exit in the ledger and starts a new worker in its slot, on the same port.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from conftest import Dbgov, start_beside, start_dbgov, stop_dbgov
from dbgov.proxy.cancel import worker_of
from dbgov.wire.postgres.messages import (
    PROTOCOL_3_0,
    Bind,
    CancelRequest,
    Execute,
    Parse,
    Query,
    StartupMessage,
    Sync,
)
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


def _one_session_per_worker(d: Dbgov) -> dict[int, RawClient]:
    """Sessions on both workers (the pid in BackendKeyData names the owner)."""
    by_worker: dict[int, RawClient] = {}
    spare = []
    for _ in range(40):
        c = _login(d)
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
    return by_worker


def test_cancel_reaches_the_owning_worker_from_any_worker(multi: Dbgov) -> None:
    by_worker = _one_session_per_worker(multi)
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
    multi.verify_ledger()


def _answer(c: RawClient, sql: str) -> bytes:
    c.send(Query(sql).encode())
    rows = [m.body for m in c.until_ready() if m.type == b"D"]
    assert len(rows) == 1
    return rows[0][6:]  # one column: count (2 bytes), length (4), value


def test_a_killed_worker_is_replaced_and_takes_only_its_own_sessions(multi: Dbgov) -> None:
    # Runs last in this module: it kills one of the shared instance's workers.
    by_worker = _one_session_per_worker(multi)
    pids = multi.worker_pids()
    victim, survivor = by_worker[1], by_worker[0]
    survivor.send(Query("BEGIN").encode())
    survivor.until_ready()
    marker = f"killed-{uuid.uuid4().hex[:8]}"
    victim.send(Query(f"SELECT pg_sleep(5), '{marker}'").encode())
    multi.wait_events(lambda e: marker in e.get("sql", ""), types=["statement"])
    os.kill(pids[1], signal.SIGKILL)

    with pytest.raises(ConnectionError):  # the dead worker's client sees its session end
        victim.send(Query("SELECT 1").encode())
        victim.until_ready()
    # The other worker's session carries on, inside its transaction.
    assert _answer(survivor, "SELECT 41 + 1") == b"42"
    survivor.send(Query("COMMIT").encode())
    survivor.until_ready()

    # A new worker takes slot 1 and serves the same port.
    deadline = time.monotonic() + 30
    while multi.worker_pids()[1] == pids[1] and time.monotonic() < deadline:
        time.sleep(0.1)
    new_pids = multi.worker_pids()
    assert new_pids[0] == pids[0] and new_pids[1] != pids[1]
    served = None
    while served is None and time.monotonic() < deadline:
        c = _login(multi)
        assert c.key is not None
        if worker_of(c.key.pid) == 1:
            served = c
        else:
            c.close()
    assert served is not None, "no login reached the new worker"
    assert _answer(served, "SELECT 6 * 7") == b"42"

    # The ledger says which worker died and how; the dashboard drops its sessions.
    (exit_ev,) = multi.wait_events(
        lambda e: e.get("pid") == pids[1], types=["proxy.worker_exit"], timeout=15
    )
    assert exit_ev["worker"] == 1 and exit_ev["exit"] == "killed by SIGKILL"
    opens = multi.wait_events(
        lambda e: e.get("worker_pid") == new_pids[1], types=["connection.open"], timeout=15
    )
    assert opens, "sessions of the new worker name its pid"
    opened = multi.events(types=["connection.open"])
    dead = {e["session"] for e in opened if e.get("worker_pid") == pids[1]}
    alive = {e["session"] for e in opens}
    r = httpx.get(
        f"http://127.0.0.1:{multi.web_port}/api/live/sessions",
        headers={"Authorization": f"Bearer {multi.token('dave')}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    listed = {s["session"] for s in r.json()["sessions"]}
    assert dead and not dead & listed
    assert alive & listed
    for c in (survivor, served):
        c.close()
    # Its statement in flight stays in the ledger, which still verifies.
    (stmt,) = multi.events(types=["statement"], text=marker)
    assert stmt["session"] in dead
    assert not multi.events(types=["statement.done"], ref=stmt["id"])
    multi.verify_ledger()


def test_a_worker_that_cannot_start_is_retried_while_the_others_serve(multi: Dbgov) -> None:
    # Runs after the test above, on the same instance. A replacement reads the config
    # afresh: broken, it cannot start, and the slot is retried with a growing backoff.
    pids = multi.worker_pids()
    argv = (Path("/proc") / str(pids[0]) / "cmdline").read_bytes().split(b"\0")
    config = Path(argv[argv.index(b"--config") + 1].decode())
    good = config.read_bytes()
    try:
        config.write_text("{ not a config")
        os.kill(pids[0], signal.SIGKILL)
        exits = multi.wait_events(
            lambda e: e.get("worker") == 0, types=["proxy.worker_exit"], timeout=20, count=3
        )
        assert len(exits) >= 3, "the broken replacement is started again, and fails again"
        assert exits[0]["exit"] == "killed by SIGKILL"
        assert exits[-1]["exit"].startswith("exited with status")
        assert exits[-1]["restart_in_ms"] > exits[0]["restart_in_ms"]
        # Meanwhile the other worker takes every client.
        for _ in range(5):
            c = _login(multi)
            assert c.key is not None and worker_of(c.key.pid) == 1
            assert _answer(c, "SELECT 1") == b"1"
            c.close()
    finally:
        config.write_bytes(good)
    deadline = time.monotonic() + 40
    served = False
    while not served and time.monotonic() < deadline:
        c = _login(multi)
        assert c.key is not None
        served = worker_of(c.key.pid) == 0
        c.close()
        time.sleep(0.1)
    assert served, "slot 0 serves again once its config is sound"


def test_a_stuck_worker_is_killed_and_replaced(dbgov: Dbgov, tmp_root: Path) -> None:
    # A worker that is alive but whose event loop no longer turns (here: SIGSTOP) serves
    # nobody; after `worker_stall_s` without a heartbeat it is killed and replaced.
    d = start_beside(dbgov, tmp_root / f"stall-{uuid.uuid4().hex[:6]}", 2, worker_stall_s=2)
    try:
        by_worker = _one_session_per_worker(d)
        pids = d.worker_pids()
        time.sleep(3)  # idle, yet alive: nobody is killed for waiting on clients
        assert d.worker_pids() == pids
        os.kill(pids[1], signal.SIGSTOP)
        (ev,) = d.wait_events(
            lambda e: e.get("pid") == pids[1], types=["proxy.worker_exit"], timeout=20
        )
        assert ev["worker"] == 1 and ev["exit"].startswith("stalled for ")
        assert _answer(by_worker[0], "SELECT 1") == b"1"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            c = _login(d)
            assert c.key is not None
            if worker_of(c.key.pid) == 1:
                assert _answer(c, "SELECT 2") == b"2"
                break
            c.close()
        else:
            pytest.fail("no login reached the replacement of the stuck worker")
    finally:
        stop_dbgov(d)


def test_a_statement_too_long_to_analyze_is_refused_without_freezing_the_worker(
    dbgov: Dbgov, tmp_root: Path
) -> None:
    # 80,000 ANDs (1.2 MB) took seconds to parse on the event loop, freezing every
    # session of the worker, and past worker_stall_s the supervisor killed it. Past
    # max_statement_chars (1 MiB) the statement is refused instead, before parsing.
    d = start_beside(dbgov, tmp_root / f"long-{uuid.uuid4().hex[:6]}", 1, worker_stall_s=2)
    try:
        pids = d.worker_pids()
        sender, other = _login(d), _login(d)
        chain = " AND ".join(f"id <> {-i}" for i in range(80_000))
        sender.send(Query(f"SELECT count(*) FROM customers WHERE {chain}").encode())
        err = error_of(sender.until_ready())
        assert err is not None and err.sqlstate == "42501"
        assert "the statement is longer than dbgov analyzes" in err.message
        assert (
            dict(err.fields)["H"]
            == "split the statement, or load bulk data with COPY ... FROM STDIN"
        )
        sender.send(
            Parse("", f"SELECT count(*) FROM customers WHERE {chain}").encode()
            + Bind("", "", (), (), ()).encode()
            + Execute("", 0).encode()
            + Sync().encode()
        )
        assert error_of(sender.until_ready()) is not None
        assert _answer(other, "SELECT 6 * 7") == b"42"
        assert _answer(sender, "SELECT 7 * 6") == b"42"  # the session goes on
        assert d.worker_pids() == pids
        assert not d.events(types=["proxy.worker_exit"])
        evs = d.wait_events(
            lambda e: "longer than dbgov analyzes" in e["decision"].get("reason", ""),
            types=["statement"],
            count=2,
        )
        assert len(evs) == 2  # the Query and the Parse, each in the ledger, refused
        assert all(e["sql"].startswith("SELECT count(*) FROM customers WHERE id <> 0") for e in evs)
        for c in (sender, other):
            c.close()
    finally:
        stop_dbgov(d)
