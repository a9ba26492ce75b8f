"""What statement analysis tells the rest of dbgov.

`analyze()` turns a query string into an `Analysis`: one `Statement` per SQL
statement, each a set of catalog-free facts taken from the pglast parse tree.
Policy decides on these facts; masking asks `lineage()` (which needs a catalog
snapshot) where each output column comes from.

Statements carry no text: an `Analysis` may be shared by every query string that
differs only in literal values (see `analyze.py`), so texts stay with the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Category(StrEnum):
    """Coarse statement classes that grants speak in (like SQL privileges)."""

    READ = "read"  # SELECT, SHOW, EXPLAIN without ANALYZE, FETCH, COPY TO
    WRITE = "write"  # INSERT, UPDATE, DELETE, MERGE, COPY FROM
    DDL = "ddl"  # CREATE/ALTER/DROP/TRUNCATE/COMMENT/... on schema objects
    PRIVILEGE = "privilege"  # GRANT, REVOKE, roles, SET ROLE, ALTER SYSTEM
    PROCEDURAL = "procedural"  # DO, CREATE FUNCTION/PROCEDURE, CALL
    SESSION = "session"  # SET, RESET, DISCARD, PREPARE, DEALLOCATE, LISTEN, ...
    TRANSACTION = "transaction"  # BEGIN, COMMIT, ROLLBACK, SAVEPOINT, ...
    UTILITY = "utility"  # VACUUM, ANALYZE, CHECKPOINT, LOCK, ...


@dataclass(frozen=True, slots=True)
class Relation:
    """A relation as written in the statement: `schema` is None when unqualified."""

    schema: str | None
    name: str

    def qualified(self, default_schema: str = "public") -> str:
        return f"{self.schema or default_schema}.{self.name}"

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


@dataclass(frozen=True, slots=True)
class Statement:
    """Facts about one SQL statement, from its parse tree.

    `kind` is the top-level statement (e.g. "select", "delete", "alter_table");
    `kinds` adds every action nested inside it: DML in CTEs, the statement under
    EXPLAIN ANALYZE, the query of CREATE TABLE AS / SELECT INTO / DECLARE CURSOR /
    PREPARE / COPY (query). Policy must decide over all of `kinds`.
    """

    kind: str
    category: Category
    kinds: frozenset[str]
    categories: frozenset[Category]
    reads: frozenset[Relation] = frozenset()
    writes: frozenset[Relation] = frozenset()
    functions: frozenset[str] = frozenset()  # lower-case, bare names ("pg_read_file")
    # UPDATE/DELETE targets with no WHERE, or a WHERE that is always true.
    unfiltered_writes: frozenset[Relation] = frozenset()
    # Guardrail facts, e.g. "drop_cascade", "index_not_concurrent", "copy_program",
    # "copy_server_file", "set_role", "set_session_authorization", "reset_role",
    # "set_config_role", "alter_system", "role_ddl", "grant", "revoke",
    # "dynamic_sql", "explain", "explain_analyze", "into_table", "notify_payload".
    # Also: "copy_stdio", "insert_select", "listen", "where_current_of", "returning",
    # "unsafe_setting", "set_config_search_path" (set_config() may change the
    # search_path), "row_lock" (FOR UPDATE/SHARE), "with_hold" (DECLARE WITH HOLD),
    # "temp_object" (creates a temporary relation, which shadows tables by name).
    flags: frozenset[str] = frozenset()
    dropped: frozenset[str] = frozenset()  # object types: "table", "index", "schema", ...
    # SET / RESET: lower-case parameter name and its value as the server would see it
    # ("DEFAULT" for RESET/SET ... TO DEFAULT); `set_local` for SET LOCAL.
    set_param: tuple[str, str] | None = None
    set_local: bool = False
    # PREPARE name / EXECUTE name / DEALLOCATE name ("" means ALL) / cursor name.
    prepare_name: str | None = None
    execute_name: str | None = None
    deallocate_name: str | None = None
    cursor_name: str | None = None
    # What the statement returns rows from (SELECT, RETURNING, FETCH, EXPLAIN...).
    returns_rows: bool = False
    # False when the analyzer met something it cannot see through; policy then
    # fails closed with `unanalyzed_reason` as the explanation.
    fully_analyzed: bool = True
    unanalyzed_reason: str | None = None
    # The parse tree (pglast.ast node), kept for lineage(); not part of equality.
    node: Any = field(default=None, compare=False, repr=False, hash=False)


@dataclass(frozen=True, slots=True)
class Analysis:
    statements: tuple[Statement, ...]
    # pglast fingerprint of the whole query string (ignores literal values).
    fingerprint: str
    # True when the facts above do not depend on literal values, so this Analysis
    # may be reused for any query string that differs only in literals.
    literal_insensitive: bool
    # Set when the text does not parse; statements is then empty.
    error: str | None = None


# ---------------------------------------------------------------------------
# Lineage: where output columns come from (needs a catalog snapshot).


@dataclass(frozen=True, slots=True)
class Column:
    """A base-table column: views are expanded down to the tables under them."""

    schema: str
    table: str
    name: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.table}.{self.name}"


class Use(StrEnum):
    """How a statement uses a column other than returning it."""

    PREDICATE = "predicate"  # WHERE, HAVING, JOIN ON, CASE WHEN, FILTER, comparisons
    JOIN_EQ = "join_eq"  # column = column equality (both sides plain columns)
    ORDER = "order"  # ORDER BY, window ORDER BY
    GROUP = "group"  # GROUP BY
    DISTINCT = "distinct"  # SELECT DISTINCT (whole row)
    DISTINCT_ON = "distinct_on"
    WINDOW = "window"  # PARTITION BY
    ERROR_PRONE = "error_prone"  # feeds an expression that can raise per value (casts, division)
    NOTIFY = "notify"  # feeds pg_notify()/NOTIFY payloads
    WRITE = "write"  # copied into a table (INSERT ... SELECT, CTAS, SELECT INTO)


@dataclass(frozen=True, slots=True)
class OutputColumn:
    """One output column: the base columns whose values feed it.

    `direct` is the single column this output returns unchanged (a plain column
    reference, through any depth of subqueries/CTEs/views/UNION arms that are all
    plain references to that same column), else None.
    """

    sources: frozenset[Column]
    direct: Column | None = None


@dataclass(frozen=True, slots=True)
class Lineage:
    outputs: tuple[OutputColumn, ...]
    uses: frozenset[tuple[Column, Use]]
    # Pairs compared with `=` where both sides are plain column references.
    eq_pairs: frozenset[tuple[Column, Column]] = frozenset()
    complete: bool = True
    reason: str | None = None
