"""Backpressure from the ledger (proxy/backpressure.py), through the real proxy.

The sequencer is stopped (SIGSTOP of the supervisor, whose thread it is) while one
statement, with 20 bind parameters of 60 KB, fills the journal past
`ledger.max_lag_mb`. Then:
- the worker says so in its log, and statements wait instead of running, on the
  session that filled the journal and on one that logs in afterwards;
- once the sequencer runs again both finish with their results, and the ledger
  holds every statement and verifies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import ROOT, Dbgov, start_beside, stop_dbgov

# One statement event of ~1.2 MB: past a 1 MiB bound at once, so the statement that
# crosses it is the last one read (a second could wait behind the stopped sequencer).
PARAMS = [f"{i:02d}" + "x" * 60_000 for i in range(20)]


@pytest.fixture
def bounded(dbgov: Dbgov, tmp_root: Path):
    root = tmp_root / f"backpressure-{os.urandom(3).hex()}"
    d = start_beside(dbgov, root, ledger={"mode": "strict", "max_lag_mb": 1})
    yield d
    stop_dbgov(d)


def _wait_for(predicate: Any, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_statements_wait_while_the_ledger_lags_and_all_are_audited(bounded: Dbgov) -> None:
    d = bounded
    results: dict[str, Any] = {}

    def later(name: str, conn: psycopg.Connection[Any] | None) -> None:
        try:
            if conn is not None:
                results[name] = conn.execute(f"SELECT '{name}'").fetchone()
                return
            with psycopg.connect(d.dsn("carol", "staging"), autocommit=True) as own:
                results[name] = own.execute(f"SELECT '{name}'").fetchone()
        except Exception as exc:  # reported by the assertions below
            results[name] = exc

    assert d.proc is not None
    with psycopg.connect(d.dsn("carol", "staging"), autocommit=True) as conn:
        conn.execute("SELECT 1")
        os.kill(d.proc.pid, signal.SIGSTOP)  # the supervisor: its sequencer thread stops
        try:
            sql = "SELECT " + " + ".join(["length(%s)"] * len(PARAMS))
            assert conn.execute(sql, PARAMS).fetchone() == (20 * 60_002,)
            _wait_for(lambda: "pausing client reads" in d.log(), "the worker to engage")
            threads = [
                threading.Thread(target=later, args=("same-session", conn)),
                threading.Thread(target=later, args=("new-session", None)),
            ]
            for t in threads:
                t.start()
            time.sleep(1.5)
            assert results == {}, "statements must wait while the ledger lags its bound"
            assert all(t.is_alive() for t in threads)
        finally:
            os.kill(d.proc.pid, signal.SIGCONT)
        for t in threads:
            t.join(30)
        assert results == {"same-session": ("same-session",), "new-session": ("new-session",)}

    evs = d.wait_events(lambda e: True, count=4, types=["statement"])
    assert [e.get("params") for e in evs if "length($1)" in e["sql"]] == [PARAMS]
    sqls = {e["sql"] for e in evs}
    assert {"SELECT 'same-session'", "SELECT 'new-session'"} <= sqls
    verify = subprocess.run(
        [sys.executable, "-m", "dbgov", "audit", "verify", "--data-dir", str(d.data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
