"""A snapshot of one target's catalog, as lineage and masking need it.

The proxy loads it from the upstream database (see `proxy/catalogs.py`) and
refreshes it after DDL; `sql/` only reads it, so analysis stays free of I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from dbgov.sql.model import Relation


@dataclass(frozen=True, slots=True)
class CatalogColumn:
    name: str
    attnum: int
    type_oid: int


@dataclass(frozen=True, slots=True)
class CatalogRelation:
    oid: int
    schema: str
    name: str
    kind: str  # pg_class.relkind: 'r' table, 'p' partitioned, 'v' view, 'm' matview, 'f' foreign
    columns: tuple[CatalogColumn, ...]  # in attnum order, dropped columns left out
    view_sql: str | None = None  # pg_get_viewdef() for views and matviews

    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column_by_attnum(self, attnum: int) -> CatalogColumn | None:
        for c in self.columns:
            if c.attnum == attnum:
                return c
        return None


@dataclass(slots=True)
class Catalog:
    relations: dict[tuple[str, str], CatalogRelation] = field(default_factory=dict)
    by_oid: dict[int, CatalogRelation] = field(default_factory=dict)
    # Non-builtin functions (schema, name): their bodies are invisible to lineage.
    user_functions: frozenset[tuple[str, str]] = frozenset()
    version: int = 0
    # The search_path in effect when pg_get_viewdef() produced `view_sql`: it leaves
    # names unqualified when that path finds them, so lineage MUST resolve view
    # bodies with this path, never the session's (a session could otherwise make a
    # view's `customers` mean its own table). Empty: pg_get_viewdef ran with
    # search_path = pg_catalog, so every name in a view body is qualified.
    view_search_path: tuple[str, ...] = ("public",)
    # Distinct values of the columns pii_text masks look for in free text
    # (masking/known.py), by "schema.table.column"; None: they could not be loaded.
    known: dict[str, tuple[str, ...] | None] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        relations: Iterable[CatalogRelation],
        user_functions: Iterable[tuple[str, str]] = (),
        version: int = 0,
        view_search_path: Sequence[str] = ("public",),
    ) -> Catalog:
        rels = list(relations)
        return cls(
            relations={(r.schema, r.name): r for r in rels},
            by_oid={r.oid: r for r in rels},
            user_functions=frozenset(user_functions),
            version=version,
            view_search_path=tuple(view_search_path),
        )

    def resolve(self, rel: Relation, search_path: Sequence[str]) -> CatalogRelation | None:
        """Find a relation the way PostgreSQL does: qualified, else first hit on the path.

        pg_catalog is searched first unless the path names it explicitly.
        """
        if rel.schema is not None:
            return self.relations.get((rel.schema, rel.name))
        path = list(search_path)
        if "pg_catalog" not in path:
            path.insert(0, "pg_catalog")
        for schema in path:
            hit = self.relations.get((schema, rel.name))
            if hit is not None:
                return hit
        return None
