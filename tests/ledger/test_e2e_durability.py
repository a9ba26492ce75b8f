"""Write-ahead audit through the real proxy: nothing runs unaudited.

- When the ledger journal cannot be written (the worker's file-size limit is hit,
  as on a full disk), statements are refused with 58000 and do not run; the proxy
  recovers by itself once writing works again.
- After a kill -9 of every dbgov process in the middle of an INSERT load, every row
  that reached the database has its statement event in the ledger, and after a
  restart the ledger verifies.
"""

from __future__ import annotations

import os
import resource
import signal
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from conftest import Dbgov, start_dbgov, stop_dbgov
from pgwire import RawClient, error_of, rows_of, types_of


@pytest.fixture
def own_dbgov(tmp_root: Path):
    d = start_dbgov(tmp_root / f"dur-{uuid.uuid4().hex[:6]}")
    yield d
    stop_dbgov(d)


def test_unwritable_ledger_refuses_with_58000_and_recovers(own_dbgov: Dbgov) -> None:
    d = own_dbgov
    marker = f"58k-{uuid.uuid4().hex[:8]}"
    simple = f"58s-{uuid.uuid4().hex[:8]}"
    raw = RawClient(d.host, d.port)
    raw.startup("carol", "staging", d.token("carol"))
    with psycopg.connect(d.dsn("carol", "staging"), autocommit=True) as conn:
        conn.execute("SELECT 1")
        (pid,) = d.worker_pids()
        size = d.journal_size(pid)
        old = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (size, old[1]))
        try:
            with pytest.raises(errors.SystemError) as exc:  # SQLSTATE 58000
                conn.execute(
                    f"INSERT INTO training_runs (model, started_at) VALUES ('{marker}', now())"
                )
            assert exc.value.sqlstate == "58000"
            assert str(exc.value).startswith("dbgov: the audit ledger cannot be written")
            # The simple protocol too (a statement waits for the loop's shared write).
            refused = raw.query(
                f"INSERT INTO training_runs (model, started_at) VALUES ('{simple}', now())"
            )
            err = error_of(refused)
            assert err is not None and err.sqlstate == "58000", refused
            assert types_of(refused) == b"EZ"
            # New sessions are refused too (their connection event cannot be written).
            with pytest.raises(psycopg.OperationalError, match="audit ledger"):
                psycopg.connect(d.dsn("carol", "staging"))
        finally:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, old)
        assert d.app(
            "SELECT count(*) FROM training_runs WHERE model = %s", (marker,), target="staging"
        ) == [(0,)]
        # Writing works again: the same sessions recover without a restart.
        conn.execute(f"INSERT INTO training_runs (model, started_at) VALUES ('{marker}', now())")
        assert rows_of(raw.query("SELECT 42")) == [(b"42",)]
        raw.close()
    assert d.app(
        "SELECT count(*) FROM training_runs WHERE model = %s", (marker,), target="staging"
    ) == [(1,)]
    assert d.app(
        "SELECT count(*) FROM training_runs WHERE model = %s", (simple,), target="staging"
    ) == [(0,)]
    # The refused attempt's event is written by the journal's next tick once the
    # limit is lifted, possibly a sequencer pass before the second one: wait for both.
    evs = d.wait_events(lambda e: marker in e.get("sql", ""), count=2, types=["statement"])
    assert len(evs) == 2  # the refused attempt and the one that ran
    done = d.wait_events(lambda e: e.get("ref") == evs[0]["id"], types=["statement.done"])
    assert done and done[0]["sqlstate"] == "58000"


def test_kill_9_during_inserts_loses_no_audit_event(tmp_root: Path) -> None:
    data = tmp_root / f"crash-{uuid.uuid4().hex[:6]}"
    d = start_dbgov(data, workers=2)
    run = uuid.uuid4().hex[:8]
    stop = threading.Event()
    errors_seen: list[str] = []

    def load(n: int) -> None:
        try:
            with psycopg.connect(d.dsn("carol", "staging"), autocommit=True) as conn:
                i = 0
                while not stop.is_set():
                    conn.execute(
                        f"INSERT INTO training_runs (model, started_at, rows_used) "
                        f"VALUES ('crash-{run}-{n}-{i}', now(), {i})"
                    )
                    i += 1
        except psycopg.Error as exc:
            errors_seen.append(str(exc))

    threads = [threading.Thread(target=load, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        n = d.app(
            "SELECT count(*) FROM training_runs WHERE model LIKE %s",
            (f"crash-{run}-%",),
            target="staging",
        )[0][0]
        if n >= 50:
            break
        time.sleep(0.1)
    # kill -9 every dbgov process at once, mid-load: the supervisor and its workers.
    victims = [d.proc.pid, *d.worker_pids()] if d.proc else d.worker_pids()
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    for t in threads:
        t.join(10)
    stop.set()
    for t in threads:
        t.join(30)
    assert errors_seen, "the load should have been cut off by the crash"
    # The embedded server died with dbgov (fast shutdown); restart everything.
    time.sleep(1)
    d2 = start_dbgov(data, workers=1)
    try:
        rows = {
            r[0]
            for r in d2.app(
                "SELECT model FROM training_runs WHERE model LIKE %s",
                (f"crash-{run}-%",),
                target="staging",
            )
        }
        assert len(rows) > 10, f"some inserts committed before the crash: {errors_seen[:3]}"
        evs = d2.wait_events(
            lambda e: f"crash-{run}-" in e.get("sql", ""), types=["statement"], timeout=20
        )
        audited = {e["sql"].split("'")[1] for e in evs}
        missing = rows - audited
        assert not missing, (
            f"{len(missing)} committed rows have no ledger event, e.g. {sorted(missing)[:3]}"
        )
        d2.verify_ledger()
    finally:
        stop_dbgov(d2)
