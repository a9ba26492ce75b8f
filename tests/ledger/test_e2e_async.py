"""`ledger.mode: async` through the real proxy: every statement and its completion
reach the ledger, in the session's order, even though async mode builds a
completion only once the loop is idle (or before the session's next event).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import Dbgov, start_dbgov, stop_dbgov


@pytest.fixture(scope="module")
def async_dbgov(tmp_root: Path) -> Iterator[Dbgov]:
    d = start_dbgov(tmp_root / f"async-{uuid.uuid4().hex[:6]}", "--ledger-mode", "async")
    yield d
    stop_dbgov(d)


def _number(event: dict[str, Any]) -> int:
    return int(str(event["id"]).rpartition(":")[2])


def test_completions_follow_their_statements_in_the_session_order(async_dbgov: Dbgov) -> None:
    d = async_dbgov
    marker = f"async_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(d.dsn("carol", "staging"), autocommit=True) as conn:
        for i in range(5):
            assert conn.execute(f"SELECT {i} AS {marker}").fetchone() == (i,)
    stmts = d.wait_events(lambda e: marker in e.get("sql", ""), count=5, types=["statement"])
    assert len(stmts) == 5
    session_id = stmts[0]["session"]
    closed = d.wait_events(lambda e: True, types=["connection.close"], session=session_id)
    assert len(closed) == 1
    evs = d.events(session=session_id)  # ledger order
    done_refs = [e.get("ref") for e in evs if e["type"] == "statement.done"]
    for s in stmts:
        assert done_refs.count(s["id"]) == 1, f"one completion for {s['id']}"
    # Each statement's completion comes right after it, before the next statement,
    # and the session's event numbers grow in ledger order.
    order = [e["id"] for e in evs]
    for s in stmts:
        done = next(e for e in evs if e.get("ref") == s["id"])
        assert order.index(done["id"]) == order.index(s["id"]) + 1
        assert done["sqlstate"] == "00000" and done["rows"] == [1]
        assert s["ts"] <= done["ts"]
    numbers = [_number(e) for e in evs]
    assert numbers == sorted(numbers)
    assert evs[-1]["type"] == "connection.close"


def test_an_idle_session_s_last_completion_is_written_without_more_traffic(
    async_dbgov: Dbgov,
) -> None:
    d = async_dbgov
    marker = f"idle_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(d.dsn("carol", "staging"), autocommit=True) as conn:
        # The answer comes after the journal has written and synced the statement's
        # event, so only the completion's own deferral can bring the next tick.
        conn.execute(f"SELECT pg_sleep(0.4), 1 AS {marker}")
        (stmt,) = d.wait_events(lambda e: marker in e.get("sql", ""), types=["statement"])
        # The session stays open and silent: the journal's tick writes the completion.
        done = d.wait_events(lambda e: e.get("ref") == stmt["id"], types=["statement.done"])
        assert len(done) == 1, "the completion reached the ledger while the session idled"
        assert not conn.closed


def test_bind_parameters_are_recorded_as_in_strict_mode(async_dbgov: Dbgov) -> None:
    """Async mode renders them after the statement went upstream; the event is the same:
    plain values as text, the policy's secret ones as keyed hashes."""
    d = async_dbgov
    marker = uuid.uuid4().hex
    email = d.app("SELECT email FROM customers WHERE id = 11")[0][0]
    with psycopg.connect(d.dsn("carol")) as conn:
        conn.execute(f"SELECT '{marker}'::text, %s::int", (5,))
        for _ in range(2):
            conn.execute("SELECT id FROM customers WHERE email = %s", (email,))
    (ev,) = d.wait_events(lambda e: marker in e.get("sql", ""), types=["statement"])
    assert ev["params"] == ["5"] and ev["protocol"] == "extended"
    evs = d.wait_events(
        lambda e: e.get("sql") == "SELECT id FROM customers WHERE email = $1",
        types=["statement"],
        count=2,
    )
    params = [e["params"][0] for e in evs[-2:]]
    assert all(p.startswith("hmac:") for p in params) and params[0] == params[1]
    assert email not in json.dumps(evs)
