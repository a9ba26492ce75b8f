"""Output-column lineage and column uses over the demo-world catalog (see conftest)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from dbgov.sql import Catalog, CatalogColumn, CatalogRelation, Column, Lineage, Use, analyze
from dbgov.sql.lineage import compute_lineage

P, J, ORD, G = Use.PREDICATE, Use.JOIN_EQ, Use.ORDER, Use.GROUP
D, DON, W, E = Use.DISTINCT, Use.DISTINCT_ON, Use.WINDOW, Use.ERROR_PRONE
N, WR = Use.NOTIFY, Use.WRITE

CUSTOMERS = ("id", "full_name", "email", "phone", "ssn", "country", "created_at")


def col(name: str) -> Column:
    """ "customers.email" (schema public) or "pg_catalog.pg_class.relname"."""
    parts = name.split(".")
    return Column(*parts) if len(parts) == 3 else Column("public", *parts)


@dataclass(frozen=True)
class Out:
    """An expected output column: its sources, and the direct column if any."""

    sources: tuple[str, ...]
    direct: bool = False


def direct(name: str) -> Out:
    return Out((name,), True)


def derived(*names: str) -> Out:
    return Out(names)


EVERY_CUSTOMER_COLUMN = derived(*(f"customers.{c}" for c in CUSTOMERS))


@dataclass(frozen=True)
class Case:
    sql: str
    outputs: tuple[Out, ...] | None = None  # None: not checked
    uses: dict[str, set[Use]] = field(default_factory=dict)  # checked exactly
    eq: tuple[tuple[str, str], ...] = ()
    incomplete: str | None = None  # a fragment of the reason


def trace(sql: str, catalog: Catalog, search_path: tuple[str, ...] = ("public",)) -> Lineage:
    analysis = analyze(sql)
    assert analysis.error is None, analysis.error
    return compute_lineage(analysis.statements[0].node, catalog, search_path)


CASES = [
    # -- plain columns, aliases, star
    Case("SELECT email FROM customers", (direct("customers.email"),)),
    Case(
        "SELECT c.email AS e, C.FULL_NAME FROM customers AS c",
        (direct("customers.email"), direct("customers.full_name")),
    ),
    Case("SELECT * FROM customers", tuple(direct(f"customers.{c}") for c in CUSTOMERS)),
    Case("SELECT t.* FROM customers t", tuple(direct(f"customers.{c}") for c in CUSTOMERS)),
    Case("SELECT public.customers.email FROM customers", (direct("customers.email"),)),
    Case("SELECT email FROM public.customers", (direct("customers.email"),)),
    Case("SELECT email FROM customers, prompts", (direct("customers.email"),)),
    # -- expressions
    Case(
        "SELECT upper(email) || ' ' || phone FROM customers",
        (derived("customers.email", "customers.phone"),),
    ),
    Case("SELECT email::varchar(100) FROM customers", (derived("customers.email"),)),
    Case(
        "SELECT id::text, created_at::date FROM customers",
        (derived("customers.id"), derived("customers.created_at")),
        {"customers.created_at": {E}},
    ),
    Case(
        "SELECT CAST(ssn AS int) FROM customers",
        (derived("customers.ssn"),),
        {"customers.ssn": {E}},
    ),
    Case(
        "SELECT CASE WHEN country = 'US' THEN email ELSE phone END FROM customers",
        (derived("customers.country", "customers.email", "customers.phone"),),
        {"customers.country": {P}},
    ),
    Case(
        "SELECT CASE country WHEN 'US' THEN 1 ELSE 2 END FROM customers",
        (derived("customers.country"),),
        {"customers.country": {P}},
    ),
    Case(
        "SELECT coalesce(email, phone, 'none'), greatest(id, 5) FROM customers",
        (derived("customers.email", "customers.phone"), derived("customers.id")),
    ),
    Case(
        "SELECT ARRAY[email, phone], ROW(email, ssn) FROM customers",
        (
            derived("customers.email", "customers.phone"),
            derived("customers.email", "customers.ssn"),
        ),
    ),
    Case(
        "SELECT email LIKE '%@example.com' FROM customers",
        (derived("customers.email"),),
        {"customers.email": {P}},
    ),
    Case("SELECT features->>'email' FROM inference_log", (derived("inference_log.features"),)),
    Case(
        "SELECT (features->>'age')::int FROM inference_log",
        (derived("inference_log.features"),),
        {"inference_log.features": {E}},
    ),
    Case(
        "SELECT score / latency_ms, id % 2 FROM inference_log",
        (derived("inference_log.score", "inference_log.latency_ms"), derived("inference_log.id")),
        {"inference_log.score": {E}, "inference_log.latency_ms": {E}, "inference_log.id": {E}},
    ),
    Case(
        "SELECT to_date(prompt_text, 'YYYY-MM-DD') FROM prompts",
        (derived("prompts.prompt_text"),),
        {"prompts.prompt_text": {E}},
    ),
    Case(
        "SELECT json_build_object('e', email), JSON_OBJECT('p': phone) FROM customers",
        (derived("customers.email"), derived("customers.phone")),
    ),
    Case("SELECT pg_catalog.lower(email) FROM customers", (derived("customers.email"),)),
    Case("SELECT now(), 1, 'x', current_user FROM customers", (Out(()), Out(()), Out(()), Out(()))),
    # -- whole-row references
    Case("SELECT c FROM customers c", (EVERY_CUSTOMER_COLUMN,)),
    Case("SELECT row_to_json(c) FROM customers c", (EVERY_CUSTOMER_COLUMN,)),
    Case("SELECT c::text FROM customers c", (EVERY_CUSTOMER_COLUMN,)),
    Case("SELECT to_jsonb(c.*) FROM customers c", (EVERY_CUSTOMER_COLUMN,)),
    Case("SELECT json_agg(c) FROM customers c", (EVERY_CUSTOMER_COLUMN,)),
    Case(
        "SELECT hstore(customers) FROM customers",
        (EVERY_CUSTOMER_COLUMN,),
        {f"customers.{c}": {E} for c in CUSTOMERS},  # not known to be total: may raise
    ),
    Case("SELECT (c).email FROM customers c", (direct("customers.email"),)),
    Case("SELECT (c).* FROM customers c", tuple(direct(f"customers.{c}") for c in CUSTOMERS)),
    # -- subqueries
    Case(
        "SELECT (SELECT email FROM customers c WHERE c.id = p.customer_id) FROM prompts p",
        (direct("customers.email"),),
        {"customers.id": {J}, "prompts.customer_id": {J}},
        (("customers.id", "prompts.customer_id"),),
    ),
    Case("SELECT (SELECT email) FROM customers", (direct("customers.email"),)),
    Case(
        "SELECT (SELECT max(created_at) FROM prompts WHERE customer_id = c.id) FROM customers c",
        (derived("prompts.created_at"),),
        {"customers.id": {J}, "prompts.customer_id": {J}},
        (("customers.id", "prompts.customer_id"),),
    ),
    Case(
        "SELECT x.a FROM (SELECT email AS a, id AS b FROM customers) x",
        (direct("customers.email"),),
    ),
    Case(
        "SELECT x.a FROM (SELECT email AS b, id AS a FROM customers) x",
        (direct("customers.id"),),
    ),
    Case(
        "SELECT a, b FROM (SELECT email, phone FROM customers) AS x(a, b)",
        (direct("customers.email"), direct("customers.phone")),
    ),
    Case(
        "SELECT id FROM customers WHERE id IN (SELECT customer_id FROM prompts)",
        (direct("customers.id"),),
        {"customers.id": {J}, "prompts.customer_id": {J}},
        (("customers.id", "prompts.customer_id"),),
    ),
    Case(
        "SELECT email FROM customers c WHERE EXISTS (SELECT 1 FROM prompts p"
        " WHERE p.customer_id = c.id AND p.prompt_text ILIKE '%ssn%')",
        (direct("customers.email"),),
        {"customers.id": {J}, "prompts.customer_id": {J}, "prompts.prompt_text": {P}},
        (("customers.id", "prompts.customer_id"),),
    ),
    Case(
        "SELECT id FROM customers WHERE email = (SELECT feature FROM feature_store LIMIT 1)",
        (direct("customers.id"),),
        {"customers.email": {J}, "feature_store.feature": {J}},
        (("customers.email", "feature_store.feature"),),
    ),
    Case(
        "SELECT unnest(x) FROM (SELECT array_agg(email) AS x FROM customers) s",
        (derived("customers.email"),),
        {"customers.email": {P}},  # the row count depends on the array
    ),
    # -- CTEs
    Case(
        "WITH c AS (SELECT email FROM customers) SELECT email FROM c", (direct("customers.email"),)
    ),
    Case(
        "WITH c(e) AS (SELECT email FROM customers) SELECT e FROM c", (direct("customers.email"),)
    ),
    Case("WITH customers AS (SELECT 1 AS email) SELECT email FROM customers", (Out(()),)),
    Case(
        "WITH customers AS (SELECT phone AS email FROM customers) SELECT email FROM customers",
        (direct("customers.phone"),),
    ),
    Case(
        "WITH c AS (SELECT 1 AS email) SELECT email FROM public.customers",
        (direct("customers.email"),),
    ),
    Case(
        "WITH RECURSIVE r(id, e) AS (SELECT id, email FROM customers WHERE id = 1"
        " UNION ALL SELECT c.id, c.email FROM customers c JOIN r ON c.id = r.id + 1)"
        " SELECT e FROM r",
        (direct("customers.email"),),
        {"customers.id": {P, E}},  # + can overflow
    ),
    Case(
        "WITH RECURSIVE r(n) AS (SELECT id FROM customers UNION ALL"
        " SELECT n + 1 FROM r WHERE n < 10) SELECT n FROM r",
        (derived("customers.id"),),
        {"customers.id": {P, E}},
    ),
    Case(
        "WITH d AS (DELETE FROM prompts WHERE customer_id = 1 RETURNING prompt_text)"
        " SELECT prompt_text FROM d",
        (direct("prompts.prompt_text"),),
        {"prompts.customer_id": {P}},
    ),
    Case(
        "WITH unused AS (SELECT 1 FROM customers WHERE ssn = '1') SELECT 1",
        (Out(()),),
        {"customers.ssn": {P}},
    ),
    # -- views
    Case("SELECT contact FROM v_customers", (direct("customers.email"),)),
    Case(
        "SELECT * FROM v_customers",
        (direct("customers.id"), direct("customers.email"), direct("customers.country")),
    ),
    Case(
        "SELECT v.contact FROM v_customers v WHERE country = 'US'",
        (direct("customers.email"),),
        {"customers.country": {P}},
    ),
    # -- set operations
    Case(
        "SELECT email FROM customers UNION ALL SELECT prompt_text FROM prompts",
        (derived("customers.email", "prompts.prompt_text"),),
    ),
    Case(
        "SELECT email FROM customers WHERE id < 5"
        " UNION ALL SELECT email FROM customers WHERE id > 9",
        (direct("customers.email"),),
        {"customers.id": {P}},
    ),
    Case(
        "SELECT email FROM customers UNION SELECT phone FROM customers ORDER BY 1",
        (derived("customers.email", "customers.phone"),),
        # distinct over values of two columns compares them with each other
        {"customers.email": {P, ORD}, "customers.phone": {P, ORD}},
    ),
    Case(
        "SELECT ssn FROM customers INTERSECT SELECT '123-45-6789'",
        (derived("customers.ssn"),),
        {"customers.ssn": {P}},
    ),
    # -- joins
    Case(
        "SELECT c.* FROM customers c JOIN prompts p ON p.customer_id = c.id",
        tuple(direct(f"customers.{c}") for c in CUSTOMERS),
        {"customers.id": {J}, "prompts.customer_id": {J}},
        (("customers.id", "prompts.customer_id"),),
    ),
    Case(
        "SELECT customer_id, model FROM prompts JOIN inference_log USING (customer_id)",
        (derived("prompts.customer_id", "inference_log.customer_id"), direct("prompts.model")),
        {"prompts.customer_id": {J}, "inference_log.customer_id": {J}},
        (("inference_log.customer_id", "prompts.customer_id"),),
    ),
    Case(
        "SELECT u.customer_id FROM prompts JOIN inference_log USING (customer_id) AS u",
        (derived("prompts.customer_id", "inference_log.customer_id"),),
        {"prompts.customer_id": {J}, "inference_log.customer_id": {J}},
        (("inference_log.customer_id", "prompts.customer_id"),),
    ),
    Case(
        "SELECT id FROM customers NATURAL JOIN training_runs",
        (derived("customers.id", "training_runs.id"),),
        {"customers.id": {J}, "training_runs.id": {J}},
        (("customers.id", "training_runs.id"),),
    ),
    Case(
        "SELECT j.email FROM (customers JOIN prompts ON customers.id = prompts.customer_id) AS j",
        (direct("customers.email"),),
        {"customers.id": {J}, "prompts.customer_id": {J}},
        (("customers.id", "prompts.customer_id"),),
    ),
    Case(
        "SELECT c.id FROM customers c JOIN prompts p ON p.created_at > c.created_at",
        (direct("customers.id"),),
        {"customers.created_at": {P}, "prompts.created_at": {P}},
    ),
    Case(
        "SELECT c.email, l.prompt_text FROM customers c, LATERAL (SELECT prompt_text FROM prompts p"
        " WHERE p.customer_id = c.id ORDER BY created_at DESC LIMIT 1) l",
        (direct("customers.email"), direct("prompts.prompt_text")),
        {"customers.id": {J}, "prompts.customer_id": {J}, "prompts.created_at": {ORD}},
        (("customers.id", "prompts.customer_id"),),
    ),
    Case(
        "SELECT v.x FROM customers c, LATERAL (VALUES (c.email), (c.phone)) v(x)",
        (derived("customers.email", "customers.phone"),),
    ),
    # -- functions in FROM
    Case("SELECT x FROM unnest(ARRAY[1, 2]) AS x", (Out(()),)),
    Case("SELECT * FROM generate_series(1, 3)", (Out(()),)),
    Case(
        "SELECT u FROM customers c, unnest(ARRAY[c.email, c.phone]) AS u",
        (derived("customers.email", "customers.phone"),),
        {"customers.email": {P}, "customers.phone": {P}},  # rows per argument value
    ),
    Case(
        "SELECT t.key, value FROM inference_log i, jsonb_each(i.features) AS t",
        (derived("inference_log.features"), derived("inference_log.features")),
        {"inference_log.features": {P, E}},  # raises on a non-object
    ),
    Case(
        "SELECT * FROM unnest((SELECT array_agg(email) FROM customers))",
        (derived("customers.email"),),
        {"customers.email": {P}},
    ),
    Case("SELECT a FROM jsonb_to_record('{}') AS r(a int)", (Out(()),)),
    Case(
        "SELECT * FROM (VALUES (1, 'a'), (2, 'b')) AS v(n, s)",
        (Out(()), Out(())),
    ),
    # -- aggregates and windows
    Case(
        "SELECT string_agg(email, ',' ORDER BY created_at) FROM customers",
        (derived("customers.email"),),
        {"customers.created_at": {ORD}},
    ),
    Case(
        "SELECT array_agg(phone) FROM customers GROUP BY country",
        (derived("customers.phone"),),
        {"customers.country": {G}},
    ),
    # A LIMIT or OFFSET over groups keeps the first ones in the plan's order, which an
    # index or a sort makes the raw values' order.
    Case(
        "SELECT email, min(id) FROM customers GROUP BY email LIMIT 10 OFFSET 1000",
        (direct("customers.email"), derived("customers.id")),
        {"customers.email": {G, ORD}},
    ),
    Case(
        "SELECT DISTINCT email FROM customers OFFSET 5",
        (direct("customers.email"),),
        {"customers.email": {D, ORD}},
    ),
    Case(
        "SELECT email FROM customers UNION SELECT email FROM customers LIMIT 5",
        (direct("customers.email"),),
        {"customers.email": {D, ORD}},
    ),
    Case(
        "SELECT email FROM customers UNION ALL SELECT email FROM customers LIMIT 5",
        (direct("customers.email"),),
    ),
    # Row counts that depend on values: a sample's size, a JSON_TABLE's matches, a cycle.
    Case(
        "SELECT count(*) FROM customers c, LATERAL (SELECT 1 FROM prompts "
        "TABLESAMPLE BERNOULLI (ascii(substr(c.ssn, 1, 1))) REPEATABLE (7)) s",
        (Out(()),),
        {"customers.ssn": {P}},
    ),
    Case(
        "SELECT count(*) FROM customers c, JSON_TABLE(to_jsonb(c.email), '$' "
        "COLUMNS (v text PATH '$')) jt",
        (Out(()),),
        {"customers.email": {P}},
    ),
    Case(
        "WITH RECURSIVE r(s, n) AS (SELECT ssn, 1 FROM customers UNION ALL "
        "SELECT s, n + 1 FROM r WHERE n < 2) CYCLE s SET is_cycle USING path "
        "SELECT is_cycle FROM r",
        (derived("customers.ssn"),),
        {"customers.ssn": {P}},
    ),
    # count(DISTINCT col) compares values (fine for a pseudonym, an oracle for others).
    Case(
        "SELECT count(ssn), count(DISTINCT email) FROM customers",
        (Out(()), Out(())),
        {"customers.email": {D}},
    ),
    # A count of a computed value tells its NULL-ness, also through a subquery's or a
    # CTE's output column: substring(ssn from '^5') is NULL unless ssn starts with 5.
    Case(
        "SELECT count(s) FROM (SELECT substring(ssn from '^5') AS s FROM customers) x",
        (derived("customers.ssn"),),
    ),
    Case(
        "WITH x AS (SELECT substring(email from '^a') AS s, ssn FROM customers) "
        "SELECT count(s), count(ssn) FROM x",
        (derived("customers.email"), Out(())),
    ),
    Case(
        "SELECT count(*) FROM customers WHERE ssn LIKE '9%'",
        (Out(()),),
        {"customers.ssn": {P}},
    ),
    Case(
        "SELECT count(*) FILTER (WHERE ssn = '1') FROM customers",
        (Out(()),),
        {"customers.ssn": {P}},
    ),
    Case(
        "SELECT rank() OVER (PARTITION BY country ORDER BY created_at), lag(email) OVER w"
        " FROM customers WINDOW w AS (ORDER BY id)",
        (Out(()), derived("customers.email")),
        {"customers.country": {W}, "customers.created_at": {ORD}, "customers.id": {ORD}},
    ),
    Case(
        "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY score) FROM inference_log",
        (derived("inference_log.score"),),
        {"inference_log.score": {ORD}},
    ),
    Case(
        "SELECT country FROM customers GROUP BY country HAVING count(*) > 10 AND max(ssn) > '5'",
        (direct("customers.country"),),
        {"customers.country": {G}, "customers.ssn": {P}},
    ),
    Case(
        "SELECT country, count(*) FROM customers GROUP BY ROLLUP (country)",
        (direct("customers.country"), Out(())),
        {"customers.country": {G}},
    ),
    Case(
        "SELECT country, count(*) FROM customers GROUP BY 1",
        (direct("customers.country"), Out(())),
        {"customers.country": {G}},
    ),
    # -- each use
    Case(
        "SELECT DISTINCT country FROM customers",
        (direct("customers.country"),),
        {"customers.country": {D}},
    ),
    Case(
        "SELECT DISTINCT ON (email) email, phone FROM customers ORDER BY email, created_at",
        (direct("customers.email"), direct("customers.phone")),
        {"customers.email": {DON, ORD}, "customers.created_at": {ORD}},
    ),
    Case(
        "SELECT email AS e FROM customers ORDER BY e",
        (direct("customers.email"),),
        {"customers.email": {ORD}},
    ),
    Case(
        "SELECT email FROM customers ORDER BY 1",
        (direct("customers.email"),),
        {"customers.email": {ORD}},
    ),
    Case(
        "SELECT id FROM customers WHERE email = phone",
        (direct("customers.id"),),
        {"customers.email": {J}, "customers.phone": {J}},
        (("customers.email", "customers.phone"),),
    ),
    Case(
        "SELECT id FROM customers WHERE lower(email) = lower(phone)",
        (direct("customers.id"),),
        {"customers.email": {P}, "customers.phone": {P}},
    ),
    Case(
        "SELECT id FROM customers WHERE phone IS NULL OR (email, ssn) = ('a', 'b')",
        (direct("customers.id"),),
        {"customers.phone": {P}, "customers.email": {P}, "customers.ssn": {P}},
    ),
    Case(
        "SELECT id FROM customers WHERE created_at BETWEEN now() - interval '1 day' AND now()",
        (direct("customers.id"),),
        {"customers.created_at": {P}},
    ),
    Case(
        "SELECT pg_notify('leak', email) FROM customers",
        (derived("customers.email"),),
        {"customers.email": {N, E}},  # a payload over 8000 bytes raises
    ),
    # -- statements that write
    Case(
        "INSERT INTO feature_store (customer_id, feature) SELECT id, email FROM customers",
        (),
        {"customers.id": {WR}, "customers.email": {WR}},
    ),
    Case("CREATE TABLE leak AS SELECT ssn FROM customers", (), {"customers.ssn": {WR}}),
    Case("SELECT phone INTO leak FROM customers", (), {"customers.phone": {WR}}),
    Case(
        "UPDATE feature_store SET feature = (SELECT email FROM customers c"
        " WHERE c.id = feature_store.customer_id) WHERE customer_id = 3",
        (),
        {
            "customers.email": {WR},
            "customers.id": {J},
            "feature_store.customer_id": {J, P},
        },
        (("customers.id", "feature_store.customer_id"),),
    ),
    Case(
        "DELETE FROM prompts WHERE id = 1 RETURNING prompt_text, customer_id",
        (direct("prompts.prompt_text"), direct("prompts.customer_id")),
        {"prompts.id": {P}},
    ),
    Case(
        "UPDATE prompts p SET model = 'x' FROM customers c WHERE c.id = p.customer_id"
        " RETURNING c.email, p.id, old.model",
        (direct("customers.email"), direct("prompts.id"), direct("prompts.model")),
        {"customers.id": {J}, "prompts.customer_id": {J}},
        (("customers.id", "prompts.customer_id"),),
    ),
    Case(
        "INSERT INTO feature_store (customer_id, feature, value) VALUES (1, 'f', 2)"
        " ON CONFLICT (customer_id) DO UPDATE SET feature = excluded.feature RETURNING *",
        (
            direct("feature_store.customer_id"),
            direct("feature_store.feature"),
            direct("feature_store.value"),
            direct("feature_store.updated_at"),
        ),
    ),
    Case(
        "MERGE INTO feature_store f USING customers c ON f.customer_id = c.id"
        " WHEN MATCHED AND c.country = 'US' THEN UPDATE SET feature = c.email"
        " WHEN NOT MATCHED THEN INSERT (customer_id, feature) VALUES (c.id, c.phone)",
        (),
        {
            "feature_store.customer_id": {J},
            "customers.id": {J, WR},
            "customers.country": {P},
            "customers.email": {WR},
            "customers.phone": {WR},
        },
        (("customers.id", "feature_store.customer_id"),),
    ),
    # -- what other statements return
    Case(
        "COPY (SELECT email, ssn FROM customers) TO STDOUT",
        (direct("customers.email"), direct("customers.ssn")),
    ),
    Case(
        "COPY customers (email, phone) TO STDOUT",
        (direct("customers.email"), direct("customers.phone")),
    ),
    Case(
        "COPY training_runs TO STDOUT WITH (FORMAT csv)",
        tuple(
            direct(f"training_runs.{c}")
            for c in ("id", "model", "started_at", "finished_at", "rows_used")
        ),
    ),
    Case("COPY feature_store FROM STDIN", ()),
    Case("EXPLAIN SELECT ssn FROM customers WHERE ssn = '1'", (), {}),
    Case("EXPLAIN ANALYZE SELECT ssn FROM customers WHERE ssn = '1'", (), {"customers.ssn": {P}}),
    Case("DECLARE c CURSOR FOR SELECT phone FROM customers", (direct("customers.phone"),)),
    Case(
        "PREPARE p (int) AS SELECT email FROM customers WHERE id = $1",
        (direct("customers.email"),),
        {"customers.id": {P}},
    ),
    Case("SHOW search_path", (Out(()),)),
    Case("INSERT INTO not_in_catalog VALUES (1)", ()),
    Case("CREATE TYPE mood AS ENUM ('sad', 'ok')", ()),
    Case("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", ()),
    Case("INSERT INTO not_in_catalog VALUES (1) RETURNING *", incomplete="not_in_catalog"),
    Case("SET search_path = public", ()),
    Case("BEGIN", ()),
    Case("DROP TABLE customers", ()),
    Case("SELECT relname FROM pg_catalog.pg_class", (direct("pg_catalog.pg_class.relname"),)),
    # -- incomplete: never guess
    Case("SELECT * FROM nosuch", incomplete="nosuch"),
    Case("SELECT nosuch_column FROM customers", incomplete="nosuch_column"),
    Case(
        "SELECT id FROM customers JOIN prompts ON customers.id = prompts.customer_id",
        incomplete="ambiguous",
    ),
    Case("SELECT created_at FROM customers, prompts", incomplete="ambiguous"),
    Case("SELECT * FROM customers c, (SELECT c.email) x", incomplete="c"),
    Case("SELECT public.score_customer(id) FROM customers", incomplete="score_customer"),
    Case("SELECT score_customer(id) FROM customers", incomplete="score_customer"),
    Case("SELECT util.mask(email) FROM customers", incomplete="util.mask"),
    Case("SELECT email OPERATOR(util.===) phone FROM customers", incomplete="util"),
    Case("SELECT * FROM pg_catalog.pg_class", incomplete="pg_catalog.pg_class"),
    Case("FETCH 10 FROM c", incomplete="DECLARE"),
    Case("EXECUTE p (1)", incomplete="prepared"),
    Case("CALL refresh_features()", incomplete="procedure"),
    Case("DO $$ BEGIN RAISE NOTICE '%', 1; END $$", incomplete="DO"),
    Case("ALTER TABLE customers ALTER COLUMN email TYPE text USING ssn", incomplete="USING"),
    Case("SELECT email FROM customers ORDER BY 5", incomplete="position 5"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.sql[:60] for c in CASES])
def test_lineage(case: Case, catalog: Catalog) -> None:
    result = trace(case.sql, catalog)
    if case.incomplete is not None:
        assert not result.complete
        assert result.reason and case.incomplete in result.reason, result.reason
        assert result.outputs == ()
        return
    assert result.complete, result.reason
    if case.outputs is not None:
        got = [(sorted(map(str, o.sources)), o.direct) for o in result.outputs]
        want = [
            (sorted(str(col(s)) for s in o.sources), col(o.sources[0]) if o.direct else None)
            for o in case.outputs
        ]
        assert got == want
    uses = {(col(name), use) for name, kinds in case.uses.items() for use in kinds}
    assert result.uses == uses
    assert result.eq_pairs == {(col(a), col(b)) for a, b in case.eq}


def _with(catalog: Catalog, *extra: CatalogRelation) -> Catalog:
    return Catalog.of([*catalog.relations.values(), *extra], version=2)


def _view(oid: int, name: str, sql: str | None, *cols: str) -> CatalogRelation:
    columns = tuple(CatalogColumn(c, i + 1, 25) for i, c in enumerate(cols))
    return CatalogRelation(oid, "public", name, "v", columns, sql)


def test_view_cycle_is_incomplete(catalog: Catalog) -> None:
    catalog = _with(
        catalog,
        _view(17001, "v1", "SELECT a FROM v2", "a"),
        _view(17002, "v2", "SELECT a FROM v1", "a"),
    )
    result = trace("SELECT a FROM v1", catalog)
    assert not result.complete and "refers to itself" in (result.reason or "")


def test_view_without_definition_is_incomplete(catalog: Catalog) -> None:
    result = trace("SELECT a FROM v3", _with(catalog, _view(17003, "v3", None, "a")))
    assert not result.complete and "no definition" in (result.reason or "")


def test_nested_views_reach_base_columns(catalog: Catalog) -> None:
    catalog = _with(catalog, _view(17004, "v4", "SELECT contact AS mail FROM v_customers", "mail"))
    result = trace("SELECT mail FROM v4", catalog)
    assert [o.direct for o in result.outputs] == [col("customers.email")]


def test_search_path_decides_unqualified_names(catalog: Catalog) -> None:
    assert not trace("SELECT email FROM customers", catalog, ("app",)).complete
    assert trace("SELECT email FROM public.customers", catalog, ("app",)).complete


def test_system_relations_in_the_catalog_are_not_expanded(catalog: Catalog) -> None:
    pg_class = CatalogRelation(
        1259, "pg_catalog", "pg_class", "r", (CatalogColumn("relname", 2, 19),)
    )
    pg_views = CatalogRelation(
        12000, "pg_catalog", "pg_views", "v", (CatalogColumn("definition", 1, 25),), "SELECT nope"
    )
    catalog = _with(catalog, pg_class, pg_views)
    result = trace("SELECT c.relname, v.definition FROM pg_class c, pg_views v", catalog)
    assert result.complete, result.reason
    assert [o.direct for o in result.outputs] == [
        col("pg_catalog.pg_class.relname"),
        col("pg_catalog.pg_views.definition"),
    ]


def test_incomplete_keeps_the_uses_seen_so_far(catalog: Catalog) -> None:
    result = trace("SELECT x FROM customers WHERE ssn = '1' AND x = 2", catalog)
    assert not result.complete
    assert (col("customers.ssn"), Use.PREDICATE) in result.uses


def test_view_bodies_resolve_with_the_catalogs_path_not_the_sessions(catalog: Catalog) -> None:
    # A session that puts its own `customers` first must not change what a view reads.
    evil = CatalogRelation(18001, "evil", "customers", "r", (CatalogColumn("email", 1, 25),))
    shadowed = _with(catalog, evil)
    result = trace("SELECT contact FROM public.v_customers", shadowed, ("evil", "public"))
    assert result.complete, result.reason
    assert [o.direct for o in result.outputs] == [col("customers.email")]
    plain = trace("SELECT email FROM customers", shadowed, ("evil", "public"))
    assert [o.direct for o in plain.outputs] == [Column("evil", "customers", "email")]
