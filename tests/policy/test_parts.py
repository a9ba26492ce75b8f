"""Pure helpers of the policy engine: name resolution, search_path values, the CEL
context, and the guardrail registry agreeing with the file format."""

from __future__ import annotations

from typing import get_args

import pytest

from dbgov.policy.context import FIELDS, compile_condition, sample_context
from dbgov.policy.guardrails import BY_NAME, GUARDRAILS
from dbgov.policy.model import GuardrailName, parse_duration
from dbgov.policy.resolve import parse_search_path, resolve
from dbgov.sql.model import Relation


@pytest.mark.parametrize(
    ("schema", "name", "path", "candidates"),
    [
        ("sales", "orders", ("public",), ("sales.orders",)),
        (None, "orders", ("public",), ("public.orders",)),
        (None, "orders", ("$user", "public"), ("public.orders",)),
        (None, "orders", ("a", "b"), ("a.orders", "b.orders")),
        (None, "pg_class", ("public",), ("pg_catalog.pg_class",)),
        (None, "pg_class", ("public", "pg_catalog"), ("public.pg_class", "pg_catalog.pg_class")),
        (None, "pg_class", ("pg_catalog", "public"), ("pg_catalog.pg_class",)),
        (None, "pg_newthing", ("public",), ("pg_catalog.pg_newthing", "public.pg_newthing")),
        (None, "tables", ("information_schema",), ("information_schema.tables",)),
        (None, "orders", (), ("public.orders",)),
    ],
)
def test_resolve(
    schema: str | None, name: str, path: tuple[str, ...], candidates: tuple[str, ...]
) -> None:
    assert resolve(Relation(schema, name), path).candidates == candidates


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ("public", ("public",)),
        ('a, "B", public', ("a", "B", "public")),
        ('"$user", public', ("$user", "public")),
        ('"a,b", c', ("a,b", "c")),
        ('"say ""hi"""', ('say "hi"',)),
        ("DEFAULT", ("$user", "public")),
        ("", ()),
        ("?", None),
        ("FROM CURRENT", None),
        ('"unterminated', None),
    ],
)
def test_parse_search_path(value: str, path: tuple[str, ...] | None) -> None:
    assert parse_search_path(value) == path


def test_every_guardrail_can_be_named_in_a_policy() -> None:
    assert set(get_args(GuardrailName)) == set(BY_NAME)
    assert len(GUARDRAILS) == len(BY_NAME)


def test_sample_context_has_every_documented_field() -> None:
    ctx = sample_context()
    assert set(ctx) == set(FIELDS)
    for top, fields in FIELDS.items():
        assert set(ctx[top]) == fields, top


def test_condition_reports_what_it_reads() -> None:
    cond = compile_condition('"dba" in identity.groups && time.hour > 8')
    assert (cond.uses_time, cond.uses_user, cond.uses_session) == (True, False, False)
    cond = compile_condition('identity.user == "bob" || session.in_transaction')
    assert (cond.uses_time, cond.uses_user, cond.uses_session) == (False, True, True)
    cond = compile_condition('stmt.tables.exists(t, t.startsWith("public."))')
    assert cond.evaluate(sample_context()) is True
    with pytest.raises(ValueError, match=r"unknown field stmt\.table "):
        compile_condition('"x" in stmt.table')
    # A field name inside a string literal is just text.
    assert compile_condition('stmt.kind != "stmt.nothing"').evaluate(sample_context())


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [(600, 600), ("90s", 90), ("10m", 600), ("2h", 7200), ("1d", 86400), ("45", 45)],
)
def test_durations(raw: object, seconds: int) -> None:
    assert parse_duration(raw) == seconds


@pytest.mark.parametrize("raw", [0, -1, "10 minutes", "", True, 1.5])
def test_bad_durations(raw: object) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(raw)
