"""Masked values are not ranked by the order rows come back in.

`SELECT email, count(*) FROM customers GROUP BY email` as alice returns pseudonyms;
in the server's order they would come sorted by the raw emails (a sort or an index)
or by an unkeyed hash of them (hash aggregation). Either order, matched against a
list of candidate emails, tells which pseudonym is whose. dbgov runs such a
statement as a subquery in random order, and says so in the ledger.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

GROUPED = "SELECT email, count(*) FROM customers GROUP BY email"


def _rows(dbgov: Any, user: str, sql: str, params: tuple[Any, ...] | None = None) -> list[Any]:
    with psycopg.connect(dbgov.dsn(user), autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


@pytest.mark.parametrize(
    ("sql", "params"),
    [
        (GROUPED, None),  # simple protocol
        (GROUPED + " HAVING count(*) >= %s", (1,)),  # extended: Parse, Bind, Execute
        ("SELECT DISTINCT full_name FROM customers", None),
        ("SELECT email FROM customers UNION SELECT email FROM customers", None),
    ],
)
def test_rows_grouped_by_a_pseudonym_come_back_in_random_order(
    dbgov: Any, sql: str, params: tuple[Any, ...] | None
) -> None:
    first = _rows(dbgov, "alice", sql, params)
    second = _rows(dbgov, "alice", sql, params)
    assert len(first) > 1000 and sorted(first) == sorted(second)  # the same rows
    assert first != second  # in another order: not the server's, which repeats
    raw = _rows(dbgov, "carol", sql, params)
    assert len(raw) == len(first) and not set(raw) & set(first)  # alice's are masked
    events = dbgov.wait_events(
        lambda e: e["sql"] == sql.replace("%s", "$1"), types=["statement"], user="alice"
    )
    assert events and all(e["random_order"] is True for e in events)
    assert not dbgov.events(types=["statement"], user="carol", text="random_order")


def test_ties_of_the_clients_own_order_come_back_in_random_order(dbgov: Any) -> None:
    """ORDER BY on an unmasked column is kept; among rows it ties (the same count) the
    server's order would follow the grouped names, so random() breaks the ties."""
    sql = "SELECT full_name, count(*) FROM customers GROUP BY 1 ORDER BY 2"
    first, second = _rows(dbgov, "alice", sql), _rows(dbgov, "alice", sql)
    for rows in (first, second):
        assert len(rows) > 1000 and [n for _, n in rows] == sorted(n for _, n in rows)
    assert first != second
    events = dbgov.wait_events(lambda e: e["sql"] == sql, types=["statement"], user="alice")
    assert events and events[-1]["random_order"] is True


def _twice(dbgov: Any, run: Any) -> tuple[list[Any], list[Any]]:
    out = []
    for _ in range(2):
        with psycopg.connect(dbgov.dsn("alice")) as conn:
            out.append(run(conn))
    return out[0], out[1]


def test_rows_a_cursor_or_a_prepared_statement_sends_come_in_random_order(dbgov: Any) -> None:
    def fetched(conn: psycopg.Connection[Any]) -> list[Any]:
        conn.execute(f"DECLARE c CURSOR FOR {GROUPED}")
        return conn.execute("FETCH ALL FROM c").fetchall()

    def executed(conn: psycopg.Connection[Any]) -> list[Any]:
        conn.execute(f"PREPARE p AS {GROUPED}", prepare=False)
        return conn.execute("EXECUTE p", prepare=False).fetchall()

    for run in (fetched, executed):
        first, second = _twice(dbgov, run)
        assert len(first) > 1000 and sorted(first) == sorted(second) and first != second


def test_copy_and_the_later_statements_of_a_string_send_rows_in_random_order(
    dbgov: Any,
) -> None:
    def copied(conn: psycopg.Connection[Any]) -> list[Any]:
        sql = "COPY (SELECT max(id) FROM customers GROUP BY email) TO STDOUT"
        with conn.cursor().copy(sql) as copy:
            return list(copy.rows())

    def second_statement(conn: psycopg.Connection[Any]) -> list[Any]:
        cur = conn.cursor()
        cur.execute(f"SELECT 1; {GROUPED}", prepare=False)  # simple protocol: one Query
        assert cur.nextset()
        return cur.fetchall()

    for run in (copied, second_statement):
        first, second = _twice(dbgov, run)
        assert len(first) > 1000 and sorted(first) == sorted(second) and first != second


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT DISTINCT country, full_name FROM customers ORDER BY country",
        "SELECT country, email FROM customers UNION SELECT country, email FROM customers "
        "ORDER BY country",
    ],
)
def test_an_order_that_random_ties_cannot_follow_is_refused(dbgov: Any, sql: str) -> None:
    """DISTINCT and UNION may only sort by their output: no random() to break the ties
    (LIMIT and OFFSET over masked groups are refused as sorting by the masked column)."""
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
        _rows(dbgov, "alice", sql)
    assert "deduplicated by masked columns (DISTINCT, UNION" in str(err.value)
    assert _rows(dbgov, "carol", sql), "unmasked, it runs"
