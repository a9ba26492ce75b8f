"""`explain` and `dbgov policy explain`: decisions, rules and reasons, without a database."""

from __future__ import annotations

import json

import pytest

from dbgov.gate import Verdict
from dbgov.policy import PolicyEngine
from dbgov.policy.explain import explain, overall, render
from policy.helpers import run_cli


def test_explain_lines(demo: PolicyEngine) -> None:
    lines = explain(
        demo,
        "SELECT * FROM customers;\n"
        "UPDATE feature_store SET value = 0 WHERE customer_id = 7;\n"
        "DELETE FROM training_runs",
        "bob",
        ["ml-engineers"],
        "prod",
        "production",
    )
    assert [(line.verdict, line.rule) for line in lines] == [
        (Verdict.ALLOW, None),
        (Verdict.APPROVAL, "feature-edits-need-dba"),
        (Verdict.DENY, "unfiltered_write"),
    ]
    first, second, third = lines
    assert first.sql == "SELECT * FROM customers"
    assert first.reads == ("public.customers",)
    assert "select on public.customers: granted by ml-read-prod" in first.steps
    assert second.approval is not None and second.approval.approvers == ("dba",)
    assert "rule feature-edits-need-dba (rules[0]) matches: require_approval" in second.steps
    assert third.writes == ("public.training_runs",)
    assert "guardrail unfiltered_write: deny (built-in)" in third.steps
    decisive = overall(lines)
    assert decisive is third


def test_explain_text(demo: PolicyEngine) -> None:
    text = render(
        explain(
            demo,
            "SELECT 1; DROP TABLE feature_store",
            "bob",
            ["ml-engineers"],
            "prod",
            "production",
        )
    )
    assert text.splitlines() == [
        "[1] SELECT 1",
        "    ALLOW",
        "    statement: select",
        "      - guardrails: none apply",
        "      - rules: none match",
        "[2] DROP TABLE feature_store",
        '    DENY by rule "drop_on_production"',
        "    why: DROP TABLE public.feature_store on a production target",
        "    hint: run it on a non-production target, or ask an administrator",
        "    statement: drop; writes public.feature_store",
        "      - guardrail drop_on_production: deny (built-in)",
        "query: DENY by statement 2; nothing runs",
    ]


def test_explain_shows_exemptions_and_missing_grants(demo: PolicyEngine) -> None:
    (line,) = explain(demo, "SET ROLE NONE", "carol", ["dba"], "prod", "production")
    assert line.verdict is Verdict.ALLOW
    assert any(
        s.startswith("guardrail privilege_escalation:") and "off (admin group dba)" in s
        for s in line.steps
    )
    (line,) = explain(
        demo, "DELETE FROM customers WHERE id = 1", "alice", ["analysts"], "staging", "staging"
    )
    assert (line.verdict, line.rule) == (Verdict.DENY, "not-granted")
    assert "delete on public.customers: no grant" in line.steps


def test_explain_connect_refusal_and_parse_errors(demo: PolicyEngine) -> None:
    (line,) = explain(demo, "SELECT 1", "dave", ["auditors"], "prod", "production")
    assert (line.kind, line.rule, line.reason) == (
        "connect",
        "no-access",
        "dave has no database access on prod",
    )
    (line,) = explain(demo, "SELEC 1", "alice", ["analysts"], "prod", "production")
    assert (line.verdict, line.rule) == (Verdict.DENY, "fail-closed")


def test_cli_explain(capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(
        [
            "policy",
            "explain",
            "--user",
            "bob",
            "--group",
            "ml-engineers",
            "--target",
            "prod",
            "UPDATE feature_store SET value = 1",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "bob (ml-engineers) on prod (production)" in out
    assert 'DENY by rule "unfiltered_write"' in out

    code = run_cli(
        [
            "policy",
            "explain",
            "--user",
            "alice",
            "--group",
            "analysts",
            "--target",
            "staging",
            "--json",
            "--search-path",
            "analytics",
            "SELECT * FROM customers",
        ]
    )
    assert code == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["verdict"] == "deny" and row["rule"] == "not-granted"
    assert row["reads"] == ["analytics.customers"]

    assert run_cli(["policy", "explain", "--user", "a", "--target", "nowhere", "SELECT 1"]) == 2
    assert "unknown target 'nowhere'" in capsys.readouterr().err
