"""Engine behaviour beyond the demo table: fail closed, search_path, rules, CEL,
guardrail overrides, JIT grants, masking flags and the decision cache."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dbgov.gate import Verdict
from dbgov.policy import PolicyEngine
from dbgov.sql import analyze, analyze_cached
from dbgov.sql.model import Analysis, Category, Statement
from policy.conftest import Make
from policy.helpers import context, observe

ALICE = ("alice", ["analysts"])
BOB = ("bob", ["ml-engineers"])

BASE = """
version: 1
admin_groups: [dba]
grants:
  - name: analysts-read
    groups: [analysts]
    allow: [read]
    tables: ["public.*"]
  - name: ml-prod
    groups: [ml-engineers]
    targets: [prod]
    allow: [read, insert, update, delete, ddl]
    tables: ["public.*"]
  - name: dba-all
    groups: [dba]
    allow: ["*"]
"""


# -- fail closed ---------------------------------------------------------------------


def test_unparsable_query_is_denied(demo: PolicyEngine) -> None:
    d = demo.decide(analyze("SELEC 1"), context(*ALICE))
    assert (d.verdict, d.rule) == (Verdict.DENY, "fail-closed")
    assert "could not be analyzed" in d.reason
    assert d.message().startswith('dbgov: denied by rule "fail-closed": ')


def test_statement_not_fully_analyzed_is_denied_even_for_admins(demo: PolicyEngine) -> None:
    opaque = Statement(
        "other",
        Category.UTILITY,
        frozenset({"other"}),
        frozenset({Category.UTILITY}),
        fully_analyzed=False,
        unanalyzed_reason="statement type FooStmt is not analyzed",
    )
    ok = analyze("SELECT 1").statements[0]
    d = demo.decide(Analysis((ok, opaque), "fp", False), context("carol", ["dba"]))
    assert (d.verdict, d.rule, d.statement_index) == (Verdict.DENY, "fail-closed", 1)
    assert "FooStmt" in d.reason


def test_empty_query_is_allowed(demo: PolicyEngine) -> None:
    assert demo.decide(analyze(""), context(*ALICE)).allowed
    assert demo.decide(analyze(";"), context(*ALICE)).allowed


# -- connecting --------------------------------------------------------------------------


def test_may_connect(demo: PolicyEngine) -> None:
    assert demo.may_connect(context(*ALICE, target="staging")).allowed
    assert demo.may_connect(context("etl", ["pipelines"], "prod")).allowed
    d = demo.may_connect(context("dave", ["auditors"], "prod"))
    assert (d.verdict, d.rule) == (Verdict.DENY, "no-access")
    assert d.reason == "dave has no database access on prod"
    assert "auditors" in (d.hint or "")
    d = demo.may_connect(context("etl", ["pipelines"], "staging"))
    assert d.reason == "etl has no database access on staging"


def test_function_call_guardrail(demo: PolicyEngine, make: Make) -> None:
    d = demo.decide_function_call(context("carol", ["dba"]))
    assert (d.verdict, d.rule) == (Verdict.DENY, "function_call")
    engine = make(
        BASE
        + """
guardrails:
  - {guardrail: function_call, groups: [dba], action: "off"}
"""
    )
    assert engine.decide_function_call(context("carol", ["dba"])).allowed
    assert not engine.decide_function_call(context(*ALICE)).allowed


# -- search_path -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "sql", "verdict"),
    [
        (("public",), "SELECT * FROM customers", "allow"),
        (("analytics",), "SELECT * FROM customers", "deny"),
        (("analytics", "public"), "SELECT * FROM customers", "deny"),  # may be either
        (("analytics",), "SELECT * FROM public.customers", "allow"),
        (("$user", "public"), "SELECT * FROM customers", "allow"),
        (("public", "pg_catalog"), "SELECT * FROM pg_class", "allow"),
        (("public", "pg_catalog"), "SELECT * FROM pg_authid", "deny"),
        (("analytics",), "SELECT * FROM pg_namespace", "allow"),
        ((), "SELECT * FROM customers", "allow"),
    ],
)
def test_tables_resolve_against_the_session_search_path(
    demo: PolicyEngine, path: tuple[str, ...], sql: str, verdict: str
) -> None:
    d = demo.decide(analyze(sql), context(*ALICE, search_path=path))
    assert d.verdict.value == verdict, d


def test_not_granted_names_the_resolved_table(demo: PolicyEngine) -> None:
    d = demo.decide(analyze("SELECT * FROM customers"), context(*ALICE, search_path=("analytics",)))
    assert d.rule == "not-granted"
    assert "select on analytics.customers" in d.reason


def test_deny_rules_match_any_table_the_name_could_mean(make: Make) -> None:
    engine = make(
        BASE
        + """
rules:
  - name: no-secrets
    match: {tables: [public.secrets]}
    action: deny
    message: secrets are off limits
"""
    )
    for path in (("public",), ("scratch", "public")):
        d = engine.decide(
            analyze("SELECT * FROM secrets"), context("carol", ["dba"], search_path=path)
        )
        assert (d.verdict, d.rule) == (Verdict.DENY, "no-secrets"), path
    # The path the query itself sets counts, and so does the one it may roll back to.
    d = engine.decide(
        analyze("SET search_path = scratch; SELECT * FROM secrets"), context("carol", ["dba"])
    )
    assert (d.rule, d.statement_index) == ("no-secrets", 1)
    d = engine.decide(
        analyze("BEGIN; SET LOCAL search_path = scratch; ROLLBACK; SELECT * FROM secrets"),
        context("carol", ["dba"], search_path=("other",)),
    )
    assert d.verdict is Verdict.ALLOW  # other.secrets or scratch.secrets, never public
    d = engine.decide(
        analyze("SET search_path = public; SELECT * FROM secrets"),
        context("carol", ["dba"], search_path=("other",)),
    )
    assert d.rule == "no-secrets"


def test_search_path_the_proxy_cannot_follow_fails_closed(demo: PolicyEngine) -> None:
    for setter in ("SELECT set_config('search_path', 'x', false)", "SET search_path FROM CURRENT"):
        d = demo.decide(analyze(f"{setter}; SELECT * FROM customers"), context(*ALICE))
        assert (d.rule, d.statement_index) == ("fail-closed", 1), setter
    # Qualified names need no path.
    assert demo.decide(
        analyze("SELECT set_config('search_path', 'x', false); SELECT * FROM public.customers"),
        context(*ALICE),
    ).allowed


# -- rules -----------------------------------------------------------------------------


def test_first_matching_rule_decides(make: Make) -> None:
    engine = make(
        BASE
        + """
rules:
  - name: allow-bob-training
    match: {users: [bob], tables: [public.training_runs]}
    action: allow
  - name: no-training-writes
    match: {kinds: [write], tables: [public.training_runs]}
    action: deny
    message: training_runs is append-only
    hint: insert a new run instead
"""
    )
    sql = "UPDATE training_runs SET rows_used = 1 WHERE id = 1"
    assert engine.decide(analyze(sql), context(*BOB)).allowed
    d = engine.decide(analyze(sql), context("mallory", ["ml-engineers"]))
    assert (d.verdict, d.rule) == (Verdict.DENY, "no-training-writes")
    assert d.message() == 'dbgov: denied by rule "no-training-writes": training_runs is append-only'
    assert d.hint == "insert a new run instead"


def test_allow_rule_covers_only_its_own_scope(make: Make) -> None:
    # A rule allowing analysts to insert into audit_notes must not carry a CTE that
    # deletes customers along with it.
    engine = make(
        BASE
        + """
rules:
  - name: notes
    match: {groups: [analysts], kinds: [insert], tables: [public.audit_notes]}
    action: allow
"""
    )
    ctx = context(*ALICE)
    assert engine.decide(analyze("INSERT INTO audit_notes VALUES (1)"), ctx).allowed
    d = engine.decide(
        analyze(
            "WITH d AS (DELETE FROM customers WHERE id = 1 RETURNING id) "
            "INSERT INTO audit_notes SELECT id FROM d"
        ),
        ctx,
    )
    assert (d.verdict, d.rule) == (Verdict.DENY, "not-granted")
    assert "delete on public.customers" in d.reason


def test_rule_matching_by_function_env_and_category(make: Make) -> None:
    engine = make(
        BASE
        + """
rules:
  - name: no-sleep-in-prod
    match: {envs: [production], functions: ["pg_sleep*"]}
    action: deny
  - name: staging-ddl-held
    match: {envs: [staging], kinds: [ddl]}
    action: require_approval
    approval: {approvers: [dba], quorum: 2, mode: refuse, timeout: 1h, risk: low}
"""
    )
    d = engine.decide(analyze("SELECT pg_sleep_for('1 minute')"), context(*ALICE))
    assert d.rule == "no-sleep-in-prod"
    assert engine.decide(analyze("SELECT pg_sleep(1)"), context(*ALICE, target="staging")).allowed
    d = engine.decide(
        analyze("CREATE TABLE t (id int)"), context("carol", ["dba"], target="staging")
    )
    assert (d.verdict, d.rule) == (Verdict.APPROVAL, "staging-ddl-held")
    assert d.approval is not None
    assert (d.approval.quorum, d.approval.mode, d.approval.timeout_s, d.approval.risk) == (
        2,
        "refuse",
        3600,
        "low",
    )
    assert "then run it again" in (d.hint or "")


def test_guardrail_denial_beats_an_allow_rule(make: Make) -> None:
    engine = make(
        BASE
        + """
rules:
  - name: anything-goes
    action: allow
"""
    )
    d = engine.decide(analyze("DELETE FROM customers"), context("carol", ["dba"]))
    assert d.rule == "unfiltered_write"
    d = engine.decide(analyze("ALTER TABLE customers ADD COLUMN x int"), context("carol", ["dba"]))
    assert (d.verdict, d.rule) == (Verdict.APPROVAL, "ddl_on_production")


# -- CEL conditions -------------------------------------------------------------------


def test_when_condition(make: Make) -> None:
    engine = make(
        BASE
        + """
rules:
  - name: big-tables-need-where
    match: {groups: [ml-engineers]}
    when: >-
      stmt.kind == "update" && "public.feature_store" in stmt.writes
      && target.env == "production"
    action: require_approval
    approval: {approvers: [dba]}
"""
    )
    d = engine.decide(
        analyze("UPDATE feature_store SET value = 1 WHERE customer_id = 1"), context(*BOB)
    )
    assert (d.verdict, d.rule) == (Verdict.APPROVAL, "big-tables-need-where")
    assert engine.decide(
        analyze("UPDATE training_runs SET rows_used = 1 WHERE id = 1"), context(*BOB)
    ).allowed


def test_when_sees_resolved_tables_groups_and_session(make: Make) -> None:
    engine = make(
        BASE
        + """
rules:
  - name: no-writes-outside-transactions
    when: 'size(stmt.writes) > 0 && !session.in_transaction && !("dba" in identity.groups)'
    action: deny
    message: write inside BEGIN ... COMMIT
"""
    )
    sql = "INSERT INTO training_runs (model, started_at) VALUES ('m', now())"
    d = engine.decide(analyze_cached(sql), context(*BOB))
    assert d.rule == "no-writes-outside-transactions"
    assert engine.decide(analyze_cached(sql), context(*BOB, in_transaction=True)).allowed
    assert engine.decide(analyze_cached(sql), context("carol", ["dba"])).allowed


def test_time_conditions_are_evaluated_every_time(make: Make) -> None:
    now = [datetime(2024, 5, 6, 10, 0, tzinfo=UTC)]  # a Monday, 10:00 UTC
    engine = make(
        BASE
        + """
rules:
  - name: office-hours
    match: {groups: [ml-engineers], kinds: [write]}
    when: "time.weekday >= 5 || time.hour < 8 || time.hour >= 18"
    action: deny
    message: writes only in office hours
""",
        clock=lambda: now[0],
    )
    a = analyze_cached("INSERT INTO training_runs (model, started_at) VALUES ('m', now())")
    ctx = context(*BOB)
    assert engine.decide(a, ctx).allowed
    now[0] = datetime(2024, 5, 6, 21, 0, tzinfo=UTC)
    assert engine.decide(a, ctx).rule == "office-hours"
    now[0] = datetime(2024, 5, 11, 10, 0, tzinfo=UTC)  # Saturday
    assert engine.decide(a, ctx).rule == "office-hours"


def test_condition_failing_at_run_time_denies(make: Make) -> None:
    engine = make(
        BASE
        + """
rules:
  - name: first-table
    when: 'stmt.tables[0] == "public.customers"'
    action: allow
"""
    )
    d = engine.decide(analyze("SELECT 1"), context(*ALICE))  # no tables: index error
    assert (d.verdict, d.rule) == (Verdict.DENY, "first-table")
    assert "could not be evaluated" in d.reason


# -- guardrail overrides ------------------------------------------------------------------


def test_guardrail_off_for_a_group_on_a_target(make: Make) -> None:
    engine = make(
        BASE
        + """
guardrails:
  - {guardrail: truncate_on_production, groups: [ml-engineers], targets: [prod], action: "off"}
"""
    )
    assert engine.decide(analyze("TRUNCATE training_runs"), context(*BOB)).allowed
    d = engine.decide(analyze("TRUNCATE training_runs"), context("carol", ["dba"]))
    assert d.rule == "truncate_on_production"


def test_guardrail_changed_to_approval_with_default_approvers(make: Make) -> None:
    engine = make(
        BASE
        + """
guardrails:
  - {guardrail: unfiltered_write, envs: [staging], action: require_approval}
"""
    )
    d = engine.decide(
        analyze("DELETE FROM training_runs"), context("carol", ["dba"], target="staging")
    )
    assert (d.verdict, d.rule) == (Verdict.APPROVAL, "unfiltered_write")
    assert d.approval is not None and d.approval.approvers == ("dba",)
    d = engine.decide(analyze("DELETE FROM training_runs"), context("carol", ["dba"]))
    assert (d.verdict, d.rule) == (Verdict.DENY, "unfiltered_write")


def test_admin_exemption_can_be_overridden(make: Make) -> None:
    engine = make(
        BASE
        + """
guardrails:
  - guardrail: privilege_escalation
    groups: [dba]
    action: require_approval
    message: role changes by a dba need a second dba
    approval: {approvers: [dba, security], quorum: 2}
"""
    )
    d = engine.decide(analyze("GRANT SELECT ON customers TO PUBLIC"), context("carol", ["dba"]))
    assert (d.verdict, d.rule) == (Verdict.APPROVAL, "privilege_escalation")
    assert d.reason == "role changes by a dba need a second dba"
    assert d.approval is not None and d.approval.quorum == 2


def test_more_dangerous_functions(make: Make) -> None:
    engine = make(
        BASE
        + """
guardrails:
  - {guardrail: dangerous_functions, action: deny, functions: ["export_*", wipe]}
"""
    )
    for sql in ("SELECT export_all('x')", "SELECT wipe()", "SELECT pg_read_file('x')"):
        d = engine.decide(analyze(sql), context("carol", ["dba"]))
        assert d.rule == "dangerous_functions", sql
    assert engine.decide(analyze("SELECT exported()"), context("carol", ["dba"])).allowed


def test_without_admin_groups_ddl_on_production_is_denied(make: Make) -> None:
    engine = make(BASE.replace("admin_groups: [dba]", "admin_groups: []"))
    d = engine.decide(analyze("ALTER TABLE customers ADD COLUMN x int"), context("carol", ["dba"]))
    assert (d.verdict, d.rule) == (Verdict.DENY, "ddl_on_production")
    # ... and nobody is exempt from the procedural guardrail.
    assert (
        engine.decide(analyze("DO $$ BEGIN END $$"), context("carol", ["dba"])).rule == "procedural"
    )


# -- grants, JIT grants, masking -------------------------------------------------------


def test_jit_grant_is_reported_when_used(demo: PolicyEngine) -> None:
    ctx = context("alice", ["analysts", "ml-engineers"], grants=(("ml-engineers", "jit-42"),))
    d = demo.decide(
        analyze("INSERT INTO training_runs (model, started_at) VALUES ('m', now())"), ctx
    )
    assert d.allowed
    assert d.grants_used == (("ml-engineers", "jit-42"),)
    assert d.as_event()["grants"] == ["jit-42"]
    # Reading customers needs no JIT grant: alice's own group covers it.
    d = demo.decide(analyze("SELECT * FROM customers"), ctx)
    assert d.allowed and d.grants_used == ()


def test_grants_by_env_and_kind(make: Make) -> None:
    engine = make("""
grants:
  - {groups: [ops], envs: [staging], allow: [vacuum, analyze, select], tables: ["public.*"]}
""")
    ops = ("olga", ["ops"])
    assert engine.decide(analyze("VACUUM customers"), context(*ops, target="staging")).allowed
    assert engine.decide(
        analyze("SELECT * FROM customers"), context(*ops, target="staging")
    ).allowed
    d = engine.decide(analyze("COPY customers TO STDOUT"), context(*ops, target="staging"))
    assert d.rule == "not-granted" and "copy_to on public.customers" in d.reason
    assert not engine.may_connect(context(*ops, target="prod")).allowed


def test_masking_flag_and_config(demo: PolicyEngine) -> None:
    assert demo.decide(analyze("SELECT * FROM customers"), context(*ALICE)).masking
    assert not demo.decide(analyze("SELECT * FROM customers"), context("carol", ["dba"])).masking
    cfg = demo.masking_config
    assert cfg.on_unknown_origin == "deny"
    assert cfg.inference_guards == frozenset({"analysts", "ml-engineers"})
    email = cfg.columns["public.customers.email"]
    assert email.mask == "pseudonym" and email.exempt == ("dba",)
    phone = cfg.columns["public.customers.phone"]
    assert phone.spec() == {"kind": "partial", "keep_last": 4}
    assert set(cfg.columns) == {
        "public.customers.full_name",
        "public.customers.email",
        "public.customers.phone",
        "public.customers.ssn",
        "public.prompts.prompt_text",
        "public.prompts.response_text",
    }


# -- the decision cache -------------------------------------------------------------------


def test_cache_hits_share_decisions_between_sessions_of_the_same_groups(
    demo: PolicyEngine,
) -> None:
    demo.cache_clear()
    a = analyze_cached("SELECT * FROM customers WHERE id = 7")
    first = demo.decide(a, context(*ALICE))
    again = demo.decide(a, context("alice2", ["analysts"]))  # another user, same groups
    assert again is first
    assert (demo.hits, demo.misses) == (1, 1)
    other = demo.decide(a, context("etl", ["pipelines"]))
    assert other.rule == "not-granted"
    assert demo.decide(a, context(*ALICE, search_path=("x",))).rule == "not-granted"
    assert demo.decide(a, context(*ALICE)) is first


def test_cache_key_includes_user_when_rules_look_at_it(make: Make) -> None:
    engine = make(
        BASE
        + """
rules:
  - name: only-bob
    when: 'identity.user != "bob" && stmt.kind == "delete"'
    action: deny
"""
    )
    a = analyze_cached("DELETE FROM training_runs WHERE id = 3")
    assert engine.decide(a, context(*BOB)).allowed
    assert engine.decide(a, context("mallory", ["ml-engineers"])).rule == "only-bob"


def test_cache_is_bounded() -> None:
    from dbgov.policy import load_policy_text

    engine = load_policy_text(BASE, "t.yaml")
    small = PolicyEngine(engine.policy, cache_size=3)
    ctx = context(*ALICE)
    kept = [analyze(f"SELECT {i} FROM customers") for i in range(10)]
    for a in kept:
        small.decide(a, ctx)
    assert len(small._cache) == 3
    small.decide(kept[-1], ctx)
    assert small.hits == 1


def test_observe_helper_matches_decide(demo: PolicyEngine) -> None:
    d = observe(demo, context("dave", ["auditors"]), "SELECT 1")
    assert d.rule == "no-access"
