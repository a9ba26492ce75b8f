"""What each demo identity sees of every demo table, through the real proxy.

alice (analysts) and bob (ml-engineers): customers' full_name and email as
pseudonyms (deterministic: equal inputs give equal tokens, in every query and
session of a target), phone with its last four characters, ssn redacted, PII
spans in prompt texts replaced by labels; every other column exactly as stored.
carol (dba) sees everything as stored; etl reads no table; dave cannot connect.
Pseudonyms keep equality, so joins, GROUP BY and count(DISTINCT) on them give the
same numbers as on the raw values. Each statement's audit event says which output
columns were masked, and how.
"""

from __future__ import annotations

import datetime as dt
import re
import struct
import time
from collections import Counter
from typing import Any

import psycopg
import pytest

from dbgov.demo.dataset import pii_samples
from dbgov.gate import SessionContext
from dbgov.identity import Identity
from dbgov.masking.engine import MaskingEngine, _Col
from dbgov.masking.maskers import Mask, MaskKind
from dbgov.sql import Catalog, CatalogColumn, CatalogRelation, analyze
from dbgov.wire.postgres.messages import FieldDescription
from masking.e2e_kit import RawData, load_raw

pytestmark = pytest.mark.usefixtures("dbgov")

TOKEN = re.compile(r"[0-9a-f]{16}")
LABEL = re.compile(r"\[(FULL_NAME|EMAIL|PHONE|SSN|CARD|IPV4|IPV6|IBAN|API_KEY|JWT)\]")
TABLES = {  # table -> (ORDER BY key, masked columns and their check)
    "customers": "id",
    "prompts": "id",
    "inference_log": "id",
    "feature_store": "customer_id, feature",
    "training_runs": "id",
}
MASKED = {
    "full_name": "pseudonym",
    "email": "pseudonym",
    "phone": "partial",
    "ssn": "redact",
    "prompt_text": "pii_text",
    "response_text": "pii_text",
}
LIMIT = 2000


@pytest.fixture(scope="module")
def raw(dbgov: Any) -> RawData:
    return load_raw(dbgov)


@pytest.fixture(scope="module")
def samples() -> dict[str, list[str]]:
    return pii_samples()


def fetch(
    dbgov: Any, user: str, sql: str, target: str = "prod"
) -> tuple[list[str], list[tuple[Any, ...]]]:
    with psycopg.connect(dbgov.dsn(user, target), autocommit=True) as conn:
        cur = conn.execute(sql)
        assert cur.description is not None
        return [d.name for d in cur.description], cur.fetchall()


def raw_rows(dbgov: Any, sql: str, target: str = "prod") -> list[tuple[Any, ...]]:
    return dbgov.app(sql, target=target)


def check_masked(column: str, raw_value: Any, seen: Any, samples: dict[str, list[str]]) -> None:
    kind = MASKED[column]
    if raw_value is None:
        assert seen is None, (column, seen)  # a direct column's NULL stays NULL
        return
    if kind == "pseudonym":
        assert TOKEN.fullmatch(seen), (column, seen)
    elif kind == "partial":
        assert len(seen) == len(raw_value) and seen.endswith(raw_value[-4:]), (column, seen)
        assert set(seen[:-4]) == {"*"}, (column, seen)
    elif kind == "redact":
        assert seen == "[REDACTED]"
    else:  # pii_text: the same text with PII spans (customer names too) replaced by labels
        pii = [
            v
            for k in ("names", "emails", "phones", "ssns", "cards", "ips", "api_keys")
            for v in samples[k]
            if v in raw_value
        ]
        if not pii:
            assert seen == raw_value, (raw_value, seen)
        else:
            assert LABEL.search(seen), seen
            assert not any(v in seen for v in pii), seen
            prefix = raw_value[: min(raw_value.find(v) for v in pii)]
            assert seen.startswith(prefix)


@pytest.mark.parametrize("user", ["alice", "bob"])
@pytest.mark.parametrize("table", list(TABLES))
def test_masked_identities_see(
    dbgov: Any, samples: dict[str, list[str]], user: str, table: str
) -> None:
    sql = f"SELECT * FROM {table} ORDER BY {TABLES[table]} LIMIT {LIMIT}"
    names, rows = fetch(dbgov, user, sql)
    expected = raw_rows(dbgov, sql)
    assert len(rows) == len(expected) > 0
    for got, want in zip(rows, expected, strict=True):
        for name, g, w in zip(names, got, want, strict=True):
            if table in ("customers", "prompts") and name in MASKED:
                check_masked(name, w, g, samples)
            else:
                assert g == w, (table, name, g, w)


@pytest.mark.parametrize("table", list(TABLES))
def test_carol_sees_raw_values(dbgov: Any, table: str) -> None:
    sql = f"SELECT * FROM {table} ORDER BY {TABLES[table]} LIMIT {LIMIT}"
    assert fetch(dbgov, "carol", sql)[1] == raw_rows(dbgov, sql)


@pytest.mark.parametrize("table", list(TABLES))
def test_etl_reads_no_table(dbgov: Any, table: str) -> None:
    with (
        psycopg.connect(dbgov.dsn("etl"), autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(f"SELECT * FROM {table} LIMIT 1")


def test_dave_cannot_connect(dbgov: Any) -> None:
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(dbgov.dsn("dave"))
    assert "42501" in str(info.value) or "denied" in str(info.value)


def test_bob_on_staging_is_masked_with_another_key(dbgov: Any) -> None:
    sql = "SELECT id, email FROM customers ORDER BY id LIMIT 50"
    prod = dict(fetch(dbgov, "bob", sql)[1])
    staging = dict(fetch(dbgov, "bob", sql, "staging")[1])
    raw = dict(raw_rows(dbgov, sql))
    assert raw == dict(raw_rows(dbgov, sql, "staging"))  # the same data on both targets
    assert all(TOKEN.fullmatch(v) for v in staging.values())
    assert not set(prod.values()) & set(staging.values())  # unlinkable across targets


# ---------------------------------------------------------------------------
# pseudonyms are deterministic: equality survives


def test_pseudonyms_are_deterministic_across_queries_sessions_and_identities(
    dbgov: Any,
) -> None:
    sql = "SELECT id, email, full_name FROM customers ORDER BY id"
    first = fetch(dbgov, "alice", sql)[1]
    again = fetch(dbgov, "alice", sql)[1]
    bobs = fetch(dbgov, "bob", sql)[1]
    assert first == again == bobs
    by_query = dict(
        fetch(
            dbgov, "alice", "SELECT id, e FROM (SELECT id, email AS e FROM customers) s ORDER BY 1"
        )[1]
    )
    assert by_query == {i: e for i, e, _ in first}
    # equal names, equal tokens: the token classes are the raw name classes
    raw = raw_rows(dbgov, sql)
    tokens_of: dict[str, set[str]] = {}
    for (_, _, token), (_, _, name) in zip(first, raw, strict=True):
        tokens_of.setdefault(name, set()).add(token)
    assert all(len(t) == 1 for t in tokens_of.values())
    assert len({next(iter(t)) for t in tokens_of.values()}) == len(tokens_of)


def test_join_on_pseudonymized_columns(dbgov: Any) -> None:
    rows = fetch(
        dbgov, "alice", "SELECT a.id, b.id FROM customers a JOIN customers b ON a.email = b.email"
    )[1]
    assert len(rows) == 5000 and all(a == b for a, b in rows)
    sql = "SELECT count(*) FROM customers a JOIN customers b ON a.full_name = b.full_name"
    assert fetch(dbgov, "alice", sql)[1] == raw_rows(dbgov, sql)
    sql = "SELECT count(*) FROM customers a JOIN customers b USING (full_name) WHERE a.id < b.id"
    assert fetch(dbgov, "bob", sql)[1] == raw_rows(dbgov, sql)


def test_group_by_and_count_distinct_match_raw_counts(dbgov: Any) -> None:
    for column in ("email", "full_name"):
        sql = f"SELECT {column}, count(*) FROM customers GROUP BY {column}"
        masked = Counter(n for _, n in fetch(dbgov, "alice", sql)[1])
        assert masked == Counter(n for _, n in raw_rows(dbgov, sql))
        sql = f"SELECT count(DISTINCT {column}), count({column}) FROM customers"
        assert fetch(dbgov, "alice", sql)[1] == raw_rows(dbgov, sql)
    sql = "SELECT country, count(DISTINCT full_name) FROM customers GROUP BY country ORDER BY 1"
    assert fetch(dbgov, "alice", sql)[1] == raw_rows(dbgov, sql)


def test_computed_values_are_constant(dbgov: Any) -> None:
    """A value computed from a masked column is the same for every row, NULL
    included, so neither its content nor its NULL-ness answers a question."""
    _, rows = fetch(
        dbgov,
        "alice",
        "SELECT id, substring(ssn from '^5'), upper(ssn), "
        "length(email), to_jsonb(phone) FROM customers",
    )
    assert {r[1] for r in rows} == {r[2] for r in rows} == {"[REDACTED]"}
    assert {r[3] for r in rows} == {None}
    assert {r[4] for r in rows} == {"[REDACTED]"}


# ---------------------------------------------------------------------------
# audit: statement.done says which columns were masked, and how


def _done_event(dbgov: Any, marker: str) -> dict[str, Any]:
    stmt = dbgov.wait_events(
        lambda e: marker in (e.get("sql") or ""), types=["statement"], user="alice"
    )
    assert len(stmt) == 1, stmt
    done = dbgov.wait_events(lambda e: e.get("ref") == stmt[0]["id"], types=["statement.done"])
    assert len(done) == 1
    return done[0]


def test_statement_done_lists_masked_columns(dbgov: Any) -> None:
    fetch(
        dbgov,
        "alice",
        "SELECT id, email AS audit_probe_1, ssn, phone, upper(full_name), "
        "country FROM customers LIMIT 5",
    )
    done = _done_event(dbgov, "audit_probe_1")
    assert done["masked"] == [
        {"column": "public.customers.email", "mask": "pseudonym"},
        {"column": "public.customers.ssn", "mask": "redact"},
        {"column": "public.customers.phone", "mask": "partial"},
        {"column": "upper <- public.customers.full_name", "mask": "redact"},
    ]
    fetch(dbgov, "alice", "SELECT prompt_text AS audit_probe_2 FROM prompts LIMIT 5")
    assert _done_event(dbgov, "audit_probe_2")["masked"] == [
        {"column": "public.prompts.prompt_text", "mask": "pii_text"}
    ]
    fetch(dbgov, "alice", "SELECT id AS audit_probe_3, model FROM prompts LIMIT 5")
    assert _done_event(dbgov, "audit_probe_3").get("masked") is None
    fetch(dbgov, "carol", "SELECT email AS audit_probe_4 FROM customers LIMIT 5")
    done = dbgov.wait_events(
        lambda e: "audit_probe_4" in (e.get("sql") or ""), types=["statement"], user="carol"
    )
    assert done
    carols = dbgov.wait_events(lambda e: e.get("ref") == done[0]["id"], types=["statement.done"])
    assert carols[0].get("masked") is None


def test_each_fetch_of_a_cursor_audits_its_masks(dbgov: Any) -> None:
    with psycopg.connect(dbgov.dsn("alice")) as conn, conn.cursor(name="audit_cursor") as cur:
        cur.execute("SELECT email AS audit_probe_5, ssn FROM customers")
        got = 0
        while batch := cur.fetchmany(1000):
            got += len(batch)
        assert got == 5000
    declare = dbgov.wait_events(
        lambda e: "audit_probe_5" in (e.get("sql") or ""), types=["statement"], user="alice"
    )
    assert len(declare) == 1
    session = declare[0]["session"]
    deadline = time.monotonic() + 10
    while True:  # events are integrated into the ledger in the background
        fetches = dbgov.wait_events(
            lambda e: (e.get("sql") or "").startswith("FETCH"), types=["statement"], session=session
        )
        if len(fetches) >= 6 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(fetches) == 6  # five batches of 1000, then the empty one
    for fetch_event in fetches:
        done = dbgov.wait_events(
            lambda e, ref=fetch_event["id"]: e.get("ref") == ref, types=["statement.done"]
        )
        assert done[0]["masked"] == [
            {"column": "public.customers.email", "mask": "pseudonym"},
            {"column": "public.customers.ssn", "mask": "redact"},
        ], done[0]


# ---------------------------------------------------------------------------
# the session's TimeZone reaches the maskers (bucket masks on timestamptz)


def test_bucket_mask_uses_the_session_time_zone() -> None:
    """No demo column has a bucket mask, so this drives the engine directly: a
    year bucket of a Berlin July timestamp starts at Berlin midnight (+01)."""
    engine = MaskingEngine(
        {"public.t.at": _Col(Mask(MaskKind.BUCKET, granularity="year"), frozenset())},
        "deny",
        frozenset(),
        b"k" * 32,
    )
    catalog = Catalog.of([CatalogRelation(1, "public", "t", "r", (CatalogColumn("at", 1, 1184),))])
    stmt = analyze("SELECT at FROM t").statements[0]
    field = FieldDescription("at", 1, 1, 1184, 8, -1, 0)
    value = b"2024-07-15 10:00:00+02"
    out = {}
    for zone in ("Europe/Berlin", "America/New_York", None):
        ctx = SessionContext(
            Identity("alice", frozenset({"analysts"}), "token", "test"),
            "prod",
            "production",
            time_zone=zone,
        )
        plan = engine.plan(stmt, (field,), ctx, catalog)
        out[zone] = plan.columns[0].text(value)  # type: ignore[union-attr]
    assert out["Europe/Berlin"] == b"2024-01-01 00:00:00+01"
    assert out["America/New_York"] == b"2024-01-01 00:00:00-05"
    assert out[None] == b"2024-01-01 00:00:00+02"
    epoch = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    usec = int((dt.datetime(2024, 7, 15, 8, tzinfo=dt.UTC) - epoch).total_seconds() * 1e6)
    ctx = SessionContext(
        Identity("alice", frozenset(), "token", "test"),
        "prod",
        "production",
        time_zone="Europe/Berlin",
    )
    plan = engine.plan(stmt, (field,), ctx, catalog)
    got = struct.unpack(">q", plan.columns[0].binary(struct.pack(">q", usec)))[0]  # type: ignore[union-attr]
    start = dt.datetime(2023, 12, 31, 23, tzinfo=dt.UTC)
    assert got == int((start - epoch).total_seconds() * 1e6)
