"""Is an UPDATE/DELETE filter always true?

The "no UPDATE/DELETE without WHERE" guardrail is worthless if `WHERE 1=1` passes,
so a filter counts as missing when it is always true. The check MUST NOT read
literal values: analyses are shared between query strings that differ only in
literals (see `analyze.py`), so `WHERE 1=2` and `WHERE 1=1` must get the same
answer. Therefore any predicate that does not depend on the target's rows counts
as always true (the deny side), and tautologies are recognised by structure only:

- no reference to the target table at all: `true`, `1=2`, `'a'='a'`, `NOT false`,
  `now() > '2020-01-01'`, `u.flag` for another table `u` in USING/FROM;
- `x = x`, `x <= x`, `x >= x`, `x IS NOT DISTINCT FROM x`, `x IN (.., x, ..)`;
- `p OR NOT p`, `x IS NULL OR x IS NOT NULL`, `x = e OR x <> e`, `x LIKE e OR x NOT LIKE e`;
- an OR with any always-true branch, an AND of always-true branches, NOT of an
  always-false one (`x <> x`, `x < x`, `p AND NOT p`), `p IS TRUE` of an always-true `p`,
  a CASE whose every result is always true.

A column reference counts as a reference to the target when it is unqualified or
qualified with the target's name (its alias if it has one). Unqualified names in
subqueries are taken as possible target references, so a correlated subquery that
does not qualify its columns counts as a filter.
"""

from __future__ import annotations

from typing import Any

from pglast import ast, enums

from dbgov.sql.nodes import POSITIONAL, names, walk

_AK = enums.A_Expr_Kind
_BT = enums.BoolTestType

# Operators whose `x op x` is true (for non-null x) and false respectively.
_REFLEXIVE_TRUE = frozenset({"=", "<=", ">="})
_REFLEXIVE_FALSE = frozenset({"<>", "!=", "<", ">"})

# op -> its negation, for `x op e OR x negop e`.
_NEGATED_OP = {
    "=": "<>",
    "<>": "=",
    "!=": "=",
    "<": ">=",
    ">=": "<",
    ">": "<=",
    "<=": ">",
    "~~": "!~~",
    "!~~": "~~",
    "~~*": "!~~*",
    "!~~*": "~~*",
    "~": "!~",
    "!~": "~",
    "~*": "!~*",
    "!~*": "~*",
}
_NEGATED_KIND = {
    _AK.AEXPR_DISTINCT: _AK.AEXPR_NOT_DISTINCT,
    _AK.AEXPR_NOT_DISTINCT: _AK.AEXPR_DISTINCT,
    _AK.AEXPR_BETWEEN: _AK.AEXPR_NOT_BETWEEN,
    _AK.AEXPR_NOT_BETWEEN: _AK.AEXPR_BETWEEN,
    _AK.AEXPR_BETWEEN_SYM: _AK.AEXPR_NOT_BETWEEN_SYM,
    _AK.AEXPR_NOT_BETWEEN_SYM: _AK.AEXPR_BETWEEN_SYM,
}
_NEGATED_TEST = {
    _BT.IS_TRUE: _BT.IS_NOT_TRUE,
    _BT.IS_NOT_TRUE: _BT.IS_TRUE,
    _BT.IS_FALSE: _BT.IS_NOT_FALSE,
    _BT.IS_NOT_FALSE: _BT.IS_FALSE,
    _BT.IS_UNKNOWN: _BT.IS_NOT_UNKNOWN,
    _BT.IS_NOT_UNKNOWN: _BT.IS_UNKNOWN,
}


def always_true(expr: ast.Node | None, target: str) -> bool:
    """True when `expr` (an UPDATE/DELETE WHERE) may select every row of `target`.

    `target` is the name the target table goes by in the statement (alias or name).
    """
    if expr is None:
        return True
    return _Check(target).true(expr)


class _Check:
    def __init__(self, target: str) -> None:
        self.target = target

    def refers_to_target(self, expr: ast.Node) -> bool:
        for node in walk(expr):
            if isinstance(node, ast.ColumnRef) and self._is_target_column(node):
                return True
        return False

    def _is_target_column(self, ref: ast.ColumnRef) -> bool:
        fields = names(ref.fields)
        count = len(ref.fields or ())
        if count == 1:
            return True  # unqualified (or a whole-row reference)
        if count == 2:
            return fields[0] == self.target  # t.col, t.*
        # schema.t.col or t.col.field: the table is one of the first two names.
        return self.target in fields[:2]

    def true(self, expr: Any) -> bool:
        if not self.refers_to_target(expr):
            return True
        if isinstance(expr, ast.BoolExpr):
            args = tuple(expr.args or ())
            if expr.boolop == enums.BoolExprType.OR_EXPR:
                flat = self._flatten(args, enums.BoolExprType.OR_EXPR)
                return any(self.true(a) for a in flat) or self._complementary(flat)
            if expr.boolop == enums.BoolExprType.AND_EXPR:
                return all(self.true(a) for a in args)
            return self.false(args[0])
        if isinstance(expr, ast.A_Expr):
            return self._reflexive(expr, _REFLEXIVE_TRUE, _AK.AEXPR_NOT_DISTINCT)
        if isinstance(expr, ast.BooleanTest):
            if expr.booltesttype in (_BT.IS_TRUE, _BT.IS_NOT_FALSE):
                return self.true(expr.arg)
            if expr.booltesttype in (_BT.IS_FALSE, _BT.IS_NOT_TRUE):
                return self.false(expr.arg)
            return False
        if isinstance(expr, ast.CaseExpr):
            results = [w.result for w in expr.args or ()]
            results.append(expr.defresult)  # a missing ELSE is NULL: a constant
            return all(r is None or self.true(r) for r in results)
        if isinstance(expr, ast.TypeCast):
            return self.true(expr.arg)
        return False

    def false(self, expr: Any) -> bool:
        """True when `expr` may be false (or null) for every row: NOT of it selects all."""
        if not self.refers_to_target(expr):
            return True
        if isinstance(expr, ast.BoolExpr):
            args = tuple(expr.args or ())
            if expr.boolop == enums.BoolExprType.AND_EXPR:
                flat = self._flatten(args, enums.BoolExprType.AND_EXPR)
                return any(self.false(a) for a in flat) or self._complementary(flat)
            if expr.boolop == enums.BoolExprType.OR_EXPR:
                return all(self.false(a) for a in args)
            return self.true(args[0])
        if isinstance(expr, ast.A_Expr):
            return self._reflexive(expr, _REFLEXIVE_FALSE, _AK.AEXPR_DISTINCT)
        if isinstance(expr, ast.BooleanTest):
            if expr.booltesttype in (_BT.IS_TRUE, _BT.IS_NOT_FALSE):
                return self.false(expr.arg)
            if expr.booltesttype in (_BT.IS_FALSE, _BT.IS_NOT_TRUE):
                return self.true(expr.arg)
            return False
        if isinstance(expr, ast.TypeCast):
            return self.false(expr.arg)
        return False

    def _reflexive(self, expr: ast.A_Expr, ops: frozenset[str], same_kind: Any) -> bool:
        """`x op x` (op in `ops`), `x IS [NOT] DISTINCT FROM x`, `x IN (.., x, ..)`."""
        op = names(expr.name)
        left = self._canon(expr.lexpr)
        if (expr.kind == _AK.AEXPR_OP and op and op[-1] in ops) or expr.kind == same_kind:
            return bool(left == self._canon(expr.rexpr))
        if expr.kind == _AK.AEXPR_IN and op == ("=",) and "=" in ops:
            items = expr.rexpr if isinstance(expr.rexpr, tuple) else (expr.rexpr,)
            return any(left == self._canon(i) for i in items)
        return False

    @staticmethod
    def _flatten(args: tuple[ast.Node, ...], op: Any) -> tuple[ast.Node, ...]:
        out: list[ast.Node] = []
        for a in args:
            if isinstance(a, ast.BoolExpr) and a.boolop == op:
                out.extend(_Check._flatten(tuple(a.args or ()), op))
            else:
                out.append(a)
        return tuple(out)

    def _complementary(self, args: tuple[ast.Node, ...]) -> bool:
        """Some branch is the negation of another (`p OR NOT p`, `p AND NOT p`)."""
        forms = [self._canon(a) for a in args]
        for a in args:
            negations = self._negations(a)
            if any(f in negations for f in forms):
                return True
        return False

    def _negations(self, expr: Any) -> set[Any]:
        out: set[Any] = {("NOT", self._canon(expr))}
        if isinstance(expr, ast.BoolExpr) and expr.boolop == enums.BoolExprType.NOT_EXPR:
            out.add(self._canon((expr.args or (None,))[0]))
        elif isinstance(expr, ast.NullTest):
            flipped = (
                enums.NullTestType.IS_NOT_NULL
                if expr.nulltesttype == enums.NullTestType.IS_NULL
                else enums.NullTestType.IS_NULL
            )
            out.add(("NullTest", self._canon(expr.arg), flipped))
        elif isinstance(expr, ast.BooleanTest):
            out.add(
                (
                    "BooleanTest",
                    self._canon(expr.arg),
                    _NEGATED_TEST.get(expr.booltesttype) if expr.booltesttype is not None else None,
                )
            )
        elif isinstance(expr, ast.A_Expr):
            op = names(expr.name)
            left, right = self._canon(expr.lexpr), self._canon(expr.rexpr)
            if expr.kind in _NEGATED_KIND:
                out.add(("A_Expr", _NEGATED_KIND[expr.kind], op, left, right))
            elif op and op[-1] in _NEGATED_OP:
                out.add(("A_Expr", expr.kind, (_NEGATED_OP[op[-1]],), left, right))
        return out

    def _canon(self, value: Any) -> Any:
        """Structural form where `t.x` and `x` (t the target) are the same column."""
        if isinstance(value, ast.ColumnRef):
            fields = names(value.fields)
            if len(fields) == 2 and fields[0] == self.target:
                fields = fields[1:]
            return ("col", fields, any(isinstance(f, ast.A_Star) for f in value.fields or ()))
        if isinstance(value, ast.BoolExpr) and value.boolop == enums.BoolExprType.NOT_EXPR:
            return ("NOT", self._canon((value.args or (None,))[0]))
        if isinstance(value, ast.NullTest):
            return ("NullTest", self._canon(value.arg), value.nulltesttype)
        if isinstance(value, ast.BooleanTest):
            return ("BooleanTest", self._canon(value.arg), value.booltesttype)
        if isinstance(value, ast.A_Expr):
            op = names(value.name)
            return ("A_Expr", value.kind, op, self._canon(value.lexpr), self._canon(value.rexpr))
        if isinstance(value, ast.Node):
            return (
                type(value).__name__,
                tuple((a, self._canon(getattr(value, a))) for a in value if a not in POSITIONAL),
            )
        if isinstance(value, tuple):
            return tuple(self._canon(v) for v in value)
        return value
