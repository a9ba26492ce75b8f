"""The masking engine: which output columns to mask, and what to refuse outright.

A column's origin decides, not its name. Two sources of origin are combined and
both must be clean for a value to pass unmasked:

1. statement lineage (`sql.lineage`): every base column feeding each output,
   through expressions, subqueries, CTEs, views, UNION and whole-row references;
2. the RowDescription's table OID and attnum, mapped through the catalog.

Before a statement runs (`check`), the engine refuses what masking cannot make
safe: an origin it cannot trace (for groups with masked columns, unless the
policy says `on_unknown_origin: mask`), inference through predicates, ordering,
grouping or errors over masked columns (unless the mask is a pseudonym and the
use is equality between pseudonymized columns), EXPLAIN over masked tables,
planner statistics, COPY TO of masked columns, NOTIFY payloads and copies of
masked values into tables. After it runs (`plan`), result sets whose origin does
not match the analysis are masked whole: nothing unmasked leaves on a guess.

Pseudonym keys are per target (HMAC of the master key in the data dir), so the
same input gives the same token within a target and different tokens across.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbgov.durable import write_private
from dbgov.gate import ColumnMask, Decision, ResultPlan, SessionContext, Verdict
from dbgov.masking.maskers import Mask, Masker, MaskKind, validate
from dbgov.sql.lineage import lineage
from dbgov.sql.model import Analysis, Column, Lineage, Statement, Use

if TYPE_CHECKING:
    from dbgov.sql.catalog import Catalog
    from dbgov.wire.postgres.messages import FieldDescription

STRING_OIDS = frozenset({25, 1043, 1042, 19, 18, 114, 3802, 142})
STATS_RELATIONS = frozenset(
    {
        "pg_stats",
        "pg_statistic",
        "pg_stats_ext",
        "pg_statistic_ext",
        "pg_statistic_ext_data",
        "pg_stats_ext_exprs",
    }
)
# Uses that leak a masked value's content or order however the value is masked.
LEAKING_USES = frozenset(
    {Use.PREDICATE, Use.ORDER, Use.WINDOW, Use.DISTINCT_ON, Use.ERROR_PRONE, Use.NOTIFY, Use.WRITE}
)
# Uses a deterministic pseudonym keeps working for (equal inputs, equal tokens).
PSEUDONYM_SAFE = frozenset({Use.GROUP, Use.DISTINCT})
RULE = "masking"
_REDACT = Mask(MaskKind.REDACT)


def load_or_create_key(path: Path) -> bytes:
    if not path.exists():
        write_private(path, os.urandom(32).hex().encode())
    return bytes.fromhex(path.read_text().strip())


@dataclass(frozen=True, slots=True)
class _Col:
    mask: Mask
    exempt: frozenset[str]


class MaskingEngine:
    def __init__(
        self,
        columns: Mapping[str, _Col],
        on_unknown_origin: str,
        inference_guards: frozenset[str],
        master_key: bytes,
    ) -> None:
        self.columns = dict(columns)
        self.tables = {c.rsplit(".", 1)[0] for c in columns}
        self.on_unknown_origin = on_unknown_origin
        self.inference_guards = inference_guards
        self._master = master_key
        self._keys: dict[str, bytes] = {}
        self._maskers: dict[tuple[str, int, str], Masker] = {}
        self._checks: OrderedDict[tuple[Any, ...], tuple[Any, Decision | None]] = OrderedDict()

    @classmethod
    def from_policy(cls, policy: Any, key_path: Path) -> MaskingEngine:
        cfg = policy.masking_config
        cols = {
            name: _Col(validate({"kind": c.mask, **c.options}), frozenset(c.exempt))
            for name, c in cfg.columns.items()
        }
        return cls(
            cols,
            cfg.on_unknown_origin,
            frozenset(cfg.inference_guards),
            load_or_create_key(key_path),
        )

    # -- who sees what ---------------------------------------------------------------

    def active(self, ctx: SessionContext) -> bool:
        groups = ctx.identity.groups
        return any(not (groups & c.exempt) for c in self.columns.values())

    def mask_of(self, col: Column, groups: frozenset[str]) -> Mask | None:
        spec = self.columns.get(str(col))
        if spec is None or groups & spec.exempt:
            return None
        return spec.mask

    def masked_tables(self, groups: frozenset[str]) -> set[str]:
        return {name.rsplit(".", 1)[0] for name, c in self.columns.items() if not groups & c.exempt}

    def key_for(self, target: str) -> bytes:
        key = self._keys.get(target)
        if key is None:
            key = hmac.new(self._master, f"pseudonym:{target}".encode(), hashlib.sha256).digest()
            self._keys[target] = key
        return key

    # -- before the statement runs ----------------------------------------------------

    def check(
        self, analysis: Analysis, ctx: SessionContext, catalog: Catalog | None
    ) -> Decision | None:
        """A denial if masking cannot make this statement safe for this identity."""
        if not self.active(ctx):
            return None
        key = (
            id(analysis),
            ctx.identity.groups,
            ctx.target,
            ctx.search_path,
            id(catalog),
            catalog.version if catalog else -1,
        )
        hit = self._checks.get(key)
        if hit is not None and hit[0] is analysis:
            return hit[1]
        result = None
        for i, stmt in enumerate(analysis.statements):
            why = self._check_statement(stmt, ctx, catalog)
            if why is not None:
                reason, hint = why
                result = Decision(Verdict.DENY, RULE, reason, hint, statement_index=i)
                break
        self._checks[key] = (analysis, result)
        if len(self._checks) > 20_000:
            self._checks.popitem(last=False)
        return result

    def _check_statement(
        self, stmt: Statement, ctx: SessionContext, catalog: Catalog | None
    ) -> tuple[str, str | None] | None:
        groups = ctx.identity.groups
        for rel in stmt.reads:
            if rel.name in STATS_RELATIONS and rel.schema in (None, "pg_catalog"):
                return ("planner statistics can reveal masked values", None)
        masked_tables = self.masked_tables(groups)
        touched = {
            r.qualified(ctx.search_path[0] if ctx.search_path else "public")
            for r in stmt.reads | stmt.writes
        }
        if "explain" in stmt.flags and (touched & masked_tables or catalog is None):
            return (
                "EXPLAIN of a query over masked columns is not allowed",
                "run the query itself; plans can reveal masked values",
            )
        if not (
            stmt.returns_rows
            or stmt.kinds
            & {
                "copy_to",
                "insert",
                "update",
                "create_table_as",
                "notify",
                "declare",
                "prepare",
                "merge",
            }
            or "notify_payload" in stmt.flags
        ):
            return None
        if stmt.kind in ("execute", "fetch"):
            return None  # decided on the PREPARE / DECLARE the session remembers
        if catalog is None:
            if self.on_unknown_origin == "deny":
                return (
                    "the origin of the result columns cannot be checked yet",
                    "retry in a moment",
                )
            return None
        lin = lineage(stmt, catalog, ctx.search_path)
        if not lin.complete:
            if self.on_unknown_origin == "deny":
                return (
                    f"cannot tell where every result column comes from ({lin.reason})",
                    "select base columns by name, or ask for the data to be exposed",
                )
            return None
        if "copy_to" in stmt.kinds and any(
            self.mask_of(c, groups) for out in lin.outputs for c in out.sources
        ):
            return ("COPY TO of masked columns is not allowed", "use SELECT; results are masked")
        return self._inference(lin, groups)

    def _inference(self, lin: Lineage, groups: frozenset[str]) -> tuple[str, str | None] | None:
        guarded = bool(groups & self.inference_guards)
        for col, use in sorted(lin.uses, key=lambda u: (str(u[0]), u[1].value)):
            mask = self.mask_of(col, groups)
            if mask is None:
                continue
            if use in (Use.NOTIFY, Use.WRITE):
                verb = "into a notification" if use is Use.NOTIFY else "into a table"
                return (f"copying masked column {col} {verb} is not allowed", None)
            if not guarded:
                continue
            pseudo = mask.kind is MaskKind.PSEUDONYM
            if use in PSEUDONYM_SAFE and pseudo:
                continue
            if use is Use.JOIN_EQ and pseudo and self._eq_partner_ok(col, lin, groups):
                continue
            what = {
                Use.PREDICATE: "filter or compare on",
                Use.ORDER: "sort by",
                Use.GROUP: "group by",
                Use.DISTINCT: "DISTINCT over",
                Use.DISTINCT_ON: "DISTINCT ON",
                Use.WINDOW: "partition by",
                Use.ERROR_PRONE: "cast or compute on",
                Use.JOIN_EQ: "join on",
            }.get(use, use)
            return (
                f"you may not {what} masked column {col} ({mask.kind.value})",
                "masked columns can be returned, counted and, when pseudonymized, grouped "
                "and joined to other pseudonymized columns",
            )
        return None

    def _eq_partner_ok(self, col: Column, lin: Lineage, groups: frozenset[str]) -> bool:
        partners = [b for a, b in lin.eq_pairs if a == col] + [
            a for a, b in lin.eq_pairs if b == col
        ]
        if not partners:
            return False
        for other in partners:
            m = self.mask_of(other, groups)
            if m is None or m.kind is not MaskKind.PSEUDONYM:
                return False
        return True

    # -- after it runs: the result plan -----------------------------------------------------

    def plan(
        self,
        stmt: Statement,
        fields: tuple[FieldDescription, ...],
        ctx: SessionContext,
        catalog: Catalog | None,
    ) -> ResultPlan | Decision:
        groups = ctx.identity.groups
        lin = lineage(stmt, catalog, ctx.search_path) if catalog is not None else None
        if lin is None or not lin.complete or len(lin.outputs) != len(fields):
            return self._all(fields, ctx.target, "origin unknown")
        key = self.key_for(ctx.target)
        cols: list[ColumnMask] = []
        for i, f in enumerate(fields):
            out = lin.outputs[i]
            sources = set(out.sources)
            if f.table_oid and catalog is not None:
                rel = catalog.by_oid.get(f.table_oid)
                if rel is None:
                    return self._all(fields, ctx.target, "unknown table in result")
                cat_col = rel.column_by_attnum(f.attnum)
                if cat_col is not None:
                    sources.add(Column(rel.schema, rel.name, cat_col.name))
            masks = {c: m for c in sources if (m := self.mask_of(c, groups)) is not None}
            if not masks:
                continue
            distinct = set(masks.values())
            mask = distinct.pop() if len(distinct) == 1 else _REDACT
            if (
                out.direct is None
                and f.type_oid not in STRING_OIDS
                and mask.kind is not MaskKind.BUCKET
            ):
                mask = Mask(MaskKind.NULL)  # derived, and the type cannot hold a masked string
            label = (
                str(out.direct)
                if out.direct is not None and len(masks) == 1
                else f"{f.name} <- {', '.join(sorted(str(c) for c in masks))}"
            )
            m = self._masker(mask, f.type_oid, ctx.target, key)
            cols.append(ColumnMask(i, label, mask.kind.value, m.text, m.binary))
        return ResultPlan(tuple(cols))

    def _masker(self, mask: Mask, type_oid: int, target: str, key: bytes) -> Masker:
        k = (repr(mask), type_oid, target)
        m = self._maskers.get(k)
        if m is None:
            m = Masker(mask, type_oid, key)
            self._maskers[k] = m
        return m

    def _all(self, fields: tuple[FieldDescription, ...], target: str, why: str) -> ResultPlan:
        key = self.key_for(target)
        cols = []
        for i, f in enumerate(fields):
            m = self._masker(
                _REDACT if f.type_oid in STRING_OIDS else Mask(MaskKind.NULL),
                f.type_oid,
                target,
                key,
            )
            cols.append(ColumnMask(i, f"{f.name} ({why})", "redact", m.text, m.binary))
        return ResultPlan(tuple(cols))
