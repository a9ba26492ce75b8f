"""Upstream connection reuse (proxy/reuse.py): a session that ends cleanly leaves its
upstream connection, reset with DISCARD ALL, to the next session of the same
identity and target; nothing it did on the server is visible to that next session,
and other identities never get it.

The demo world runs one worker with the default `upstream_reuse_s` (10 s). Each test
waits until the server shows the kept backend idle after its DISCARD ALL
(`Dbgov.wait_backend_kept`).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg

from conftest import Dbgov
from dbgov.wire.postgres.messages import Query
from pgwire import RawClient, rows_of, types_of


def _backend(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


def _app_name(d: Dbgov, pid: int) -> str:
    """The application_name the server shows for backend `pid` (dbgov/<user>/<session>)."""
    ((name,),) = d.admin(
        "SELECT application_name FROM pg_stat_activity WHERE pid = %s", (pid,), "staging"
    )
    return str(name)


def _wait_gone(d: Dbgov, pid: int) -> None:
    deadline = time.monotonic() + 10
    while d.admin("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,), target="staging"):
        assert time.monotonic() < deadline, f"backend {pid} is still there"
        time.sleep(0.02)


def test_the_next_session_of_the_same_identity_gets_a_clean_upstream(dbgov: Dbgov) -> None:
    d = dbgov
    chan = f"reuse_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(d.dsn("carol", "staging"), autocommit=True) as conn:
        pid = _backend(conn)
        conn.execute("CREATE TEMP TABLE reuse_tmp (x int)")
        conn.execute("SET work_mem = '7777kB'")
        conn.execute("SELECT set_config('dbgov_test.leak', 'secret', false)")
        conn.execute("PREPARE reuse_p AS SELECT 1")
        conn.execute("DECLARE reuse_c CURSOR WITH HOLD FOR SELECT 1")
        conn.execute("SELECT pg_advisory_lock(424242)")
        conn.execute(f"LISTEN {chan}")
        first_app = _app_name(d, pid)
    d.wait_backend_kept(pid, "staging")

    with psycopg.connect(d.dsn("carol", "staging"), autocommit=True) as conn:
        assert _backend(conn) == pid, "the same identity's next session reuses the backend"
        one = conn.execute
        assert one("SELECT to_regclass('pg_temp.reuse_tmp')").fetchone() == (None,)
        assert one("SHOW work_mem").fetchone() != ("7777kB",)
        assert one("SELECT current_setting('dbgov_test.leak', true)").fetchone() in [(None,), ("",)]
        assert one("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)
        assert one("SELECT count(*) FROM pg_cursors").fetchone() == (0,)
        assert one("SELECT count(*) FROM pg_listening_channels()").fetchone() == (0,)
        assert one("SELECT current_user, session_user").fetchone() == ("dbgov_app", "dbgov_app")
        locks = d.admin(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s",
            (pid,),
            "staging",
        )
        assert locks == [(0,)]
        # The backend now names this session, not the one it was opened for.
        app = _app_name(d, pid)
        assert app.startswith("dbgov/carol/") and app != first_app
        session = app.rsplit("/", 1)[1]
    opened = d.wait_events(lambda e: True, types=["connection.open"], session=session)
    assert len(opened) == 1 and opened[0]["upstream_reused"] is True
    # dbgov's own statements on the shared backend are in the ledger: what ran for the
    # first session (set_config may change the search_path, so dbgov asked for it) and
    # the reset that ended it, then the rename that began the second.
    assert opened[0]["internal_sql"] == [f"SET application_name = '{app}'"]
    first = first_app.rsplit("/", 1)[1]
    closed = d.wait_events(lambda e: True, types=["connection.close"], session=first)
    assert len(closed) == 1
    assert closed[0]["internal_sql"] == ["SHOW search_path", "DISCARD ALL"]


def test_the_ledger_lists_what_dbgov_ran_on_the_upstream_for_a_session(dbgov: Dbgov) -> None:
    d = dbgov
    with psycopg.connect(d.dsn("carol", "staging"), autocommit=True) as conn:
        pid = _backend(conn)
        conn.execute("SET search_path = public")  # dbgov asks the server for the path
        conn.execute("SET search_path = public")  # again: listed once
        app = _app_name(d, pid)
    d.wait_backend_kept(pid, "staging")
    session = app.rsplit("/", 1)[1]
    opened = d.wait_events(lambda e: True, types=["connection.open"], session=session)
    closed = d.wait_events(lambda e: True, types=["connection.close"], session=session)
    assert len(opened) == 1 and len(closed) == 1
    assert closed[0]["internal_sql"] == ["SHOW search_path", "DISCARD ALL"]
    # A session that ends without a clean Terminate leaves no reset to list.
    conn = psycopg.connect(d.dsn("carol", "staging"))
    pid = _backend(conn)  # psycopg opened a transaction for it
    app = _app_name(d, pid)
    conn.close()  # Terminate with the transaction open: the upstream is closed, not reset
    _wait_gone(d, pid)
    closed = d.wait_events(
        lambda e: True, types=["connection.close"], session=app.rsplit("/", 1)[1]
    )
    assert len(closed) == 1 and "internal_sql" not in closed[0]


def test_other_identities_never_get_a_kept_upstream(dbgov: Dbgov) -> None:
    d = dbgov
    with psycopg.connect(d.dsn("carol", "staging"), autocommit=True) as conn:
        carol_pid = _backend(conn)
    d.wait_backend_kept(carol_pid, "staging")
    with psycopg.connect(d.dsn("erin", "staging"), autocommit=True) as conn:
        erin_pid = _backend(conn)
        assert erin_pid != carol_pid
    # Nor does the same identity with other upstream startup parameters.
    with psycopg.connect(d.dsn("carol", "staging", options="-c TimeZone=Asia/Tokyo")) as conn:
        assert _backend(conn) != carol_pid
    # Still kept for carol.
    with psycopg.connect(d.dsn("carol", "staging"), autocommit=True) as conn:
        assert _backend(conn) == carol_pid


def test_a_session_that_ends_inside_a_transaction_closes_its_upstream(dbgov: Dbgov) -> None:
    d = dbgov
    conn = psycopg.connect(d.dsn("carol", "staging"))
    pid = _backend(conn)  # psycopg opened a transaction for it
    conn.execute("SELECT pg_advisory_xact_lock(434343)")
    conn.close()  # Terminate with the transaction open
    _wait_gone(d, pid)
    with psycopg.connect(d.dsn("carol", "staging"), autocommit=True) as conn:
        assert _backend(conn) != pid


def test_a_kept_upstream_that_dies_while_idle_is_replaced(dbgov: Dbgov) -> None:
    d = dbgov
    with psycopg.connect(d.dsn("carol", "staging"), autocommit=True) as conn:
        pid = _backend(conn)
    d.wait_backend_kept(pid, "staging")
    d.admin("SELECT pg_terminate_backend(%s)", (pid,), "staging")
    _wait_gone(d, pid)
    with psycopg.connect(d.dsn("carol", "staging"), autocommit=True) as conn:
        assert _backend(conn) != pid
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_session_abandoned_mid_statement_closes_its_upstream(dbgov: Dbgov) -> None:
    d = dbgov
    raw = RawClient(d.host, d.port)
    raw.startup("carol", "staging", d.token("carol"))
    raw.send(Query("SELECT pg_backend_pid()").encode())
    ((pid,),) = rows_of(raw.until_ready())
    marker = f"abandoned-{uuid.uuid4().hex[:8]}"
    raw.send(Query(f"SELECT pg_sleep(30), '{marker}'").encode())
    deadline = time.monotonic() + 10
    sql = "SELECT state FROM pg_stat_activity WHERE pid = %s"
    while d.admin(sql, (int(pid or 0),), "staging") != [("active",)]:
        assert time.monotonic() < deadline, "the statement did not start"
        time.sleep(0.02)
    raw.close()  # no Terminate, the statement running: cancelled, and the backend closed
    _wait_gone(d, int(pid or 0))
    # The ledger says how it ended, before the session's close.
    (stmt,) = d.wait_events(lambda e: marker in e.get("sql", ""), types=["statement"])
    after = _after(d, stmt)
    assert [e["type"] for e in after] == ["statement.done", "connection.close"]
    assert after[0]["ref"] == stmt["id"] and after[0]["sqlstate"] == "57014"


def _after(d: Dbgov, ev: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of `ev`'s session that follow it, once its close is in the ledger."""
    evs = d.wait_events(
        lambda e: e["type"] == "connection.close", session=ev["session"], timeout=15
    )
    assert evs, "the session's close reached the ledger"
    ids = [e["id"] for e in d.events(session=ev["session"])]
    return d.events(session=ev["session"])[ids.index(ev["id"]) + 1 :]


def test_a_write_its_client_abandoned_is_in_the_ledger_as_it_ended(dbgov: Dbgov) -> None:
    # The client sends an INSERT and leaves at once, before any answer. dbgov cancels
    # it; whether the cancel or the INSERT came first, the ledger says which.
    d = dbgov
    for i in range(5):
        model = f"abandoned-{uuid.uuid4().hex[:8]}"
        raw = RawClient(d.host, d.port)
        raw.startup("carol", "staging", d.token("carol"))
        sql = f"INSERT INTO training_runs (model, started_at) VALUES ('{model}', now())"
        raw.send(Query(sql).encode())
        time.sleep(0.002 * i)
        raw.close()
        stmt = d.wait_events(lambda e, m=model: m in e.get("sql", ""), types=["statement"])[0]
        (done,) = [e for e in _after(d, stmt) if e["type"] == "statement.done"]
        assert done["ref"] == stmt["id"]
        rows = d.admin("SELECT count(*) FROM training_runs WHERE model = %s", (model,), "staging")
        if done["sqlstate"] == "00000":
            assert done["tags"] == ["INSERT 0 1"] and rows == [(1,)]
        else:
            assert done["sqlstate"] == "57014" and rows == [(0,)]


def test_a_statement_sent_right_after_login_on_a_kept_upstream_gets_only_its_answer(
    dbgov: Dbgov,
) -> None:
    d = dbgov
    with psycopg.connect(d.dsn("carol", "staging"), autocommit=True) as conn:
        pid = _backend(conn)
    d.wait_backend_kept(pid, "staging")
    raw = RawClient(d.host, d.port)
    try:
        raw.startup("carol", "staging", d.token("carol"), application_name="mine")
        assert raw.params["application_name"] == "mine"
        # Sent before the session's own SET application_name has been answered.
        raw.send(Query("SELECT pg_backend_pid(), current_setting('application_name')").encode())
        msgs = raw.until_ready()
        assert types_of(msgs) == b"TDCZ"  # nothing of the internal SET shows
        ((got_pid, app),) = rows_of(msgs)
        assert int(got_pid or 0) == pid
        assert (app or b"").startswith(b"dbgov/carol/")
    finally:
        raw.close()


def test_statements_sent_right_before_terminate_run_to_their_end(dbgov: Dbgov) -> None:
    # As on PostgreSQL: a client may send a statement and Terminate without waiting.
    # The statement is not cancelled; the ledger has its outcome, then the close.
    d = dbgov
    model = f"then-bye-{uuid.uuid4().hex[:8]}"
    raw = RawClient(d.host, d.port)
    raw.startup("carol", "staging", d.token("carol"))
    sql = (
        f"INSERT INTO training_runs (model, started_at) SELECT '{model}', now() FROM pg_sleep(0.3)"
    )
    raw.send(Query(sql).encode() + b"X\x00\x00\x00\x04")
    raw.close()
    stmt = d.wait_events(lambda e: model in e.get("sql", ""), types=["statement"])[0]
    after = _after(d, stmt)
    assert [e["type"] for e in after] == ["statement.done", "connection.close"]
    assert after[0]["sqlstate"] == "00000" and after[0]["tags"] == ["INSERT 0 1"]
    assert after[1]["reason"] == "client terminated"
    rows = d.admin("SELECT count(*) FROM training_runs WHERE model = %s", (model,), "staging")
    assert rows == [(1,)]
