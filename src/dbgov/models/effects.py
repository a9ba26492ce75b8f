"""What one statement changes in one table: whole rows, or only some columns.

The analyzer says which tables a statement writes, not which columns an UPDATE
sets. A model narrowed to some columns of a table (`public.customers(country,
created_at)`) only changes when one of those columns does, so this module reads
the SET lists from the parse tree (`Statement.node`, pglast), wherever the
UPDATE sits: top level, a data-modifying CTE, EXPLAIN ANALYZE, MERGE's WHEN
MATCHED THEN UPDATE or INSERT ... ON CONFLICT DO UPDATE.

Contract (fail closed): the answer is a set of columns only when every change
the tree shows on the table is an UPDATE-like SET list. INSERT, DELETE, MERGE's
INSERT and DELETE actions, COPY FROM, TRUNCATE, DDL, a statement without a parse
tree, or a write the tree does not show as DML all mean `WHOLE_ROWS` (None).
Over-linking adds a line to a report; under-linking would hide a change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from pglast import ast, enums

from dbgov.sql.model import Category, Relation, Statement
from dbgov.sql.nodes import walk

__all__ = ["WHOLE_ROWS", "changed_columns", "relation_of"]

WHOLE_ROWS: Final = None
"""`changed_columns` result meaning: any column, rows may appear or disappear."""

_SET_ONLY: Final = (enums.CmdType.CMD_UPDATE,)
_NOTHING: Final = (enums.CmdType.CMD_NOTHING,)


def relation_of(range_var: Any) -> Relation | None:
    """The relation a pglast `RangeVar` names, as the analyzer would write it."""
    if not isinstance(range_var, ast.RangeVar) or not range_var.relname:
        return None
    return Relation(range_var.schemaname or None, range_var.relname)


def _set_columns(targets: tuple[Any, ...] | None) -> set[str]:
    # `SET a = 1`, `SET (a, b) = (...)`, `SET a[1] = 1`, `SET a.f = 1`: each
    # ResTarget names the column (the indirection is within it).
    return {t.name for t in targets or () if isinstance(t, ast.ResTarget) and t.name}


def changed_columns(stmt: Statement, is_table: Callable[[Relation], bool]) -> frozenset[str] | None:
    """The columns `stmt` may change in the table `is_table` recognises.

    None (`WHOLE_ROWS`) when rows may be inserted or deleted, or the change cannot
    be narrowed; an empty set when the tree shows nothing that changes the table
    (a MERGE whose only action there is DO NOTHING). Callers ask only about tables
    in the statement's writes.
    """
    if stmt.node is None or Category.DDL in stmt.categories:
        return WHOLE_ROWS
    columns: set[str] = set()
    seen = False
    for node in walk(stmt.node):
        if isinstance(node, ast.UpdateStmt | ast.MergeStmt | ast.InsertStmt | ast.DeleteStmt):
            rel = relation_of(node.relation)
            if rel is None or not is_table(rel):
                continue
        else:
            continue
        if isinstance(node, ast.UpdateStmt):
            columns |= _set_columns(node.targetList)
        elif isinstance(node, ast.MergeStmt):
            for clause in node.mergeWhenClauses or ():
                if clause.commandType in _SET_ONLY:
                    columns |= _set_columns(clause.targetList)
                elif clause.commandType not in _NOTHING:
                    return WHOLE_ROWS  # INSERT or DELETE action
        else:  # INSERT (with or without ON CONFLICT DO UPDATE), DELETE
            return WHOLE_ROWS
        seen = True
    return frozenset(columns) if seen else WHOLE_ROWS
