"""Strict mode's grouped journal writes (`ledger.group_siblings`).

On a busy worker, the statements one turn of the event loop forwards share one
journal write, and each still goes upstream only after that write. Here
`group_siblings: 0` groups as soon as one other session awaits an answer:
- concurrent sessions, simple and extended protocol, get their own answers, and
  every statement has its event and its completion in a ledger that verifies;
- when the grouped write fails, each statement it carried is refused with 58000
  and does not run, and the sessions go on once writing works again.
"""

from __future__ import annotations

import json
import resource
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from conftest import Dbgov, start_beside, stop_dbgov
from pgwire import RawClient, error_of, rows_of, types_of


@pytest.fixture(scope="module")
def grouped(dbgov: Dbgov, tmp_root: Path) -> Iterator[Dbgov]:
    main = json.loads((dbgov.data_dir / "run" / "config.json").read_text())
    ledger = {**main.get("ledger", {}), "group_siblings": 0}
    d = start_beside(dbgov, tmp_root / f"grouped-{uuid.uuid4().hex[:6]}", 1, ledger=ledger)
    yield d
    stop_dbgov(d)


def test_concurrent_sessions_get_their_answers_and_every_statement_is_audited(
    grouped: Dbgov,
) -> None:
    run = uuid.uuid4().hex[:8]
    failures: list[str] = []

    def simple(n: int) -> None:
        c = RawClient(grouped.host, grouped.port)
        c.startup("carol", "staging", grouped.token("carol"))
        for i in range(40):
            rows = rows_of(c.query(f"SELECT '{run}-s{n}-{i}'"))
            if rows != [(f"{run}-s{n}-{i}".encode(),)]:
                failures.append(f"simple {n}/{i}: {rows}")
        c.close()

    def extended(n: int) -> None:
        with psycopg.connect(grouped.dsn("carol", "staging"), autocommit=True) as conn:
            for i in range(40):
                got = conn.execute("SELECT %s::text || '-e' AS v", (f"{run}-{n}-{i}",)).fetchone()
                if got != (f"{run}-{n}-{i}-e",):
                    failures.append(f"extended {n}/{i}: {got}")

    threads = [threading.Thread(target=simple, args=(n,)) for n in range(4)]
    threads += [threading.Thread(target=extended, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures
    evs = grouped.wait_events(
        lambda e: run in e.get("sql", "") or any(run in str(p) for p in e.get("params") or []),
        count=320,
        types=["statement"],
    )
    assert len(evs) == 320
    ids = {e["id"] for e in evs}
    done = grouped.wait_events(lambda e: e.get("ref") in ids, count=320, types=["statement.done"])
    assert {e["ref"] for e in done} == ids
    assert all(e["sqlstate"] == "00000" for e in done)
    grouped.verify_ledger()


def test_a_failed_grouped_write_refuses_what_it_carried(grouped: Dbgov, dbgov: Dbgov) -> None:
    marker = f"grp-{uuid.uuid4().hex[:8]}"
    sleeper = psycopg.connect(grouped.dsn("carol", "staging"), autocommit=True)
    raw = RawClient(grouped.host, grouped.port)
    raw.startup("carol", "staging", grouped.token("carol"))
    with psycopg.connect(grouped.dsn("carol", "staging"), autocommit=True) as conn:
        conn.execute("SELECT 1")
        (pid,) = grouped.worker_pids()
        # A statement in flight on another session: the next ones are grouped.
        slow = threading.Thread(target=sleeper.execute, args=("SELECT pg_sleep(2)",))
        slow.start()
        deadline = time.monotonic() + 10
        while dbgov.app(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(2)'",
            target="staging",
        ) != [(1,)]:
            assert time.monotonic() < deadline, "the sleeper never started"
            time.sleep(0.05)
        old = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (grouped.journal_size(pid), old[1]))
        try:
            refused = raw.query(
                f"INSERT INTO training_runs (model, started_at) VALUES ('{marker}', now())"
            )
            err = error_of(refused)
            assert err is not None and err.sqlstate == "58000", refused
            assert types_of(refused) == b"EZ"
            with pytest.raises(errors.SystemError) as exc:
                conn.execute(
                    f"INSERT INTO training_runs (model, started_at) VALUES ('{marker}', now())"
                )
            assert exc.value.sqlstate == "58000"
        finally:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, old)
        slow.join(10)
        assert dbgov.app(
            "SELECT count(*) FROM training_runs WHERE model = %s", (marker,), target="staging"
        ) == [(0,)]
        # Writing works again: both sessions go on.
        assert rows_of(raw.query("SELECT 42")) == [(b"42",)]
        conn.execute(f"INSERT INTO training_runs (model, started_at) VALUES ('{marker}', now())")
    raw.close()
    sleeper.close()
    assert dbgov.app(
        "SELECT count(*) FROM training_runs WHERE model = %s", (marker,), target="staging"
    ) == [(1,)]
    grouped.verify_ledger()
