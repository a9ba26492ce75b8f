"""Small helpers over pglast nodes shared by the analyzer and lineage.

pglast nodes iterate over their attribute names; lists are tuples (sometimes of
tuples). These helpers walk that shape generically so that no child is missed
because a handler forgot an attribute: missing a child would hide a function call
or a relation, which fails open.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pglast import ast

from dbgov.sql.functions import TEXT_TYPES

# Attributes that only record where something was written; ignored by `canon`.
POSITIONAL = frozenset(
    {
        "location",
        "stmt_location",
        "stmt_len",
        "rexpr_list_start",
        "rexpr_list_end",
        "list_start",
        "list_end",
        "payload_location",
        "arg_location",
        "name_location",
    }
)


def children(value: Any) -> Iterator[ast.Node]:
    """The direct child nodes of a node or a (nested) tuple of nodes."""
    if isinstance(value, tuple):
        for item in value:
            if isinstance(item, ast.Node):
                yield item
            elif isinstance(item, tuple):
                yield from children(item)
        return
    if isinstance(value, ast.Node):
        for attr in value:
            child = getattr(value, attr)
            if isinstance(child, ast.Node):
                yield child
            elif isinstance(child, tuple):
                yield from children(child)


def walk(value: Any) -> Iterator[ast.Node]:
    """Every node under `value`, itself included, depth first."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, ast.Node):
            yield item
            stack.extend(children(item))
        elif isinstance(item, tuple):
            stack.extend(children(item))


def names(items: tuple[Any, ...] | None) -> tuple[str, ...]:
    """The strings of a tuple of `String` nodes (qualified names, USING lists)."""
    return tuple(i.sval or "" for i in items or () if isinstance(i, ast.String))


def func_name(node: ast.FuncCall) -> tuple[str | None, str]:
    """(schema or None, name) of a function call, as written (pglast already folded case)."""
    parts = names(node.funcname)
    if not parts:
        return None, ""
    return (parts[-2] if len(parts) > 1 else None), parts[-1]


def string_const(node: Any) -> str | None:
    """The value of a string constant, also through a cast to a text type; else None."""
    if isinstance(node, ast.TypeCast) and type_name(node.typeName) in TEXT_TYPES:
        return string_const(node.arg)
    if isinstance(node, ast.A_Const) and isinstance(node.val, ast.String):
        return node.val.sval
    return None


def type_name(node: ast.TypeName | None) -> str:
    """The bare name of a type ("int4", "text", "regclass"); "" if unknown."""
    if node is None:
        return ""
    parts = names(node.names)
    return parts[-1].lower() if parts else ""


def canon(value: Any) -> Any:
    """A hashable structural form of a subtree that ignores source positions."""
    if isinstance(value, ast.Node):
        return (
            type(value).__name__,
            tuple((a, canon(getattr(value, a))) for a in value if a not in POSITIONAL),
        )
    if isinstance(value, tuple):
        return tuple(canon(v) for v in value)
    return value


def option_on(options: tuple[Any, ...] | None, name: str) -> bool:
    """Is a boolean option such as EXPLAIN (ANALYZE [x]) on? On unless clearly false."""
    for elem in options or ():
        if isinstance(elem, ast.DefElem) and elem.defname == name:
            arg = elem.arg
            if isinstance(arg, ast.Integer):
                return arg.ival != 0
            if isinstance(arg, ast.Boolean):
                return bool(arg.boolval)
            if isinstance(arg, ast.String):
                return (arg.sval or "").lower() not in ("false", "off", "0", "no")
            return True
    return False


def bare_name(node: Any) -> str | None:
    """`x` for a column reference written as a single name, else None."""
    if isinstance(node, ast.ColumnRef) and node.fields and len(node.fields) == 1:
        field = node.fields[0]
        if isinstance(field, ast.String):
            return field.sval
    return None


def int_const(node: Any) -> int | None:
    """The value of an integer constant (`ORDER BY 2`), else None."""
    if isinstance(node, ast.A_Const) and isinstance(node.val, ast.Integer):
        return node.val.ival
    return None
