"""The context a rule's `when:` condition sees, and compiling conditions.

Conditions are CEL (PyPI `common-expression-language`), compiled once when the
policy loads. They see exactly this context, documented here because operators
write against it:

    stmt.kind          string        top-level kind: "select", "update", "drop", ...
    stmt.kinds         list(string)  every kind inside it (CTE DML, EXPLAIN ANALYZE, ...)
    stmt.tables        list(string)  schema.table of everything read or written
    stmt.reads         list(string)  schema.table read
    stmt.writes        list(string)  schema.table written (or created, altered, dropped)
    stmt.functions     list(string)  lower-case function names called
    stmt.has_where     bool          false when an UPDATE/DELETE/MERGE changes rows with
                                     no WHERE or an always-true one; true otherwise
    stmt.flags         list(string)  analyzer facts: "drop_cascade", "returning", ...
    stmt.models        list(string)  declared models (policy `models:`) whose inputs this
                                     statement changes on this target: INSERT, DELETE,
                                     MERGE, COPY FROM, TRUNCATE and DDL of an input, and
                                     UPDATEs that set one of the model's columns
    stmt.tags          list(string)  `table_tags` of every table read or written (model
                                     inputs also carry "model_input")
    target.name        string        "prod"
    target.env         string        "production"
    identity.user      string        "bob"
    identity.groups    list(string)  including just-in-time groups
    time.hour          int           0-23, UTC
    time.minute        int           0-59, UTC
    time.weekday       int           0 = Monday ... 6 = Sunday, UTC
    time.iso           string        "2024-05-01T13:45:00+00:00"
    session.in_transaction  bool     inside BEGIN ... COMMIT

Unqualified table names are resolved against the session's search_path before a
condition sees them (see engine.py), so `"public.customers" in stmt.tables` is
reliable. A condition must return a bool; one that fails at run time makes its
rule deny (fail closed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import cel

# Top-level names and their fields; anything else in a condition is an error at load.
FIELDS: Mapping[str, frozenset[str]] = {
    "stmt": frozenset(
        {
            "kind",
            "kinds",
            "tables",
            "reads",
            "writes",
            "functions",
            "has_where",
            "flags",
            "models",
            "tags",
        }
    ),
    "target": frozenset({"name", "env"}),
    "identity": frozenset({"user", "groups"}),
    "time": frozenset({"hour", "minute", "weekday", "iso"}),
    "session": frozenset({"in_transaction"}),
}

# Macro variables (`stmt.tables.exists(t, ...)`) show up in Program.variables().
_MACRO_VAR = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
_FIELD_REF = re.compile(r"(?<![\w.\"'])(stmt|target|identity|time|session)\s*\.\s*([A-Za-z_]\w*)")


@dataclass(frozen=True, slots=True, eq=False)
class CelCondition:
    """A compiled `when:` expression and which parts of the context it reads."""

    source: str
    program: Any  # cel.Program
    uses_time: bool
    uses_user: bool
    uses_session: bool

    def evaluate(self, context: Mapping[str, Any]) -> bool:
        """True/False; raises ValueError when the result is not a bool or evaluation fails."""
        try:
            result = self.program.execute(dict(context))
        except Exception as exc:  # cel raises RuntimeError, KeyError, TypeError, ...
            raise ValueError(f"{type(exc).__name__}: {exc}") from None
        if not isinstance(result, bool):
            raise ValueError(f"must return a bool, returned {result!r}")
        return result


def compile_condition(source: str) -> CelCondition:
    """Compile and check a condition; ValueError says what is wrong, for the operator."""
    try:
        program = cel.compile(source)
    except Exception as exc:  # cel raises ValueError on syntax errors
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"CEL syntax error: {first}") from None
    macro_vars = set(_MACRO_VAR.findall(source))
    unknown = sorted(set(program.variables()) - set(FIELDS) - macro_vars)
    if unknown:
        raise ValueError(
            f"unknown name {unknown[0]!r} in CEL condition; the context has "
            f"{', '.join(sorted(FIELDS))}"
        )
    stripped = _strip_strings(source)
    refs = _FIELD_REF.findall(stripped)
    for top, name in refs:
        if name not in FIELDS[top]:
            raise ValueError(
                f"unknown field {top}.{name} in CEL condition; {top} has "
                f"{', '.join(sorted(FIELDS[top]))}"
            )
    variables = set(program.variables())
    # identity.groups is already part of the decision cache key; anything else read
    # from identity (the user) makes the key per user.
    identity_refs = [name for top, name in refs if top == "identity"]
    bare_identity = len(re.findall(r"(?<![\w.])identity\b", stripped)) > len(identity_refs)
    cond = CelCondition(
        source=source,
        program=program,
        uses_time="time" in variables,
        uses_user="identity" in variables
        and (bare_identity or any(n != "groups" for n in identity_refs)),
        uses_session="session" in variables,
    )
    # Run it once on a sample context: catches type errors such as `stmt.kind > 1`
    # on the evaluated branch and conditions that do not return a bool.
    try:
        cond.evaluate(sample_context())
    except ValueError as exc:
        raise ValueError(f"CEL condition fails on a sample statement: {exc}") from None
    return cond


def _strip_strings(source: str) -> str:
    """The source with string literals blanked, so "stmt.foo" inside quotes is not a field."""
    return re.sub(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'", '""', source)


def time_context(now: datetime) -> dict[str, Any]:
    now = now.astimezone(UTC)
    return {
        "hour": now.hour,
        "minute": now.minute,
        "weekday": now.weekday(),
        "iso": now.isoformat(timespec="seconds"),
    }


def build_context(
    *,
    kind: str,
    kinds: Iterable[str],
    reads: Iterable[str],
    writes: Iterable[str],
    functions: Iterable[str],
    has_where: bool,
    flags: Iterable[str],
    target: str,
    env: str,
    user: str,
    groups: Iterable[str],
    now: datetime,
    in_transaction: bool,
    models: Iterable[str] = (),
    tags: Iterable[str] = (),
) -> dict[str, Any]:
    reads_l = sorted(reads)
    writes_l = sorted(writes)
    return {
        "stmt": {
            "kind": kind,
            "kinds": sorted(kinds),
            "tables": sorted(set(reads_l) | set(writes_l)),
            "reads": reads_l,
            "writes": writes_l,
            "functions": sorted(functions),
            "has_where": has_where,
            "flags": sorted(flags),
            "models": sorted(models),
            "tags": sorted(tags),
        },
        "target": {"name": target, "env": env},
        "identity": {"user": user, "groups": sorted(groups)},
        "time": time_context(now),
        "session": {"in_transaction": in_transaction},
    }


def sample_context() -> dict[str, Any]:
    """A plausible context, used to try conditions when the policy loads."""
    return build_context(
        kind="update",
        kinds=("update", "select"),
        reads=("public.customers",),
        writes=("public.feature_store",),
        functions=("now",),
        has_where=True,
        flags=("returning",),
        target="prod",
        env="production",
        user="sample",
        groups=("analysts",),
        now=datetime(2024, 1, 1, 12, 0, tzinfo=UTC),
        in_transaction=False,
        models=("churn-v2",),
        tags=("model_input",),
    )
