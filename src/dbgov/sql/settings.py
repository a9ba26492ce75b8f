"""SET/RESET values rendered the way the server stores them.

The proxy tracks some parameters per session (search_path decides which table an
unqualified name means, so masking depends on it). It must therefore see the value
PostgreSQL will store, not the text the client typed: `SET search_path TO a, "B"`
is stored as `a, "B"`. The rendering follows `flatten_set_variable_args()` in
PostgreSQL's src/backend/utils/misc/guc_funcs.c.
"""

from __future__ import annotations

from typing import Any

from pglast import ast, enums, keywords

# Parameters that change how the server lexes SQL text; the analyzer's lexer does
# not follow them, so changing them could make the proxy and server disagree.
LEXING_SETTINGS = frozenset({"standard_conforming_strings", "backslash_quote", "client_encoding"})

# GUC_LIST_QUOTE parameters: list elements are quoted like identifiers when stored.
_LIST_QUOTE = frozenset(
    {
        "search_path",
        "temp_tablespaces",
        "local_preload_libraries",
        "session_preload_libraries",
        "shared_preload_libraries",
    }
)

_NOT_SAFE_KEYWORDS = (
    keywords.RESERVED_KEYWORDS | keywords.COL_NAME_KEYWORDS | keywords.TYPE_FUNC_NAME_KEYWORDS
)

DEFAULT = "DEFAULT"


def quote_identifier(name: str) -> str:
    """PostgreSQL's quote_identifier(): quote unless a plain lower-case non-keyword."""
    safe = (
        bool(name)
        and (name[0].islower() or name[0] == "_")
        and all(c.islower() or c.isdigit() or c == "_" for c in name)
        and name.isascii()
        and name not in _NOT_SAFE_KEYWORDS
    )
    if safe:
        return name
    return '"' + name.replace('"', '""') + '"'


def _const_text(node: Any) -> str | None:
    """The text of a SET argument constant, or None if it is something else."""
    if isinstance(node, ast.TypeCast):  # SET TIME ZONE INTERVAL '...' HOUR TO MINUTE
        return _const_text(node.arg)
    if not isinstance(node, ast.A_Const) or node.isnull:
        return None
    val = node.val
    if isinstance(val, ast.String):
        return val.sval
    if isinstance(val, ast.Integer):
        return str(val.ival)
    if isinstance(val, ast.Float):
        return val.fval
    if isinstance(val, ast.Boolean):
        return "true" if val.boolval else "false"
    return None


def _flatten(name: str, args: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for arg in args:
        if isinstance(arg, ast.DefElem):  # SET TRANSACTION ISOLATION LEVEL ... and friends
            text = _const_text(arg.arg)
            parts.append(f"{arg.defname} {text if text is not None else '?'}")
            continue
        text = _const_text(arg)
        if text is None:
            parts.append("?")
        elif name in _LIST_QUOTE and isinstance(arg, ast.A_Const):
            # Identifiers and strings are quoted alike; numbers are not.
            is_string = isinstance(arg.val, ast.String)
            parts.append(quote_identifier(text) if is_string else text)
        else:
            parts.append(text)
    return ", ".join(parts)


def set_value(node: ast.VariableSetStmt) -> tuple[str, str]:
    """(parameter, value) for SET/RESET: "DEFAULT" for RESET and SET ... TO DEFAULT.

    RESET ALL is ("all", "DEFAULT"); SET x FROM CURRENT is (x, "FROM CURRENT");
    SET TRANSACTION / SESSION CHARACTERISTICS are ("transaction", "transaction_isolation
    serializable")-like, named as the parser names them, lower-cased.
    """
    kind = node.kind
    name = (node.name or "").lower()
    if kind == enums.VariableSetKind.VAR_RESET_ALL:
        return "all", DEFAULT
    if kind in (enums.VariableSetKind.VAR_RESET, enums.VariableSetKind.VAR_SET_DEFAULT):
        return name, DEFAULT
    if kind == enums.VariableSetKind.VAR_SET_CURRENT:
        return name, "FROM CURRENT"
    return name, _flatten(name, tuple(node.args or ()))


def parse_search_path(value: str) -> tuple[str, ...]:
    """The schemas of a search_path value as the server reports it (SHOW, startup
    options): quoted names keep their case, `$user` (no such schema for dbgov's
    upstream role) is skipped, an empty or DEFAULT path means public."""
    if value.upper() == "DEFAULT":
        return ("public",)
    out = []
    for part in value.split(","):
        name = part.strip()
        if name.startswith('"') and name.endswith('"'):
            name = name[1:-1].replace('""', '"')
        elif name.startswith("'") and name.endswith("'"):
            name = name[1:-1]
        else:
            name = name.lower()
        if name and name != "$user":
            out.append(name)
    return tuple(out) or ("public",)
