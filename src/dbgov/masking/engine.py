"""The masking engine: which output columns to mask, and what to refuse outright.

A column's origin decides, not its name. Two sources of origin are combined and
both must be clean for a value to pass unmasked:

1. statement lineage (`sql.lineage`): every base column feeding each output,
   through expressions, subqueries, CTEs, views, UNION and whole-row references;
2. the RowDescription's table OID and attnum, mapped through the catalog. For a
   column of a domain type PostgreSQL reports the domain's base type (printtup.c),
   so maskers see text, not the domain; types they do not know become NULL.

Theory of operation. Before a statement runs (`check`), the engine refuses what
masking cannot make safe:

- an origin it cannot trace (for groups with masked columns, unless the policy
  says `on_unknown_origin: mask`); values that would leave other than as result
  rows (COPY TO, INSERT ... SELECT, CTAS, NOTIFY, settings) are refused whatever
  that setting says, since nothing downstream could mask them;
- inference through predicates, ordering, grouping, row counts or errors over
  masked columns (unless the mask is a pseudonym and the use is equality between
  pseudonymized columns, or grouping by the column itself);
- EXPLAIN of a query over masked columns (plans and estimates reveal values),
  planner statistics, COPY TO of masked columns, NOTIFY payloads and copies of
  masked values into tables;
- DDL on a table with masked columns (a renamed column is no longer masked; an
  index, constraint, policy or generated column can copy or probe its values),
  and DDL that reads one other than CREATE VIEW (views are traced when queried);
- writes into a table whose pseudonymized columns the identity sees masked: a
  chosen value written there would come back as a token comparable with every
  other row's (a dictionary attack on names and emails);
- for guarded groups, planner settings (enable_*, work_mem, costs) that would make
  GROUP BY, DISTINCT and joins on a pseudonymized column return rows sorted by
  the raw values.

After it runs (`plan`), each output column gets its mask. An output that IS a
masked column (lineage `direct`, confirmed by the RowDescription origin) gets the
column's own mask. Anything computed from a masked column gets a constant: the
redaction marker for string and JSON types, NULL elsewhere, for every row, NULL
included. Masking a computed value with the column's mask would leak: a partial
mask keeps whatever the query puts at the end (`substr(phone, 1, 4)`), a
pseudonym of `CASE WHEN false THEN email ELSE 'a guess' END` tokenizes a chosen
value, and a NULL passing through would answer `substring(ssn from '^9')`.
Result sets whose origin does not match the analysis are masked whole: nothing
unmasked leaves on a guess.

Pseudonym keys are per target (HMAC of the master key in the data dir), so the
same input gives the same token within a target and different tokens across.
Masked values are memoized per masker (masking/memo.py): repeated scans and joins
see the same values again, and a lookup costs a fraction of an HMAC or a PII scan.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pglast.ast import FuncCall

from dbgov.durable import write_private
from dbgov.gate import ColumnMask, Decision, ResultPlan, SessionContext, Verdict
from dbgov.masking import order
from dbgov.masking.known import KnownValues, label_of
from dbgov.masking.maskers import Mask, Masker, MaskKind, validate
from dbgov.masking.memo import Memo
from dbgov.sql.lineage import compute_lineage, lineage
from dbgov.sql.model import Analysis, Column, Lineage, Relation, Statement, Use
from dbgov.sql.nodes import func_name, string_const, walk

if TYPE_CHECKING:
    from dbgov.sql.catalog import Catalog
    from dbgov.wire.postgres.messages import FieldDescription

# Types the maskers can give a redaction marker (maskers.py: text, varchar, bpchar,
# name; json and jsonb as a JSON string). "char" (18) and xml (142) are not among
# them: a masked value of those types is NULL.
REDACTABLE_OIDS = frozenset({25, 1043, 1042, 19, 114, 3802})
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
# Uses a deterministic pseudonym keeps working for (equal inputs, equal tokens).
PSEUDONYM_SAFE = frozenset({Use.GROUP, Use.DISTINCT})
# Uses after which the server may return rows in the order of the raw values (a sort
# or merge on them) or of their unkeyed hash (hash aggregation): either ranks masked
# values, which matched against a list of candidates links tokens to them.
_ORDERING_USES = frozenset({Use.GROUP, Use.DISTINCT, Use.DISTINCT_ON, Use.JOIN_EQ, Use.WINDOW})
_SELECT_ONLY = frozenset({"select"})
_SENDS_A_QUERY = frozenset({"declare", "copy_to", "prepare"})  # its rows: FETCH, COPY, EXECUTE
_NONE: frozenset[int] = frozenset()
# Masks whose tokens are deterministic: a chosen input reveals every equal value.
TOKEN_MASKS = frozenset({MaskKind.PSEUDONYM, MaskKind.HASH})
# Statements whose column values may leave: through rows (lineage outputs) or into
# tables, files and notifications (lineage WRITE/NOTIFY uses).
_DATA_KINDS = frozenset(
    {
        "copy_to",
        "insert",
        "update",
        "delete",
        "merge",
        "create_table_as",
        "create_matview",
        "notify",
        "declare",
        "prepare",
    }
)
# Values of these leave other than as result rows: nothing after the server could
# mask them, so an unknown origin is refused even with on_unknown_origin: mask.
_OUTFLOW_KINDS = frozenset(
    {"copy_to", "insert", "update", "merge", "create_table_as", "create_matview", "notify"}
)
_OUTFLOW_FLAGS = frozenset({"notify_payload", "into_table"})
_WRITE_KINDS = frozenset({"insert", "update", "merge", "copy_from"})
# DDL and maintenance that disclose nothing of a table's values: removing data,
# vacuuming, re-indexing, locking. (CLUSTER is not among them: it stores the rows in
# index order, which later scans return.) DDL that copies a query is traced by lineage.
_SCHEMA_CATEGORIES = frozenset({"ddl", "utility"})
_DDL_NO_DISCLOSURE = frozenset({"drop", "truncate", "vacuum", "analyze", "reindex", "lock"})
_DDL_TRACED_READS = frozenset({"create_view", "create_table_as", "create_matview"})
# Planner settings: with hash aggregation or hash joins off (or too little memory for
# them), GROUP BY, DISTINCT and joins on a pseudonymized column come back sorted by
# the raw values.
_PLANNER_SETTINGS = frozenset(
    {
        "work_mem",
        "hash_mem_multiplier",
        "random_page_cost",
        "seq_page_cost",
        "cpu_tuple_cost",
        "cpu_index_tuple_cost",
        "cpu_operator_cost",
        "effective_cache_size",
    }
)
RULE = "masking"
_REDACT = Mask(MaskKind.REDACT)
_NULL = Mask(MaskKind.NULL)
_USE_VERBS = {
    Use.PREDICATE: "filter or compare on",
    Use.ORDER: "sort by",
    Use.GROUP: "group by",
    Use.DISTINCT: "DISTINCT over",
    Use.DISTINCT_ON: "DISTINCT ON",
    Use.WINDOW: "partition by",
    Use.ERROR_PRONE: "cast or compute on",
    Use.JOIN_EQ: "join on",
}

_Why = tuple[str, str | None]


def load_or_create_key(path: Path) -> bytes:
    if not path.exists():
        try:
            write_private(path, os.urandom(32).hex().encode())
        except FileExistsError:
            pass  # another worker created it first: every worker must use that one
    return bytes.fromhex(path.read_text().strip())


@dataclass(frozen=True, slots=True)
class _Col:
    mask: Mask
    exempt: frozenset[str]


class _Constant:
    """A column function that returns the same bytes whatever it is given."""

    __slots__ = ("value",)

    def __init__(self, value: bytes | None) -> None:
        self.value = value

    def __call__(self, _: bytes) -> bytes | None:
        return self.value


class _Fns:
    """A masker's text and binary functions, memoized (one memo when they are the
    same function, as for string types)."""

    __slots__ = ("binary", "kind", "masker", "text")

    def __init__(self, masker: Masker) -> None:
        self.masker = masker
        self.kind = masker.mask.kind.value
        self.text = Memo(masker.text)
        self.binary = self.text if masker.binary is masker.text else Memo(masker.binary)


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
        self._active: dict[frozenset[str], bool] = {}
        self._maskers: dict[tuple[str, int, str, str | None], _Fns] = {}
        # pii_text maskers with known values, with the value tuples they were built
        # from (one per key: changed values replace the masker, and its memo with it).
        self._known_maskers: dict[
            tuple[str, int, str, str | None], tuple[tuple[tuple[str, ...], ...], _Fns]
        ] = {}
        self._checks: OrderedDict[tuple[Any, ...], tuple[Any, Decision | None, frozenset[int]]] = (
            OrderedDict()
        )

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
        hit = self._active.get(groups)
        if hit is None:
            hit = any(not (groups & c.exempt) for c in self.columns.values())
            self._active[groups] = hit
        return hit

    def mask_of(self, col: Column, groups: frozenset[str]) -> Mask | None:
        spec = self.columns.get(str(col))
        if spec is None or groups & spec.exempt:
            return None
        return spec.mask

    def masked_tables(self, groups: frozenset[str], kinds: Iterable[MaskKind] = ()) -> set[str]:
        """Tables with a column masked for these groups (with one of `kinds`, if given)."""
        wanted = frozenset(kinds)
        return {
            name.rsplit(".", 1)[0]
            for name, c in self.columns.items()
            if not groups & c.exempt and (not wanted or c.mask.kind in wanted)
        }

    def known_sources(self) -> frozenset[str]:
        """Columns whose values pii_text masks look for in free text (known.py)."""
        return frozenset(col for c in self.columns.values() for col in c.mask.known)

    def audit_token(self, value: bytes) -> str:
        """A keyed, deterministic stand-in for a secret bind parameter in the ledger."""
        digest = hmac.new(self._master, b"audit-param:" + value, hashlib.sha256).hexdigest()
        return f"hmac:{digest[:32]}"

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
        return self._checked(analysis, ctx, catalog)[0]

    def unordered(
        self, analysis: Analysis, ctx: SessionContext, catalog: Catalog | None
    ) -> frozenset[int]:
        """The statements (by index) of this allowed string whose rows must reach the
        client in random order (masking/order.py): they group, deduplicate, partition
        or join on a masked column, so the server's order would rank its values."""
        return self._checked(analysis, ctx, catalog)[1]

    def _checked(
        self, analysis: Analysis, ctx: SessionContext, catalog: Catalog | None
    ) -> tuple[Decision | None, frozenset[int]]:
        if not self.active(ctx):
            return None, _NONE
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
            return hit[1], hit[2]
        result = None
        for i, stmt in enumerate(analysis.statements):
            why = self._check_statement(stmt, ctx, catalog)
            if why is not None:
                reason, hint = why
                result = Decision(Verdict.DENY, RULE, reason, hint, statement_index=i)
                break
        unordered = _NONE
        if result is None and catalog is not None:
            need: list[int] = []
            for i, stmt in enumerate(analysis.statements):
                if not self._orders_by_masked(stmt, ctx, catalog):
                    continue
                refused = order.refusal(stmt.node)
                if refused is not None:
                    result = Decision(
                        Verdict.DENY, RULE, refused, order.REFUSAL_HINT, statement_index=i
                    )
                    need = []
                    break
                need.append(i)
            unordered = frozenset(need)
        self._checks[key] = (analysis, result, unordered)
        if len(self._checks) > 20_000:
            self._checks.popitem(last=False)
        return result, unordered

    def _orders_by_masked(self, stmt: Statement, ctx: SessionContext, catalog: Catalog) -> bool:
        # Reads only: a data-modifying WITH must stay at the top level, where it is.
        if stmt.kinds - _SENDS_A_QUERY != _SELECT_ONLY or stmt.flags & _OUTFLOW_FLAGS:
            return False
        if not (stmt.returns_rows or stmt.kind in _SENDS_A_QUERY):
            return False
        lin = lineage(stmt, catalog, ctx.search_path)
        groups = ctx.identity.groups
        return any(
            use in _ORDERING_USES and self.mask_of(col, groups) is not None for col, use in lin.uses
        )

    def _check_statement(
        self, stmt: Statement, ctx: SessionContext, catalog: Catalog | None
    ) -> _Why | None:
        groups = ctx.identity.groups
        for rel in stmt.reads:
            if rel.name in STATS_RELATIONS and rel.schema in (None, "pg_catalog"):
                return ("planner statistics can reveal masked values", None)
        if groups & self.inference_guards:
            why = _planner(stmt)
            if why is not None:
                return why
        masked = self.masked_tables(groups)
        reads = _qualified(stmt.reads, ctx, catalog)
        writes = _qualified(stmt.writes, ctx, catalog)
        why = self._ddl(stmt, reads & masked, writes & masked)
        if why is not None:
            return why
        if stmt.kinds & _WRITE_KINDS:
            planted = writes & self.masked_tables(groups, TOKEN_MASKS)
            if planted:
                return (
                    f"writing into {', '.join(sorted(planted))} is not allowed: its "
                    "pseudonymized columns would turn chosen values into tokens that "
                    "match other rows",
                    "ask someone who sees these columns unmasked to make the change",
                )
        if "explain" in stmt.flags:
            return self._explain(stmt, ctx, catalog, (reads | writes) & masked)
        if not (stmt.returns_rows or stmt.kinds & _DATA_KINDS or stmt.flags & _OUTFLOW_FLAGS):
            return None
        if stmt.kind in ("execute", "fetch"):
            return None  # decided on the PREPARE / DECLARE the session remembers
        outflow = bool(stmt.kinds & _OUTFLOW_KINDS or stmt.flags & _OUTFLOW_FLAGS)
        if catalog is None:
            if self.on_unknown_origin == "deny" or outflow:
                return (
                    "the origin of the result columns cannot be checked yet",
                    "retry in a moment",
                )
            return None
        lin = lineage(stmt, catalog, ctx.search_path)
        if not lin.complete:
            if self.on_unknown_origin == "deny" or outflow:
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

    def _ddl(self, stmt: Statement, reads: set[str], writes: set[str]) -> _Why | None:
        if not stmt.categories & _SCHEMA_CATEGORIES:
            return None
        if writes and not stmt.kinds <= _DDL_NO_DISCLOSURE:
            return (
                f"changing {', '.join(sorted(writes))} is not allowed for you: it has "
                "masked columns, and a renamed column, an index, a constraint, a policy "
                "or a generated column could expose or probe their values",
                "ask someone who sees these columns unmasked to make the change",
            )
        if reads and stmt.kind not in _DDL_TRACED_READS:
            return (
                f"this statement refers to {', '.join(sorted(reads))}, which has masked "
                "columns, in a way masking cannot follow (rules, constraints, policies)",
                "views over masked tables are fine: they are masked when queried",
            )
        return None

    def _explain(
        self, stmt: Statement, ctx: SessionContext, catalog: Catalog | None, touched: set[str]
    ) -> _Why | None:
        """EXPLAIN shows filters, estimates from statistics and, with ANALYZE, row
        counts: refused when the explained query reaches a masked column, through
        views too, or when that cannot be told."""
        denial = (
            "EXPLAIN of a query over masked columns is not allowed",
            "run the query itself; plans can reveal masked values",
        )
        inner = getattr(stmt.node, "query", None)
        if touched or catalog is None or inner is None:
            return denial
        lin = compute_lineage(inner, catalog, ctx.search_path)
        if not lin.complete:
            return denial
        groups = ctx.identity.groups
        used = {c for c, _ in lin.uses} | {c for out in lin.outputs for c in out.sources}
        return denial if any(self.mask_of(c, groups) for c in used) else None

    def _inference(self, lin: Lineage, groups: frozenset[str]) -> _Why | None:
        guarded = bool(groups & self.inference_guards)
        for col, use in sorted(lin.uses, key=lambda u: (str(u[0]), u[1].value)):
            mask = self.mask_of(col, groups)
            if mask is None:
                continue
            if use in (Use.NOTIFY, Use.WRITE):
                where = "into a notification" if use is Use.NOTIFY else "into a table or setting"
                return (f"copying masked column {col} {where} is not allowed", None)
            if not guarded:
                continue
            pseudo = mask.kind is MaskKind.PSEUDONYM
            if use in PSEUDONYM_SAFE and pseudo:
                continue
            if use is Use.JOIN_EQ and pseudo and self._eq_partner_ok(col, lin, groups):
                continue
            return (
                f"you may not {_USE_VERBS.get(use, use.value)} masked column {col} "
                f"({mask.kind.value})",
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
        if "explain" in stmt.flags and catalog is not None:
            return ResultPlan()  # `check` refused every plan of a query over masked columns
        groups = ctx.identity.groups
        lin = lineage(stmt, catalog, ctx.search_path) if catalog is not None else None
        if lin is None or catalog is None or not lin.complete or len(lin.outputs) != len(fields):
            return self._all(fields, ctx, "origin unknown")
        key = self.key_for(ctx.target)
        cols: list[ColumnMask] = []
        for i, f in enumerate(fields):
            out = lin.outputs[i]
            sources = set(out.sources)
            direct = out.direct
            if f.table_oid:
                rel = catalog.by_oid.get(f.table_oid)
                if rel is None:
                    return self._all(fields, ctx, "unknown table in result")
                if rel.kind not in ("v", "m"):  # a view's columns are traced by lineage
                    cat_col = rel.column_by_attnum(f.attnum)
                    if cat_col is None and f.attnum > 0:
                        return self._all(fields, ctx, "unknown column in result")
                    if cat_col is not None:
                        served = Column(rel.schema, rel.name, cat_col.name)
                        sources.add(served)
                        if direct != served:
                            direct = None  # the server and the analysis disagree
            masks = {c: mask for c in sources if (mask := self.mask_of(c, groups)) is not None}
            if not masks:
                continue
            if direct is not None and set(masks) == {direct}:
                fns = self._masker(masks[direct], f.type_oid, ctx, key, catalog)
                if fns is not None:
                    cols.append(ColumnMask(i, str(direct), fns.kind, fns.text, fns.binary))
                else:  # pii_text whose known values could not be loaded: fail closed
                    label = f"{direct} (known values not loaded)"
                    cols.append(self._constant(i, label, f.type_oid, ctx, key))
            else:
                label = f"{f.name} <- {', '.join(sorted(str(c) for c in masks))}"
                cols.append(self._constant(i, label, f.type_oid, ctx, key))
        return ResultPlan(tuple(cols))

    def _masker(
        self,
        mask: Mask,
        type_oid: int,
        ctx: SessionContext,
        key: bytes,
        catalog: Catalog | None = None,
    ) -> _Fns | None:
        """The column's masker; None when its known values are not loaded (the caller
        then redacts the column whole)."""
        k = (repr(mask), type_oid, ctx.target, ctx.time_zone)
        if mask.known:
            return self._known_masker(k, mask, type_oid, ctx, key, catalog)
        fns = self._maskers.get(k)
        if fns is None:
            fns = _Fns(Masker(mask, type_oid, key, time_zone=ctx.time_zone))
            self._maskers[k] = fns
        return fns

    def _known_masker(
        self,
        k: tuple[str, int, str, str | None],
        mask: Mask,
        type_oid: int,
        ctx: SessionContext,
        key: bytes,
        catalog: Catalog | None,
    ) -> _Fns | None:
        if catalog is None:
            return None
        current: list[tuple[str, ...]] = []
        for column in mask.known:
            values = catalog.known.get(column)
            if values is None:
                return None
            current.append(values)
        # The same value tuples (a reload that found no change keeps them, see
        # proxy/catalogs.py): the same masker, its memo warm. Compared by identity;
        # the entry holds them, so an id cannot be reused meanwhile.
        hit = self._known_maskers.get(k)
        if hit is not None and all(a is b for a, b in zip(hit[0], current, strict=True)):
            return hit[1]
        sources: dict[str, tuple[str, ...]] = {}
        for column, values in zip(mask.known, current, strict=True):
            sources[label_of(column)] = sources.get(label_of(column), ()) + values
        known = KnownValues(sources)
        fns = _Fns(Masker(mask, type_oid, key, time_zone=ctx.time_zone, known=known))
        self._known_maskers[k] = (tuple(current), fns)
        return fns

    def _constant(
        self, index: int, label: str, type_oid: int, ctx: SessionContext, key: bytes
    ) -> ColumnMask:
        """The redaction marker (string and JSON types) or NULL, for every row."""
        mask = _REDACT if type_oid in REDACTABLE_OIDS else _NULL
        fns = self._masker(mask, type_oid, ctx, key)
        assert fns is not None  # redact and null need no known values
        m = fns.masker
        # Redaction ignores its input; jsonb's binary form wants the version byte.
        text: Callable[[bytes], bytes | None] = _Constant(m.text(b"\x01"))
        binary: Callable[[bytes], bytes | None] = _Constant(m.binary(b"\x01"))
        return ColumnMask(index, label, mask.kind.value, text, binary, constant=True)

    def _all(
        self, fields: tuple[FieldDescription, ...], ctx: SessionContext, why: str
    ) -> ResultPlan:
        key = self.key_for(ctx.target)
        return ResultPlan(
            tuple(
                self._constant(i, f"{f.name} ({why})", f.type_oid, ctx, key)
                for i, f in enumerate(fields)
            )
        )


def _planner(stmt: Statement) -> _Why | None:
    """Planner settings that would return masked columns in their raw order."""
    hint = "grouping and joining pseudonymized columns relies on the default plans"
    if stmt.set_param is not None:
        name, value = stmt.set_param
        if value != "DEFAULT" and _is_planner_setting(name):
            return (
                f"changing {name} is not allowed for you: plans it favours can return "
                "masked values in their raw order",
                hint,
            )
    if "set_config" in stmt.functions:
        for node in walk(stmt.node):
            if not isinstance(node, FuncCall) or func_name(node)[1].lower() != "set_config":
                continue
            args = node.args or ()
            setting = string_const(args[0]) if args else None
            if setting is None or _is_planner_setting(setting.lower()):
                return (
                    f"set_config({setting or '...'}) is not allowed for you: planner settings "
                    "can return masked values in their raw order",
                    hint,
                )
    return None


def _is_planner_setting(name: str) -> bool:
    return name.startswith("enable_") or name in _PLANNER_SETTINGS


def planner_settings(params: Iterable[str]) -> list[str]:
    """The planner settings among startup parameter names: refused, as SET is, to an
    identity whose results are masked."""
    return [p for p in params if _is_planner_setting(p.lower())]


def _qualified(rels: Iterable[Relation], ctx: SessionContext, catalog: Catalog | None) -> set[str]:
    """schema.name of each relation as the server resolves it; without a catalog,
    every schema on the search_path it could be in."""
    out: set[str] = set()
    for r in rels:
        hit = catalog.resolve(r, ctx.search_path) if catalog is not None else None
        if hit is not None:
            out.add(f"{hit.schema}.{hit.name}")
        elif r.schema is not None:
            out.add(f"{r.schema}.{r.name}")
        else:
            out.update(f"{s}.{r.name}" for s in ctx.search_path or ("public",))
    return out
