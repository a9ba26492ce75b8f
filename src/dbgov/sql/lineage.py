"""Where each output column of a statement comes from, for masking.

`lineage(stmt, catalog, search_path)` traces every output column of a statement
down to base-table columns (through aliases, subqueries, CTEs, views, set
operations, joins, functions) and records how columns are used elsewhere (WHERE,
ORDER BY, casts, ...). Masking MUST treat `complete=False` as "cannot be masked"
and refuse: the reason names what could not be traced.

What a statement returns, and so what `outputs` describes:
- SELECT / VALUES / TABLE, DML with RETURNING: their rows.
- DECLARE: the cursor's rows (what FETCH returns); PREPARE: the prepared query's rows
  (what EXECUTE returns). FETCH and EXECUTE themselves are incomplete: the caller
  resolves them to the DECLARE/PREPARE it remembers for the session.
- COPY ... TO: the copied columns; COPY FROM: none.
- EXPLAIN: none (the plan is text without data). EXPLAIN ANALYZE runs the
  statement, so its uses are recorded.
- SHOW: one column with no sources. CALL and DO: incomplete (bodies not traced).
- Statements that move no column values (SET, DDL, GRANT, ...): none, complete.
- CTAS / SELECT INTO / INSERT ... SELECT / UPDATE SET: no outputs, but WRITE uses.

Results are cached per parse tree, catalog snapshot and search_path. The parse tree
is shared by every query string `analyze_cached()` maps to the same analysis
(exact text, or same text up to literal values), so this is the cache "by
normalized key or text" without a second key computation.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from dbgov.sql.catalog import Catalog
from dbgov.sql.model import Lineage, OutputColumn, Statement
from dbgov.sql.queries import Queries
from dbgov.sql.scopes import Unresolvable

CACHE_SIZE = 10_000

_Key = tuple[int, int, int, tuple[str, ...]]
_cache: OrderedDict[_Key, tuple[Any, Catalog, Lineage]] = OrderedDict()
_lock = threading.Lock()


def lineage(stmt: Statement, catalog: Catalog, search_path: Sequence[str]) -> Lineage:
    """Output-column lineage and column uses of `stmt` against a catalog snapshot."""
    node = stmt.node
    path = tuple(search_path)
    # Keyed by identity; the entry holds the node and catalog, so ids are not reused
    # while it lives, and the `is` checks make a stale hit impossible.
    key = (id(node), id(catalog), catalog.version, path)
    with _lock:
        hit = _cache.get(key)
        if hit is not None and hit[0] is node and hit[1] is catalog:
            _cache.move_to_end(key)
            return hit[2]
    result = compute_lineage(node, catalog, path)
    with _lock:
        _cache[key] = (node, catalog, result)
        if len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return result


def compute_lineage(node: Any, catalog: Catalog, search_path: Sequence[str]) -> Lineage:
    """`lineage()` without the cache."""
    if node is None:
        return Lineage(outputs=(), uses=frozenset(), complete=False, reason="no parse tree")
    tracer = Queries(catalog, search_path)
    try:
        outputs = tracer.statement(node)
    except Unresolvable as exc:
        return _incomplete(tracer, str(exc))
    except RecursionError:
        return _incomplete(tracer, "statement nests too deeply to trace")
    except Exception as exc:  # a bug here MUST NOT let a value through unmasked
        return _incomplete(tracer, f"lineage failed: {type(exc).__name__}: {exc}")
    return Lineage(
        outputs=tuple(OutputColumn(v.sources, v.direct) for _, v in outputs),
        uses=frozenset(tracer.uses),
        eq_pairs=frozenset(tracer.eq_pairs),
    )


def _incomplete(tracer: Queries, reason: str) -> Lineage:
    return Lineage(
        outputs=(),
        uses=frozenset(tracer.uses),
        eq_pairs=frozenset(tracer.eq_pairs),
        complete=False,
        reason=reason,
    )


def clear_lineage_cache() -> None:
    with _lock:
        _cache.clear()
