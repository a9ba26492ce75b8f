"""Values and name scopes for lineage: what a column reference means.

A `Val` is what lineage knows about one value: the base columns feeding it, the
single column it returns unchanged (`direct`), and which of its sources already
had their comparison recorded (`judged`, so `WHERE a = b` records JOIN_EQ and not
also PREDICATE).

Name resolution follows PostgreSQL's parse namespaces (parse_relation.c): each
query level holds namespace items, one per FROM item plus one per join. An item
can be visible by its name (`t.col`, `t.*`), by its columns (`col`), or both; a
join hides the columns of its inputs behind its own item, which lists the merged
USING columns first, so `SELECT id FROM a JOIN b USING (id)` is not ambiguous but
`... JOIN b ON a.id = b.id` is. Anything PostgreSQL would reject or we cannot
decide raises `Unresolvable`, which lineage turns into complete=False.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from dbgov.sql.model import Column


class Unresolvable(Exception):
    """Lineage cannot be traced; the message says why (it reaches the user)."""


@dataclass(frozen=True, slots=True)
class Val:
    sources: frozenset[Column] = frozenset()
    direct: Column | None = None
    judged: frozenset[Column] = frozenset()

    @staticmethod
    def of(column: Column) -> Val:
        return Val(frozenset({column}), column)

    def derived(self) -> Val:
        """The same sources, no longer the column itself."""
        return Val(self.sources, None, self.judged) if self.direct is not None else self


NOTHING = Val()


def union(vals: Iterable[Val]) -> Val:
    """A value computed from several values: all their sources, never direct."""
    sources: set[Column] = set()
    judged: set[Column] = set()
    for v in vals:
        sources |= v.sources
        judged |= v.judged
    return Val(frozenset(sources), None, frozenset(judged))


def merge(a: Val, b: Val) -> Val:
    """Two values that may each be the output (UNION arms, recursive CTE terms)."""
    return Val(
        a.sources | b.sources, a.direct if a.direct == b.direct else None, a.judged | b.judged
    )


Output = tuple[str, Val]


@dataclass(slots=True)
class Item:
    """One namespace item: a FROM item, a join, or RETURNING's old/new."""

    refname: str | None
    columns: list[Output]
    label: str  # for messages: "public.customers", "subquery x", "function f"
    schema: str | None = None  # real schema, for schema.table.col on unaliased tables
    rel_visible: bool = True
    cols_visible: bool = True
    # Columns not known (a function returning records, a catalog relation we have no
    # column list for): any name resolves through this.
    opaque: Callable[[str], Val] | None = None

    def column(self, name: str) -> Val | None:
        hits = [v for n, v in self.columns if n == name]
        if len(hits) > 1:
            raise Unresolvable(f"column reference {name!r} is ambiguous in {self.label}")
        if hits:
            return hits[0]
        return self.opaque(name) if self.opaque is not None else None

    def expand(self) -> list[Output]:
        if self.opaque is not None:
            raise Unresolvable(f"cannot list the columns of {self.label}")
        return list(self.columns)

    def whole_row(self) -> Val:
        return union(v for _, v in self.expand())


@dataclass(slots=True)
class Scope:
    """The namespace items of one query level, and the enclosing level."""

    items: list[Item] = field(default_factory=list)
    parent: Scope | None = None
    # CTE name -> CTE, as visible at this level (queries.Cte; Any keeps this module
    # free of the query evaluator).
    ctes: dict[str, Any] = field(default_factory=dict)

    def levels(self) -> Iterable[Scope]:
        level: Scope | None = self
        while level is not None:
            yield level
            level = level.parent

    def find_item(self, refname: str, schema: str | None = None) -> Item | None:
        for level in self.levels():
            hits = [
                i
                for i in level.items
                if i.rel_visible and i.refname == refname and (schema is None or i.schema == schema)
            ]
            if len(hits) > 1:
                raise Unresolvable(f"table reference {refname!r} is ambiguous")
            if hits:
                return hits[0]
        return None

    def find_column(self, name: str) -> Val | None:
        """An unqualified column: the innermost level that has it, uniquely."""
        for level in self.levels():
            known: list[Val] = []
            unknown: list[Item] = []
            for item in level.items:
                if not item.cols_visible:
                    continue
                hits = [v for n, v in item.columns if n == name]
                known.extend(hits)
                if not hits and item.opaque is not None:
                    unknown.append(item)
            if len(known) > 1:
                raise Unresolvable(f"column reference {name!r} is ambiguous")
            if known:
                return known[0]
            if unknown:
                # It may be a column of an item whose columns we do not know, or of
                # an outer level: take every candidate (never guess which).
                candidates = [u.column(name) for u in unknown]
                outer = level.parent.find_column(name) if level.parent is not None else None
                vals = [v for v in [*candidates, outer] if v is not None]
                return vals[0] if len(vals) == 1 else union(vals)
        return None

    def visible_columns(self) -> list[Output]:
        """What `*` means at this level."""
        out: list[Output] = []
        for item in self.items:
            if item.cols_visible:
                out.extend(item.expand())
        return out


def rename(columns: list[Output], aliases: tuple[str, ...], label: str) -> list[Output]:
    """Apply `AS x(a, b)` column aliases to the first columns."""
    if len(aliases) > len(columns):
        raise Unresolvable(f"{label} has {len(columns)} columns but {len(aliases)} aliases")
    return [(aliases[i] if i < len(aliases) else n, v) for i, (n, v) in enumerate(columns)]
