"""Lineage of expressions: which base columns feed a value, and how columns are used.

`Expressions.expr()` evaluates one expression in a `Scope` to a `Val` and records
every non-output use of a column on the way (comparisons are PREDICATE or JOIN_EQ,
casts and division are ERROR_PRONE, ...). Query-level clauses (WHERE, GROUP BY,
ORDER BY) are in `queries.py`, which also answers subqueries (`subquery()`).

Every expression node type is listed in `_HANDLERS`; any other raises
`Unresolvable` naming it, so a new PostgreSQL construct fails closed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pglast import ast, enums

from dbgov.sql.catalog import Catalog
from dbgov.sql.functions import (
    ARITHMETIC_OPERATORS,
    COUNTING_FUNCTIONS,
    ERROR_PRONE_FUNCTIONS,
    SAFE_ARGUMENTS,
    SET_RETURNING_FUNCTIONS,
    STORING_FUNCTIONS,
    SYSTEM_SCHEMAS,
    TEXT_TYPES,
    VALUE_OPERATORS,
)
from dbgov.sql.model import Column, Use
from dbgov.sql.nodes import func_name, names, type_name
from dbgov.sql.scopes import NOTHING, Item, Output, Scope, Unresolvable, Val, union

_Handler = Callable[["Expressions", Any, Scope], Val]


class Expressions:
    """Expression evaluation; `queries.Queries` adds statements and FROM clauses."""

    def __init__(self, catalog: Catalog, search_path: Sequence[str]) -> None:
        self.catalog = catalog
        self.search_path = tuple(search_path)
        self.uses: set[tuple[Column, Use]] = set()
        self.eq_pairs: set[tuple[Column, Column]] = set()

    # -- hooks for queries.py ---------------------------------------------------------

    def subquery(self, node: Any, outer: Scope) -> list[Output]:
        raise NotImplementedError

    def window(self, node: ast.WindowDef, scope: Scope) -> None:
        raise NotImplementedError

    # -- recording uses -------------------------------------------------------------

    def use(self, columns: frozenset[Column], use: Use) -> None:
        for c in columns:
            self.uses.add((c, use))

    def compared(self, vals: Sequence[Val], op: str = "") -> Val:
        """A comparison of `vals`: JOIN_EQ for `col = col`, else PREDICATE on all."""
        if (
            op == "="
            and len(vals) == 2
            and vals[0].direct is not None
            and vals[1].direct is not None
        ):
            a, b = vals[0].direct, vals[1].direct
            self.use(frozenset({a, b}), Use.JOIN_EQ)
            self.eq_pairs.add((a, b) if str(a) <= str(b) else (b, a))
        else:
            self.use(union(vals).sources, Use.PREDICATE)
        joined = union(vals)
        return Val(joined.sources, None, joined.sources)

    def predicate(self, node: Any, scope: Scope) -> Val:
        """WHERE, HAVING, ON, FILTER, CASE WHEN: every source not already compared."""
        if node is None:
            return NOTHING
        v = self.expr(node, scope)
        self.use(v.sources - v.judged, Use.PREDICATE)
        return v

    def exprs(self, nodes: Any, scope: Scope) -> list[Val]:
        return [self.expr(n, scope) for n in nodes or ()]

    # -- evaluation ----------------------------------------------------------------

    def expr(self, node: Any, scope: Scope) -> Val:
        if node is None:
            return NOTHING
        handler = _HANDLERS.get(type(node))
        if handler is None:
            raise Unresolvable(f"expression type {type(node).__name__} is not traced")
        return handler(self, node, scope)

    def _constant(self, node: Any, scope: Scope) -> Val:
        return NOTHING

    def _column_ref(self, node: ast.ColumnRef, scope: Scope) -> Val:
        fields = tuple(node.fields or ())
        parts = names(fields)
        if fields and isinstance(fields[-1], ast.A_Star):
            if len(fields) == 1:
                return union(v for _, v in scope.visible_columns())
            return self.qualified_item(parts, scope).whole_row()  # t.* as a value
        if len(parts) == 1:
            v = scope.find_column(parts[0])
            if v is not None:
                return v
            item = scope.find_item(parts[0])
            if item is not None:
                return item.whole_row()  # `SELECT t FROM t`: every column of t
            raise Unresolvable(f"column {parts[0]!r} not found")
        # a.b: relation a, column b; a.b.c: schema.relation.column or relation.column.field;
        # a.b.c.d: database.schema.relation.column. Relations are tried first, like PostgreSQL.
        for k in (3, 2, 1):
            if k >= len(parts):
                continue
            item = self._try_item(parts[:k], scope)
            if item is None:
                continue
            v = item.column(parts[k])
            if v is None:
                raise Unresolvable(f"column {'.'.join(parts[: k + 1])!r} not found")
            return v if k + 1 == len(parts) else v.derived()  # trailing names: fields
        v = scope.find_column(parts[0])  # composite column with field selection
        if v is None:
            raise Unresolvable(f"column {'.'.join(parts)!r} not found")
        return v.derived()

    def _try_item(self, qualifier: Sequence[str], scope: Scope) -> Item | None:
        if len(qualifier) == 1:
            return scope.find_item(qualifier[0])
        return scope.find_item(qualifier[-1], schema=qualifier[-2])

    def qualified_item(self, qualifier: Sequence[str], scope: Scope) -> Item:
        item = self._try_item(qualifier, scope)
        if item is None:
            raise Unresolvable(f"table {'.'.join(qualifier)!r} not found in FROM")
        return item

    def _indirection(self, node: ast.A_Indirection, scope: Scope) -> Val:
        ind = tuple(node.indirection or ())
        arg = node.arg
        # (t).col on a whole-row reference is the column itself.
        ref = names(arg.fields) if isinstance(arg, ast.ColumnRef) else ()
        field = ind[0].sval if ind and isinstance(ind[0], ast.String) else None
        nfields = len(arg.fields or ()) if isinstance(arg, ast.ColumnRef) else 0
        if nfields == 1 and len(ref) == 1 and field and scope.find_column(ref[0]) is None:
            item = scope.find_item(ref[0])
            if item is not None:
                v = item.column(field)
                if v is None:
                    raise Unresolvable(f"column {ref[0]}.{field} not found")
                return v if len(ind) == 1 else union([v, *self._subscripts(ind[1:], scope)])
        base = self.expr(arg, scope)
        return union([base, *self._subscripts(ind, scope)])

    def _subscripts(self, ind: tuple[Any, ...], scope: Scope) -> list[Val]:
        out: list[Val] = []
        for i in ind:
            if isinstance(i, ast.A_Indices):
                out.append(self.expr(i.lidx, scope))
                out.append(self.expr(i.uidx, scope))
        return out

    def _a_expr(self, node: ast.A_Expr, scope: Scope) -> Val:
        op_parts = names(node.name)
        if len(op_parts) > 1 and op_parts[0] not in SYSTEM_SCHEMAS:
            raise Unresolvable(f"operator {'.'.join(op_parts)} is user-defined")
        op = op_parts[-1] if op_parts else ""
        left = self.expr(node.lexpr, scope)
        right_nodes = node.rexpr if isinstance(node.rexpr, tuple) else (node.rexpr,)
        rights = [self.expr(r, scope) for r in right_nodes]
        vals = [left, *rights] if node.lexpr is not None else rights
        if node.kind == enums.A_Expr_Kind.AEXPR_OP:
            if op in ARITHMETIC_OPERATORS:  # overflow, division by zero
                self.use(union(vals).sources, Use.ERROR_PRONE)
            if node.lexpr is None or op in VALUE_OPERATORS:
                return union(vals)
            return self.compared(vals, op)
        # ANY/ALL, IN, LIKE, SIMILAR, BETWEEN, IS DISTINCT FROM, NULLIF: all compare.
        return self.compared(vals)

    def _bool_expr(self, node: ast.BoolExpr, scope: Scope) -> Val:
        return union(self.exprs(node.args, scope))

    def _test(self, node: ast.NullTest | ast.BooleanTest, scope: Scope) -> Val:
        return self.compared([self.expr(node.arg, scope)])

    def _type_cast(self, node: ast.TypeCast, scope: Scope) -> Val:
        v = self.expr(node.arg, scope)
        if type_name(node.typeName) not in TEXT_TYPES:
            self.use(v.sources, Use.ERROR_PRONE)
        return v.derived()

    def _collate(self, node: ast.CollateClause, scope: Scope) -> Val:
        return self.expr(node.arg, scope)  # same value, another collation

    def _case(self, node: ast.CaseExpr, scope: Scope) -> Val:
        vals: list[Val] = []
        if node.arg is not None:  # CASE x WHEN 1 THEN ...: x is compared to each WHEN
            subject = self.expr(node.arg, scope)
            whens = [self.expr(w.expr, scope) for w in node.args or ()]
            vals.append(self.compared([subject, *whens]))
        else:
            vals.extend(self.predicate(w.expr, scope) for w in node.args or ())
        vals.extend(self.expr(w.result, scope) for w in node.args or ())
        vals.append(self.expr(node.defresult, scope))
        return union(vals)

    def _args(self, node: Any, scope: Scope) -> Val:
        """Constructs whose value is built from all their arguments."""
        if isinstance(node, ast.A_ArrayExpr):
            return union(self.exprs(node.elements, scope))
        return union(self.exprs(node.args, scope))

    def _named_arg(self, node: ast.NamedArgExpr, scope: Scope) -> Val:
        return self.expr(node.arg, scope)

    def _grouping(self, node: ast.GroupingFunc, scope: Scope) -> Val:
        self.exprs(node.args, scope)
        return NOTHING  # GROUPING() says which columns are grouped, not their values

    def _func_call(self, node: ast.FuncCall, scope: Scope) -> Val:
        schema, name = func_name(node)
        lname = name.lower()
        if (schema, name) in self.catalog.user_functions or (
            schema is not None and schema not in SYSTEM_SCHEMAS
        ):
            raise Unresolvable(f"function {schema}.{name} is user-defined: its body is not traced")
        if schema is None and any(
            (s, name) in self.catalog.user_functions for s in self.search_path
        ):
            raise Unresolvable(f"function {name} may resolve to a user-defined function")
        args = self.exprs(node.args, scope)
        vals = list(args)
        for sort in node.agg_order or ():
            v = self.expr(sort.node, scope)
            self.use(v.sources, Use.ORDER)
            if node.agg_within_group:  # percentile_disc(.5) WITHIN GROUP (ORDER BY x) returns x
                vals.append(v)
        self.predicate(node.agg_filter, scope)
        if node.over is not None:
            self.window(node.over, scope)
        safe = None if lname in ERROR_PRONE_FUNCTIONS else SAFE_ARGUMENTS.get(lname)
        for i, arg in enumerate(args):
            if not _safe_position(safe, i):  # an error (or none) would tell the value
                self.use(arg.sources, Use.ERROR_PRONE)
        if lname in SET_RETURNING_FUNCTIONS:  # the row count depends on the values
            self.use(union(args).sources, Use.PREDICATE)
        if lname == "pg_notify":
            self.use(union(args).sources, Use.NOTIFY)
        if lname in STORING_FUNCTIONS:  # read back later: SHOW, currval, ParameterStatus
            self.use(union(args).sources, Use.WRITE)
        if node.agg_distinct:  # count(DISTINCT ssn) tells which rows share a value
            self.use(union(args).sources, Use.DISTINCT)
        if (
            lname in COUNTING_FUNCTIONS
            and all(isinstance(a, ast.ColumnRef) for a in node.args or ())
            and all(v.direct is not None or not v.sources for v in args)
        ):
            # count(col) is a number, not col: NULL-ness of a column is no secret. Of a
            # computed value it is (count(substring(ssn from '^9'))), also when a
            # subquery or CTE computed it and the count names its output column: that
            # count keeps its sources, and is masked like the value.
            return NOTHING
        return union(vals)

    def _sublink(self, node: ast.SubLink, scope: Scope) -> Val:
        outputs = self.subquery(node.subselect, scope)
        kind = node.subLinkType
        vals = [v for _, v in outputs]
        if kind == enums.SubLinkType.EXISTS_SUBLINK:
            return NOTHING  # true/false; the subquery's own WHERE recorded its uses
        if kind == enums.SubLinkType.EXPR_SUBLINK:
            if len(vals) != 1:
                raise Unresolvable("scalar subquery must return one column")
            return vals[0]
        if kind in (enums.SubLinkType.ARRAY_SUBLINK, enums.SubLinkType.MULTIEXPR_SUBLINK):
            return union(vals)
        # x IN (SELECT y ...), x op ANY/ALL (SELECT ...), (a, b) = (SELECT ...)
        test = node.testexpr
        tests = (
            self.exprs(test.args, scope)
            if isinstance(test, ast.RowExpr)
            else [self.expr(test, scope)]
        )
        op = names(node.operName)[-1] if node.operName else "="
        if len(tests) == 1 and len(vals) == 1:
            return self.compared([tests[0], vals[0]], op)
        return self.compared([*tests, *vals])

    def _json_value(self, node: ast.JsonValueExpr, scope: Scope) -> Val:
        return self.expr(node.raw_expr, scope)

    def _json_parse(self, node: ast.JsonParseExpr, scope: Scope) -> Val:
        v = self.expr(node.expr, scope)
        self.use(v.sources, Use.ERROR_PRONE)  # JSON(text) raises on malformed input
        return v.derived()

    def _json_is(self, node: ast.JsonIsPredicate, scope: Scope) -> Val:
        return self.compared([self.expr(node.expr, scope)])

    def _json_agg(self, node: ast.JsonObjectAgg | ast.JsonArrayAgg, scope: Scope) -> Val:
        v = self.expr(node.arg, scope)
        ctor = node.constructor
        if ctor is not None:
            for sort in ctor.agg_order or ():
                self.use(self.expr(sort.node, scope).sources, Use.ORDER)
            self.predicate(ctor.agg_filter, scope)
            if ctor.over is not None:
                self.window(ctor.over, scope)
        return v.derived()

    def _json_key_value(self, node: ast.JsonKeyValue, scope: Scope) -> Val:
        return union([self.expr(node.key, scope), self.expr(node.value, scope)])

    def _json_children(self, node: Any, scope: Scope) -> Val:
        """SQL/JSON and XML constructs: a value built from every expression inside."""
        vals: list[Val] = []
        for attr in node:
            if attr in ("output", "format", "typeName", "pathspec", "name", "arg_names"):
                continue
            value = getattr(node, attr)
            items = value if isinstance(value, tuple) else (value,)
            vals.extend(self.expr(i, scope) for i in items if isinstance(i, ast.Node))
        if isinstance(node, ast.XmlExpr) and node.op == enums.XmlExprOp.IS_XMLPARSE:
            self.use(union(vals).sources, Use.ERROR_PRONE)
        return union(vals)

    def _json_array_query(self, node: ast.JsonArrayQueryConstructor, scope: Scope) -> Val:
        return union(v for _, v in self.subquery(node.query, scope))

    def _res_target(self, node: ast.ResTarget, scope: Scope) -> Val:
        return self.expr(node.val, scope)  # XMLELEMENT/XMLFOREST named arguments


_HANDLERS: dict[type[Any], _Handler] = {
    ast.A_Const: Expressions._constant,
    ast.ParamRef: Expressions._constant,
    ast.SQLValueFunction: Expressions._constant,
    ast.SetToDefault: Expressions._constant,
    ast.MergeSupportFunc: Expressions._constant,
    ast.CurrentOfExpr: Expressions._constant,
    ast.TypeName: Expressions._constant,
    ast.String: Expressions._constant,
    ast.ColumnRef: Expressions._column_ref,
    ast.A_Indirection: Expressions._indirection,
    ast.A_Expr: Expressions._a_expr,
    ast.BoolExpr: Expressions._bool_expr,
    ast.NullTest: Expressions._test,
    ast.BooleanTest: Expressions._test,
    ast.TypeCast: Expressions._type_cast,
    ast.CollateClause: Expressions._collate,
    ast.CaseExpr: Expressions._case,
    ast.CoalesceExpr: Expressions._args,
    ast.MinMaxExpr: Expressions._args,
    ast.RowExpr: Expressions._args,
    ast.A_ArrayExpr: Expressions._args,
    ast.NamedArgExpr: Expressions._named_arg,
    ast.GroupingFunc: Expressions._grouping,
    ast.FuncCall: Expressions._func_call,
    ast.SubLink: Expressions._sublink,
    ast.JsonValueExpr: Expressions._json_value,
    ast.JsonParseExpr: Expressions._json_parse,
    ast.JsonIsPredicate: Expressions._json_is,
    ast.JsonObjectAgg: Expressions._json_agg,
    ast.JsonArrayAgg: Expressions._json_agg,
    ast.JsonKeyValue: Expressions._json_key_value,
    ast.JsonObjectConstructor: Expressions._json_children,
    ast.JsonArrayConstructor: Expressions._json_children,
    ast.JsonScalarExpr: Expressions._json_children,
    ast.JsonSerializeExpr: Expressions._json_children,
    ast.JsonFuncExpr: Expressions._json_children,
    ast.JsonArgument: Expressions._json_children,
    ast.JsonBehavior: Expressions._json_children,
    ast.XmlExpr: Expressions._json_children,
    ast.XmlSerialize: Expressions._json_children,
    ast.JsonArrayQueryConstructor: Expressions._json_array_query,
    ast.ResTarget: Expressions._res_target,
}


def _safe_position(safe: str | None, i: int) -> bool:
    """May argument `i` of a function with `SAFE_ARGUMENTS` entry `safe` be any value?"""
    if safe is None:
        return False
    if safe == "first":
        return i == 0
    if safe == "rest":
        return i > 0
    if safe == "values":
        return i % 2 == 1
    return True


def figure_colname(node: Any) -> str:
    """The name PostgreSQL gives an unnamed output column (FigureColnameInternal)."""
    name = _figure(node)
    return name if name is not None else "?column?"


def _figure(node: Any) -> str | None:
    if isinstance(node, ast.ColumnRef):
        parts = names(node.fields)
        last = node.fields[-1] if node.fields else None
        return parts[-1] if parts and isinstance(last, ast.String) else None
    if isinstance(node, ast.A_Indirection):
        for i in reversed(node.indirection or ()):
            if isinstance(i, ast.String):
                return i.sval
            if isinstance(i, ast.A_Star):
                return None
        return _figure(node.arg)
    if isinstance(node, ast.FuncCall):
        return func_name(node)[1]
    if isinstance(node, ast.A_Expr) and node.kind == enums.A_Expr_Kind.AEXPR_NULLIF:
        return "nullif"
    if isinstance(node, ast.TypeCast):
        return _figure(node.arg) or type_name(node.typeName) or None
    if isinstance(node, ast.CollateClause):
        return _figure(node.arg)
    if isinstance(node, ast.SubLink):
        if node.subLinkType == enums.SubLinkType.EXISTS_SUBLINK:
            return "exists"
        if node.subLinkType == enums.SubLinkType.ARRAY_SUBLINK:
            return "array"
        sub = node.subselect
        if node.subLinkType == enums.SubLinkType.EXPR_SUBLINK and isinstance(sub, ast.SelectStmt):
            targets = sub.targetList or ()
            if len(targets) == 1 and isinstance(targets[0], ast.ResTarget):
                return targets[0].name or _figure(targets[0].val)
        return None
    if isinstance(node, ast.CaseExpr):
        strong = isinstance(node.defresult, ast.ColumnRef | ast.A_Indirection)
        return _figure(node.defresult) if strong else "case"
    return _FIXED_NAMES.get(type(node))


_FIXED_NAMES: dict[type[Any], str] = {
    ast.A_ArrayExpr: "array",
    ast.RowExpr: "row",
    ast.CoalesceExpr: "coalesce",
    ast.GroupingFunc: "grouping",
    ast.XmlSerialize: "xmlserialize",
}
