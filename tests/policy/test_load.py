"""Loading and checking policy files: errors name the file, the rule and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbgov.demo.world import TARGETS, demo_policy_path
from dbgov.policy import PolicyError, load_policy_file, load_policy_text
from policy.helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]
TARGET_ENVS = dict(TARGETS)

GOOD = """\
version: 1
admin_groups: [dba]
grants:
  - {name: read, groups: [analysts], allow: [read], tables: ["public.*"]}
rules:
  - name: first
    match: {groups: [analysts]}
    action: deny
  - name: bob-updates
    match: {users: [bob], kinds: [update]}
    when: "stmt.has_where"
    action: require_approval
    approval: {approvers: [dba]}
"""


def errors_of(text: str, *, source: str = "policy.yaml", targets: bool = True) -> str:
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, source, targets=TARGET_ENVS if targets else None)
    return str(info.value)


def test_good_policy_loads() -> None:
    engine = load_policy_text(GOOD, "policy.yaml", targets=TARGET_ENVS)
    assert [r.name for r in engine.policy.rules] == ["first", "bob-updates"]
    assert engine.policy.rules[1].approval is not None
    assert engine.policy.rules[1].approval.timeout == 600


def test_demo_and_example_policies_load() -> None:
    demo = load_policy_file(demo_policy_path(), targets=TARGET_ENVS)
    assert demo.admin_groups == frozenset({"dba"})
    example = load_policy_file(ROOT / "examples" / "policy.yaml", targets=TARGET_ENVS)
    assert example.policy.rules


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # bad YAML: the line and column
        ("grants: [\n  {groups: [a]\n", "policy.yaml: not valid YAML (line"),
        ("- just\n- a list\n", "policy.yaml: (top level): expected a mapping"),
        # unknown keys, at every level
        ("versoin: 1\n", "policy.yaml: versoin: unknown key"),
        (
            "rules:\n  - {name: r1, action: deny, mesage: x}\n",
            'policy.yaml: rules[0] "r1": mesage: unknown key',
        ),
        (
            "rules:\n  - {name: r1, action: deny, match: {group: [a]}}\n",
            'policy.yaml: rules[0] "r1": match.group: unknown key',
        ),
        (
            "grants:\n  - {groups: [a], allow: [read], table: [x]}\n",
            "policy.yaml: grants[0]: table: unknown key",
        ),
        # bad values
        (
            "rules:\n  - {name: r1, action: permit}\n",
            "policy.yaml: rules[0] \"r1\": action: must be 'allow', 'deny' or "
            "'require_approval', got 'permit'",
        ),
        ("rules:\n  - {action: deny}\n", "policy.yaml: rules[0]: name: required"),
        ("version: 2\n", "policy.yaml: version: must be 1, got 2"),
        (
            "grants:\n  - {groups: [a], allow: [reed]}\n",
            "policy.yaml: grants[0]: allow: unknown statement class 'reed'",
        ),
        (
            "rules:\n  - {name: r1, action: deny, match: {kinds: [dropp]}}\n",
            "policy.yaml: rules[0] \"r1\": match.kinds: unknown statement class 'dropp'",
        ),
        (
            "guardrails:\n  - {guardrail: drop_everything, action: deny}\n",
            'policy.yaml: guardrails[0] "drop_everything": guardrail: must be '
            "'privilege_escalation', ",
        ),
        (
            "guardrails:\n  - {guardrail: drop_cascade, action: allow}\n",
            "policy.yaml: guardrails[0] \"drop_cascade\": action: must be 'deny', "
            "'require_approval' or 'off', got 'allow'",
        ),
        # CEL
        (
            "rules:\n  - {name: a, action: deny}\n  - {name: b, action: deny}\n"
            "  - {name: bob-updates, action: deny, when: 'stmt.has_where &&'}\n",
            'policy.yaml: rules[2] "bob-updates": when: CEL syntax error',
        ),
        (
            "rules:\n  - {name: r1, action: deny, when: 'stmt.has_wher'}\n",
            'policy.yaml: rules[0] "r1": when: unknown field stmt.has_wher',
        ),
        (
            "rules:\n  - {name: r1, action: deny, when: 'user == \"bob\"'}\n",
            "policy.yaml: rules[0] \"r1\": when: unknown name 'user'",
        ),
        (
            "rules:\n  - {name: r1, action: deny, when: 'stmt.kind'}\n",
            'policy.yaml: rules[0] "r1": when: CEL condition fails on a sample statement: '
            "must return a bool",
        ),
        (
            "rules:\n  - {name: r1, action: deny, when: 'stmt.kind > 1'}\n",
            'policy.yaml: rules[0] "r1": when: CEL condition fails on a sample statement',
        ),
        # targets and envs that do not exist
        (
            "grants:\n  - {name: g, groups: [a], targets: [prd], allow: [read]}\n",
            "policy.yaml: grants[0] \"g\": targets: unknown target 'prd' (known: prod, staging)",
        ),
        (
            "rules:\n  - {name: r1, action: deny, match: {targets: [qa]}}\n",
            "policy.yaml: rules[0] \"r1\": match.targets: unknown target 'qa'",
        ),
        (
            "rules:\n  - {name: r1, action: deny, match: {envs: [prodution]}}\n",
            "policy.yaml: rules[0] \"r1\": match.envs: unknown env 'prodution'",
        ),
        (
            'guardrails:\n  - {guardrail: drop_cascade, targets: [dev], action: "off"}\n',
            "policy.yaml: guardrails[0] \"drop_cascade\": targets: unknown target 'dev'",
        ),
        # duplicate names
        (
            "rules:\n  - {name: r1, action: deny}\n  - {name: r1, action: allow}\n",
            'policy.yaml: rules[1] "r1": name: duplicate rule name (also rules[0])',
        ),
        (
            "grants:\n  - {name: g, groups: [a], allow: [read]}\n"
            "  - {name: g, groups: [b], allow: [read]}\n",
            'policy.yaml: grants[1] "g": name: duplicate grant name',
        ),
        # globs
        (
            "grants:\n  - {groups: [a], allow: [read], tables: [customers]}\n",
            "policy.yaml: grants[0]: tables: bad glob 'customers'",
        ),
        (
            "rules:\n  - {name: r1, action: deny, match: {tables: ['public.[ab']}}\n",
            "policy.yaml: rules[0] \"r1\": match.tables: bad glob 'public.[ab': unbalanced",
        ),
        (
            "rules:\n  - {name: r1, action: deny, match: {functions: [PG_SLEEP]}}\n",
            "policy.yaml: rules[0] \"r1\": match.functions: bad glob 'PG_SLEEP'",
        ),
        # approvals
        (
            "rules:\n  - {name: bob-updates, action: require_approval}\n",
            'policy.yaml: rules[0] "bob-updates": approval.approvers: require_approval needs',
        ),
        (
            "rules:\n  - {name: r1, action: require_approval, approval: {quorum: 1}}\n",
            'policy.yaml: rules[0] "r1": approval.approvers: required',
        ),
        (
            "rules:\n  - {name: r1, action: require_approval, approval: {approvers: []}}\n",
            'policy.yaml: rules[0] "r1": approval.approvers: must not be empty',
        ),
        (
            "rules:\n  - {name: r1, action: deny, approval: {approvers: [dba]}}\n",
            'policy.yaml: rules[0] "r1": approval: only require_approval takes approval',
        ),
        (
            "rules:\n  - {name: r1, action: require_approval,"
            " approval: {approvers: [dba], timeout: soon}}\n",
            'policy.yaml: rules[0] "r1": approval.timeout: bad duration',
        ),
        (
            "guardrails:\n  - {guardrail: drop_cascade, action: require_approval}\n",
            'policy.yaml: guardrails[0] "drop_cascade": approval.approvers: require_approval '
            "needs approvers (there are no admin_groups",
        ),
        # masking
        (
            "masking:\n  columns:\n    public.customers.email: {mask: scramble}\n",
            "policy.yaml: masking.columns[public.customers.email]: mask: must be one of",
        ),
        (
            "masking:\n  columns:\n    public.customers.phone: {mask: partial, keep_lst: 4}\n",
            "policy.yaml: masking.columns[public.customers.phone]: keep_lst: is not an option",
        ),
        (
            "masking:\n  columns:\n    customers.email: {mask: redact}\n",
            "policy.yaml: masking.columns: column 'customers.email': write schema.table.column",
        ),
        (
            "masking:\n  on_unknown_origin: allow\n",
            "policy.yaml: masking.on_unknown_origin: must be 'deny' or 'mask', got 'allow'",
        ),
    ],
)
def test_errors_name_file_rule_and_field(text: str, expected: str) -> None:
    message = errors_of(text)
    assert expected in message, message


def test_all_errors_are_reported_at_once() -> None:
    message = errors_of("rules:\n  - {name: r1, action: nope}\n  - {name: r2, actoin: deny}\n")
    lines = message.splitlines()
    assert any(line.startswith('policy.yaml: rules[0] "r1": action:') for line in lines)
    assert any(line.startswith('policy.yaml: rules[1] "r2": actoin: unknown key') for line in lines)


def test_targets_are_only_checked_when_known() -> None:
    text = "grants:\n  - {groups: [a], targets: [anywhere], allow: [read]}\n"
    load_policy_text(text, "p.yaml")  # no config: nothing to check against
    assert "unknown target 'anywhere'" in errors_of(text)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"missing\.yaml: cannot read"):
        load_policy_file(tmp_path / "missing.yaml")


# -- `dbgov policy check` ------------------------------------------------------------------


def test_policy_check_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["policy", "check"]) == 0
    out = capsys.readouterr().out
    assert "policy.yaml: OK" in out and "2 rules" in out


def test_policy_check_broken_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text(
        "rules:\n  - name: bob-updates\n    action: require_approval\n"
        "    when: 'stmt.has_where &&'\n"
    )
    assert run_cli(["policy", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f'{bad}: rules[0] "bob-updates": when: CEL syntax error' in err
    assert f'{bad}: rules[0] "bob-updates": approval.approvers:' not in err  # one at a time


def test_policy_check_with_config_checks_targets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("grants:\n  - {groups: [a], targets: [prod], allow: [read]}\n")
    config = tmp_path / "dbgov.yaml"
    config.write_text(
        "targets:\n  - {name: main, host: db, database: app, user: app}\npolicy: policy.yaml\n"
    )
    assert run_cli(["policy", "check", "--config", str(config)]) == 1
    assert "targets: unknown target 'prod' (known: main)" in capsys.readouterr().err
    policy.write_text("grants:\n  - {groups: [a], targets: [main], allow: [read]}\n")
    assert run_cli(["policy", "check", "--config", str(config)]) == 0
    assert "policy.yaml: OK" in capsys.readouterr().out
