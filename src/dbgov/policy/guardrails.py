"""Built-in guardrails: dangerous operations stopped before they run.

A guardrail is a predicate on the analyzer's facts for one statement, a default
action, and where it applies. They are on unless the policy changes them
(`guardrails:` in the policy file, first matching override wins), and they are
evaluated before any rule or grant, so a rule cannot allow what a guardrail
denies. Because they look at facts from the parse tree (kinds, flags, functions,
tables written), rewording a statement does not get around them: comments, case,
quoted or U&-escaped identifiers, dollar quoting, CTEs, EXPLAIN ANALYZE, PREPARE,
CREATE TABLE AS and DECLARE all reach the same facts.

| name                   | where       | default          | exempt       |
|------------------------|-------------|------------------|--------------|
| privilege_escalation   | everywhere  | deny             | admin groups |
| server_files           | everywhere  | deny             | -            |
| dangerous_functions    | everywhere  | deny             | -            |
| procedural             | everywhere  | deny             | admin groups |
| unsafe_settings        | everywhere  | deny             | -            |
| catalog_secrets        | everywhere  | deny             | admin groups |
| unfiltered_write       | everywhere  | deny             | -            |
| drop_cascade           | everywhere  | deny             | -            |
| drop_on_production     | production  | deny             | -            |
| truncate_on_production | production  | deny             | -            |
| ddl_on_production      | production  | require_approval | -            |
| function_call          | everywhere  | deny             | -            |

`function_call` is the protocol-level FunctionCall ('F') message, which calls a
function by OID and so bypasses SQL analysis; it has no statement to look at, so
the engine answers it from `PolicyEngine.decide_function_call()`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

from dbgov.policy.resolve import SECRET_RELATIONS, StatementView
from dbgov.sql.facts import DYNAMIC_SQL_FUNCTIONS
from dbgov.sql.kinds import CATEGORY_OF_KIND, ROLE_SETTINGS
from dbgov.sql.model import Category

PRODUCTION_ENVS = frozenset({"production", "prod"})  # as config.Target.is_production

# The floor of dangerous functions: they read or write server files, reach other
# servers, run SQL text the analyzer cannot see, or act on other sessions and the
# server itself. Globs on lower-case bare names.
DANGEROUS_FUNCTIONS: dict[str, str] = {
    "pg_read_file": "reads files on the database server",
    "pg_read_binary_file": "reads files on the database server",
    "pg_ls_*": "lists directories on the database server",
    "pg_stat_file": "inspects files on the database server",
    "pg_file_*": "writes files on the database server",
    "pg_logdir_ls": "lists the server's log directory",
    "lo_import": "reads a file on the database server into a large object",
    "lo_export": "writes a large object to a file on the database server",
    "dblink*": "connects to another database, out of the proxy's sight",
    "query_to_xml*": "runs SQL text the proxy cannot analyze",
    "pg_terminate_backend": "ends other sessions",
    "pg_cancel_backend": "cancels other sessions' queries",
    "pg_reload_conf": "reloads the server configuration",
    "pg_rotate_logfile": "acts on the server's log files",
    "pg_promote": "promotes a standby server",
    "pg_switch_wal": "acts on the server's write-ahead log",
    "pg_create_restore_point": "acts on the server's write-ahead log",
    "pg_*replication_slot*": "manages replication slots (a copy of every change)",
    "pg_logical_slot_*": "reads every change from a replication slot",
    "pg_logical_emit_message": "writes into the replication stream",
    "pg_replication_origin_*": "manages replication origins",
    **{name: "runs SQL text the proxy cannot analyze" for name in sorted(DYNAMIC_SQL_FUNCTIONS)},
}

_PRIVILEGE_FLAGS: dict[str, str] = {
    "set_role": "SET ROLE changes the database role the session runs as",
    "set_session_authorization": "SET SESSION AUTHORIZATION changes who the session is",
    "set_config_role": "set_config('role' | 'session_authorization', ...) changes who the "
    "session is",
    "alter_system": "ALTER SYSTEM changes the server configuration",
    "role_ddl": "CREATE/ALTER/DROP ROLE changes database roles",
    "grant": "GRANT changes privileges",
    "revoke": "REVOKE changes privileges",
}
_PRIVILEGE_KINDS = frozenset(k for k, c in CATEGORY_OF_KIND.items() if c is Category.PRIVILEGE)
_PROCEDURAL_KINDS = frozenset(k for k, c in CATEGORY_OF_KIND.items() if c is Category.PROCEDURAL)
_DDL_KINDS = frozenset(k for k, c in CATEGORY_OF_KIND.items() if c is Category.DDL)

# Settings that change how the server lexes SQL (the analyzer would read the text
# differently) or that only exist to switch safety mechanisms off.
UNSAFE_SETTINGS = frozenset(
    {
        "standard_conforming_strings",
        "backslash_quote",
        "client_encoding",
        "session_replication_role",  # disables triggers and foreign-key checks
        "allow_system_table_mods",
        "ignore_system_indexes",
        "zero_damaged_pages",
        "lo_compat_privileges",
        "dynamic_library_path",
        "local_preload_libraries",
        "session_preload_libraries",
        "jit_provider",
    }
)

Check = Callable[[StatementView, tuple[str, ...]], str | None]


@dataclass(frozen=True, slots=True)
class Guardrail:
    name: str
    summary: str
    default: str  # "deny" | "require_approval"
    production_only: bool
    admin_exempt: bool
    check: Check
    hint: str
    risk: str = "high"


def _kinds_text(kinds: frozenset[str]) -> str:
    return ", ".join(k.upper().replace("_", " ") for k in sorted(kinds))


def _privilege(view: StatementView, _: tuple[str, ...]) -> str | None:
    stmt = view.stmt
    for flag, reason in _PRIVILEGE_FLAGS.items():
        if flag in stmt.flags:
            return reason
    # RESET ROLE / RESET SESSION AUTHORIZATION undo a role change, back to the proxy's
    # service role. RESET ALL and DISCARD ALL also carry the analyzer's reset_role
    # flag, but they are what connection pools send between checkouts (asyncpg's
    # reset query ends with RESET ALL), and a session that cannot SET ROLE has no
    # role change to undo: only the explicit forms count.
    if "reset_role" in stmt.flags and stmt.set_param and stmt.set_param[0] in ROLE_SETTINGS:
        return f"RESET {stmt.set_param[0].upper().replace('_', ' ')} changes who the session is"
    privileged = stmt.kinds & _PRIVILEGE_KINDS
    if privileged or Category.PRIVILEGE in stmt.categories:
        return f"{_kinds_text(privileged or frozenset({stmt.kind}))} changes roles or privileges"
    return None


def _server_files(view: StatementView, _: tuple[str, ...]) -> str | None:
    flags = view.stmt.flags
    if "copy_program" in flags:
        return "COPY ... PROGRAM runs a shell command on the database server"
    if "copy_server_file" in flags:
        return "COPY to or from a file reads or writes files on the database server"
    if "load" in view.stmt.kinds:
        return "LOAD loads a shared library into the database server"
    return None


def match_function(name: str, patterns: tuple[str, ...]) -> str | None:
    for pattern in patterns:
        if fnmatch.fnmatchcase(name, pattern):
            return pattern
    return None


_FLOOR = tuple(DANGEROUS_FUNCTIONS)


def _dangerous_functions(view: StatementView, extra: tuple[str, ...]) -> str | None:
    stmt = view.stmt
    for name in sorted(stmt.functions):
        pattern = match_function(name, _FLOOR)
        if pattern is not None:
            return f"{name}() {DANGEROUS_FUNCTIONS[pattern]}"
        if match_function(name, extra) is not None:
            return f"{name}() is on this policy's list of dangerous functions"
    # The analyzer flags any other way of running SQL text it cannot see; DO and
    # friends carry the flag too but are the procedural guardrail's business.
    if "dynamic_sql" in stmt.flags and not stmt.kinds & _PROCEDURAL_KINDS:
        return "the statement runs SQL text the proxy cannot analyze"
    return None


def _procedural(view: StatementView, _: tuple[str, ...]) -> str | None:
    kinds = view.stmt.kinds & _PROCEDURAL_KINDS
    if kinds:
        return (
            f"{_kinds_text(kinds)} runs code whose SQL the proxy cannot analyze "
            "(dynamic SQL inside functions and DO blocks)"
        )
    return None


# Values of the lexing settings that read SQL exactly as the analyzer does (its
# scanner assumes the defaults and UTF-8): setting them changes nothing, and
# drivers and GUI tools do send them.
_HARMLESS_VALUES: dict[str, frozenset[str]] = {
    "standard_conforming_strings": frozenset({"on", "true", "yes", "1", "default"}),
    "backslash_quote": frozenset({"safe_encoding", "off", "false", "no", "0", "default"}),
    "client_encoding": frozenset({"utf8", "unicode", "default"}),
}


def _harmless_value(name: str, value: str) -> bool:
    normal = value.strip("'\"").lower().replace("-", "").replace("_", "")
    allowed = _HARMLESS_VALUES.get(name, frozenset())
    return normal in {v.replace("_", "") for v in allowed}


def _unsafe_settings(view: StatementView, _: tuple[str, ...]) -> str | None:
    stmt = view.stmt
    name = stmt.set_param[0] if stmt.set_param else None
    if stmt.set_param is not None and name in _HARMLESS_VALUES and _harmless_value(*stmt.set_param):
        return None  # SET/RESET of a lexing setting to what the analyzer assumes
    if name in UNSAFE_SETTINGS:
        return f"changing {name} is not allowed through the proxy"
    if "unsafe_setting" in stmt.flags:
        return (
            "the statement changes a setting that alters how SQL text is read "
            "(standard_conforming_strings, backslash_quote or client_encoding)"
        )
    return None


# The functions under pg_stat_activity: every proxied session shares the upstream
# role, so they show other users' statement texts, literals included.
SECRET_FUNCTIONS = ("pg_stat_get_activity", "pg_stat_get_backend_*")


def _catalog_secrets(view: StatementView, _: tuple[str, ...]) -> str | None:
    for name in view.table_names():
        if name in SECRET_RELATIONS:
            return f"{name} holds secrets or other sessions' data, not metadata"
    for name in sorted(view.stmt.functions):
        if match_function(name, SECRET_FUNCTIONS) is not None:
            return f"{name}() shows other sessions' statements, literals included"
    return None


def _unfiltered_write(view: StatementView, _: tuple[str, ...]) -> str | None:
    names = view.unfiltered_names()
    if not names:
        return None
    kinds = view.stmt.kinds & {"update", "delete", "merge"}
    return (
        f"{_kinds_text(kinds or frozenset({view.stmt.kind}))} without a WHERE clause (or "
        f"with one that is always true) would change every row of {', '.join(names)}"
    )


def _drop_cascade(view: StatementView, _: tuple[str, ...]) -> str | None:
    if "drop_cascade" in view.stmt.flags:
        return "CASCADE also drops or truncates every object that depends on the target"
    return None


def _drop(view: StatementView, _: tuple[str, ...]) -> str | None:
    stmt = view.stmt
    if stmt.kinds & {"drop", "drop_role"}:
        what = ", ".join(sorted(stmt.dropped)) or "object"
        names = ", ".join(view.write_names())
        return f"DROP {what.upper()}{' ' + names if names else ''} on a production target"
    return None


def _truncate(view: StatementView, _: tuple[str, ...]) -> str | None:
    if "truncate" in view.stmt.kinds:
        return f"TRUNCATE {', '.join(view.write_names())} on a production target"
    return None


def _ddl(view: StatementView, _: tuple[str, ...]) -> str | None:
    stmt = view.stmt
    kinds = stmt.kinds & (_DDL_KINDS - {"drop", "truncate"})
    if "index_not_concurrent" not in stmt.flags:
        # CREATE INDEX CONCURRENTLY does not lock writes out: not a change to hold.
        kinds = kinds - {"create_index"}
    elif "reindex" in stmt.kinds:
        kinds = kinds | {"reindex"}
    if not kinds:
        return None
    if "temp_object" in stmt.flags and kinds <= {"create_table", "create_table_as"}:
        return None  # a session's own temporary table changes no shared schema
    if kinds == {"create_index"} or kinds == {"reindex"}:
        return (
            f"{_kinds_text(kinds)} without CONCURRENTLY locks "
            f"{', '.join(view.write_names()) or 'the table'} on a production target"
        )
    return f"{_kinds_text(kinds)} changes the schema of a production target"


def _never(view: StatementView, _: tuple[str, ...]) -> str | None:
    return None


GUARDRAILS: tuple[Guardrail, ...] = (
    Guardrail(
        "privilege_escalation",
        "SET ROLE, SET SESSION AUTHORIZATION, RESET ROLE, set_config('role', ...), ALTER "
        "SYSTEM, CREATE/ALTER/DROP ROLE, GRANT, REVOKE",
        "deny",
        False,
        True,
        _privilege,
        "the proxy connects as a fixed service role and decides access itself; ask for a "
        "grant in the dbgov policy instead",
        "critical",
    ),
    Guardrail(
        "server_files",
        "COPY to or from PROGRAM or a server-side file, LOAD",
        "deny",
        False,
        False,
        _server_files,
        "use COPY ... FROM STDIN / TO STDOUT (psql's \\copy) to move data through your client",
        "critical",
    ),
    Guardrail(
        "dangerous_functions",
        "file, network, replication and server-control functions, and functions that run SQL text",
        "deny",
        False,
        False,
        _dangerous_functions,
        "these functions reach past what the proxy can see; ask an administrator",
        "critical",
    ),
    Guardrail(
        "procedural",
        "DO blocks, CREATE FUNCTION/PROCEDURE, CALL",
        "deny",
        False,
        True,
        _procedural,
        "write the statements out as plain SQL, or ask an administrator to run the code",
    ),
    Guardrail(
        "unsafe_settings",
        "settings that change how SQL is lexed or switch safety mechanisms off",
        "deny",
        False,
        False,
        _unsafe_settings,
        "leave this setting at its default; the proxy needs it to read your SQL as the server does",
    ),
    Guardrail(
        "catalog_secrets",
        "system relations holding secrets or other sessions' data (pg_authid, pg_shadow, "
        "pg_statistic, pg_stats, pg_user_mapping, pg_largeobject, pg_stat_activity, ...)",
        "deny",
        False,
        True,
        _catalog_secrets,
        "catalog metadata (pg_class, pg_attribute, information_schema, ...) is readable; "
        "ask an administrator for the rest",
    ),
    Guardrail(
        "unfiltered_write",
        "UPDATE/DELETE/MERGE without a WHERE, or with one that is always true",
        "deny",
        False,
        False,
        _unfiltered_write,
        "add a WHERE clause that selects the rows to change",
        "critical",
    ),
    Guardrail(
        "drop_cascade",
        "DROP ... CASCADE, TRUNCATE ... CASCADE, ALTER TABLE ... DROP ... CASCADE",
        "deny",
        False,
        False,
        _drop_cascade,
        "drop the dependent objects explicitly, without CASCADE",
        "critical",
    ),
    Guardrail(
        "drop_on_production",
        "DROP of any object on a production target",
        "deny",
        True,
        False,
        _drop,
        "run it on a non-production target, or ask an administrator",
        "critical",
    ),
    Guardrail(
        "truncate_on_production",
        "TRUNCATE on a production target",
        "deny",
        True,
        False,
        _truncate,
        "delete the rows you mean with DELETE ... WHERE, or ask an administrator",
        "critical",
    ),
    Guardrail(
        "ddl_on_production",
        "ALTER, CREATE INDEX without CONCURRENTLY and other DDL on a production target",
        "require_approval",
        True,
        False,
        _ddl,
        "the change waits for an approver; CREATE INDEX CONCURRENTLY needs none",
    ),
    Guardrail(
        "function_call",
        "the fast-path FunctionCall protocol message (calls a function by OID)",
        "deny",
        False,
        False,
        _never,
        "call functions through SQL (SELECT f(...)) so the proxy can see them",
    ),
)

BY_NAME: dict[str, Guardrail] = {g.name: g for g in GUARDRAILS}
