"""The bypass suite: queries that try to read masked values through the real proxy.

alice (analysts) and bob (ml-engineers) see customers' names and emails
pseudonymized, phones partial, SSNs redacted and PII inside prompt texts replaced.
Each query below is run through `dbgov up` with psycopg in text and in binary
result format (and some with the raw protocol or asyncpg); the outcome must be
either a 42501 denial or a result in which no raw value of a masked column
appears: every byte received (values as they came off the wire, decoded values,
error and notice fields) is scanned for every raw name, email, phone and SSN of
the customers table, read directly from the database, and for the names, emails,
phones, SSNs and card numbers the demo generator pasted into prompts (`e2e_kit`).

Each case also states which of the two outcomes is expected, so that a query that
should work (and be masked) does not silently turn into a denial, and a query
that must be refused (an inference through a predicate, an error oracle) is.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import psycopg
import pytest

from dbgov.wire.postgres.messages import (
    Bind,
    Close,
    Describe,
    Execute,
    Parse,
    Query,
    RowDescription,
    Sync,
)
from masking.e2e_kit import Forbidden, RawData, error_text, load_raw, pgresult_bytes
from pgwire import RawClient, error_of, rows_of, types_of

pytestmark = pytest.mark.usefixtures("dbgov")

DENY, MASK, EITHER = "deny", "mask", "either"


@dataclass(frozen=True)
class Q:
    sql: str
    expect: str

    def __str__(self) -> str:
        return self.sql


# fmt: off
ALICE_CASES = [
    # -- aliases, qualification, casts
    Q("SELECT email AS e, c.full_name AS n, phone, ssn FROM customers c", MASK),
    Q("SELECT x.b, x.c, x.d, x.e FROM customers AS x(a, b, c, d, e)", MASK),
    Q("TABLE customers", MASK),
    Q("SELECT * FROM ONLY public.customers", MASK),
    Q("SELECT * FROM prod.public.customers TABLESAMPLE SYSTEM (50)", MASK),
    Q("SELECT email::varchar(100), ssn::text, full_name::name, phone::bpchar FROM customers",
      MASK),
    Q('SELECT email COLLATE "C", (ssn), ((phone)) FROM customers', MASK),
    Q("SELECT CAST(ssn AS bytea) FROM customers", DENY),
    # a count of a computed value is a NULL oracle, through a subquery or CTE too
    Q("SELECT count(s) FROM (SELECT substring(ssn from '^5') AS s FROM customers "
      "WHERE id = 2) x", MASK),
    Q("SELECT x.id, count(x.s) FROM (SELECT id, substring(full_name from '^D') AS s "
      "FROM customers) x GROUP BY x.id", MASK),
    Q("SELECT count(DISTINCT ssn) FROM customers WHERE id IN (2, 3)", DENY),
    # paging through groups of a pseudonymized column would rank the raw values
    Q("SELECT email, min(id) FROM customers GROUP BY email LIMIT 10 OFFSET 1000", DENY),
    Q("SELECT DISTINCT full_name FROM customers LIMIT 10", DENY),
    Q("SELECT email FROM customers UNION SELECT email FROM customers LIMIT 10", DENY),
    Q("SELECT email, count(*) FROM customers GROUP BY email", MASK),
    Q("SELECT country, count(*) FROM customers GROUP BY country LIMIT 3", MASK),
    # row counts that depend on masked values
    Q("SELECT (SELECT count(*) FROM prompts TABLESAMPLE BERNOULLI (ascii(substr(c.ssn, 1, 1))) "
      "REPEATABLE (7)) FROM customers c WHERE c.id = 2", DENY),
    Q("SELECT count(*) FROM customers c, JSON_TABLE(to_jsonb(substr(c.email, 1, 1)), "
      "'$ ? (@ > $t)' PASSING 'm' AS t COLUMNS (v text PATH '$')) jt WHERE c.id = 3", DENY),
    Q("WITH RECURSIVE r(s, n, cand) AS (SELECT ssn, 1, NULL::text FROM customers WHERE id = 3 "
      "UNION ALL SELECT '738-91-1515', n + 1, '738-91-1515' FROM r WHERE n < 2) "
      "CYCLE s SET is_cycle USING path SELECT cand FROM r WHERE is_cycle", DENY),
    # other sessions' statement texts (every proxied session shares the upstream role)
    Q("SELECT pg_stat_get_backend_activity(b) FROM pg_stat_get_backend_idset() b", DENY),
    Q("SELECT a.query FROM pg_stat_get_activity(NULL) a", DENY),
    Q("SELECT * FROM pg_catalog.pg_stat_get_activity(pg_backend_pid())", DENY),
    Q("SELECT ssn::int FROM customers", DENY),
    Q("SELECT email::json FROM customers", DENY),
    # -- expressions
    Q("SELECT upper(email), lower(full_name), initcap(full_name), reverse(ssn) FROM customers",
      MASK),
    Q("SELECT 'x' || email || 'y', concat(email, phone), concat_ws(',', ssn, phone), "
      "format('%s', ssn) FROM customers", MASK),
    Q("SELECT substr(ssn, 1, 3), left(email, 5), right(phone, 8), split_part(email, '@', 1) "
      "FROM customers", MASK),
    # a partial mask on a computed value would show what the query moved to the end
    Q("SELECT substr(phone, 1, 4), substr(phone, 5, 4), substr(phone, 9) FROM customers", MASK),
    Q("SELECT replace(ssn, '-', ''), translate(phone, '0123456789', 'abcdefghij'), "
      "btrim(email, 'a') FROM customers", MASK),
    Q("SELECT COALESCE(ssn, 'none'), CASE WHEN id > 0 THEN ssn END, GREATEST(email, full_name) "
      "FROM customers", MASK),
    Q("SELECT length(email), ascii(ssn), octet_length(full_name), position('@' in email) "
      "FROM customers", MASK),
    # chosen plaintext: a pseudonym of a literal would be compared with real tokens
    Q("SELECT CASE WHEN false THEN email ELSE 'diego_martinez@example.org' END FROM customers",
      MASK),
    Q("SELECT email FROM customers UNION ALL SELECT 'diego_martinez@example.org'", MASK),
    # NULL-ness of a computed value answers a question about the value
    Q("SELECT id, substring(ssn from '^9'), upper(ssn) FROM customers", MASK),
    Q("SELECT id, nullif(length(ssn), 11) FROM customers", DENY),
    Q("SELECT id, count(substring(ssn from '^9')) FROM customers GROUP BY id", MASK),
    # -- whole rows and JSON
    Q("SELECT c FROM customers c", MASK),
    Q("SELECT c::text, (c).*, (c).ssn FROM customers c", MASK),
    Q("SELECT row_to_json(c), to_jsonb(c), to_json(c.*) FROM customers c", MASK),
    Q("SELECT json_build_object('e', email, 's', ssn), jsonb_build_array(full_name, phone) "
      "FROM customers", MASK),
    Q("SELECT ROW(email, ssn), ARRAY[email, phone] FROM customers", MASK),
    Q("SELECT j->>'email', j->>'ssn', j #>> '{phone}' FROM "
      "(SELECT to_jsonb(c) AS j FROM customers c) s", MASK),
    Q("SELECT (s.c).email, (s.c).ssn FROM (SELECT c FROM customers c) s", MASK),
    Q("SELECT key, value FROM customers c, jsonb_each_text(to_jsonb(c))", DENY),
    Q("SELECT jsonb_path_query(to_jsonb(c), '$.ssn') FROM customers c", DENY),
    # -- arrays and aggregates
    Q("SELECT array_agg(email), string_agg(ssn, ','), json_agg(phone), jsonb_agg(full_name) "
      "FROM customers", MASK),
    Q("SELECT array_to_string(array_agg(ssn), ';'), json_object_agg(id, email) FROM customers",
      MASK),
    Q("SELECT max(ssn), min(email), max(phone), min(full_name) FROM customers", MASK),
    Q("SELECT string_agg(ssn, ',' ORDER BY ssn) FROM customers", DENY),
    Q("SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY ssn) FROM customers", DENY),
    Q("SELECT mode() WITHIN GROUP (ORDER BY email) FROM customers", DENY),
    Q("SELECT unnest(ARRAY[email, ssn]) FROM customers", DENY),
    Q("SELECT x FROM customers, unnest(ARRAY[email, phone]) AS x", DENY),
    Q("SELECT * FROM unnest(ARRAY(SELECT ssn FROM customers))", DENY),
    # -- window functions
    Q("SELECT lag(email) OVER (ORDER BY id), first_value(ssn) OVER (PARTITION BY country), "
      "nth_value(phone, 2) OVER w FROM customers WINDOW w AS (ORDER BY id)", MASK),
    Q("SELECT row_number() OVER (ORDER BY ssn) FROM customers", DENY),
    Q("SELECT rank() OVER (PARTITION BY email) FROM customers", DENY),
    Q("SELECT count(*) OVER (PARTITION BY substr(phone, 1, 3)) FROM customers", DENY),
    # -- subqueries, CTEs, LATERAL, set operations, views
    Q("SELECT (SELECT ssn FROM customers c2 WHERE c2.id = c.id) FROM customers c", MASK),
    Q("SELECT e FROM (SELECT email AS e, ssn FROM customers) s", MASK),
    Q("WITH x AS (SELECT ssn, phone FROM customers) SELECT * FROM x", MASK),
    Q("WITH RECURSIVE r(e, n) AS (SELECT email, 1 FROM customers UNION ALL "
      "SELECT e || '', n + 1 FROM r WHERE n < 2) SELECT e FROM r", MASK),
    Q("SELECT l.x, l.y FROM customers c CROSS JOIN LATERAL "
      "(SELECT c.ssn AS x, upper(c.full_name) AS y) l", MASK),
    Q("SELECT ssn FROM customers UNION ALL SELECT phone FROM customers", MASK),
    Q("SELECT 'x' UNION SELECT email FROM customers", DENY),
    Q("SELECT id, email FROM customers INTERSECT SELECT id, email FROM customers", DENY),
    Q("SELECT * FROM customers c1 NATURAL JOIN customers c2", DENY),
    Q("SELECT * FROM v_contacts", MASK),
    Q("SELECT contact || '', upper(secret), v FROM v_contacts v", MASK),
    Q("SELECT * FROM v_outside", EITHER),  # created on the server: masked or refused
    # -- inference through predicates, ordering, grouping, row counts, errors
    Q("SELECT id FROM customers WHERE ssn LIKE '9%'", DENY),
    Q("SELECT id FROM customers ORDER BY email", DENY),
    Q("SELECT id, email FROM customers ORDER BY 2", DENY),
    Q("SELECT 1/(CASE WHEN ssn LIKE '9%' THEN 0 ELSE 1 END) FROM customers", DENY),
    Q("SELECT count(*) FROM customers WHERE email = 'diego_martinez@example.org'", DENY),
    Q("SELECT id FROM customers WHERE length(phone) > 12", DENY),
    Q("SELECT EXISTS (SELECT 1 FROM customers WHERE full_name = 'David Patel')", DENY),
    Q("SELECT DISTINCT ON (email) id FROM customers", DENY),
    Q("SELECT id FROM customers GROUP BY id, ssn", DENY),
    Q("SELECT substr(email, 1, 1), array_agg(id) FROM customers GROUP BY 1", DENY),
    Q("SELECT id FROM customers LIMIT (SELECT length(ssn) FROM customers WHERE id = 2)", DENY),
    Q("SELECT id, regexp_matches(ssn, '^9') FROM customers", DENY),
    Q("SELECT id FROM customers c WHERE EXISTS (SELECT regexp_matches(c.ssn, '^9'))", DENY),
    Q("SELECT id FROM customers c, regexp_matches(c.ssn, '^9') AS m", DENY),
    Q("SELECT id, chr(ascii(ssn) - 57) FROM customers", DENY),
    Q("SELECT id, split_part('a', ',', position('9' in ssn)) FROM customers", DENY),
    Q("SELECT a.id FROM customers a JOIN customers b ON a.ssn = b.ssn", DENY),
    Q("SELECT NULLIF(email, 'x') FROM customers", DENY),
    Q("SELECT email FROM customers WHERE email IN (SELECT feature FROM feature_store)", DENY),
    Q("SELECT x, count(*) FROM (SELECT full_name AS x FROM customers UNION ALL "
      "SELECT 'David Patel') s GROUP BY x", DENY),
    Q(
        "SELECT count(*) OVER (ORDER BY id ROWS BETWEEN "
        "(SELECT strpos(ssn, '9') FROM customers WHERE id = 2) PRECEDING AND CURRENT ROW) "
        "FROM customers",
        DENY,
    ),
    Q("SELECT count(*) FROM (SELECT DISTINCT substr(email, 1, 1) FROM customers) s", DENY),
    Q(
        "SELECT count(*) FROM customers c "
        "JOIN LATERAL generate_series(1, strpos(c.ssn, '9')) g ON true",
        DENY,
    ),
    Q("SELECT avg(length(email)) FROM customers", DENY),
    Q("SELECT pg_column_size(ssn) FROM customers", DENY),
    Q("SELECT (email, ssn) = (email, ssn) FROM customers", DENY),
    Q("SELECT count(DISTINCT substr(email, 1, 1)) FROM customers", MASK),
    Q("SELECT ARRAY(SELECT ssn FROM customers), (ARRAY[email])[1] FROM customers LIMIT 5", MASK),
    Q('SELECT U&"\\0065mail" FROM customers', MASK),
    # pseudonyms keep equality: these work, and show no raw value
    Q("SELECT count(*) FROM customers a JOIN customers b ON a.email = b.email", MASK),
    Q("SELECT full_name, count(*) FROM customers GROUP BY full_name", MASK),
    Q("SELECT DISTINCT email FROM customers", MASK),
    # -- prompts (pii_text)
    Q("SELECT prompt_text, response_text FROM prompts", MASK),
    Q("SELECT p FROM prompts p", MASK),
    Q("SELECT reverse(prompt_text), replace(response_text, '@', ' at ') FROM prompts", MASK),
    Q("SELECT string_agg(prompt_text, ' | ') FROM prompts", MASK),
    Q("SELECT split_part(prompt_text, '(', 2), row_to_json(p)::text FROM prompts p", MASK),
    Q("SELECT id FROM prompts WHERE prompt_text LIKE '%@%'", DENY),
    # -- side channels
    Q("SELECT set_config('application_name', ssn, false) FROM customers WHERE id = 2", DENY),
    Q("SELECT set_config('dbgov.probe', email, false) FROM customers WHERE id = 1", DENY),
    Q("SELECT pg_notify('probe', email) FROM customers", DENY),
    Q("EXPLAIN SELECT * FROM customers", DENY),
    Q("EXPLAIN SELECT * FROM v_contacts WHERE id = 1", DENY),
    Q("EXPLAIN (ANALYZE) SELECT upper(email) FROM customers", DENY),
    Q("SELECT * FROM pg_stats WHERE tablename = 'customers'", DENY),
    Q("SELECT * FROM pg_catalog.pg_statistic", DENY),
]
# fmt: on

BOB_CASES = [
    q
    for q in ALICE_CASES
    if q.sql
    in {
        "SELECT email AS e, c.full_name AS n, phone, ssn FROM customers c",
        "SELECT c::text, (c).*, (c).ssn FROM customers c",
        "SELECT row_to_json(c), to_jsonb(c), to_json(c.*) FROM customers c",
        "SELECT CASE WHEN false THEN email ELSE 'diego_martinez@example.org' END FROM customers",
        "SELECT id FROM customers WHERE ssn LIKE '9%'",
        "SELECT id, chr(ascii(ssn) - 57) FROM customers",
        "SELECT * FROM v_contacts",
        "SELECT prompt_text, response_text FROM prompts",
        "SELECT substr(phone, 1, 4), substr(phone, 5, 4), substr(phone, 9) FROM customers",
        "EXPLAIN SELECT * FROM customers",
    }
]


# ---------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def raw(dbgov: Any) -> RawData:
    return load_raw(dbgov)


# A masked identity's refusal while the catalog reloads after DDL (fail closed).
_RELOADING = "the origin of the result columns cannot be checked yet"


def wait_until_visible(dbgov: Any, user: str, sql: str, target: str = "prod") -> None:
    """Retry `sql` until masking can trace it: a relation the catalog snapshot does
    not know is refused (fail closed) and makes the proxy reload the catalog."""
    deadline = time.monotonic() + 20
    while True:
        try:
            with psycopg.connect(dbgov.dsn(user, target), autocommit=True) as conn:
                conn.execute(sql).fetchall()
            return
        except psycopg.errors.InsufficientPrivilege as exc:
            assert _RELOADING in str(exc) or "is not in the catalog" in str(exc), exc
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@pytest.fixture(scope="module", autouse=True)
def views(dbgov: Any) -> Iterator[None]:
    """Views over customers, created directly on the server (not through dbgov)."""
    dbgov.app(
        "CREATE OR REPLACE VIEW public.v_contacts AS "
        "SELECT id, email AS contact, ssn AS secret, phone FROM customers"
    )
    dbgov.app("CREATE OR REPLACE VIEW public.v_outside AS SELECT id, ssn, full_name FROM customers")
    wait_until_visible(dbgov, "alice", "SELECT contact FROM v_contacts LIMIT 1")
    yield
    dbgov.app("DROP VIEW IF EXISTS public.v_contacts, public.v_outside")


@pytest.fixture(scope="module")
def conns(dbgov: Any) -> Iterator[dict[str, psycopg.Connection[Any]]]:
    opened = {u: psycopg.connect(dbgov.dsn(u), autocommit=True) for u in ("alice", "bob")}
    for c in opened.values():
        c.add_notice_handler(collect_notice)
    yield opened
    for c in opened.values():
        c.close()


# ---------------------------------------------------------------------------
# running a query and checking what came back


@dataclass
class Outcome:
    sqlstate: str | None
    rows: int
    message: str = ""

    @property
    def denied(self) -> bool:
        return self.sqlstate == "42501"


NOTICES: list[str] = []  # notices received on the module's connections, checked per query


def collect_notice(diag: psycopg.errors.Diagnostic) -> None:
    NOTICES.append(f"{diag.message_primary} {diag.message_detail} {diag.context}")


def assert_clean(forbidden: Forbidden, data: bytes | str, what: str) -> None:
    leaks = forbidden.find(data)
    assert not leaks, f"{what}: raw masked values reached the client: {leaks[:5]}"


def run_psycopg(
    conn: psycopg.Connection[Any], sql: str, binary: bool, forbidden: Forbidden
) -> Outcome:
    """Execute; scan every wire value, decoded value, error and notice field."""
    NOTICES.clear()
    try:
        return _run_psycopg(conn, sql, binary, forbidden)
    finally:
        assert_clean(forbidden, "\n".join(NOTICES), f"notices of {sql!r}")


def _run_psycopg(
    conn: psycopg.Connection[Any], sql: str, binary: bool, forbidden: Forbidden
) -> Outcome:
    cur = conn.cursor(binary=binary)
    try:
        cur.execute(sql)
    except psycopg.Error as exc:
        text = error_text(exc)
        assert_clean(forbidden, text, f"error of {sql!r}")
        return Outcome(exc.sqlstate, 0, text)
    rows = 0
    while True:
        if cur.description is not None:
            assert_clean(forbidden, pgresult_bytes(cur), f"wire values of {sql!r}")
            fetched = cur.fetchall()
            rows += len(fetched)
            assert_clean(forbidden, repr(fetched), f"decoded values of {sql!r}")
        if not cur.nextset():
            break
    return Outcome(None, rows)


def check_expected(q: Q, out: Outcome) -> None:
    if q.expect == DENY:
        assert out.denied, f"expected a denial for {q.sql!r}, got {out}"
        assert "dbgov:" in out.message
    elif q.expect == MASK:
        assert out.sqlstate is None, f"expected masked rows for {q.sql!r}, got {out}"
        assert out.rows > 0
    else:
        assert out.sqlstate in (None, "42501"), out


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
@pytest.mark.parametrize("q", ALICE_CASES, ids=str)
def test_alice_bypass(conns: dict[str, Any], raw: RawData, q: Q, binary: bool) -> None:
    forbidden = raw.forbidden
    check_expected(q, run_psycopg(conns["alice"], q.sql, binary, forbidden))


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
@pytest.mark.parametrize("q", BOB_CASES, ids=str)
def test_bob_bypass(conns: dict[str, Any], raw: RawData, q: Q, binary: bool) -> None:
    forbidden = raw.forbidden
    check_expected(q, run_psycopg(conns["bob"], q.sql, binary, forbidden))


def test_suite_is_big_enough() -> None:
    assert len(ALICE_CASES) >= 60
    assert sum(q.expect == DENY for q in ALICE_CASES) >= 25
    assert sum(q.expect == MASK for q in ALICE_CASES) >= 25


def test_case_sensitivity_of_the_scanner(raw: RawData) -> None:
    """The scanner itself finds raw values in every rewording it claims to."""
    _, name, email, phone, *_ = next(r for r in raw.customers if r[4] is not None)
    ssn = next(r[4] for r in raw.customers if r[4] is not None)
    for data in (email.upper(), name[::-1], f"x{ssn}y", email.encode().hex(), phone):
        assert raw.forbidden.find(data), data
    assert not raw.forbidden.find("nothing to see here [REDACTED] ****1234")


# ---------------------------------------------------------------------------
# protocol paths: SQL cursors, protocol portals, row limits, binary, COPY


def test_declare_and_fetch_in_one_query_string(conns: dict[str, Any], raw: RawData) -> None:
    sql = (
        "BEGIN; DECLARE c1 CURSOR FOR SELECT id, email, ssn, phone, full_name FROM customers; "
        "FETCH 10 FROM c1; FETCH FORWARD 100 FROM c1; MOVE 5 IN c1; FETCH ALL FROM c1; COMMIT"
    )
    out = run_psycopg(conns["alice"], sql, False, raw.forbidden)
    assert out.sqlstate is None and out.rows == 5000 - 5


def test_declare_then_fetch_across_queries_and_with_hold(
    conns: dict[str, Any], raw: RawData
) -> None:
    conn = conns["alice"]
    run_psycopg(
        conn, "DECLARE c2 CURSOR WITH HOLD FOR SELECT c FROM customers c", False, raw.forbidden
    )
    for binary in (False, True):
        out = run_psycopg(conn, "FETCH 50 FROM c2", binary, raw.forbidden)
        assert out.sqlstate is None and out.rows == 50
    run_psycopg(conn, "CLOSE c2", False, raw.forbidden)
    # a cursor over an inference is refused when declared
    out = run_psycopg(
        conn,
        "BEGIN; DECLARE c3 CURSOR FOR SELECT id FROM customers ORDER BY ssn; FETCH 1 FROM c3",
        False,
        raw.forbidden,
    )
    assert out.denied
    run_psycopg(conn, "ROLLBACK", False, raw.forbidden)


def test_psycopg_server_side_cursor(dbgov: Any, raw: RawData) -> None:
    with psycopg.connect(dbgov.dsn("alice")) as conn:
        for binary in (False, True):
            with conn.cursor(name=f"srv{int(binary)}", binary=binary) as cur:
                cur.itersize = 333
                cur.execute("SELECT * FROM customers")
                rows = cur.fetchall()
                assert len(rows) == 5000
                assert_clean(raw.forbidden, repr(rows), "server-side cursor")


def test_prepare_and_execute(conns: dict[str, Any], raw: RawData) -> None:
    out = run_psycopg(
        conns["alice"],
        "PREPARE p1 AS SELECT ssn, email, upper(phone) FROM customers; EXECUTE p1; DEALLOCATE p1",
        False,
        raw.forbidden,
    )
    assert out.sqlstate is None and out.rows == 5000
    out = run_psycopg(
        conns["alice"],
        "PREPARE p2 AS SELECT id FROM customers WHERE ssn = $1",
        False,
        raw.forbidden,
    )
    assert out.denied


def _login(dbgov: Any, user: str = "alice") -> RawClient:
    c = RawClient(dbgov.host, dbgov.port)
    msgs = c.startup(user, "prod", dbgov.token(user))
    assert msgs[-1].type == b"Z"
    return c


SECRET_QUERY = "SELECT id, email, ssn, phone, full_name, upper(email) FROM customers"


@pytest.mark.parametrize("fmt", [0, 1], ids=["text", "binary"])
@pytest.mark.parametrize("describe", [False, True], ids=["no-describe", "describe"])
def test_row_limited_execute_keeps_the_plan(
    dbgov: Any, raw: RawData, fmt: int, describe: bool
) -> None:
    """Execute with a row limit suspends the portal; every later Execute of the same
    portal (no new RowDescription) must still be masked."""
    c = _login(dbgov)
    try:
        c.send(Query("BEGIN").encode())
        c.until_ready()
        batch = Parse("s1", SECRET_QUERY).encode() + Bind("p1", "s1", (), (), (fmt,)).encode()
        if describe:
            batch += Describe("P", "p1").encode()
        batch += b"".join(Execute("p1", 7).encode() for _ in range(3))
        batch += Execute("p1", 0).encode() + Sync().encode()
        c.send(batch)
        msgs = c.until_ready()
        assert error_of(msgs) is None, error_of(msgs)
        assert types_of(msgs).count(b"s") == 3
        rows = rows_of(msgs)
        assert len(rows) == 5000
        assert_clean(raw.forbidden, b"".join(m.body for m in msgs), "row-limited Execute")
        if fmt == 1:  # binary: int8 ids survive, strings are masked strings
            assert struct.unpack("!q", rows[0][0])[0] == 1
            assert rows[0][2] is None or rows[0][2] == b"[REDACTED]"
        c.send(Query("COMMIT").encode())
        c.until_ready()
    finally:
        c.close()


def test_portal_described_by_statement_only(dbgov: Any, raw: RawData) -> None:
    """Describe(S) then Bind with binary results: formats come from Bind, not from
    the statement's RowDescription."""
    c = _login(dbgov)
    try:
        c.send(Parse("s2", SECRET_QUERY).encode() + Describe("S", "s2").encode() + Sync().encode())
        c.until_ready()
        c.send(Bind("", "s2", (), (), (1,)).encode() + Execute("", 0).encode() + Sync().encode())
        msgs = c.until_ready()
        assert len(rows_of(msgs)) == 5000
        assert_clean(raw.forbidden, b"".join(m.body for m in msgs), "Describe(S) + binary Bind")
    finally:
        c.close()


def test_simple_query_raw_bytes(dbgov: Any, raw: RawData) -> None:
    c = _login(dbgov)
    try:
        c.send(
            Query(
                "SELECT * FROM customers; SELECT * FROM v_contacts; SELECT prompt_text FROM prompts"
            ).encode()
        )
        msgs = c.until_ready()
        assert error_of(msgs) is None
        assert len(rows_of(msgs)) == 5000 + 5000 + 20000
        assert_clean(raw.forbidden, b"".join(m.body for m in msgs), "simple query")
        rd = [RowDescription.decode(m.body) for m in msgs if m.type == b"T"]
        assert [f.name for f in rd[1].fields] == ["id", "contact", "secret", "phone"]
    finally:
        c.close()


@pytest.mark.parametrize("options", ["", "(FORMAT csv, HEADER)", "(FORMAT binary)"])
def test_copy_to_stdout(conns: dict[str, Any], raw: RawData, options: str) -> None:
    conn = conns["alice"]
    for sql in (
        f"COPY customers TO STDOUT {options}",
        f"COPY (SELECT id, upper(email) FROM customers) TO STDOUT {options}",
        f"COPY (SELECT * FROM v_contacts) TO STDOUT {options}",
        f"COPY customers (id, ssn) TO STDOUT {options}",
        f"COPY (SELECT prompt_text FROM prompts) TO STDOUT {options}",
    ):
        with (
            pytest.raises(psycopg.errors.InsufficientPrivilege) as info,
            conn.cursor().copy(sql) as copy,
        ):
            for _ in copy:
                pass
        assert "COPY TO of masked columns" in str(info.value)
    data = b""
    with conn.cursor().copy(
        f"COPY (SELECT id, country FROM customers) TO STDOUT {options}"
    ) as copy:
        for chunk in copy:
            data += bytes(chunk)
    assert len(data) > 5000
    assert_clean(raw.forbidden, data, "COPY of unmasked columns")


def test_asyncpg_binary_results(dbgov: Any, raw: RawData) -> None:
    """asyncpg asks for binary results of every type it knows."""

    async def main() -> list[Any]:
        conn = await asyncpg.connect(
            host=dbgov.host,
            port=dbgov.port,
            user="alice",
            password=dbgov.token("alice"),
            database="prod",
            ssl=False,
        )
        try:
            out: list[Any] = []
            out += await conn.fetch("SELECT * FROM customers")
            out += await conn.fetch("SELECT c, to_jsonb(c), ARRAY[email, ssn] FROM customers c")
            out += await conn.fetch("SELECT length(ssn), upper(full_name) FROM customers")
            out += await conn.fetch("SELECT * FROM prompts LIMIT 3000")
            stmt = await conn.prepare("SELECT email, ssn FROM customers WHERE id = $1")
            out += [await stmt.fetchrow(i) for i in range(1, 50)]
            async with conn.transaction():
                cur = await conn.cursor("SELECT phone, ssn, full_name FROM customers")
                out += await cur.fetch(500)
                out += await cur.fetch(500)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("SELECT id FROM customers ORDER BY ssn")
            return out
        finally:
            await conn.close()

    rows = asyncio.run(main())
    assert len(rows) > 15000
    assert_clean(raw.forbidden, repr(rows), "asyncpg")
    assert {r["ssn"] for r in rows[:5000]} == {None, "[REDACTED]"}
    assert all(r["phone"] is None or r["phone"].startswith("****") for r in rows[:5000])


# ---------------------------------------------------------------------------
# errors, RETURNING, copies into tables, DDL


def test_errors_do_not_echo_values(dbgov: Any, conns: dict[str, Any], raw: RawData) -> None:
    """Failed casts, duplicate keys and 'Failing row contains' are scrubbed for
    identities with masked columns (the values here are our own literals: the
    guards keep masked values themselves out of such statements)."""
    secret = raw.customers[0][2]  # an email: a forbidden value
    out = run_psycopg(conns["alice"], f"SELECT '{secret}'::int", False, raw.forbidden)
    assert out.sqlstate == "22P02" and "value removed" in out.message
    with psycopg.connect(dbgov.dsn("bob", "staging"), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS masking_probe")
        conn.execute(
            "CREATE TABLE masking_probe (k text PRIMARY KEY, n int, "
            "v text NOT NULL CHECK (v <> 'forbidden'))"
        )
        conn.execute("INSERT INTO masking_probe VALUES (%s, 1, 'x')", (secret,))
        for sql, state in (
            (f"INSERT INTO masking_probe VALUES ('{secret}', 2, 'y')", "23505"),
            (f"INSERT INTO masking_probe VALUES ('k2', 2, NULL), ('{secret}x', 3, 'z')", "23502"),
            (f"INSERT INTO masking_probe VALUES ('{secret}y', 2, 'forbidden')", "23514"),
            (f"INSERT INTO masking_probe VALUES ('k3', '{secret}', 'z')", "22P02"),
        ):
            out = run_psycopg(conn, sql, False, raw.forbidden)
            assert out.sqlstate == state, (sql, out)
        conn.execute("DROP TABLE masking_probe")


def test_returning_is_masked(dbgov: Any, raw: RawData) -> None:
    with psycopg.connect(dbgov.dsn("bob"), autocommit=True) as conn:
        cur = conn.execute(
            "INSERT INTO training_runs (model, started_at, rows_used) VALUES "
            "('masking-probe', now(), 1) RETURNING id, model, "
            "(SELECT email FROM customers WHERE id = 1) AS e, "
            "(SELECT ssn FROM customers WHERE id = 2) AS s"
        )
        run_id, model, e, s = cur.fetchone()
        assert model == "masking-probe" and s == "[REDACTED]"
        assert e == conn.execute("SELECT email FROM customers WHERE id = 1").fetchone()[0]
        assert_clean(raw.forbidden, pgresult_bytes(cur) + repr((e, s)).encode(), "RETURNING")
    dbgov.app("DELETE FROM training_runs WHERE id = %s", (run_id,))
    # A customer of our own on staging (nothing references it), deleted by bob.
    probe = ("Zed Probe-Masking", "zed.probe.masking@example.org", "+1 555-0199-777", "999-12-3456")
    dbgov.app(
        "INSERT INTO customers (id, full_name, email, phone, ssn, country, created_at) "
        "VALUES (900001, %s, %s, %s, %s, 'US', now())",
        probe,
        target="staging",
    )
    forbidden = Forbidden()
    for value in probe:
        forbidden.add(value)
    try:
        with psycopg.connect(dbgov.dsn("bob", "staging")) as conn:
            cur = conn.execute("DELETE FROM customers WHERE id = 900001 RETURNING *")
            rows = cur.fetchall()
            conn.rollback()
        assert len(rows) == 1 and rows[0][4] == "[REDACTED]" and rows[0][3].endswith("-777")
        assert_clean(forbidden, pgresult_bytes(cur) + repr(rows).encode(), "DELETE RETURNING")
    finally:
        dbgov.app("DELETE FROM customers WHERE id = 900001", target="staging")


@pytest.mark.parametrize(
    ("target", "sql"),
    [
        ("staging", "CREATE TABLE masking_copy AS SELECT email FROM customers"),
        ("staging", "CREATE TABLE masking_copy AS SELECT id, upper(ssn) AS s FROM customers"),
        ("staging", "SELECT ssn INTO masking_copy FROM customers"),
        ("staging", "SELECT phone INTO TEMP masking_tmp FROM customers"),
        ("staging", "CREATE MATERIALIZED VIEW masking_mv AS SELECT full_name FROM customers"),
        (
            "staging",
            "INSERT INTO feature_store (customer_id, feature, value, updated_at) "
            "SELECT id, email, 1, now() FROM customers",
        ),
        (
            "prod",
            "INSERT INTO feature_store (customer_id, feature, value, updated_at) "
            "SELECT id, left(email, 3), 1, now() FROM customers",
        ),
        (
            "prod",
            "INSERT INTO training_runs (model, started_at, rows_used) "
            "SELECT full_name, now(), 1 FROM customers",
        ),
        (
            "prod",
            "WITH x AS (SELECT ssn FROM customers) "
            "INSERT INTO training_runs (model, started_at) SELECT ssn, now() FROM x",
        ),
        (
            "prod",
            "UPDATE training_runs SET model = (SELECT email FROM customers LIMIT 1) "
            "WHERE id = -1 RETURNING model",
        ),
        # DDL on a table with masked columns
        ("staging", "ALTER TABLE customers RENAME COLUMN email TO contact"),
        ("staging", "ALTER TABLE customers RENAME TO people"),
        ("staging", "ALTER TABLE customers ADD COLUMN s2 text GENERATED ALWAYS AS (ssn) STORED"),
        ("staging", "CREATE INDEX masking_idx ON customers ((1 / length(ssn)))"),
        ("staging", "CLUSTER customers USING customers_email_key"),  # rows in email order
        ("staging", "ALTER TABLE customers ADD CONSTRAINT c CHECK (ssn NOT LIKE '9%')"),
        ("staging", "CREATE TABLE masking_fk (e text REFERENCES customers (email))"),
        (
            "staging",
            "CREATE RULE masking_rule AS ON INSERT TO training_runs DO ALSO "
            "INSERT INTO feature_store SELECT id, email, 1, now() FROM customers",
        ),
        # a chosen value written into a pseudonymized column becomes a comparable token
        (
            "staging",
            "INSERT INTO customers (id, full_name, email, country, created_at) "
            "VALUES (99999, 'David Patel', 'guess@example.org', 'US', now())",
        ),
        ("staging", "UPDATE customers SET full_name = 'David Patel' WHERE id = 1"),
    ],
)
def test_copies_and_ddl_are_denied(dbgov: Any, raw: RawData, target: str, sql: str) -> None:
    with psycopg.connect(dbgov.dsn("bob", target), autocommit=True) as conn:
        out = run_psycopg(conn, sql, False, raw.forbidden)
    assert out.denied, out
    assert 'denied by rule "masking"' in out.message


def test_copy_without_masked_columns_is_allowed(dbgov: Any) -> None:
    with psycopg.connect(dbgov.dsn("bob", "staging"), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS masking_countries")
        conn.execute("CREATE TABLE masking_countries AS SELECT id, country FROM customers")
    try:
        # the catalog reloads in the background after DDL: until then, refused
        wait_until_visible(dbgov, "bob", "SELECT * FROM masking_countries", "staging")
        with psycopg.connect(dbgov.dsn("bob", "staging"), autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM masking_countries").fetchone() == (5000,)
    finally:
        dbgov.app("DROP TABLE IF EXISTS masking_countries", target="staging")


def test_set_config_does_not_leak_through_parameter_status(dbgov: Any, raw: RawData) -> None:
    with psycopg.connect(dbgov.dsn("alice"), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "SELECT set_config('application_name', full_name, false) "
                "FROM customers WHERE id = 2"
            )
        value = conn.info.parameter_status("application_name") or ""
        assert_clean(raw.forbidden, value, "application_name")


def test_view_created_through_the_proxy_is_masked(dbgov: Any, raw: RawData) -> None:
    """DDL through the proxy reloads the target's catalog: the view is traced."""
    with psycopg.connect(dbgov.dsn("bob", "staging"), autocommit=True) as conn:
        conn.execute(
            "CREATE OR REPLACE VIEW v_staging_contacts AS "
            "SELECT id, full_name AS who, phone AS tel FROM customers"
        )
    try:
        wait_until_visible(dbgov, "alice", "SELECT who FROM v_staging_contacts LIMIT 1", "staging")
        with psycopg.connect(dbgov.dsn("alice", "staging"), autocommit=True) as conn:
            cur = conn.execute("SELECT * FROM v_staging_contacts")
            rows = cur.fetchall()
            assert len(rows) == 5000
            assert_clean(raw.forbidden, pgresult_bytes(cur), "view on staging")
            assert all(tel is None or tel.startswith("****") for _, _, tel in rows)
    finally:
        dbgov.app("DROP VIEW IF EXISTS v_staging_contacts", target="staging")


@pytest.mark.parametrize("how", ["autocommit", "transaction", "with-search-path"])
def test_a_view_replaced_through_the_proxy_is_never_traced_by_its_old_definition(
    dbgov: Any, raw: RawData, how: str
) -> None:
    """bob redefines a view he has read, harmless column for masked one under the same
    name and type, and reads it again at once: inside the transaction (where only his
    session sees the new definition: refused) and right after the commit. The old
    definition once traced both reads (the catalog reloaded in the background), and
    emails went out raw. With a SET search_path in the same query, the ReadyForQuery
    waits for the search_path answer and then for the reload (it once skipped the
    second wait, and the reads were refused "retry in a moment")."""
    harmless = "CREATE OR REPLACE VIEW v_swap AS SELECT id, country::text AS note FROM customers"
    swapped = "CREATE OR REPLACE VIEW v_swap AS SELECT id, email::text AS note FROM customers"
    read = "SELECT note FROM v_swap ORDER BY id"
    with psycopg.connect(dbgov.dsn("bob", "staging"), autocommit=True) as conn:
        conn.execute(harmless)
    try:
        wait_until_visible(dbgov, "bob", read, "staging")
        with psycopg.connect(dbgov.dsn("bob", "staging"), autocommit=True) as conn:
            cur = conn.execute(read)
            countries = [n for (n,) in cur.fetchall()]
            assert len(countries) == 5000 and "US" in countries  # not masked: traced
            if how == "transaction":
                conn.execute("BEGIN")
                conn.execute(swapped)
                # His session alone sees the new definition: no snapshot can trace it.
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match=_RELOADING):
                    conn.execute(read)
                conn.execute("ROLLBACK")
                conn.execute(swapped)
            elif how == "with-search-path":
                conn.execute(f"SET search_path = public; {swapped}")  # one simple Query
            else:
                conn.execute(swapped)
            # His ReadyForQuery waited for the reload (one worker here): at once, his
            # reads are traced by the new definition, never refused nor raw.
            for _ in range(5):
                cur = conn.execute(read)
                assert len(cur.fetchall()) == 5000
                assert_clean(raw.forbidden, pgresult_bytes(cur), "view swapped")
    finally:
        dbgov.app("DROP VIEW IF EXISTS v_swap", target="staging")


def test_planner_settings_that_sort_by_masked_values_are_refused(
    conns: dict[str, Any], raw: RawData
) -> None:
    """Without hash aggregation, GROUP BY email would come back in raw email order."""
    conn = conns["alice"]
    for sql in (
        "SET enable_hashagg = off",
        "SET LOCAL enable_hashjoin TO off",
        "SET work_mem = '64kB'",
        "SELECT set_config('enable_hashagg', 'off', false)",
    ):
        assert run_psycopg(conn, sql, False, raw.forbidden).denied, sql
    for sql in ("RESET enable_hashagg", "SET statement_timeout = '1min'", "RESET ALL"):
        assert run_psycopg(conn, sql, False, raw.forbidden).sqlstate is None, sql


def test_planner_settings_at_startup_are_refused_to_masked_identities(dbgov: Any) -> None:
    for user in ("alice", "carol"):
        c = RawClient(dbgov.host, dbgov.port)
        try:
            msgs = c.startup(user, "prod", dbgov.token(user), options="-c work_mem=64kB")
        finally:
            c.close()
        err = error_of(msgs)
        if user == "carol":  # unmasked: the setting is hers to choose
            assert err is None and msgs[-1].type == b"Z"
        else:
            assert err is not None and (err.severity, err.sqlstate) == ("FATAL", "42501")
            assert "work_mem is not allowed for you" in err.message


@pytest.mark.parametrize("named", [True, False], ids=["named", "unnamed"])
@pytest.mark.parametrize("describe", [False, True], ids=["no-describe", "describe"])
def test_rebinding_a_portal_in_one_batch_keeps_each_execute_own_plan(
    dbgov: Any, raw: RawData, describe: bool, named: bool
) -> None:
    """A pipeline binds the unnamed portal to the secret query, executes it, then binds
    the same name to a harmless query (named statements, or the unnamed one parsed
    again) before any answer is back. The first Execute's rows must be masked under
    the secret query's plan, not under the one its portal's name meant later. (Planning
    from the names when the answer arrived once masked them under the harmless query's
    lineage, and `upper(email)`, an expression, went out raw.)"""
    c = _login(dbgov)
    try:
        batch = b""
        for stmt, sql in (("sec", "SELECT upper(email), id FROM customers"),
                          ("harmless", "SELECT 'x'::text, 1::bigint")):  # fmt: skip
            name = stmt if named else ""
            batch += Parse(name, sql).encode() + Bind("", name, (), (), ()).encode()
            if describe:
                batch += Describe("P", "").encode()
            batch += Execute("", 0).encode()
        c.send(batch + Sync().encode())
        msgs = c.until_ready()
        assert error_of(msgs) is None, error_of(msgs)
        rows = rows_of(msgs)
        assert len(rows) == 5001
        assert rows[-1] == (b"x", b"1")
        assert_clean(raw.forbidden, b"".join(m.body for m in msgs), "re-bound portal")
    finally:
        c.close()


# -- one namespace for protocol Parse and SQL PREPARE, one for Bind and DECLARE --------
# PostgreSQL resolves a name the same way whichever way it was created; masking must
# plan from what the server will run, never from a record the server did not make.

TWO_SECRETS = "SELECT id, full_name, email, phone, ssn, ssn || '' FROM customers WHERE id IN (2, 3)"


def _run(c: RawClient, *messages: Any) -> list[Any]:
    c.send(b"".join(m.encode() for m in messages))
    return c.until_ready()


def _clean_rows(raw: RawData, msgs: list[Any], n: int, what: str) -> None:
    assert error_of(msgs) is None, error_of(msgs)
    assert len(rows_of(msgs)) == n
    assert_clean(raw.forbidden, b"".join(m.body for m in msgs), what)


def _error(msgs: list[Any]) -> tuple[str, str]:
    err = error_of(msgs)
    assert err is not None
    return err.sqlstate, err.message


def test_sql_prepared_statement_bound_over_the_protocol(dbgov: Any, raw: RawData) -> None:
    c = _login(dbgov)
    try:
        _run(c, Query(f"PREPARE sp AS {TWO_SECRETS}"))
        for fmt in (0, 1):
            msgs = _run(c, Bind("", "sp", (), (), (fmt,)), Execute("", 0), Sync())
            _clean_rows(raw, msgs, 2, "SQL PREPARE run by Bind/Execute")
    finally:
        c.close()


def test_declared_cursor_executed_over_the_protocol(dbgov: Any, raw: RawData) -> None:
    c = _login(dbgov)
    try:
        _run(c, Query(f"BEGIN; DECLARE dc CURSOR FOR {TWO_SECRETS}"))
        _clean_rows(raw, _run(c, Execute("dc", 1), Sync()), 1, "DECLAREd cursor, Execute")
        _clean_rows(raw, _run(c, Execute("dc", 0), Sync()), 1, "DECLAREd cursor, Execute")
        _run(c, Query("COMMIT"))
    finally:
        c.close()


def test_a_name_closed_over_the_protocol_and_parsed_again(dbgov: Any, raw: RawData) -> None:
    c = _login(dbgov)
    try:
        _run(c, Query("PREPARE rn AS SELECT 'a'::text AS a"))
        _run(c, Close("S", "rn"), Parse("rn", "SELECT ssn || '' AS a FROM customers"), Sync())
        _clean_rows(raw, _run(c, Query("EXECUTE rn")), 5000, "EXECUTE of a re-parsed name")
    finally:
        c.close()


def test_a_name_deallocated_and_prepared_again(dbgov: Any, raw: RawData) -> None:
    c = _login(dbgov)
    try:
        _run(c, Parse("rz", "SELECT 'a'::text AS a"), Sync())
        _run(c, Query("DEALLOCATE rz; PREPARE rz AS SELECT ssn || '' AS a FROM customers"))
        msgs = _run(c, Bind("", "rz", (), (), ()), Execute("", 0), Sync())
        _clean_rows(raw, msgs, 5000, "Bind of a name prepared again by SQL")
    finally:
        c.close()


def test_a_refused_parse_does_not_replace_the_statement(dbgov: Any, raw: RawData) -> None:
    c = _login(dbgov)
    try:
        _run(c, Parse("dup", TWO_SECRETS), Sync())
        msgs = _run(c, Parse("dup", "SELECT 1, 2, 3, 4, 5, 'a'::text"), Sync())
        assert _error(msgs) == ("42P05", 'dbgov: prepared statement "dup" exists')
        msgs = _run(c, Bind("", "dup", (), (), ()), Execute("", 0), Sync())
        _clean_rows(raw, msgs, 2, "Execute after a refused re-Parse")
    finally:
        c.close()


def test_a_refused_bind_does_not_replace_the_portal(dbgov: Any, raw: RawData) -> None:
    c = _login(dbgov)
    try:
        _run(c, Query("BEGIN"))
        _run(c, Parse("sec", TWO_SECRETS), Bind("held", "sec", (), (), ()), Sync())
        _run(c, Query("SAVEPOINT sp"))
        msgs = _run(c, Parse("inn", "SELECT 1, 2, 3, 4, 5, 'a'::text"), Bind("held", "inn"), Sync())
        assert _error(msgs) == ("42P03", 'dbgov: cursor "held" already exists')
        _run(c, Query("ROLLBACK TO sp"))
        _clean_rows(raw, _run(c, Execute("held", 0), Sync()), 2, "portal after a refused Bind")
        _run(c, Query("COMMIT"))
    finally:
        c.close()


def test_a_statement_that_failed_on_the_server_is_forgotten(dbgov: Any, raw: RawData) -> None:
    """A Parse the server rejects (dbgov allowed it), and one it skipped after that
    error, leave no record: their names stay free, and SQL PREPARE can take them."""
    c = _login(dbgov)
    try:
        msgs = _run(c, Parse("bad", "SELECT 'a'::text + 1"), Parse("skipped", "SELECT 1"), Sync())
        assert _error(msgs)[0] == "42883"  # operator does not exist: the server's error
        for name in ("bad", "skipped"):
            _run(c, Query(f"PREPARE {name} AS SELECT ssn || '' AS a FROM customers"))
            msgs = _run(c, Bind("", name, (), (), ()), Execute("", 0), Sync())
            _clean_rows(raw, msgs, 5000, f"{name}: prepared again by SQL")
    finally:
        c.close()


def test_unknown_and_reserved_names_are_refused(dbgov: Any) -> None:
    c = _login(dbgov)
    try:
        assert _error(_run(c, Bind("", "nosuch", (), (), ()), Sync())) == (
            "26000",
            'dbgov: prepared statement "nosuch" does not exist',
        )
        assert _error(_run(c, Execute("nosuch", 0), Sync())) == (
            "34000",
            'dbgov: portal "nosuch" does not exist',
        )
        _run(c, Parse("ok", "SELECT 1"), Sync())
        assert _error(_run(c, Bind("\x01dbgov-refused", "ok"), Sync()))[0] == "42P03"
        assert _error(_run(c, Parse("\x01dbgov-x", "SELECT 1"), Sync()))[0] == "42P05"
        assert _error(_run(c, Query("EXECUTE nosuch")))[0] == "26000"
        # The session goes on.
        assert rows_of(_run(c, Query("SELECT 41 + 1"))) == [(b"42",)]
    finally:
        c.close()


def test_counts_of_computed_values_tell_nothing(conns: dict[str, Any]) -> None:
    """count(s) over a subquery's computed column answered one yes/no question about
    the raw value per count (NULL unless the pattern matched). Masked like the value,
    every guess gets the same answer."""
    answers = set()
    for guess in "0123456789":
        cur = conns["alice"].execute(
            "SELECT count(s) FROM (SELECT substring(ssn from %s) AS s FROM customers "
            "WHERE id = 2) x",
            (f"^{guess}",),
        )
        answers.add(cur.fetchone()[0])
    assert len(answers) == 1, f"the count told the SSN's first digit: {answers}"


def test_a_close_the_server_skipped_does_not_free_the_name(dbgov: Any, raw: RawData) -> None:
    """The server skips a Close that follows an error; a later segment that parses
    the name again (refused) and binds it must not run the old statement unmasked,
    nor unaudited."""
    c = _login(dbgov)
    try:
        _run(c, Parse("s1", TWO_SECRETS), Sync())
        _run(c, Parse("", "SELEC oops"), Close("S", "s1"), Sync())
        msgs = _run(
            c,
            Parse("s1", "DELETE FROM customers"),
            Sync(),
            Bind("", "s1", (), (), ()),
            Execute("", 0),
            Sync(),
        )
        msgs += c.until_ready()  # the second Sync's answer
        assert not rows_of(msgs)
        assert types_of(msgs).count(b"E") == 2  # the DELETE refused, then its Bind
        assert_clean(raw.forbidden, b"".join(m.body for m in msgs), "skipped Close")
    finally:
        c.close()


def test_a_parse_the_server_skipped_does_not_stand_for_the_old_statement(
    dbgov: Any, raw: RawData
) -> None:
    """An error skips a re-Parse of the unnamed statement, so the server keeps the old
    (secret) one. A Bind in the next segment, sent before that error is back, must
    not be masked by the skipped statement's lineage."""
    c = _login(dbgov)
    try:
        _run(c, Parse("", "SELECT ssn || '' AS a, email || '' AS b FROM customers"), Sync())
        c.send(
            b"".join(
                m.encode()
                for m in (
                    Bind("", "nosuch", (), (), ()),  # refused: the segment fails here
                    Parse("", "SELECT 'x'::text AS a, 'y'::text AS b"),  # skipped
                    Sync(),
                    Bind("", "", (), (), ()),
                    Execute("", 0),
                    Sync(),
                )
            )
        )
        msgs = c.until_ready() + c.until_ready()
        assert_clean(raw.forbidden, b"".join(m.body for m in msgs), "skipped re-Parse")
    finally:
        c.close()


def test_startup_parameters_spelled_twice_are_refused(dbgov: Any) -> None:
    """search_path=public and SEARCH_PATH=s2: the server applies the last, dbgov would
    have resolved names on the first."""
    for params in (
        {"search_path": "public", "SEARCH_PATH": "pg_temp"},
        {"options": "-c search_path=public -c SEARCH_PATH=pg_temp"},
        {"search_path": "public", "options": "-c Search_Path=pg_temp"},
    ):
        c = RawClient(dbgov.host, dbgov.port)
        try:
            err = error_of(c.startup("alice", "prod", dbgov.token("alice"), **params))
        finally:
            c.close()
        assert err is not None and err.sqlstate == "08P01", params
        assert "is given twice" in err.message
