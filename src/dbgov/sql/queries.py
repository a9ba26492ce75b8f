"""Lineage of queries: FROM items, CTEs, views, set operations and DML.

`Queries.statement()` returns the output columns of a statement (as `(name, Val)`)
and records column uses in `self.uses`. It follows PostgreSQL's own analysis
(parse_clause.c, parse_cte.c, parse_target.c) closely enough to resolve names the
same way; where it cannot, it raises `Unresolvable` rather than guess.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, reduce
from typing import Any

from pglast import ast, enums, parse_sql
from pglast.parser import ParseError

from dbgov.sql.catalog import Catalog, CatalogRelation
from dbgov.sql.expressions import Expressions, figure_colname
from dbgov.sql.functions import RECORD_FUNCTIONS, SCALAR_FUNCTIONS, SYSTEM_SCHEMAS
from dbgov.sql.kinds import NODE_KINDS
from dbgov.sql.model import Column, Relation, Use
from dbgov.sql.nodes import bare_name, func_name, int_const, names, option_on
from dbgov.sql.scopes import NOTHING, Item, Output, Scope, Unresolvable, Val, merge, rename, union

_SETOP_NONE = enums.SetOperation.SETOP_NONE
_MAX_RECURSION_ROUNDS = 50


@dataclass(eq=False)
class Cte:
    """One WITH entry; its columns are computed on first reference."""

    node: ast.CommonTableExpr
    recursive: bool
    outer: Scope | None
    env: dict[str, Cte] = field(default_factory=dict)
    shape: list[Output] | None = None
    partial: list[Output] | None = None  # the recursive term's view of itself
    busy: bool = False

    @property
    def name(self) -> str:
        return self.node.ctename or ""


@lru_cache(maxsize=1024)
def _parse_view(sql: str) -> ast.SelectStmt:
    try:
        stmts = parse_sql(sql)
    except ParseError as exc:
        raise Unresolvable(f"view definition does not parse: {exc}") from exc
    if len(stmts) != 1 or not isinstance(stmts[0].stmt, ast.SelectStmt):
        raise Unresolvable("view definition is not a single SELECT")
    return stmts[0].stmt


class Queries(Expressions):
    """Statements and queries on top of expression evaluation."""

    def __init__(self, catalog: Catalog, search_path: Sequence[str]) -> None:
        super().__init__(catalog, search_path)
        self._views_in_progress: set[int] = set()  # view OIDs being expanded (cycles)

    def statement(self, node: Any) -> list[Output]:
        """Output columns of a top-level statement; uses accumulate on `self`."""
        return self.query(node, None, {})

    def query(self, node: Any, outer: Scope | None, env: dict[str, Cte]) -> list[Output]:
        """Any statement that can sit in a CTE, a subquery or under DECLARE/EXPLAIN."""
        if isinstance(node, ast.SelectStmt):
            outputs = self.select(node, outer, env)
            if node.intoClause is not None:  # SELECT INTO
                self.use(union(v for _, v in outputs).sources, Use.WRITE)
                return []
            return outputs
        handler = _STATEMENTS.get(type(node))
        if handler is None:
            raise Unresolvable(f"no lineage for {type(node).__name__}")
        return handler(self, node, outer, env)

    # -- SELECT -------------------------------------------------------------------------

    def subquery(self, node: Any, outer: Scope) -> list[Output]:
        return self.query(node, outer, outer.ctes)

    def select(
        self, node: ast.SelectStmt, outer: Scope | None, env: dict[str, Cte]
    ) -> list[Output]:
        env, ctes = self.with_clause(node.withClause, env, outer)
        scope = Scope([], outer, env)
        grouped: set[Column] = set()  # values this level groups or de-duplicates rows by
        if node.op != _SETOP_NONE:
            outputs = self._set_operation(node, outer, env)
            if not (node.op == enums.SetOperation.SETOP_UNION and node.all):
                grouped |= union(v for _, v in outputs).sources
            result_scope = Scope([Item(None, outputs, "set operation")], outer, env)
            self._sort(node.sortClause, result_scope, outputs)
        elif node.valuesLists:
            rows = [self.exprs(row, scope) for row in node.valuesLists]
            if len({len(r) for r in rows}) != 1:
                raise Unresolvable("VALUES lists must all be the same length")
            outputs = [
                (f"column{i + 1}", reduce(merge, col))
                for i, col in enumerate(zip(*rows, strict=True))
            ]
            self._sort(node.sortClause, Scope([Item(None, outputs, "VALUES")], outer, env), outputs)
        else:
            for item in node.fromClause or ():
                scope.items.extend(self.from_item(item, scope.items, outer, env))
            self.predicate(node.whereClause, scope)
            outputs = self.targets(node.targetList, scope)
            grouped |= self._group(node.groupClause, scope, outputs)
            self.predicate(node.havingClause, scope)
            for w in node.windowClause or ():
                self.window(w, scope)
            grouped |= self._distinct(node.distinctClause, scope, outputs)
            self._sort(node.sortClause, scope, outputs)
        # How many rows come back is visible: LIMIT (SELECT length(ssn) ...) tells it.
        self.use(self.expr(node.limitCount, scope).sources, Use.PREDICATE)
        self.use(self.expr(node.limitOffset, scope).sources, Use.PREDICATE)
        if grouped and (node.limitCount is not None or node.limitOffset is not None):
            # Which groups a LIMIT or OFFSET keeps follows the plan's order, and a plan
            # that groups through an index or a sort has the raw values' order (page
            # through GROUP BY email LIMIT 10 OFFSET n and each id's rank shows).
            self.use(frozenset(grouped), Use.ORDER)
        self.finish(ctes)
        return outputs

    def _set_operation(
        self, node: ast.SelectStmt, outer: Scope | None, env: dict[str, Cte]
    ) -> list[Output]:
        left = self.query(node.larg, outer, env)
        right = self.query(node.rarg, outer, env)
        if len(left) != len(right):
            raise Unresolvable("set operation arms have different numbers of columns")
        outputs = [(n, merge(a, b)) for (n, a), (_, b) in zip(left, right, strict=True)]
        sources = union(v for _, v in outputs).sources
        if node.op != enums.SetOperation.SETOP_UNION:
            self.use(sources, Use.PREDICATE)  # INTERSECT/EXCEPT compare rows across arms
        elif not node.all:
            self._deduplicated([v for _, v in outputs])  # UNION removes duplicate rows
        return outputs

    def _deduplicated(self, vals: list[Val]) -> None:
        """Rows made distinct over `vals`: equality of a column itself is what
        DISTINCT is for; equality of computed values (a literal merged in by UNION,
        substr(email, 1, 1)) answers questions about the values, like a predicate."""
        for v in vals:
            self.use(v.sources, Use.DISTINCT if v.direct is not None else Use.PREDICATE)

    def targets(self, target_list: Any, scope: Scope) -> list[Output]:
        outputs: list[Output] = []
        for rt in target_list or ():
            val = rt.val
            if isinstance(val, ast.ColumnRef) and isinstance(
                (val.fields or (None,))[-1], ast.A_Star
            ):
                if len(val.fields or ()) == 1:
                    outputs.extend(scope.visible_columns())
                else:
                    outputs.extend(self.qualified_item(names(val.fields), scope).expand())
            elif isinstance(val, ast.A_Indirection) and isinstance(
                (val.indirection or (None,))[-1], ast.A_Star
            ):
                outputs.extend(self._expand_composite(val, scope))
            else:
                outputs.append((rt.name or figure_colname(val), self.expr(val, scope)))
        return outputs

    def _expand_composite(self, node: ast.A_Indirection, scope: Scope) -> list[Output]:
        """(t).* of a whole-row reference; other composites have unknown fields."""
        name = bare_name(node.arg)
        if len(node.indirection or ()) == 1 and name is not None:
            item = scope.find_item(name) if scope.find_column(name) is None else None
            if item is not None:
                return item.expand()
        raise Unresolvable("cannot list the fields of a composite value")

    def _output_ref(self, node: Any, scope: Scope, outputs: list[Output]) -> Val:
        """ORDER BY / DISTINCT ON item: output position, output name, else an expression."""
        position = int_const(node)
        if position is not None:
            if not 1 <= position <= len(outputs):
                raise Unresolvable(f"position {position} is not in the select list")
            return outputs[position - 1][1]
        name = bare_name(node)
        hits = [v for n, v in outputs if n == name] if name is not None else []
        if hits:
            if any(h != hits[0] for h in hits):
                raise Unresolvable(f"ORDER BY {name!r} is ambiguous")
            return hits[0]
        return self.expr(node, scope)

    def _sort(self, sort_clause: Any, scope: Scope, outputs: list[Output]) -> None:
        for sort in sort_clause or ():
            self.use(self._output_ref(sort.node, scope, outputs).sources, Use.ORDER)

    def _distinct(self, clause: Any, scope: Scope, outputs: list[Output]) -> set[Column]:
        """Record DISTINCT's uses; the sources it de-duplicates by."""
        if not clause:
            return set()
        if clause == (None,):  # plain DISTINCT: the whole row
            self._deduplicated([v for _, v in outputs])
            return set(union(v for _, v in outputs).sources)
        by: set[Column] = set()
        for item in clause:
            sources = self._output_ref(item, scope, outputs).sources
            self.use(sources, Use.DISTINCT_ON)
            by |= sources
        return by

    def _group(self, clause: Any, scope: Scope, outputs: list[Output]) -> set[Column]:
        """Record GROUP BY's uses; the sources it groups by."""
        by: set[Column] = set()
        for item in clause or ():
            if isinstance(item, ast.GroupingSet):
                by |= self._group(item.content, scope, outputs)
                continue
            if isinstance(item, tuple):  # ROLLUP ((a, b)) sublists
                by |= self._group(item, scope, outputs)
                continue
            name = bare_name(item)
            if int_const(item) is not None:
                val = self._output_ref(item, scope, outputs)
            elif name is not None and scope.find_column(name) is None:
                val = self._output_ref(item, scope, outputs)  # an output name
            else:
                val = self.expr(item, scope)
            # Groups of a computed value (substr(email, 1, 1)) and their counts are
            # classes of the values: a predicate. Only a column itself groups.
            self.use(val.sources, Use.GROUP if val.direct is not None else Use.PREDICATE)
            by |= val.sources
        return by

    def window(self, node: ast.WindowDef, scope: Scope) -> None:
        for item in node.partitionClause or ():
            self.use(self.expr(item, scope).sources, Use.WINDOW)
        for sort in node.orderClause or ():
            self.use(self.expr(sort.node, scope).sources, Use.ORDER)
        # A frame offset decides which rows count(*) OVER (...) sees: a predicate.
        self.use(self.expr(node.startOffset, scope).sources, Use.PREDICATE)
        self.use(self.expr(node.endOffset, scope).sources, Use.PREDICATE)

    # -- WITH -----------------------------------------------------------------------

    def with_clause(
        self, clause: ast.WithClause | None, env: dict[str, Cte], outer: Scope | None
    ) -> tuple[dict[str, Cte], list[Cte]]:
        if clause is None:
            return env, []
        ctes = [Cte(c, bool(clause.recursive), outer) for c in clause.ctes or ()]
        if clause.recursive:  # every entry sees every entry, itself included
            full = {**env, **{c.name: c for c in ctes}}
            for c in ctes:
                c.env = full
            return full, ctes
        running = dict(env)
        for c in ctes:  # plain WITH: an entry sees only the earlier ones
            c.env = dict(running)
            running[c.name] = c
        return running, ctes

    def finish(self, ctes: list[Cte]) -> None:
        """Trace CTEs nobody referenced: DML in WITH runs regardless."""
        for c in ctes:
            if c.shape is None and not c.busy:
                self.cte_shape(c)

    def cte_shape(self, cte: Cte) -> list[Output]:
        if cte.shape is not None:
            return cte.shape
        if cte.busy:
            if cte.partial is not None:
                return cte.partial
            raise Unresolvable(f"CTE {cte.name!r} refers to itself in its non-recursive term")
        cte.busy = True
        try:
            q = cte.node.ctequery
            aliases = names(cte.node.aliascolnames)
            if cte.recursive and isinstance(q, ast.SelectStmt) and q.op != _SETOP_NONE:
                shape = self._recursive_cte(cte, q, aliases)
            else:
                shape = rename(self.query(q, cte.outer, cte.env), aliases, f"CTE {cte.name}")
            cte.shape = self._search_cycle(cte.node, shape)
        finally:
            cte.busy = False
        return cte.shape

    def _recursive_cte(self, cte: Cte, q: ast.SelectStmt, aliases: tuple[str, ...]) -> list[Output]:
        """Iterate non-recursive term UNION recursive term until the columns stop growing."""
        env, inner = self.with_clause(q.withClause, cte.env, cte.outer)
        label = f"CTE {cte.name}"
        cte.partial = rename(self.query(q.larg, cte.outer, env), aliases, label)
        for _ in range(_MAX_RECURSION_ROUNDS):
            right = self.query(q.rarg, cte.outer, env)
            if len(right) != len(cte.partial):
                raise Unresolvable(f"{label}: recursive term has a different number of columns")
            grown = [(n, merge(a, b)) for (n, a), (_, b) in zip(cte.partial, right, strict=True)]
            if grown == cte.partial:
                break
            cte.partial = grown
        else:
            raise Unresolvable(f"{label}: recursion did not settle")
        self.finish(inner)
        return cte.partial

    def _search_cycle(self, node: ast.CommonTableExpr, shape: list[Output]) -> list[Output]:
        """SEARCH/CYCLE add columns holding the listed columns' values."""
        by_name = dict(shape)
        out = list(shape)
        search = node.search_clause
        if search is not None:
            vals = [by_name.get(n, NOTHING) for n in names(search.search_col_list)]
            out.append((search.search_seq_column or "", union(vals)))
        cycle = node.cycle_clause
        if cycle is not None:
            # The mark says whether the row equals an earlier one, and the recursion
            # stops there: both compare the listed columns' values.
            cycled = union([by_name.get(n, NOTHING) for n in names(cycle.cycle_col_list)])
            self.use(cycled.sources, Use.PREDICATE)
            out.append((cycle.cycle_mark_column or "", cycled))
            out.append((cycle.cycle_path_column or "", cycled))
        return out

    # -- FROM ---------------------------------------------------------------------------

    def from_item(
        self, node: Any, visible: list[Item], outer: Scope | None, env: dict[str, Cte]
    ) -> list[Item]:
        """The namespace items of one FROM item; the last one stands for its columns.

        `visible` are the items to its left, which LATERAL items may reference.
        """
        lateral = Scope(list(visible), outer, env)
        if isinstance(node, ast.RangeVar):
            return [self.relation_item(node, env)]
        if isinstance(node, ast.JoinExpr):
            return self._join(node, visible, outer, env)
        if isinstance(node, ast.RangeSubselect):
            outputs = self.query(node.subquery, lateral if node.lateral else outer, env)
            return [self._aliased(node.alias, outputs, "subquery")]
        if isinstance(node, ast.RangeFunction):  # functions in FROM are implicitly lateral
            return [self._function_item(node, lateral)]
        if isinstance(node, ast.RangeTableSample):
            # The sample's size and seed decide how many rows come back: predicates.
            args = [*self.exprs(node.args, lateral), self.expr(node.repeatable, lateral)]
            self.use(union(args).sources, Use.PREDICATE)
            if not isinstance(node.relation, ast.RangeVar):
                raise Unresolvable("TABLESAMPLE of something that is not a table")
            return [self.relation_item(node.relation, env)]
        if isinstance(node, ast.RangeTableFunc):
            base = union([self.expr(node.docexpr, lateral), self.expr(node.rowexpr, lateral)])
            self.use(base.sources, Use.PREDICATE)  # the document decides the row count
            cols: list[Output] = []
            for col in node.columns or ():
                if col.for_ordinality:
                    cols.append((col.colname, NOTHING))
                else:
                    extra = [self.expr(col.colexpr, lateral), self.expr(col.coldefexpr, lateral)]
                    cols.append((col.colname, union([base, *extra])))
            return [self._aliased(node.alias, cols, "XMLTABLE")]
        if isinstance(node, ast.JsonTable):
            base = union(
                [self.expr(node.context_item, lateral), *self.exprs(node.passing, lateral)]
            )
            self.use(base.sources, Use.PREDICATE)  # the path's matches decide the row count
            return [
                self._aliased(
                    node.alias, self._json_table_columns(node.columns, base), "JSON_TABLE"
                )
            ]
        raise Unresolvable(f"FROM item {type(node).__name__} is not traced")

    def _json_table_columns(self, columns: Any, base: Val) -> list[Output]:
        out: list[Output] = []
        for col in columns or ():
            if col.coltype == enums.JsonTableColumnType.JTC_NESTED:
                out.extend(self._json_table_columns(col.columns, base))
            elif col.coltype == enums.JsonTableColumnType.JTC_FOR_ORDINALITY:
                out.append((col.name, NOTHING))
            else:
                out.append((col.name, base))
        return out

    def _aliased(self, alias: ast.Alias | None, columns: list[Output], what: str) -> Item:
        refname = alias.aliasname if alias is not None else None
        label = f"{what} {refname}" if refname else what
        return Item(refname, rename(columns, names(alias.colnames) if alias else (), label), label)

    def relation_item(self, rv: ast.RangeVar, env: dict[str, Cte]) -> Item:
        alias = rv.alias
        aliases = names(alias.colnames) if alias is not None else ()
        relname = rv.relname or ""
        refname = alias.aliasname if alias is not None else relname
        if rv.schemaname is None and relname in env:  # a CTE shadows tables of that name
            cte = env[relname]
            label = f"CTE {relname}"
            return Item(refname, rename(self.cte_shape(cte), aliases, label), label)
        rel = self.catalog.resolve(Relation(rv.schemaname, relname), self.search_path)
        schema = None if alias is not None else (rel.schema if rel else rv.schemaname)
        if rel is None:
            if rv.schemaname in SYSTEM_SCHEMAS:
                # A system relation the catalog snapshot does not list: its columns are
                # reported as themselves (not user data, but policy may still name them).
                system = rv.schemaname

                def column(name: str) -> Val:
                    return Val.of(Column(system, relname, name))

                label = f"{system}.{relname}"
                return Item(refname, [], label, schema, opaque=column)
            raise Unresolvable(f"relation {Relation(rv.schemaname, relname)} is not in the catalog")
        label = f"{rel.schema}.{rel.name}"
        return Item(refname, rename(self.relation_columns(rel), aliases, label), label, schema)

    def relation_columns(self, rel: CatalogRelation) -> list[Output]:
        if rel.kind in ("v", "m") and rel.schema not in SYSTEM_SCHEMAS:
            return self._view_columns(rel)
        columns = sorted(rel.columns, key=lambda c: c.attnum)
        return [(c.name, Val.of(Column(rel.schema, rel.name, c.name))) for c in columns]

    def _view_columns(self, rel: CatalogRelation) -> list[Output]:
        label = f"view {rel.schema}.{rel.name}"
        if not rel.view_sql:
            raise Unresolvable(f"{label} has no definition in the catalog")
        if rel.oid in self._views_in_progress:
            raise Unresolvable(f"{label} refers to itself")
        self._views_in_progress.add(rel.oid)
        session_path, self.search_path = self.search_path, self.catalog.view_search_path
        try:
            outputs = self.query(_parse_view(rel.view_sql), None, {})
        finally:
            self.search_path = session_path
            self._views_in_progress.discard(rel.oid)
        column_names = rel.column_names()
        if len(outputs) != len(column_names):
            raise Unresolvable(f"{label}: definition and catalog columns differ")
        return [(n, v) for n, (_, v) in zip(column_names, outputs, strict=True)]

    def _function_item(self, node: ast.RangeFunction, lateral: Scope) -> Item:
        alias = node.alias
        entries = [e for e in node.functions or () if isinstance(e, tuple) and e]
        known: list[Output] = []
        unknown: list[Val] = []
        refname: str | None = alias.aliasname if alias is not None else None
        for fn, coldefs in ((e[0], e[1] if len(e) > 1 else None) for e in entries):
            value = self.expr(fn, lateral).derived()
            self.use(value.sources, Use.PREDICATE)  # its row count depends on the values
            fname = func_name(fn)[1].lower() if isinstance(fn, ast.FuncCall) else ""
            refname = refname or fname or None
            coldefs = coldefs or (node.coldeflist if len(entries) == 1 else None)
            if coldefs:
                known.extend((cd.colname, value) for cd in coldefs)
            elif fname in RECORD_FUNCTIONS:
                known.extend((n, value) for n in RECORD_FUNCTIONS[fname])
            elif fname == "unnest" and len(fn.args or ()) > 1:
                known.extend((fname, self.expr(a, lateral).derived()) for a in fn.args)
            elif fname in SCALAR_FUNCTIONS:
                single = alias is not None and len(entries) == 1 and not alias.colnames
                known.append(((alias.aliasname if single and alias else None) or fname, value))
            else:
                unknown.append(value)
        if node.ordinality:
            known.append(("ordinality", NOTHING))
        label = f"function {refname}"
        aliases = names(alias.colnames) if alias is not None else ()
        if not unknown:
            return Item(refname, rename(known, aliases, label), label)
        # Output columns unknown (a function returning records): any column name is
        # taken to come from the function's arguments.
        opaque_val = union([*unknown, *(v for _, v in known)])
        named = [(n, opaque_val) for n in aliases]
        return Item(refname, named, label, opaque=lambda _name: opaque_val)

    def _join(
        self, node: ast.JoinExpr, visible: list[Item], outer: Scope | None, env: dict[str, Cte]
    ) -> list[Item]:
        left = self.from_item(node.larg, visible, outer, env)
        right = self.from_item(node.rarg, visible + left, outer, env)
        lrep, rrep = left[-1], right[-1]
        using = list(names(node.usingClause))
        if node.isNatural:
            if lrep.opaque is not None or rrep.opaque is not None:
                raise Unresolvable("NATURAL JOIN over columns that are not known")
            right_names = {n for n, _ in rrep.columns}
            using = list(dict.fromkeys(n for n, _ in lrep.columns if n in right_names))
        merged: list[Output] = []
        for name in using:
            lv, rv = lrep.column(name), rrep.column(name)
            if lv is None or rv is None:
                raise Unresolvable(f"JOIN USING column {name!r} not found")
            self.compared([lv, rv], "=")  # USING (x) means left.x = right.x
            merged.append((name, merge(lv, rv)))
        on_scope = Scope(left + right, outer, env)
        self.predicate(node.quals, on_scope)
        columns = merged + [(n, v) for n, v in lrep.columns if n not in using]
        columns += [(n, v) for n, v in rrep.columns if n not in using]
        for item in left + right:  # the join's own item now speaks for their columns
            item.cols_visible = False
            if node.alias is not None:
                item.rel_visible = False
        opaque = _combine_opaque(lrep.opaque, rrep.opaque)
        alias = node.alias
        label = f"join {alias.aliasname}" if alias is not None else "join"
        join_item = Item(
            alias.aliasname if alias is not None else None,
            rename(columns, names(alias.colnames) if alias is not None else (), label),
            label,
            rel_visible=alias is not None,
            opaque=opaque,
        )
        extra: list[Item] = []
        if node.join_using_alias is not None:
            using_name = node.join_using_alias.aliasname
            extra.append(Item(using_name, merged, f"join {using_name}", cols_visible=False))
        return [*left, *right, *extra, join_item]

    # -- DML ----------------------------------------------------------------------------

    def _target(self, rv: ast.RangeVar | None) -> Item:
        """An INSERT/UPDATE/DELETE/MERGE target: a real relation, never a CTE."""
        if rv is None:
            raise Unresolvable("statement without a target relation")
        return self.relation_item(rv, {})

    def insert(
        self, node: ast.InsertStmt, outer: Scope | None, env: dict[str, Cte]
    ) -> list[Output]:
        env, ctes = self.with_clause(node.withClause, env, outer)
        source: list[Output] = []
        if node.selectStmt is not None:
            source = self.query(node.selectStmt, outer, env)
            self.use(union(v for _, v in source).sources, Use.WRITE)
        conflict = node.onConflictClause
        if conflict is None and node.returningClause is None:
            self.finish(ctes)
            return []  # the target's columns are not needed: it may be unknown
        target = self._target(node.relation)
        scope = Scope([target], outer, env)
        if conflict is not None:
            # EXCLUDED is the row proposed for insertion.
            cols = [rt.name for rt in node.cols or ()] or [n for n, _ in target.columns]
            proposed = dict(zip(cols, (v for _, v in source), strict=False))
            excluded = [(n, proposed.get(n, NOTHING)) for n, _ in target.columns]
            conflict_scope = Scope(
                [target, Item("excluded", excluded, "EXCLUDED", cols_visible=False)], outer, env
            )
            self._assignments(conflict.targetList, conflict_scope)
            self.predicate(conflict.whereClause, conflict_scope)
        outputs = self._returning(node.returningClause, scope, target)
        self.finish(ctes)
        return outputs

    def update(
        self, node: ast.UpdateStmt, outer: Scope | None, env: dict[str, Cte]
    ) -> list[Output]:
        env, ctes = self.with_clause(node.withClause, env, outer)
        target = self._target(node.relation)
        scope = Scope([target], outer, env)
        for item in node.fromClause or ():
            scope.items.extend(self.from_item(item, scope.items, outer, env))
        self.predicate(node.whereClause, scope)
        self._assignments(node.targetList, scope)
        outputs = self._returning(node.returningClause, scope, target)
        self.finish(ctes)
        return outputs

    def delete(
        self, node: ast.DeleteStmt, outer: Scope | None, env: dict[str, Cte]
    ) -> list[Output]:
        env, ctes = self.with_clause(node.withClause, env, outer)
        target = self._target(node.relation)
        scope = Scope([target], outer, env)
        for item in node.usingClause or ():
            scope.items.extend(self.from_item(item, scope.items, outer, env))
        self.predicate(node.whereClause, scope)
        outputs = self._returning(node.returningClause, scope, target)
        self.finish(ctes)
        return outputs

    def merge(self, node: ast.MergeStmt, outer: Scope | None, env: dict[str, Cte]) -> list[Output]:
        env, ctes = self.with_clause(node.withClause, env, outer)
        target = self._target(node.relation)
        scope = Scope([target], outer, env)
        scope.items.extend(self.from_item(node.sourceRelation, [], outer, env))
        self.predicate(node.joinCondition, scope)
        for clause in node.mergeWhenClauses or ():
            self.predicate(clause.condition, scope)
            self._assignments(clause.targetList, scope)
            self.use(union(self.exprs(clause.values, scope)).sources, Use.WRITE)
        outputs = self._returning(node.returningClause, scope, target)
        self.finish(ctes)
        return outputs

    def _assignments(self, targets: Any, scope: Scope) -> None:
        """SET col = expr: the expression's sources are written into the table."""
        for rt in targets or ():
            val = rt.val
            if isinstance(val, ast.MultiAssignRef):  # SET (a, b) = (SELECT x, y ...)
                source = val.source
                if isinstance(source, ast.SubLink):
                    outputs = self.subquery(source.subselect, scope)
                    column = val.colno or 0
                    if not 1 <= column <= len(outputs):
                        raise Unresolvable("SET (...) = (SELECT ...) has too few columns")
                    value = outputs[column - 1][1]
                elif isinstance(source, ast.RowExpr):
                    value = union(self.exprs(source.args, scope))
                else:
                    value = self.expr(source, scope)
            else:
                value = self.expr(val, scope)
            self.use(value.sources, Use.WRITE)

    def _returning(
        self, clause: ast.ReturningClause | None, scope: Scope, target: Item
    ) -> list[Output]:
        if clause is None:
            return []
        old_name, new_name = "old", "new"
        for option in clause.options or ():
            if option.option == enums.ReturningOptionKind.RETURNING_OPTION_OLD:
                old_name = option.value
            else:
                new_name = option.value
        versions = [
            Item(name, target.columns, f"{name} row", cols_visible=False, opaque=target.opaque)
            for name in (old_name, new_name)
            if scope.find_item(name) is None
        ]
        return self.targets(clause.exprs, Scope(scope.items + versions, scope.parent, scope.ctes))

    # -- other statements -------------------------------------------------------------

    def create_table_as(
        self, node: ast.CreateTableAsStmt, outer: Scope | None, env: dict[str, Cte]
    ) -> list[Output]:
        outputs = self.query(node.query, outer, env)
        self.use(union(v for _, v in outputs).sources, Use.WRITE)
        return []

    def inner_query(self, node: Any, outer: Scope | None, env: dict[str, Cte]) -> list[Output]:
        """DECLARE and PREPARE: what FETCH / EXECUTE will return."""
        return self.query(node.query, outer, env)

    def explain(
        self, node: ast.ExplainStmt, outer: Scope | None, env: dict[str, Cte]
    ) -> list[Output]:
        if option_on(
            node.options, "analyze"
        ):  # it runs: its uses count; the plan text itself carries no values
            self.query(node.query, outer, env)
        return []

    def copy(self, node: ast.CopyStmt, outer: Scope | None, env: dict[str, Cte]) -> list[Output]:
        if node.is_from:
            return []
        if node.query is not None:
            return self.query(node.query, outer, env)
        columns = self._target(node.relation).expand()
        wanted = names(node.attlist)
        if not wanted:
            return columns
        by_name = dict(columns)
        missing = [n for n in wanted if n not in by_name]
        if missing:
            raise Unresolvable(f"COPY column {missing[0]!r} not found")
        return [(n, by_name[n]) for n in wanted]

    def show(
        self, node: ast.VariableShowStmt, outer: Scope | None, env: dict[str, Cte]
    ) -> list[Output]:
        return [(node.name or "", NOTHING)]

    def no_data(self, node: Any, outer: Scope | None, env: dict[str, Cte]) -> list[Output]:
        """Statements that move no column values to the client or into other columns."""
        return []

    def alter_table(
        self, node: ast.AlterTableStmt, outer: Scope | None, env: dict[str, Cte]
    ) -> list[Output]:
        for cmd in node.cmds or ():
            if (
                isinstance(cmd, ast.AlterTableCmd)
                and cmd.subtype == enums.AlterTableType.AT_AlterColumnType
                and isinstance(cmd.def_, ast.ColumnDef)
                and cmd.def_.raw_default is not None
            ):
                raise Unresolvable("ALTER COLUMN ... TYPE ... USING rewrites column values")
        return []

    def unknowable(self, node: Any, outer: Scope | None, env: dict[str, Cte]) -> list[Output]:
        what = {
            ast.ExecuteStmt: "EXECUTE returns what its prepared statement returns: resolve it",
            ast.FetchStmt: "FETCH returns rows of its cursor: use the lineage of the DECLARE",
            ast.CallStmt: "CALL runs a procedure whose body is not traced",
            ast.DoStmt: "DO runs code that is not traced",
        }[type(node)]
        if isinstance(node, ast.FetchStmt) and node.ismove:
            return []
        raise Unresolvable(what)


def _combine_opaque(
    a: Callable[[str], Val] | None, b: Callable[[str], Val] | None
) -> Callable[[str], Val] | None:
    if a is None or b is None:
        return a or b
    return lambda name: union([a(name), b(name)])


_Handler = Callable[[Queries, Any, Scope | None, dict[str, Cte]], list[Output]]

# Statements that move no column values to the client or between columns: every
# statement kind the analyzer knows that has no handler here (DDL, privileges,
# session and transaction control, maintenance). The ones that do move values
# (CREATE TABLE AS, ALTER TABLE ... USING, DML, COPY) have handlers.
_NO_DATA = (
    *NODE_KINDS,
    ast.TransactionStmt,
    ast.VariableSetStmt,
    ast.GrantStmt,
    ast.GrantRoleStmt,
    ast.VacuumStmt,
    ast.CreateFunctionStmt,
)

_STATEMENTS: dict[type[Any], _Handler] = {
    ast.InsertStmt: Queries.insert,
    ast.UpdateStmt: Queries.update,
    ast.DeleteStmt: Queries.delete,
    ast.MergeStmt: Queries.merge,
    ast.CreateTableAsStmt: Queries.create_table_as,
    ast.DeclareCursorStmt: Queries.inner_query,
    ast.PrepareStmt: Queries.inner_query,
    ast.ExplainStmt: Queries.explain,
    ast.CopyStmt: Queries.copy,
    ast.VariableShowStmt: Queries.show,
    ast.AlterTableStmt: Queries.alter_table,
    ast.ExecuteStmt: Queries.unknowable,
    ast.FetchStmt: Queries.unknowable,
    ast.CallStmt: Queries.unknowable,
    ast.DoStmt: Queries.unknowable,
}
for _type in _NO_DATA:
    _STATEMENTS.setdefault(_type, Queries.no_data)
