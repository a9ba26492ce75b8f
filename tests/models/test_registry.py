"""The model registry without a database: declarations, links, rules (issue: models, 1-2).

Real `analyze()` output and the real policy loader; what is asserted is what the
ledger event would carry (`model_links`) and what a user would be told
(the engine's decision).
"""

from __future__ import annotations

import pytest

from dbgov.demo.world import TARGETS, demo_policy_path
from dbgov.gate import Verdict
from dbgov.models.effects import changed_columns
from dbgov.models.registry import MODEL_INPUT, model_links
from dbgov.policy import PolicyEngine, PolicyError, load_policy_file, load_policy_text
from dbgov.policy.resolve import resolve_any
from dbgov.sql import analyze
from dbgov.sql.model import Relation
from policy.helpers import context

ENVS = dict(TARGETS)


@pytest.fixture(scope="module")
def demo() -> PolicyEngine:
    return load_policy_file(demo_policy_path(), targets=ENVS)


def links(
    engine: PolicyEngine,
    sql: str,
    search_path: tuple[str, ...] = ("public",),
    target: str = "prod",
    prepared: dict[str, str] | None = None,
) -> dict[str, object]:
    """{model: (tables, statements)} as the statement event would carry them."""
    prep = {name: analyze(text) for name, text in (prepared or {}).items()}
    found = model_links(engine, analyze(sql), search_path, target, prep) or []
    return {link["name"]: (tuple(link["tables"]), tuple(link["statements"])) for link in found}


# ---------------------------------------------------------------------------- declarations


def test_the_demo_declares_churn_v2_and_support_llm(demo: PolicyEngine) -> None:
    churn = demo.models.get("churn-v2")
    llm = demo.models.get("support-llm")
    assert churn is not None and llm is not None
    assert [(i.table, i.columns) for i in churn.inputs] == [
        ("public.feature_store", None),
        ("public.customers", frozenset({"country", "created_at"})),
    ]
    assert churn.owners == {"ml-engineers"} and churn.targets == {"prod"}
    assert [i.table for i in llm.inputs] == ["public.prompts"] and llm.large_rows == 5000
    assert demo.models.tags["public.prompts"] == {"prompt_store", "pii", MODEL_INPUT}
    assert demo.models.tags["public.inference_log"] == {"inference_log"}


MODELS = """\
version: 1
admin_groups: [dba]
grants:
  - {{name: all, groups: [dba], allow: ["*"]}}
{rules}
models:
{models}
"""
GOOD_MODEL = """\
  m1:
    owners: [ml]
    targets: [prod]
    inputs: [public.t]
"""


def errors_of(models: str, rules: str = "") -> str:
    with pytest.raises(PolicyError) as info:
        load_policy_text(MODELS.format(models=models, rules=rules), "policy.yaml", targets=ENVS)
    return str(info.value)


@pytest.mark.parametrize(
    ("models", "expected"),
    [
        ("  m1: {owners: [ml], targets: [prod]}\n", "models.m1.inputs: required"),
        (
            "  m1: {owners: [], targets: [prod], inputs: [public.t]}\n",
            "models.m1.owners: must not be empty",
        ),
        (
            "  m1: {owners: [ml], targets: [prd], inputs: [public.t]}\n",
            "models.m1: targets: unknown target 'prd' (known: prod, staging)",
        ),
        (
            "  m1: {owners: [ml], targets: [prod], inputs: [customers]}\n",
            "bad table 'customers': write the exact schema.table",
        ),
        (
            "  m1: {owners: [ml], targets: [prod], inputs: ['public.*']}\n",
            "globs are not allowed here",
        ),
        (
            "  m1: {owners: [ml], targets: [prod], inputs: [public.t, 'public.t(a)']}\n",
            "table 'public.t' is listed twice",
        ),
        (
            "  m1: {owners: [ml], targets: [prod], inputs: ['public.t(a, a)']}\n",
            "a column is listed twice",
        ),
        (
            "  m1: {owners: [ml], targets: [prod], inputs: [public.t], colour: red}\n",
            "models.m1.colour: unknown key",
        ),
        (
            "  'bad name': {owners: [ml], targets: [prod], inputs: [public.t]}\n",
            "bad model name 'bad name'",
        ),
    ],
)
def test_bad_declarations_are_refused_with_where_and_why(models: str, expected: str) -> None:
    assert expected in errors_of(models)


def test_rules_may_only_name_declared_models() -> None:
    rules = "rules:\n  - name: r\n    match: {models: [m2]}\n    action: deny\n"
    assert "rules[0] \"r\": match.models: unknown model 'm2' (declared: m1)" in errors_of(
        GOOD_MODEL, rules
    )


def test_table_tags_are_a_closed_list() -> None:
    text = MODELS.format(models=GOOD_MODEL, rules="") + "table_tags:\n  public.t: [secret]\n"
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, "policy.yaml", targets=ENVS)
    assert "table_tags" in str(info.value) and "'secret'" in str(info.value)


# ---------------------------------------------------------------------------- what changes


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("UPDATE customers SET country = 'FR' WHERE id = 1", {"country"}),
        (
            "UPDATE public.customers AS c SET (email, phone) = ('a', 'b') WHERE c.id = 1",
            {"email", "phone"},
        ),
        ("UPDATE customers SET tags[1] = 'x', addr.city = 'y' WHERE id = 1", {"tags", "addr"}),
        (
            "WITH u AS (UPDATE customers SET email = 'x' WHERE id = 1 RETURNING id) "
            "SELECT * FROM u",
            {"email"},
        ),
        ("EXPLAIN ANALYZE UPDATE customers SET email = 'x' WHERE id = 1", {"email"}),
        (
            "MERGE INTO customers c USING (SELECT 1 AS id) s ON c.id = s.id "
            "WHEN MATCHED THEN UPDATE SET email = 'x'",
            {"email"},
        ),
        (
            "MERGE INTO customers c USING (SELECT 1 AS id) s ON c.id = s.id "
            "WHEN MATCHED THEN DO NOTHING",
            set(),
        ),
        (
            "MERGE INTO customers c USING (SELECT 1 AS id) s ON c.id = s.id "
            "WHEN MATCHED THEN UPDATE SET email = 'x' WHEN NOT MATCHED THEN INSERT (id) VALUES (1)",
            None,
        ),
        (
            "MERGE INTO customers c USING (SELECT 1 AS id) s ON c.id = s.id "
            "WHEN MATCHED THEN DELETE",
            None,
        ),
        ("INSERT INTO customers (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET email = 'x'", None),
        ("DELETE FROM customers WHERE id = 1", None),
        ("COPY customers FROM STDIN", None),
        ("TRUNCATE customers", None),
        ("ALTER TABLE customers ADD COLUMN note text", None),
        (
            "UPDATE customers SET email = 'x' WHERE id = 1; DELETE FROM customers WHERE id = 2",
            {"email"},
        ),  # per statement: the first one only sets email
    ],
)
def test_changed_columns(sql: str, expected: set[str] | None) -> None:
    stmt = analyze(sql).statements[0]

    def is_customers(rel: Relation) -> bool:
        return "public.customers" in resolve_any(rel, (("public",),)).candidates

    got = changed_columns(stmt, is_customers)
    assert (None if got is None else set(got)) == expected


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # feature_store feeds churn-v2 whole: every change counts
        (
            "INSERT INTO feature_store VALUES (1, 'f', 0.5, now())",
            {"churn-v2": (("public.feature_store",), (0,))},
        ),
        (
            "UPDATE feature_store SET updated_at = now() WHERE customer_id = 1",
            {"churn-v2": (("public.feature_store",), (0,))},
        ),
        (
            "DELETE FROM feature_store WHERE customer_id = 1",
            {"churn-v2": (("public.feature_store",), (0,))},
        ),
        ("TRUNCATE feature_store", {"churn-v2": (("public.feature_store",), (0,))}),
        ("COPY feature_store FROM STDIN", {"churn-v2": (("public.feature_store",), (0,))}),
        ("CREATE INDEX ON feature_store (value)", {"churn-v2": (("public.feature_store",), (0,))}),
        # customers feeds churn-v2 through country and created_at only
        (
            "UPDATE customers SET country = 'FR' WHERE id = 1",
            {"churn-v2": (("public.customers",), (0,))},
        ),
        (
            "UPDATE customers SET email = 'x', created_at = now() WHERE id = 1",
            {"churn-v2": (("public.customers",), (0,))},
        ),
        ("UPDATE customers SET email = 'x' WHERE id = 1", {}),
        ("UPDATE customers SET phone = NULL, ssn = NULL WHERE id = 1", {}),
        (
            "INSERT INTO customers (full_name, email, country, created_at) "
            "VALUES ('a', 'b', 'DE', now())",
            {"churn-v2": (("public.customers",), (0,))},
        ),
        ("DELETE FROM customers WHERE id = 1", {"churn-v2": (("public.customers",), (0,))}),
        # DML in CTEs, several statements, several models
        (
            "WITH u AS (UPDATE customers SET country = 'X' WHERE id = 1 RETURNING id) "
            "INSERT INTO prompts (model, prompt_text, created_at) SELECT 'm', 't', now() FROM u",
            {"churn-v2": (("public.customers",), (0,)), "support-llm": (("public.prompts",), (0,))},
        ),
        (
            "SELECT 1; INSERT INTO prompts (model, prompt_text, created_at) "
            "VALUES ('m', 't', now()); UPDATE customers SET country = 'X' WHERE id = 1",
            {"support-llm": (("public.prompts",), (1,)), "churn-v2": (("public.customers",), (2,))},
        ),
        # reads, plain EXPLAIN, PREPARE and other targets are not changes
        ("SELECT * FROM feature_store", {}),
        ("EXPLAIN DELETE FROM feature_store WHERE customer_id = 1", {}),
        ("PREPARE p AS DELETE FROM feature_store WHERE customer_id = $1", {}),
        ("INSERT INTO training_runs (model, started_at) VALUES ('churn-v2', now())", {}),
        ("GRANT SELECT ON feature_store TO PUBLIC", {}),
        ("VACUUM feature_store", {}),
    ],
)
def test_links_of_the_demo(demo: PolicyEngine, sql: str, expected: dict[str, object]) -> None:
    assert links(demo, sql) == expected


def test_links_follow_the_target_and_search_path(demo: PolicyEngine) -> None:
    sql = "DELETE FROM feature_store WHERE customer_id = 1"
    assert links(demo, sql, target="staging") == {}  # churn-v2 is declared on prod
    assert links(demo, sql, search_path=("scratch",)) == {}
    # A path with two candidates: public.feature_store is one of them (strict side)
    assert links(demo, sql, search_path=("scratch", "public")) == {
        "churn-v2": (("public.feature_store",), (0,))
    }
    assert links(demo, "SET search_path = scratch; DELETE FROM feature_store") == {
        "churn-v2": (("public.feature_store",), (1,))
    }  # the old path may still apply
    assert links(demo, "DELETE FROM analytics.feature_store WHERE true") == {}


def test_execute_links_what_the_prepared_statement_changes(demo: PolicyEngine) -> None:
    prepared = {
        "p": "PREPARE p AS UPDATE customers SET country = $1 WHERE id = $2",
        "q": "PREPARE q AS UPDATE customers SET email = $1 WHERE id = $2",
    }
    assert links(demo, "EXECUTE p('FR', 1)", prepared=prepared) == {
        "churn-v2": (("public.customers",), (0,))
    }
    assert links(demo, "EXECUTE q('x', 1)", prepared=prepared) == {}
    assert links(demo, "EXECUTE unknown(1)", prepared=prepared) == {}


def test_no_registry_no_links() -> None:
    engine = load_policy_text("version: 1\n", "p.yaml", targets=ENVS)
    assert model_links(engine, analyze("DELETE FROM feature_store"), ("public",), "prod") is None
    assert model_links(None, analyze("DELETE FROM feature_store"), ("public",), "prod") is None


# ---------------------------------------------------------------------------- rules


BOB = context("bob", ["ml-engineers"])
CAROL = context("carol", ["dba"])


@pytest.mark.parametrize(
    ("sql", "verdict", "rule"),
    [
        (
            "UPDATE feature_store SET value = 0.1 WHERE customer_id = 1",
            Verdict.APPROVAL,
            "feature-edits-need-dba",
        ),
        (
            "DELETE FROM feature_store WHERE customer_id = 1 AND feature = 'f'",
            Verdict.APPROVAL,
            "feature-edits-need-dba",
        ),
        (
            "INSERT INTO feature_store (customer_id, feature, value, updated_at) "
            "VALUES (1, 'f', 0.5, now())",
            Verdict.ALLOW,
            None,
        ),
        # the rule matches (country feeds churn-v2) but never grants: no grant, denied
        ("UPDATE customers SET country = 'FR' WHERE id = 1", Verdict.DENY, "not-granted"),
        ("UPDATE customers SET email = 'x' WHERE id = 1", Verdict.DENY, "not-granted"),
        ("UPDATE training_runs SET finished_at = now() WHERE id = 1", Verdict.ALLOW, None),
    ],
)
def test_the_demo_rule_is_model_based(
    demo: PolicyEngine, sql: str, verdict: Verdict, rule: str | None
) -> None:
    d = demo.decide(analyze(sql), BOB)
    assert (d.verdict, d.rule) == (verdict, rule)


def test_stmt_models_and_tags_in_conditions() -> None:
    text = """\
version: 1
admin_groups: [dba]
grants:
  - {name: all, groups: [ml], allow: ["*"]}
rules:
  - name: churn-inputs-on-prod
    match: {targets: [prod], kinds: [update, delete]}
    when: "'churn' in stmt.models"
    action: require_approval
    approval: {approvers: [dba]}
  - name: no-prompt-reads
    when: "'prompt_store' in stmt.tags && stmt.kind == 'select'"
    action: deny
    message: prompts are read through the export job
  - name: any-model
    match: {models: ["*"]}
    action: deny
    message: no other model input changes
models:
  churn:
    owners: [ml]
    targets: [prod]
    inputs: [public.features, "public.people(country)"]
  llm:
    owners: [ml]
    targets: ["*"]
    inputs: [public.prompts]
table_tags:
  public.prompts: [prompt_store]
"""
    engine = load_policy_text(text, "p.yaml", targets=ENVS)
    ml = context("ann", ["ml"])

    def decide(sql: str, ctx: object = ml) -> tuple[Verdict, str | None]:
        d = engine.decide(analyze(sql), ctx)  # type: ignore[arg-type]
        return d.verdict, d.rule

    assert decide("UPDATE features SET v = 1 WHERE id = 1") == (
        Verdict.APPROVAL,
        "churn-inputs-on-prod",
    )
    assert decide("UPDATE people SET country = 'x' WHERE id = 1") == (
        Verdict.APPROVAL,
        "churn-inputs-on-prod",
    )
    assert decide("UPDATE people SET name = 'x' WHERE id = 1") == (Verdict.ALLOW, None)
    assert decide("UPDATE features SET v = 1 WHERE id = 1", context("ann", ["ml"], "staging")) == (
        Verdict.ALLOW,
        None,
    )  # churn is declared on prod only
    assert decide("SELECT * FROM prompts") == (Verdict.DENY, "no-prompt-reads")
    assert decide("INSERT INTO prompts VALUES (1)") == (Verdict.DENY, "any-model")
    assert decide("INSERT INTO people (country) VALUES ('x')") == (Verdict.DENY, "any-model")
