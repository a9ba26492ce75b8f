"""Hiding literals from viewers who would see the data they touch masked.

A statement such as ``SELECT * FROM customers WHERE ssn = '123-45-6789'`` carries
the very value masking hides. Whoever would see `customers.ssn` masked (per the
policy's masking section and their groups) therefore sees the statement with its
string and numeric literals replaced by ``?`` — and its bind parameters too —
wherever statement texts leave the server: pages, API and the live stream.

The rule is per table, on purpose coarser than masking's per column: a literal
compared with an unmasked column of a masked table is hidden too, rather than
trusting that we can tell which column a literal goes with. Fail closed: when a
policy is configured but cannot be read, every literal is hidden from everyone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from pglast import parser

LITERAL_TOKENS: Final = frozenset({"SCONST", "USCONST", "ICONST", "FCONST", "BCONST", "XCONST"})
WITHHELD: Final = "[statement text withheld: it could not be scanned for literals]"


class MaskedColumn(Protocol):
    """What redaction needs of a policy's column mask (`policy.model.ColumnMask`)."""

    @property
    def exempt(self) -> tuple[str, ...]: ...


def redact_literals(sql: str) -> str:
    """`sql` with every string, bit-string and numeric literal replaced by ``?``."""
    try:
        tokens = parser.scan(sql)
    except Exception:  # pglast raises its own errors; unscannable means keep nothing
        return WITHHELD
    out: list[str] = []
    pos = 0
    for tok in tokens:
        if tok.name in LITERAL_TOKENS:
            start = tok.start
            # A negative number scans as '-' then ICONST: keep the minus, it says little.
            out.append(sql[pos:start])
            out.append("?")
            pos = tok.end + 1
    out.append(sql[pos:])
    return "".join(out)


def _tables_of(sql: object) -> list[str] | None:
    """Tables a statement text reads or writes, or None when it cannot be told."""
    if not isinstance(sql, str):
        return []
    from dbgov.sql.analyze import analyze_cached

    try:
        analysis = analyze_cached(sql)
    except Exception:
        return None
    if not analysis.statements:
        return None
    return [str(r) for s in analysis.statements for r in (*s.reads, *s.writes)]


def _names(table: str) -> tuple[str, str]:
    """(qualified-or-as-written, bare name) of a table as an event names it."""
    return table, table.rpartition(".")[2]


@dataclass(frozen=True, slots=True)
class Redactor:
    """Decides, for one viewer, which statement events to show redacted.

    `masked_tables` holds "schema.table" names with a column masked for the
    viewer; None means "unknown policy": redact every statement (fail closed).
    """

    masked_tables: frozenset[str] | None

    @classmethod
    def for_groups(
        cls, groups: frozenset[str], columns: Mapping[str, MaskedColumn] | None
    ) -> Redactor:
        if columns is None:
            return cls(None)
        tables = {
            name.rsplit(".", 1)[0]
            for name, mask in columns.items()
            if not groups & set(mask.exempt)
        }
        return cls(frozenset(tables))

    @classmethod
    def nothing(cls) -> Redactor:
        return cls(frozenset())

    def touches_masked(self, tables: Iterable[str]) -> bool:
        if self.masked_tables is None:
            return True
        bare_masked = {t.rpartition(".")[2] for t in self.masked_tables}
        for table in tables:
            written, bare = _names(table)
            if written in self.masked_tables:
                return True
            # Unqualified names may resolve to any schema on the search_path.
            if "." not in written and bare in bare_masked:
                return True
        return False

    def needed(self, event: Mapping[str, Any]) -> bool:
        if "sql" not in event and "params" not in event:
            return False
        if self.masked_tables is not None and not self.masked_tables:
            return False  # nothing is masked for this viewer
        decision = event.get("decision")
        if isinstance(decision, Mapping) and decision.get("rule") == "fail-closed":
            return True  # the analyzer could not tell which tables it touches
        if event.get("type") == "statement":
            tables = [*(event.get("reads") or ()), *(event.get("writes") or ())]
        elif isinstance(event.get("tables"), list) and event["tables"]:
            tables = [str(t) for t in event["tables"]]  # approval requests list theirs
        else:
            # Other events quoting a statement (approval requests) do not list its
            # tables: find them the way the proxy did.
            found = _tables_of(event.get("sql"))
            if found is None:
                return True
            tables = found
        return self.touches_masked(str(t) for t in tables)

    def event(self, event: dict[str, Any]) -> dict[str, Any]:
        """The event as this viewer may see it (a copy when anything changes)."""
        if not self.needed(event):
            return event
        out = dict(event)
        if isinstance(out.get("sql"), str):
            out["sql"] = redact_literals(out["sql"])
        if isinstance(out.get("params"), list):
            out["params"] = ["?" if p is not None else None for p in out["params"]]
        out["redacted"] = True
        return out
