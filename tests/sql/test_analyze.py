"""Statement facts from `analyze()`: table tests, one SQL text per row."""

from __future__ import annotations

from typing import Any

import pytest

from dbgov.sql import Category, Relation, Statement, analyze, split_statements


def R(name: str) -> Relation:
    schema, _, rel = name.rpartition(".")
    return Relation(schema or None, rel)


def one(sql: str) -> Statement:
    analysis = analyze(sql)
    assert analysis.error is None, analysis.error
    assert len(analysis.statements) == 1
    return analysis.statements[0]


C = Category

# (sql, kind, category): every kind the analyzer emits, at the top level.
KIND_CASES = [
    ("SELECT 1", "select", C.READ),
    ("VALUES (1), (2)", "select", C.READ),
    ("TABLE customers", "select", C.READ),
    ("INSERT INTO t VALUES (1)", "insert", C.WRITE),
    ("UPDATE t SET a = 1 WHERE id = 2", "update", C.WRITE),
    ("DELETE FROM t WHERE id = 2", "delete", C.WRITE),
    ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DO NOTHING", "merge", C.WRITE),
    ("COPY t FROM STDIN", "copy_from", C.WRITE),
    ("COPY t TO STDOUT", "copy_to", C.READ),
    ("CREATE TABLE t (a int)", "create_table", C.DDL),
    ("CREATE TABLE t AS SELECT 1", "create_table_as", C.DDL),
    ("SELECT 1 INTO t", "create_table_as", C.DDL),
    ("CREATE MATERIALIZED VIEW m AS SELECT 1", "create_matview", C.DDL),
    ("CREATE INDEX ON t (a)", "create_index", C.DDL),
    ("CREATE VIEW v AS SELECT 1", "create_view", C.DDL),
    ("CREATE SCHEMA s", "create_schema", C.DDL),
    ("CREATE SEQUENCE s", "create_sequence", C.DDL),
    ("CREATE EXTENSION pgcrypto", "create_extension", C.DDL),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'", "create_function", C.PROCEDURAL),
    ("CREATE PROCEDURE p() LANGUAGE sql AS 'select 1'", "create_procedure", C.PROCEDURAL),
    (
        "CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()",
        "create_trigger",
        C.DDL,
    ),
    ("CREATE TYPE mood AS ENUM ('a')", "create_type", C.DDL),
    ("CREATE DOMAIN d AS int", "create_domain", C.DDL),
    ("CREATE POLICY p ON t USING (true)", "create_policy", C.DDL),
    ("CREATE RULE r AS ON INSERT TO t DO NOTHING", "create_rule", C.DDL),
    ("CREATE DATABASE d", "create_database", C.DDL),
    ("CREATE SERVER s FOREIGN DATA WRAPPER w", "create_other", C.DDL),
    ("CREATE ROLE r", "create_role", C.PRIVILEGE),
    ("CREATE USER u", "create_role", C.PRIVILEGE),
    ("CREATE GROUP g", "create_role", C.PRIVILEGE),
    ("ALTER ROLE r NOSUPERUSER", "alter_role", C.PRIVILEGE),
    ("ALTER USER u SET work_mem = '1MB'", "alter_role", C.PRIVILEGE),
    ("DROP ROLE r", "drop_role", C.PRIVILEGE),
    ("DROP USER u", "drop_role", C.PRIVILEGE),
    ("ALTER TABLE t ADD COLUMN b int", "alter_table", C.DDL),
    ("ALTER INDEX i SET (fillfactor = 50)", "alter_other", C.DDL),
    ("ALTER SEQUENCE s RESTART", "alter_other", C.DDL),
    ("ALTER FUNCTION f() OWNER TO bob", "alter_other", C.DDL),
    ("ALTER DATABASE d SET work_mem = '1MB'", "alter_other", C.DDL),
    ("DROP TABLE t", "drop", C.DDL),
    ("DROP DATABASE d", "drop", C.DDL),
    ("DROP OWNED BY bob", "drop", C.DDL),
    ("TRUNCATE t", "truncate", C.DDL),
    ("COMMENT ON TABLE t IS 'x'", "comment", C.DDL),
    ("ALTER TABLE t RENAME TO u", "rename", C.DDL),
    ("GRANT SELECT ON t TO bob", "grant", C.PRIVILEGE),
    ("REVOKE SELECT ON t FROM bob", "revoke", C.PRIVILEGE),
    ("GRANT admin TO bob", "grant", C.PRIVILEGE),
    ("REVOKE admin FROM bob", "revoke", C.PRIVILEGE),
    ("ALTER SYSTEM SET work_mem = '1MB'", "alter_system", C.PRIVILEGE),
    (
        "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO bob",
        "alter_default_privileges",
        C.PRIVILEGE,
    ),
    ("REASSIGN OWNED BY bob TO carol", "reassign_owned", C.PRIVILEGE),
    ("DO $$ BEGIN END $$", "do", C.PROCEDURAL),
    ("CALL p(1)", "call", C.PROCEDURAL),
    ("SET work_mem = '1MB'", "set", C.SESSION),
    ("SET ROLE bob", "set", C.PRIVILEGE),
    ("SET SESSION AUTHORIZATION bob", "set", C.PRIVILEGE),
    ("RESET work_mem", "reset", C.SESSION),
    ("RESET ROLE", "reset", C.PRIVILEGE),
    ("SHOW work_mem", "show", C.SESSION),
    ("DISCARD ALL", "discard", C.SESSION),
    ("BEGIN", "begin", C.TRANSACTION),
    ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE", "begin", C.TRANSACTION),
    ("COMMIT", "commit", C.TRANSACTION),
    ("ROLLBACK", "rollback", C.TRANSACTION),
    ("ROLLBACK TO SAVEPOINT a", "rollback_to", C.TRANSACTION),
    ("SAVEPOINT a", "savepoint", C.TRANSACTION),
    ("RELEASE SAVEPOINT a", "release", C.TRANSACTION),
    ("PREPARE TRANSACTION 'x'", "prepare_transaction", C.TRANSACTION),
    ("COMMIT PREPARED 'x'", "commit_prepared", C.TRANSACTION),
    ("PREPARE p AS SELECT 1", "prepare", C.SESSION),
    ("EXECUTE p", "execute", C.SESSION),
    ("DEALLOCATE p", "deallocate", C.SESSION),
    ("DECLARE c CURSOR FOR SELECT 1", "declare", C.SESSION),
    ("FETCH 10 FROM c", "fetch", C.READ),
    ("MOVE FORWARD 2 IN c", "move", C.READ),
    ("CLOSE c", "close", C.SESSION),
    ("EXPLAIN SELECT 1", "explain", C.READ),
    ("LISTEN chan", "listen", C.SESSION),
    ("UNLISTEN chan", "unlisten", C.SESSION),
    ("NOTIFY chan", "notify", C.SESSION),
    ("LOCK TABLE t", "lock", C.UTILITY),
    ("VACUUM t", "vacuum", C.UTILITY),
    ("ANALYZE t", "analyze", C.UTILITY),
    ("CHECKPOINT", "checkpoint", C.UTILITY),
    ("REFRESH MATERIALIZED VIEW m", "refresh_matview", C.UTILITY),
    ("REINDEX TABLE t", "reindex", C.UTILITY),
    ("CLUSTER t USING i", "cluster", C.UTILITY),
    ("LOAD 'auto_explain'", "load", C.UTILITY),
    ("SET CONSTRAINTS ALL DEFERRED", "set_constraints", C.SESSION),
]


@pytest.mark.parametrize(("sql", "kind", "category"), KIND_CASES)
def test_kind_and_category(sql: str, kind: str, category: Category) -> None:
    stmt = one(sql)
    assert (stmt.kind, stmt.category) == (kind, category)
    assert kind in stmt.kinds
    assert category in stmt.categories
    assert stmt.fully_analyzed, stmt.unanalyzed_reason
    assert stmt.node is not None


# (sql, expected facts): only the fields named are checked; sets compare exactly.
FACT_CASES: list[tuple[str, dict[str, Any]]] = [
    # -- nested statements: CTE DML, EXPLAIN ANALYZE, PREPARE, CTAS, DECLARE, COPY (query)
    (
        "WITH d AS (DELETE FROM prompts WHERE id = 1 RETURNING *) SELECT * FROM d",
        {"kinds": {"select", "delete"}, "categories": {C.READ, C.WRITE}, "writes": {R("prompts")}},
    ),
    (
        "WITH a AS (SELECT 1), b AS (WITH c AS (UPDATE t SET x = 1 WHERE id = 2 RETURNING 1)"
        " SELECT * FROM c) SELECT * FROM a, b",
        {"kinds": {"select", "update"}, "writes": {R("t")}, "unfiltered_writes": set()},
    ),
    (
        "WITH x AS (INSERT INTO t SELECT * FROM u RETURNING id) SELECT count(*) FROM x",
        {"kinds": {"select", "insert"}, "reads": {R("u"), R("t")}, "writes": {R("t")}},
    ),
    (
        "EXPLAIN ANALYZE DELETE FROM t WHERE id = 1",
        {
            "kinds": {"explain", "delete"},
            "flags": {"explain", "explain_analyze"},
            "writes": {R("t")},
            "returns_rows": True,
        },
    ),
    (
        "EXPLAIN (ANALYZE, FORMAT JSON) UPDATE t SET a = 1 WHERE id = 1",
        {"kinds": {"explain", "update"}, "flags": {"explain", "explain_analyze"}},
    ),
    (
        "EXPLAIN (ANALYZE false) DELETE FROM t",
        {"kinds": {"explain"}, "flags": {"explain"}, "reads": {R("t")}, "writes": set()},
    ),
    (
        "EXPLAIN DELETE FROM t",
        {"kinds": {"explain"}, "reads": {R("t")}, "writes": set(), "unfiltered_writes": set()},
    ),
    (
        "EXPLAIN WITH d AS (DELETE FROM t) SELECT * FROM u",
        {"kinds": {"explain"}, "reads": {R("t"), R("u")}, "writes": set()},
    ),
    (
        "PREPARE p(int) AS DELETE FROM t WHERE true",
        {
            "kinds": {"prepare", "delete"},
            "writes": {R("t")},
            "unfiltered_writes": {R("t")},
            "prepare_name": "p",
            "returns_rows": False,
        },
    ),
    (
        "PREPARE q AS SELECT pg_read_file($1)",
        {"kinds": {"prepare", "select"}, "functions": {"pg_read_file"}},
    ),
    (
        "CREATE TABLE copy AS SELECT * FROM customers",
        {
            "kinds": {"create_table_as", "select"},
            "reads": {R("customers")},
            "writes": {R("copy")},
            "flags": {"into_table"},
            "returns_rows": False,
        },
    ),
    (
        "SELECT email INTO TEMP leak FROM customers",
        {
            "kinds": {"create_table_as", "select"},
            "writes": {R("leak")},
            "flags": {"into_table", "temp_object"},
            "returns_rows": False,
        },
    ),
    (
        "CREATE TABLE t2 AS EXECUTE p",
        {"execute_name": "p", "kinds": {"create_table_as", "execute"}},
    ),
    (
        "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM customers",
        {
            "kinds": {"declare", "select"},
            "reads": {R("customers")},
            "cursor_name": "c",
            "flags": {"with_hold"},
        },
    ),
    ("DECLARE c CURSOR FOR SELECT 1", {"flags": set()}),
    ("FETCH ALL IN c", {"cursor_name": "c", "returns_rows": True}),
    ("MOVE LAST IN c", {"cursor_name": "c", "returns_rows": False}),
    ("CLOSE c", {"cursor_name": "c"}),
    ("CLOSE ALL", {"cursor_name": ""}),
    ("DEALLOCATE p", {"deallocate_name": "p"}),
    ("DEALLOCATE ALL", {"deallocate_name": ""}),
    ("EXECUTE p(1, 'x')", {"execute_name": "p", "returns_rows": True, "fully_analyzed": True}),
    ("EXPLAIN EXECUTE p(1)", {"execute_name": "p", "kinds": {"explain"}}),
    (
        "COPY (SELECT email FROM customers) TO STDOUT",
        {"kinds": {"copy_to", "select"}, "reads": {R("customers")}, "flags": {"copy_stdio"}},
    ),
    (
        "COPY (DELETE FROM t RETURNING *) TO STDOUT",
        {"kinds": {"copy_to", "delete"}, "writes": {R("t")}, "unfiltered_writes": {R("t")}},
    ),
    # -- reads and writes, CTE scoping
    (
        "SELECT * FROM a JOIN b ON a.id = b.id LEFT JOIN s.c USING (id)",
        {"reads": {R("a"), R("b"), R("s.c")}},
    ),
    (
        "SELECT (SELECT max(x) FROM m) FROM a WHERE a.id IN (SELECT id FROM b)"
        " AND EXISTS (SELECT 1 FROM c WHERE c.id = a.id) GROUP BY 1"
        " HAVING count(*) > (SELECT count(*) FROM d)",
        {"reads": {R("a"), R("b"), R("c"), R("d"), R("m")}},
    ),
    (
        "SELECT * FROM a, LATERAL (SELECT * FROM b WHERE b.id = a.id) x",
        {"reads": {R("a"), R("b")}},
    ),
    (
        "WITH customers AS (SELECT 1 AS id) SELECT * FROM customers",
        {"reads": set()},
    ),
    (
        "WITH customers AS (SELECT * FROM customers) SELECT * FROM customers",
        {"reads": {R("customers")}},
    ),
    (
        "WITH c AS (SELECT 1) SELECT * FROM public.c",
        {"reads": {R("public.c")}},
    ),
    (
        "WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a",
        {"reads": {R("b")}},
    ),
    (
        "WITH RECURSIVE a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a",
        {"reads": set()},
    ),
    (
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5)"
        " SELECT * FROM r JOIN t ON t.id = r.n",
        {"reads": {R("t")}},
    ),
    (
        "SELECT * FROM (WITH x AS (SELECT 1) SELECT * FROM x) s, x",
        {"reads": {R("x")}},
    ),
    (
        "UPDATE t SET a = u.a FROM u WHERE t.id = u.id",
        {"reads": {R("u")}, "writes": {R("t")}, "unfiltered_writes": set()},
    ),
    (
        "DELETE FROM t USING u WHERE t.id = u.id RETURNING t.*",
        {
            "reads": {R("u"), R("t")},
            "writes": {R("t")},
            "flags": {"returning"},
            "returns_rows": True,
        },
    ),
    (
        "MERGE INTO t USING (SELECT * FROM s) src ON t.id = src.id"
        " WHEN MATCHED THEN UPDATE SET a = src.a WHEN NOT MATCHED THEN INSERT VALUES (src.id)",
        {"kinds": {"merge", "update", "insert", "select"}, "reads": {R("s")}, "writes": {R("t")}},
    ),
    (
        "INSERT INTO feature_store SELECT id, 'f', 1, now() FROM customers",
        {
            "reads": {R("customers")},
            "writes": {R("feature_store")},
            "flags": {"insert_select", "into_table"},
            "functions": {"now"},
        },
    ),
    (
        "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = excluded.a",
        {"kinds": {"insert", "update"}, "writes": {R("t")}, "flags": set()},
    ),
    ("COPY t FROM STDIN", {"writes": {R("t")}, "reads": set(), "flags": {"copy_stdio"}}),
    ("COPY t (a, b) TO STDOUT", {"reads": {R("t")}, "writes": set()}),
    ("TRUNCATE a, s.b", {"writes": {R("a"), R("s.b")}}),
    ("LOCK TABLE a, b IN ACCESS EXCLUSIVE MODE", {"reads": {R("a"), R("b")}, "writes": set()}),
    ("CREATE VIEW v AS SELECT * FROM customers", {"reads": {R("customers")}, "writes": {R("v")}}),
    ("CREATE INDEX i ON s.t (lower(email))", {"writes": {R("s.t")}, "functions": {"lower"}}),
    ("ALTER TABLE t ADD COLUMN c int DEFAULT f()", {"writes": {R("t")}, "functions": {"f"}}),
    (
        "CREATE TABLE t (a int REFERENCES u (id), b int DEFAULT g())",
        {"writes": {R("t")}, "reads": {R("u")}, "functions": {"g"}},
    ),
    ("SELECT * FROM t FOR UPDATE OF t", {"reads": {R("t")}, "flags": {"row_lock"}}),
    ("CREATE TEMP TABLE customers (country text)", {"flags": {"temp_object"}}),
    ("CREATE TEMPORARY VIEW v AS SELECT 1", {"flags": {"temp_object"}}),
    ("CREATE VIEW pg_temp.v AS SELECT 1", {"flags": {"temp_object"}}),
    ("SELECT 1 INTO TEMP t", {"flags": {"into_table", "temp_object"}}),
    ("CREATE TEMP SEQUENCE s", {"flags": {"temp_object"}}),
    ("CREATE UNLOGGED TABLE t (a int)", {"flags": set()}),
    # -- functions
    ("SELECT pg_catalog.PG_READ_FILE('/etc/passwd')", {"functions": {"pg_read_file"}}),
    (
        "SELECT lower(x), count(*) OVER (), coalesce(y, 1) FROM t",
        {"functions": {"lower", "count"}},
    ),
    ("SELECT * FROM generate_series(1, 3) g", {"functions": {"generate_series"}, "reads": set()}),
    (
        "SELECT 1 FROM t WHERE a = ANY (SELECT myschema.f(b) FROM u)",
        {"functions": {"f"}, "reads": {R("t"), R("u")}},
    ),
    # -- flags
    ("DROP TABLE a, b CASCADE", {"flags": {"drop_cascade"}, "dropped": {"table"}}),
    ("DROP TABLE a", {"flags": set(), "dropped": {"table"}, "writes": {R("a")}}),
    ("ALTER TABLE t DROP COLUMN c CASCADE", {"flags": {"drop_cascade"}}),
    ("TRUNCATE t CASCADE", {"flags": {"drop_cascade"}}),
    ("DROP SCHEMA s CASCADE", {"flags": {"drop_cascade"}, "dropped": {"schema"}, "writes": set()}),
    ("DROP MATERIALIZED VIEW m", {"dropped": {"materialized_view"}, "writes": {R("m")}}),
    ("DROP INDEX CONCURRENTLY i", {"dropped": {"index"}}),
    ("DROP FUNCTION f(int)", {"dropped": {"function"}}),
    ("DROP DATABASE d", {"dropped": {"database"}}),
    ("DROP ROLE r", {"dropped": {"role"}, "flags": {"role_ddl"}}),
    ("DROP EXTENSION e", {"dropped": {"extension"}}),
    ("DROP TRIGGER tr ON s.t", {"dropped": {"trigger"}, "writes": {R("s.t")}}),
    ("CREATE INDEX ON t (a)", {"flags": {"index_not_concurrent"}}),
    ("CREATE INDEX CONCURRENTLY ON t (a)", {"flags": set()}),
    ("REINDEX INDEX i", {"flags": {"index_not_concurrent"}}),
    ("REINDEX (CONCURRENTLY) TABLE t", {"flags": set()}),
    ("REINDEX TABLE CONCURRENTLY t", {"flags": set()}),
    ("COPY t TO PROGRAM 'curl evil'", {"flags": {"copy_program"}}),
    ("COPY t FROM PROGRAM 'id'", {"flags": {"copy_program"}}),
    ("COPY t TO '/tmp/x.csv' WITH (FORMAT csv)", {"flags": {"copy_server_file"}}),
    ("COPY t FROM '/tmp/x.csv'", {"flags": {"copy_server_file"}}),
    ("COPY t TO STDOUT", {"flags": {"copy_stdio"}}),
    ("SET ROLE admin", {"flags": {"set_role"}, "set_param": ("role", "admin")}),
    ("SET LOCAL ROLE admin", {"flags": {"set_role"}, "set_local": True}),
    ("SET role = 'admin'", {"flags": {"set_role"}}),
    ("SET SESSION AUTHORIZATION carol", {"flags": {"set_session_authorization"}}),
    ("SET SESSION AUTHORIZATION DEFAULT", {"flags": {"reset_role"}, "category": C.PRIVILEGE}),
    ("RESET ROLE", {"flags": {"reset_role"}, "set_param": ("role", "DEFAULT")}),
    ("RESET SESSION AUTHORIZATION", {"flags": {"reset_role"}}),
    (
        "RESET ALL",
        {"flags": {"reset_role"}, "set_param": ("all", "DEFAULT"), "category": C.SESSION},
    ),
    ("DISCARD ALL", {"flags": {"reset_role"}}),
    ("DISCARD PLANS", {"flags": set()}),
    ("SELECT set_config('role', 'admin', false)", {"flags": {"set_config_role"}}),
    ("SELECT set_config('ROLE', 'admin', false)", {"flags": {"set_config_role"}}),
    ("SELECT set_config('Session_Authorization', 'x', false)", {"flags": {"set_config_role"}}),
    ("SELECT set_config('role'::text, 'admin', true)", {"flags": {"set_config_role"}}),
    (
        "SELECT set_config(setting_name => 'role', new_value => 'x', is_local => false)",
        {"flags": {"set_config_role"}},
    ),
    (
        "SELECT set_config(name, 'admin', false) FROM settings",
        {"flags": {"set_config_role", "unsafe_setting", "set_config_search_path"}},
    ),
    (
        "SELECT set_config('ro' || 'le', 'admin', false)",
        {"flags": {"set_config_role", "unsafe_setting", "set_config_search_path"}},
    ),
    (
        "SELECT pg_catalog.set_config($1, $2, false)",
        {"flags": {"set_config_role", "unsafe_setting", "set_config_search_path"}},
    ),
    ("SELECT set_config('work_mem', '1MB', false)", {"flags": set()}),
    ("SELECT set_config('search_path', 'evil', false)", {"flags": {"set_config_search_path"}}),
    (
        "SELECT 1 FROM t WHERE set_config('role', 'x', true) IS NOT NULL",
        {"flags": {"set_config_role"}},
    ),
    ("SET standard_conforming_strings = off", {"flags": {"unsafe_setting"}}),
    ("SET backslash_quote = on", {"flags": {"unsafe_setting"}}),
    ("SET client_encoding = 'SJIS'", {"flags": {"unsafe_setting"}}),
    ("SET NAMES 'SJIS'", {"flags": {"unsafe_setting"}, "set_param": ("client_encoding", "SJIS")}),
    ("RESET standard_conforming_strings", {"flags": {"unsafe_setting"}}),
    ("SELECT set_config('client_encoding', 'SJIS', false)", {"flags": {"unsafe_setting"}}),
    (
        "ALTER SYSTEM SET standard_conforming_strings = off",
        {"flags": {"alter_system", "unsafe_setting"}},
    ),
    ("ALTER SYSTEM RESET ALL", {"flags": {"alter_system"}}),
    ("ALTER ROLE bob SET role = admin", {"flags": {"role_ddl", "set_role"}}),
    ("CREATE ROLE r SUPERUSER", {"flags": {"role_ddl"}}),
    ("ALTER USER bob WITH PASSWORD 'x'", {"flags": {"role_ddl"}}),
    (
        "ALTER ROLE bob RENAME TO robert",
        {"flags": {"role_ddl"}, "categories": {C.DDL, C.PRIVILEGE}},
    ),
    ("GRANT SELECT ON customers TO alice", {"flags": {"grant"}, "writes": {R("customers")}}),
    ("REVOKE ALL ON SCHEMA s FROM bob", {"flags": {"revoke"}}),
    ("GRANT dba TO bob", {"flags": {"grant"}}),
    ("REVOKE dba FROM bob", {"flags": {"revoke"}}),
    ("DO $$ BEGIN EXECUTE 'DROP TABLE t'; END $$", {"flags": {"dynamic_sql"}}),
    (
        "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN END $$",
        {"flags": {"dynamic_sql"}},
    ),
    (
        "CREATE FUNCTION g() RETURNS int LANGUAGE sql BEGIN ATOMIC DELETE FROM t; SELECT 1; END",
        {
            "flags": {"dynamic_sql"},
            "kinds": {"create_function"},
            "reads": {R("t")},
            "writes": set(),
        },
    ),
    ("CALL cleanup()", {"flags": {"dynamic_sql"}, "functions": {"cleanup"}}),
    ("SELECT query_to_xml('select * from customers', true, true, '')", {"flags": {"dynamic_sql"}}),
    ("SELECT table_to_xml('customers', true, true, '')", {"flags": {"dynamic_sql"}}),
    ("SELECT * FROM ts_stat('select vec from docs')", {"flags": {"dynamic_sql"}}),
    ("SELECT * FROM dblink('host=x', 'select 1') AS t(a int)", {"flags": {"dynamic_sql"}}),
    ("SELECT dblink_exec('drop table t')", {"flags": {"dynamic_sql"}}),
    ("SELECT cursor_to_xml('c', 10, true, true, '')", {"flags": {"dynamic_sql"}}),
    ("NOTIFY chan, 'payload'", {"flags": {"notify_payload"}}),
    ("NOTIFY chan", {"flags": set()}),
    ("SELECT pg_notify('chan', email) FROM customers", {"flags": {"notify_payload"}}),
    ("LISTEN chan", {"flags": {"listen"}}),
    (
        "UPDATE t SET a = 1 WHERE CURRENT OF c",
        {"flags": {"where_current_of"}, "unfiltered_writes": set()},
    ),
    (
        "DELETE FROM t WHERE CURRENT OF c",
        {"flags": {"where_current_of"}, "unfiltered_writes": set()},
    ),
    (
        "INSERT INTO t VALUES (1) RETURNING id",
        {"flags": {"returning"}, "reads": {R("t")}, "returns_rows": True},
    ),
    ("UPDATE t SET a = 1 WHERE id = 1 RETURNING *", {"flags": {"returning"}, "returns_rows": True}),
    # -- SET values as the server stores them
    ('SET search_path TO a, "B", public', {"set_param": ("search_path", 'a, "B", public')}),
    ("SET search_path = '$user', public", {"set_param": ("search_path", '"$user", public')}),
    ('SET search_path TO "select"', {"set_param": ("search_path", '"select"')}),
    ("SET SCHEMA 'audit'", {"set_param": ("search_path", "audit")}),
    ("SET search_path TO DEFAULT", {"set_param": ("search_path", "DEFAULT")}),
    ("RESET search_path", {"set_param": ("search_path", "DEFAULT"), "kind": "reset"}),
    ("SET LOCAL work_mem = '64MB'", {"set_param": ("work_mem", "64MB"), "set_local": True}),
    ("SET statement_timeout = 1000", {"set_param": ("statement_timeout", "1000")}),
    ("SET TIME ZONE 'UTC'", {"set_param": ("timezone", "UTC")}),
    ("SET \"Work_Mem\" = '1MB'", {"set_param": ("work_mem", "1MB")}),
    ("SET datestyle = iso, mdy", {"set_param": ("datestyle", "iso, mdy")}),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", {"kind": "set", "set_local": False}),
    # -- returns_rows
    ("SELECT 1", {"returns_rows": True}),
    ("VALUES (1)", {"returns_rows": True}),
    ("SHOW ALL", {"returns_rows": True}),
    ("EXPLAIN SELECT 1", {"returns_rows": True}),
    ("INSERT INTO t VALUES (1)", {"returns_rows": False}),
    ("SELECT 1 INTO t", {"returns_rows": False}),
    ("CREATE TABLE t (a int)", {"returns_rows": False}),
    # -- hiding tricks
    ("/* DROP */ SELECT 1 -- DELETE FROM t", {"kind": "select", "kinds": {"select"}}),
    ("SELECT /* a /* nested */ still comment; DROP TABLE t; */ 1", {"kinds": {"select"}}),
    ("DrOp TaBlE CUSTOMERS", {"kind": "drop", "writes": {R("customers")}}),
    ('DROP TABLE "Customers"', {"writes": {R("Customers")}}),
    ('SELECT * FROM "CUSTOMERS", customers', {"reads": {R("CUSTOMERS"), R("customers")}}),
    ('DROP TABLE U&"\\0063ustomers"', {"writes": {R("customers")}}),
    ("SELECT * FROM U&\"!0063ustomers\" UESCAPE '!'", {"reads": {R("customers")}}),
    ("SELECT $x$; DROP TABLE t; $x$", {"kinds": {"select"}, "writes": set()}),
    ("SELECT E'\\'; DROP TABLE t; --'", {"kinds": {"select"}, "writes": set()}),
    ("SELECT 'it''s; DROP TABLE t'", {"kinds": {"select"}}),
    ('SELECT * FROM "public"."Cust""omers"', {"reads": {R('public.Cust"omers')}}),
    ("SELECT * FROM mydb.public.customers", {"reads": {R("public.customers")}}),
]


@pytest.mark.parametrize(("sql", "expected"), FACT_CASES)
def test_facts(sql: str, expected: dict[str, Any]) -> None:
    stmt = one(sql)
    for field, value in expected.items():
        got = getattr(stmt, field)
        if isinstance(value, set):
            value = frozenset(value)
        assert got == value, f"{field}: {got!r} != {value!r}"


# UPDATE/DELETE whose WHERE may select every row: never decided by literal values.
UNFILTERED = [
    "DELETE FROM t",
    "UPDATE t SET a = 1",
    "DELETE FROM t WHERE true",
    "DELETE FROM t WHERE 1 = 1",
    "DELETE FROM t WHERE 1 = 2",
    "DELETE FROM t WHERE 'a' = 'a'",
    "DELETE FROM t WHERE NOT false",
    "DELETE FROM t WHERE 1 IN (1)",
    "DELETE FROM t WHERE NULL",
    "DELETE FROM t WHERE now() > '2000-01-01'",
    "DELETE FROM t WHERE random() < 2",
    "DELETE FROM t WHERE x = x",
    "DELETE FROM t WHERE t.x = x",
    "DELETE FROM t WHERE x >= x",
    "DELETE FROM t WHERE x IS NOT DISTINCT FROM x",
    "DELETE FROM t WHERE x IN (1, x)",
    "DELETE FROM t WHERE x IS NULL OR x IS NOT NULL",
    "DELETE FROM t WHERE id = 5 OR 1 = 1",
    "DELETE FROM t WHERE id = 5 OR x = x",
    "DELETE FROM t WHERE (id = 5 OR (a = 1 OR true))",
    "DELETE FROM t WHERE x = 5 OR x <> 5",
    "DELETE FROM t WHERE email LIKE 'a%' OR email NOT LIKE 'a%'",
    "DELETE FROM t WHERE flag OR NOT flag",
    "DELETE FROM t WHERE NOT (x <> x)",
    "DELETE FROM t WHERE NOT (a = 1 AND NOT a = 1)",
    "DELETE FROM t WHERE (x = x) IS TRUE",
    "DELETE FROM t WHERE x = x AND 1 = 1",
    "DELETE FROM t WHERE CASE WHEN a > 1 THEN true ELSE true END",
    "DELETE FROM t AS x USING u WHERE u.flag",
    "DELETE FROM t WHERE EXISTS (SELECT 1)",
    "UPDATE t SET a = 1 FROM u WHERE u.id = 7",
    "WITH d AS (DELETE FROM t WHERE 2 > 1 RETURNING 1) SELECT * FROM d",
    "MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE",
    "MERGE INTO t USING s ON t.id = s.id WHEN NOT MATCHED BY SOURCE THEN DELETE",
]

FILTERED = [
    "DELETE FROM t WHERE id = 5",
    "DELETE FROM t WHERE id = 5 AND 1 = 1",
    "DELETE FROM t WHERE x = y",
    "DELETE FROM t WHERE x IS NULL",
    "DELETE FROM t WHERE x < x OR id = 3",
    "UPDATE t SET a = 1 FROM u WHERE u.id = t.id",
    "DELETE FROM t AS x USING u WHERE u.id = x.id",
    "DELETE FROM t WHERE id IN (SELECT id FROM u)",
    "DELETE FROM t WHERE CURRENT OF c",
    "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
    "MERGE INTO t USING s ON true WHEN NOT MATCHED THEN INSERT VALUES (1)",
]


@pytest.mark.parametrize("sql", UNFILTERED)
def test_unfiltered_write(sql: str) -> None:
    stmt = one(sql)
    assert stmt.unfiltered_writes == {R("t")}


@pytest.mark.parametrize("sql", FILTERED)
def test_filtered_write(sql: str) -> None:
    assert one(sql).unfiltered_writes == frozenset()


def test_always_true_does_not_depend_on_literal_values() -> None:
    a, b = analyze("DELETE FROM t WHERE 1 = 1"), analyze("DELETE FROM t WHERE 1 = 2")
    assert a.statements[0].unfiltered_writes == b.statements[0].unfiltered_writes
    assert a.literal_insensitive and b.literal_insensitive


def test_multi_statement_string_gives_one_statement_each() -> None:
    analysis = analyze("SELECT 1; DELETE FROM t WHERE id = 1;\nDROP TABLE u -- bye")
    assert [s.kind for s in analysis.statements] == ["select", "delete", "drop"]
    assert analysis.statements[2].writes == {R("u")}


@pytest.mark.parametrize(
    "sql",
    ["SELEC 1", "SELECT FROM WHERE", "DROP TABLE", "SELECT 'unterminated", "SELECT 1; DELET x"],
)
def test_parse_error(sql: str) -> None:
    analysis = analyze(sql)
    assert analysis.statements == ()
    assert analysis.error
    assert not analysis.literal_insensitive


def test_nul_byte_is_refused() -> None:
    # libpg_query would stop at the NUL while the text goes on: never analyze half.
    analysis = analyze("SELECT 1\x00; DROP TABLE t")
    assert analysis.statements == () and analysis.error


def test_empty_text_has_no_statements() -> None:
    analysis = analyze("  -- nothing\n")
    assert analysis.statements == () and analysis.error is None


def test_fingerprint_ignores_literals() -> None:
    a, b = analyze("SELECT * FROM t WHERE a = 1"), analyze("SELECT * FROM t WHERE a = 2")
    assert a.fingerprint and a.fingerprint == b.fingerprint


@pytest.mark.parametrize(
    ("sql", "insensitive"),
    [
        ("SELECT email FROM customers WHERE id = 5", True),
        ("DELETE FROM t WHERE id = 1", True),
        ("SET search_path = a", False),
        ("RESET work_mem", False),
        ("SELECT set_config('role', 'x', false)", False),
        ("SELECT current_setting('role')", False),
        ("COPY t TO '/tmp/x'", False),
        ("NOTIFY c, 'x'", False),
        ("SELECT pg_notify('c', 'x')", False),
        ("EXECUTE p(1)", False),
        ("PREPARE p AS SELECT 1", False),
        ("DECLARE c CURSOR FOR SELECT 1", False),
        ("FETCH 1 FROM c", False),
        ("CLOSE c", False),
        ("DEALLOCATE p", False),
        ("LISTEN c", False),
        ("SELECT nextval('seq')", False),
        ("SELECT 'customers'::regclass", False),
        ("SELECT a, b FROM t ORDER BY 2", False),
        ("SELECT a, count(*) FROM t GROUP BY 1", False),
        ("SELECT a, count(*) FROM t GROUP BY ROLLUP (1)", False),
        ("SELECT DISTINCT ON (1) a FROM t", False),
        ("SELECT a, count(*) FROM t GROUP BY a ORDER BY a LIMIT 5", True),
        ("SELECT * FROM U&\"!0063ust\" UESCAPE '!'", True),
        ("EXPLAIN (ANALYZE 0) DELETE FROM t", False),
        ("DO $$ BEGIN END $$", False),
        ("SELECT 1; SET x = 1", False),
    ],
)
def test_literal_insensitive(sql: str, insensitive: bool) -> None:
    assert analyze(sql).literal_insensitive is insensitive


def test_unknown_statement_fails_closed() -> None:
    from pglast import ast

    from dbgov.sql.facts import statement_facts

    stmt, sensitive = statement_facts(ast.ReturnStmt())
    assert stmt.kind == "other" and stmt.category == Category.UTILITY
    assert not stmt.fully_analyzed and "ReturnStmt" in (stmt.unanalyzed_reason or "")
    assert sensitive


def test_split_statements() -> None:
    assert split_statements("SELECT 1; SELECT ';' ; -- c") == ["SELECT 1", "SELECT ';'"]
    # A syntax error still splits (scanner fallback), so an error can name the statement.
    assert split_statements("SELECT 1; SELEC 2") == ["SELECT 1", "SELEC 2"]
