"""Rows in random order where the server's order would rank masked values.

Rows grouped, deduplicated, partitioned or joined on a masked column come back from
the server in the order of the raw values (a sort, an index, a merge) or of their
unkeyed hash (hash aggregation). Matched against a list of candidate values, that
order tells which pseudonym is whose. So such a statement gets `pg_catalog.random()`
as its last sort key: with no ORDER BY of its own its rows come in random order, and
with one its ties do (a LIMIT then keeps a random choice among them). Qualified, so
that a `random()` of the user's own earlier in the search_path cannot stand in.

A DISTINCT or UNION-like query cannot take a sort key that is not in its output:
without an order or limit of its own it runs as a subquery, ordered by random();
with one it is refused, as is FETCH ... WITH TIES (a new sort key would change which
rows tie). The same holds for the query under DECLARE, COPY and PREPARE, whose rows
FETCH, COPY and EXECUTE send.
"""

from __future__ import annotations

from typing import Any

import pglast
from pglast import ast
from pglast.enums import LimitOption, SetOperation
from pglast.stream import RawStream

_RANDOM = "pg_catalog.random()"
_CARRIERS = (ast.DeclareCursorStmt, ast.CopyStmt, ast.PrepareStmt)
REFUSAL_HINT = (
    "leave out ORDER BY and LIMIT (the rows come back in random order), or group "
    "with GROUP BY instead of DISTINCT or UNION"
)


def _query(node: Any) -> ast.SelectStmt | None:
    """The SELECT whose rows the statement sends: its own, or the one it carries."""
    if isinstance(node, _CARRIERS):
        node = node.query
    return node if isinstance(node, ast.SelectStmt) else None


def _keeps_own_output(sel: ast.SelectStmt) -> bool:
    """DISTINCT and set operations: ORDER BY may only name output columns."""
    return bool(sel.distinctClause) or sel.op not in (None, SetOperation.SETOP_NONE)


def _has_own_order(sel: ast.SelectStmt) -> bool:
    return bool(sel.sortClause or sel.limitCount or sel.limitOffset)


def refusal(node: Any) -> str | None:
    """Why this statement's rows cannot be put in random order (None: they can)."""
    sel = _query(node)
    if sel is None:
        return "its rows' order cannot be randomized"
    if sel.limitOption == LimitOption.LIMIT_OPTION_WITH_TIES:
        return "FETCH ... WITH TIES cannot be used on rows grouped by masked columns"
    if _keeps_own_output(sel) and _has_own_order(sel):
        return (
            "rows deduplicated by masked columns (DISTINCT, UNION, INTERSECT, EXCEPT) "
            "cannot be ordered or limited: the order of ties would rank the masked values"
        )
    try:  # `shuffled` deparses it: what pglast cannot write back is refused here
        RawStream()(node)
    except Exception:
        return "its rows' order cannot be randomized (the statement cannot be rewritten)"
    return None


def _parse_sort_key() -> ast.SortBy:
    parsed = pglast.parse_sql(f"SELECT 1 ORDER BY {_RANDOM}")[0].stmt
    assert isinstance(parsed, ast.SelectStmt) and parsed.sortClause
    key: ast.SortBy = parsed.sortClause[0]
    return key


_RANDOM_KEY = _parse_sort_key()  # shared by the trees it joins: they are only deparsed


def _shuffled(sel: ast.SelectStmt) -> ast.SelectStmt:
    if _keeps_own_output(sel):  # and no order of its own (`refusal`)
        text = f"SELECT * FROM ({RawStream()(sel)}) AS dbgov_unordered ORDER BY {_RANDOM}"
        wrapper = pglast.parse_sql(text)[0].stmt
        assert isinstance(wrapper, ast.SelectStmt)
        return wrapper
    sel.sortClause = (*(sel.sortClause or ()), _RANDOM_KEY)
    return sel


def shuffled(sql: str, indexes: frozenset[int]) -> str:
    """`sql` with the statements at `indexes` (in `refusal`'s domain) sending their rows
    in random order; the other statements as written. Parameters ($1) are kept."""
    raw = sql.encode()
    parts = []
    for i, rs in enumerate(pglast.parse_sql(sql)):
        if i in indexes:
            node = rs.stmt
            if isinstance(node, _CARRIERS):
                assert isinstance(node.query, ast.SelectStmt)
                node.query = _shuffled(node.query)
            else:
                assert isinstance(node, ast.SelectStmt)
                node = _shuffled(node)
            parts.append(RawStream()(node))
        else:
            start = rs.stmt_location or 0
            end = start + rs.stmt_len if rs.stmt_len else len(raw)
            parts.append(raw[start:end].decode())
    return "\n;\n".join(parts)  # a statement may end in a -- comment
