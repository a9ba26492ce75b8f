"""Which startup parameters a client may pass through to the upstream.

Startup parameters other than user/database are server settings. Some change
how the server lexes SQL (standard_conforming_strings, client_encoding with
multibyte encodings whose trail bytes include a backslash or quote) and would
let a statement mean one thing to dbgov's analyzer and another to the server.
So parameters are allowlisted, `options` is parsed and held to the same list,
and replication connections are refused.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from dbgov.sql.settings import parse_search_path

ALLOWED = frozenset(
    {
        "application_name",
        "client_encoding",
        "datestyle",
        "timezone",
        "intervalstyle",
        "extra_float_digits",
        "search_path",
        "statement_timeout",
        "lock_timeout",
        "idle_in_transaction_session_timeout",
        "default_transaction_isolation",
        "default_transaction_read_only",
        "client_min_messages",
        "bytea_output",
        "geqo",
        "jit",
        "work_mem",
        "lc_monetary",
        "lc_numeric",
        "lc_time",
        "default_transaction_deferrable",
        "transaction_timeout",
        "idle_session_timeout",
    }
)
SAFE_ENCODINGS = frozenset({"utf8", "utf-8", "unicode", "sql_ascii"})


class StartupParamError(Exception):
    def __init__(self, message: str, sqlstate: str = "42501") -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def _check(name: str, value: str) -> None:
    key = name.lower()
    if key not in ALLOWED:
        raise StartupParamError(f'startup parameter "{name}" is not allowed through dbgov')
    if key == "client_encoding" and value.strip("'\" ").lower() not in SAFE_ENCODINGS | {"auto"}:
        raise StartupParamError(
            f'client_encoding "{value}" is not supported through dbgov; use UTF8', "22023"
        )


def _options(value: str) -> dict[str, str]:
    """Parse libpq `options` (e.g. "-c search_path=app -c statement_timeout=5s")."""
    out: dict[str, str] = {}
    try:
        words = shlex.split(value.replace("\\ ", "\x00"))
    except ValueError:
        raise StartupParamError("startup options could not be parsed", "08P01") from None
    words = [w.replace("\x00", " ") for w in words]
    i = 0
    while i < len(words):
        w = words[i]
        if w == "-c" and i + 1 < len(words):
            setting = words[i + 1]
            i += 2
        elif w.startswith("-c") or w.startswith("--"):
            setting = w[2:]
            i += 1
        else:
            raise StartupParamError(f'startup option "{w}" is not allowed through dbgov')
        name, eq, val = setting.partition("=")
        if not eq:
            raise StartupParamError(f'startup option "{setting}" needs NAME=VALUE', "08P01")
        out[name.replace("-", "_")] = val
    return out


def filter(params: Mapping[str, str]) -> tuple[dict[str, str], tuple[str, ...] | None]:
    """Return (parameters to send upstream, initial search_path if one was set)."""
    if "replication" in params and params["replication"].lower() not in ("false", "off", "0", "no"):
        raise StartupParamError("replication connections are not supported through dbgov")
    out: dict[str, str] = {}
    seen: set[str] = set()

    def take(name: str, value: str) -> None:
        _check(name, value)
        # Setting names are case-insensitive to the server, which applies the last of
        # two spellings (search_path=a, SEARCH_PATH=b): dbgov would resolve names on
        # one path while the server used the other.
        if name.lower() in seen:
            raise StartupParamError(f'startup parameter "{name}" is given twice', "08P01")
        seen.add(name.lower())
        out[name] = value

    for name, value in params.items():
        if name == "options":
            for k, v in _options(value).items():
                take(k, v)
        elif name != "replication":
            take(name, value)
    sp = next((v for k, v in out.items() if k.lower() == "search_path"), None)
    if out.get("client_encoding", "").lower() == "auto":
        out["client_encoding"] = "UTF8"
    if sp is None:
        return out, None
    return out, parse_search_path(sp)
