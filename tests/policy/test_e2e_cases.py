"""The policy table (tests/policy/cases.py) through the real proxy, with psycopg and psql.

Each case's SQL is sent by its identity to its target. What a user observes is
checked: a denial is ERROR 42501 naming the rule, and the tables the statement
would have written are unchanged in the database; a held statement sends the
"approval #N requested" NOTICE and is withdrawn by a cancel, changing nothing;
an allowed statement runs (inside a rolled-back transaction when it writes).
"""

from __future__ import annotations

import hashlib
import threading
import time

import psycopg
import pytest
from psycopg import errors

from dbgov.sql.analyze import analyze
from policy.cases import CASES, Case

# Allowed by the policy, refused by masking for identities that see masked data.
MASKING_DENIES = {
    "COPY customers TO STDOUT",
    "COPY (SELECT id, email FROM customers LIMIT 3) TO STDOUT",
}
MASKED_GROUPS = {"analysts", "ml-engineers"}
NO_TXN = (
    "CREATE INDEX CONCURRENTLY",
    "VACUUM",
    "REINDEX",
    "CHECKPOINT",
    "COMMIT PREPARED",
    "BEGIN",
    "ALTER SYSTEM",
    "DROP DATABASE",
    "CREATE DATABASE",
)


def _expected(case: Case) -> tuple[str, str | None]:
    masked = bool(set(case.groups) & MASKED_GROUPS)
    explains_masked = case.sql.upper().startswith("EXPLAIN") and any(
        t in case.sql for t in ("customers", "prompts")
    )
    if case.verdict == "allow" and masked and (case.sql in MASKING_DENIES or explains_masked):
        return "deny", "masking"
    return case.verdict, case.rule


def _snapshot(dbgov, case: Case) -> str:
    """A digest of every table the statement would write, plus the schema, read directly."""
    writes: set[str] = set()
    for stmt in analyze(case.sql).statements:
        writes |= {r.name for r in stmt.writes}
    digest = hashlib.sha256()
    for name in sorted(writes):
        rows = dbgov.app(
            "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM "
            f'public."{name}" t'
            if _exists(dbgov, case.target, name)
            else "SELECT 'absent'",
            target=case.target,
        )
        digest.update(f"{name}={rows[0][0]};".encode())
    schema = dbgov.app(
        "SELECT md5(string_agg(c.relname || ':' || c.relkind::text || ':' || "
        "coalesce(obj_description(c.oid), ''), ',' ORDER BY c.relname)) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public'",
        target=case.target,
    )
    digest.update(str(schema[0][0]).encode())
    return digest.hexdigest()


def _exists(dbgov, target: str, name: str) -> bool:
    return bool(
        dbgov.app(
            "SELECT 1 FROM pg_tables WHERE schemaname = 'public' AND tablename = %s",
            (name,),
            target=target,
        )
    )


def _ids(case: Case) -> str:
    return f"{case.user}@{case.target}:{case.sql[:60]}"


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_case_through_psycopg(dbgov, case: Case) -> None:
    verdict, rule = _expected(case)
    if verdict == "deny" and rule == "no-access":
        with pytest.raises(psycopg.OperationalError) as exc:
            psycopg.connect(dbgov.dsn(case.user, case.target))
        assert 'dbgov: denied by rule "no-access"' in str(exc.value)
        return
    before = _snapshot(dbgov, case) if case.changes_db and verdict != "allow" else None
    conn = psycopg.connect(dbgov.dsn(case.user, case.target), autocommit=True)
    try:
        if verdict == "deny":
            with pytest.raises(errors.InsufficientPrivilege) as exc:
                conn.execute(case.sql)
            assert str(exc.value).startswith(f'dbgov: denied by rule "{rule}"'), str(exc.value)
            assert exc.value.diag.message_hint, "denials carry a hint"
            # the session stays usable
            assert conn.execute("SELECT 1").fetchone() == (1,)
        elif verdict == "approval":
            _held_then_cancelled(conn, case)
        else:
            _allowed(conn, case)
    finally:
        conn.close()
    if before is not None:
        assert _snapshot(dbgov, case) == before, "a refused statement changed the database"


def _allowed(conn: psycopg.Connection, case: Case) -> None:
    upper = case.sql.upper()
    if case.changes_db and not any(upper.startswith(p) for p in NO_TXN):
        conn.execute("BEGIN")
        try:
            conn.execute(case.sql)
        finally:
            conn.execute("ROLLBACK")
    else:
        conn.execute(case.sql)


def _held_then_cancelled(conn: psycopg.Connection, case: Case) -> None:
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            conn.execute(case.sql)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 15
    while not any("approval #" in n for n in notices) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any("approval #" in n and "requested" in n for n in notices), notices
    conn.cancel()
    t.join(15)
    assert outcome and isinstance(outcome[0], errors.QueryCanceled), outcome


PSQL_SAMPLE = [
    c
    for i, c in enumerate(CASES)
    if i % 4 == 0 and c.verdict != "approval" and c.rule != "no-access" and not c.changes_db
]


@pytest.mark.parametrize("case", PSQL_SAMPLE, ids=_ids)
def test_case_through_psql(dbgov, case: Case) -> None:
    verdict, rule = _expected(case)
    res = dbgov.psql_run(case.user, case.sql, case.target)
    if verdict == "deny":
        assert res.returncode != 0
        assert f'ERROR:  dbgov: denied by rule "{rule}"' in res.stderr, res.stderr
        assert "HINT:" in res.stderr
    else:
        assert res.returncode == 0, res.stderr


def test_denial_is_on_the_ledger_with_rule_and_statement(dbgov) -> None:
    res = dbgov.psql_run("bob", "DELETE FROM feature_store", "prod")
    assert res.returncode != 0 and "unfiltered_write" in res.stderr
    evs = dbgov.wait_events(
        lambda e: (
            e.get("sql") == "DELETE FROM feature_store" and e["decision"]["verdict"] == "deny"
        ),
        types=["statement"],
    )
    assert evs and evs[-1]["decision"]["rule"] == "unfiltered_write" and evs[-1]["user"] == "bob"


def test_multi_statement_query_runs_nothing_when_one_is_denied(dbgov) -> None:
    marker = "multi-" + hashlib.sha256(str(time.time()).encode()).hexdigest()[:8]
    sql = (
        f"INSERT INTO training_runs (model, started_at) VALUES ('{marker}', now()); "
        "DELETE FROM feature_store"
    )
    res = dbgov.psql_run("bob", sql, "prod")
    assert res.returncode != 0
    assert "(statement 2: DELETE FROM feature_store)" in res.stderr
    assert dbgov.app("SELECT count(*) FROM training_runs WHERE model = %s", (marker,)) == [(0,)]


def test_pipelined_batch_with_a_denied_statement_commits_nothing(dbgov) -> None:
    marker = "pipe-" + hashlib.sha256(str(time.time()).encode()).hexdigest()[:8]
    with (
        psycopg.connect(dbgov.dsn("bob", "prod"), autocommit=True) as conn,
        pytest.raises(errors.InsufficientPrivilege),
        conn.pipeline(),
    ):
        conn.execute("INSERT INTO training_runs (model, started_at) VALUES (%s, now())", (marker,))
        conn.execute("DELETE FROM feature_store")
    assert dbgov.app("SELECT count(*) FROM training_runs WHERE model = %s", (marker,)) == [(0,)]


def test_prepare_execute_is_decided_at_execute(dbgov) -> None:
    with psycopg.connect(dbgov.dsn("alice", "prod"), autocommit=True) as conn:
        # Preparing a write is refused outright for alice.
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("PREPARE w AS DELETE FROM prompts WHERE id = 1")
        conn.execute("PREPARE r AS SELECT count(*) FROM prompts")
        assert conn.execute("EXECUTE r").fetchone()[0] >= 20000


def test_search_path_decides_which_table(dbgov) -> None:
    # bob may insert into public.feature_store; a schema he creates on staging and puts
    # first on his path must not let an unqualified name slip past the decision.
    with psycopg.connect(dbgov.dsn("bob", "prod"), autocommit=True) as conn:
        conn.execute("SET search_path = pg_temp, public")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DELETE FROM feature_store")
