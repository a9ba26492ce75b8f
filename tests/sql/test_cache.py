"""The analysis cache: exact text, then text up to literals; never across meanings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pglast import parser

from dbgov.sql import Catalog, analyze, analyze_cached, cache_info, clear_cache, lineage
from dbgov.sql.analyze import MAX_CACHED_TEXT
from dbgov.sql.cache import LRU, fast_literal_key, literal_key


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    clear_cache()
    yield
    clear_cache()


def test_level1_hit_returns_the_same_analysis() -> None:
    q = "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;"
    first = analyze_cached(q)
    assert analyze_cached(q) is first
    info = cache_info()
    assert (info.level1_hits, info.level2_hits, info.misses) == (1, 0, 1)


def test_level2_hit_shares_the_analysis_across_literals() -> None:
    first = analyze_cached("SELECT abalance FROM pgbench_accounts WHERE aid = 12345;")
    second = analyze_cached("SELECT abalance FROM pgbench_accounts WHERE aid = 777;")
    assert second is first
    assert cache_info().level2_hits == 1 and cache_info().misses == 1


def test_texts_the_fast_key_answers_are_not_kept_one_by_one() -> None:
    # pgbench -S sends a new text each time: level 2 answers, level 1 stays small.
    first = analyze_cached("SELECT abalance FROM pgbench_accounts WHERE aid = 0")
    for aid in range(1, 100):
        assert analyze_cached(f"SELECT abalance FROM pgbench_accounts WHERE aid = {aid}") is first
    info = cache_info()
    assert (info.level1_size, info.level2_hits, info.misses) == (1, 99, 1)
    # A text the scanner keys (~13 us) is kept once level 2 has answered it.
    analyze_cached("SELECT a FROM t WHERE b = $1")
    analyze_cached("SELECT a FROM t WHERE b =  $1")  # same key, other text
    analyze_cached("SELECT a FROM t WHERE b =  $1")
    info = cache_info()
    assert (info.level1_hits, info.level2_hits, info.misses) == (1, 100, 2)


def test_level2_ignores_whitespace_and_comments() -> None:
    # Texts with comments take the scanner's key, which drops layout.
    first = analyze_cached("SELECT a FROM t WHERE b = 'x' -- one")
    second = analyze_cached("SELECT  a /* hi */ FROM t\n WHERE b = 'y' -- bye")
    assert second is first


def test_fast_key_shares_entries_across_literal_values() -> None:
    first = analyze_cached("SELECT abalance FROM pgbench_accounts WHERE aid = 1")
    second = analyze_cached("SELECT abalance FROM pgbench_accounts WHERE aid = 98765")
    assert second is first
    assert fast_literal_key("SELECT a FROM t WHERE b = 'x'") == fast_literal_key(
        "SELECT a FROM t WHERE b = 'it''s'"
    )


@pytest.mark.parametrize(
    "text",
    [
        'SELECT "t1" FROM t',
        "SELECT E'x'",
        "SELECT x'1f'",
        "SELECT b'101'",
        "SELECT N'x'",
        "SELECT $1",
        "SELECT $$x$$",
        "SELECT 1 -- c",
        "SELECT /* c */ 1",
        "SELECT 'a\\b'",
        "SELECT U&'d\\0061t'",
        "SELECT 'open",
    ],
)
def test_fast_key_refuses_what_only_the_scanner_can_read(text: str) -> None:
    assert fast_literal_key(text) is None


def test_fast_key_keeps_identifiers_with_digits() -> None:
    assert fast_literal_key("SELECT c1 FROM t1") != fast_literal_key("SELECT c2 FROM t2")
    assert fast_literal_key("SELECT é1 FROM t") != fast_literal_key("SELECT é2 FROM t")
    # PostgreSQL's scanner takes every non-ASCII character as a letter: "€1" and "€2"
    # are two columns, and "٣" (an Arabic-Indic digit) is a column, not a number.
    assert fast_literal_key("SELECT €1 FROM t") != fast_literal_key("SELECT €2 FROM t")
    assert fast_literal_key("SELECT ٣ FROM t") != fast_literal_key("SELECT 3 FROM t")
    assert fast_literal_key("SELECT x_1, 2 FROM t") == fast_literal_key("SELECT x_1, 5 FROM t")


def test_a_column_named_by_a_unicode_digit_is_not_a_cached_constant() -> None:
    # With Python's \d, "SELECT ٣ FROM customers" took the analysis of "SELECT 1 FROM
    # customers": a column read as a constant, so a mask on it would never apply.
    constant = analyze_cached("SELECT 1 FROM customers")
    column = analyze_cached("SELECT ٣ FROM customers")
    assert column is not constant
    assert column.fingerprint != constant.fingerprint


def test_aliases_swapped_do_not_share_an_entry() -> None:
    a = "SELECT x.a FROM (SELECT email AS a, id AS b FROM customers) x"
    b = "SELECT x.a FROM (SELECT email AS b, id AS a FROM customers) x"
    assert parser.fingerprint(a) == parser.fingerprint(b)  # why the fingerprint is no key
    assert literal_key(a) != literal_key(b)
    assert analyze_cached(a) is not analyze_cached(b)
    assert cache_info().level2_hits == 0


def test_identifier_case_and_quoting_matter() -> None:
    keys = {literal_key(q) for q in ('SELECT * FROM "Customers"', "SELECT * FROM customers")}
    assert len(keys) == 2


def test_uescape_string_is_part_of_the_name() -> None:
    # The escape character decides which table U&"..." names: never a shared key.
    a = "SELECT * FROM U&\"!0063ustomers\" UESCAPE '!'"
    b = "SELECT * FROM U&\"!0063ustomers\" UESCAPE '#'"
    assert literal_key(a) != literal_key(b)
    reads_a = analyze_cached(a).statements[0].reads
    reads_b = analyze_cached(b).statements[0].reads
    assert {r.name for r in reads_a} == {"customers"}
    assert {r.name for r in reads_b} == {"!0063ustomers"}


def test_literal_classes_keep_distinct_keys() -> None:
    assert literal_key("SELECT 1") != literal_key("SELECT '1'")
    assert literal_key("SELECT 1") == literal_key("SELECT 42")
    # Strings share a key within one spelling (the fast key needs no scanner).
    assert literal_key("SELECT 'a'") == literal_key("SELECT 'bc'")
    assert literal_key("SELECT $$a$$") == literal_key("SELECT $$bc$$")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("SET search_path = a", "SET search_path = b"),
        ("SET search_path = 'a'", "SET search_path = 'b'"),
        ("SELECT set_config('role', 'x', false)", "SELECT set_config('work_mem', 'x', false)"),
        ("SELECT a, b FROM t GROUP BY 1", "SELECT a, b FROM t GROUP BY 2"),
        ("COPY t TO '/tmp/a'", "COPY t TO '/tmp/b'"),
        ("EXPLAIN (ANALYZE 0) DELETE FROM t", "EXPLAIN (ANALYZE 1) DELETE FROM t"),
    ],
)
def test_literal_sensitive_analysis_is_never_reused_across_literals(a: str, b: str) -> None:
    first, second = analyze_cached(a), analyze_cached(b)
    assert not first.literal_insensitive
    assert second is not first
    assert cache_info().level2_hits == 0 and cache_info().level2_size == 0


def test_search_path_values_stay_apart() -> None:
    a = analyze_cached("SET search_path = 'a'").statements[0]
    b = analyze_cached("SET search_path = 'b'").statements[0]
    assert a.set_param == ("search_path", "a") and b.set_param == ("search_path", "b")


def test_parse_errors_are_not_shared() -> None:
    analyze_cached("SELEC 1")
    analyze_cached("SELEC 2")
    assert cache_info().level2_size == 0


def test_long_texts_bypass_the_cache() -> None:
    long = "SELECT 1" + " " * MAX_CACHED_TEXT
    assert analyze_cached(long) is not analyze_cached(long)


def test_lru_is_bounded_and_evicts_the_oldest() -> None:
    lru: LRU[str, int] = LRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # a is now the most recent
    lru.put("c", 3)
    assert lru.get("b") is None and lru.get("a") == 1 and len(lru) == 2


def test_lineage_is_cached_per_tree_catalog_and_search_path(catalog: Catalog) -> None:
    stmt = analyze_cached("SELECT email FROM customers WHERE id = 1").statements[0]
    first = lineage(stmt, catalog, ["public"])
    assert lineage(stmt, catalog, ["public"]) is first
    assert lineage(stmt, catalog, ["other", "public"]) is not first
    # A query string sharing the analysis shares the lineage too.
    other = analyze_cached("SELECT email FROM customers WHERE id = 99").statements[0]
    assert other is stmt and lineage(other, catalog, ["public"]) is first


def test_lineage_cache_follows_catalog_version(catalog: Catalog) -> None:
    stmt = analyze_cached("SELECT email FROM customers").statements[0]
    before = lineage(stmt, catalog, ["public"])
    newer = Catalog.of(catalog.relations.values(), version=catalog.version + 1)
    after = lineage(stmt, newer, ["public"])
    assert after is not before and after == before


_OTHER_LITERAL = {
    "ICONST": "7",
    "FCONST": "2.5",
    "SCONST": "'zz'",
    "USCONST": "U&'zz'",
    "BCONST": "B'1'",
    "XCONST": "X'1f'",
}


def _other_literals(sql: str) -> str:
    """The same text with every literal replaced by another of its token class."""
    out, last, previous = [], 0, ""
    for token in parser.scan(sql):
        if token.name in _OTHER_LITERAL and previous != "UESCAPE":
            out += [sql[last : token.start], _OTHER_LITERAL[token.name]]
            last = token.end + 1
        previous = token.name
    return "".join(out) + sql[last:]


def _corpus() -> list[str]:
    """Texts from the analyzer tests that have literals, and still parse when varied."""
    from test_analyze import FACT_CASES, FILTERED, KIND_CASES, UNFILTERED

    texts = [c[0] for c in KIND_CASES] + [c[0] for c in FACT_CASES] + UNFILTERED + FILTERED
    return [t for t in texts if _other_literals(t) != t and not analyze(_other_literals(t)).error]


@pytest.mark.parametrize("sql", _corpus())
def test_sharing_never_changes_facts(sql: str) -> None:
    # Independent reference: a fresh analyze() of the variant. Whatever level 2
    # shares must be exactly what a fresh analysis would say.
    variant = _other_literals(sql)
    analyze_cached(sql)
    cached = analyze_cached(variant)
    fresh = analyze(variant)
    assert cached.statements == fresh.statements
    assert cached.literal_insensitive == fresh.literal_insensitive
