"""The demo world's decision table (cases.py), through real analysis and the demo policy."""

from __future__ import annotations

import pytest

from dbgov.gate import Verdict
from dbgov.policy import PolicyEngine
from dbgov.sql import analyze
from policy.cases import CASES, Case
from policy.helpers import context, observe


def _id(case: Case) -> str:
    sql = " ".join(case.sql.split())
    return f"{case.user}@{case.target}:{sql[:60]}"


def test_the_table_is_large_and_varied() -> None:
    assert len(CASES) >= 150
    assert len({c.sql for c in CASES}) >= 140
    verdicts = {c.verdict for c in CASES}
    assert verdicts == {"allow", "deny", "approval"}
    # Every guardrail that a statement can trigger appears at least once.
    rules = {c.rule for c in CASES}
    for name in (
        "privilege_escalation",
        "server_files",
        "dangerous_functions",
        "procedural",
        "unsafe_settings",
        "catalog_secrets",
        "unfiltered_write",
        "drop_cascade",
        "drop_on_production",
        "truncate_on_production",
        "ddl_on_production",
        "not-granted",
        "fail-closed",
        "no-access",
    ):
        assert name in rules, name


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_case(demo: PolicyEngine, case: Case) -> None:
    ctx = context(case.user, case.groups, case.target)
    decision = observe(demo, ctx, case.sql)
    assert decision.verdict.value == case.verdict, decision
    if case.verdict == "allow":
        assert decision.rule is None or case.rule is None
    else:
        assert decision.rule == case.rule, decision
        assert decision.reason
        assert decision.sqlstate == "42501"


@pytest.mark.parametrize("case", [c for c in CASES if c.verdict == "deny"], ids=_id)
def test_denials_name_the_rule_and_carry_a_hint(demo: PolicyEngine, case: Case) -> None:
    decision = observe(demo, context(case.user, case.groups, case.target), case.sql)
    assert decision.message().startswith(f'dbgov: denied by rule "{case.rule}": ')
    assert decision.hint


def test_changes_db_marks_what_would_change_the_database() -> None:
    # Every allowed statement that writes is marked (integration tests roll those
    # back); VACUUM rewrites storage, not contents, and cannot run in a transaction.
    for case in CASES:
        analysis = analyze(case.sql)
        writes = any(
            (s.writes or s.unfiltered_writes) and s.kind != "vacuum" for s in analysis.statements
        )
        if case.verdict == "allow" and writes:
            assert case.changes_db, case


def test_first_denied_statement_is_named(demo: PolicyEngine) -> None:
    ctx = context("bob", ["ml-engineers"])
    d = demo.decide(
        analyze(
            "SELECT 1; UPDATE feature_store SET value = 1 WHERE customer_id = 1; "
            "DROP TABLE training_runs; TRUNCATE feature_store"
        ),
        ctx,
    )
    assert d.verdict is Verdict.DENY
    assert d.rule == "drop_on_production"
    assert d.statement_index == 2
    held = demo.decide(
        analyze("SELECT 1; SELECT 2; DELETE FROM feature_store WHERE customer_id = 7"), ctx
    )
    assert held.verdict is Verdict.APPROVAL
    assert held.statement_index == 2
    assert held.approval is not None and held.approval.approvers == ("dba",)
