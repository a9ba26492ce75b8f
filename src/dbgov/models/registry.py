"""The model registry: declared models, and which of them a statement changes.

Built once per policy (`ModelRegistry.of`), pure and without I/O, so the policy
engine (rule matching, `stmt.models` in conditions) and the proxy session (the
`models` field of statement events) ask the same question and get the same
answer.

A statement affects a model on a target when the model is declared on that
target and the statement changes one of its input tables: it writes the table
(resolved against the search_path the way the engine resolves it, every
candidate of an unqualified name counting) with a WRITE or DDL kind, and, when
the model narrows that table to some columns, the change is not an UPDATE that
only sets other columns (`effects.py`). PREPARE is not a change (its EXECUTE
is); plain EXPLAIN writes nothing. Reads never link.

Statement events carry the links as

    "models": [{"name": "churn-v2", "tables": ["public.customers"], "statements": [0]}]

where `statements` are the indexes, within the event's query, of the statements
that made the change: the `rows` of the matching `statement.done` (same index)
are the rows affected.

Cost on the proxy's path (timeit, demo policy, 2 vCPU dev VM): a statement that
names no input table, ~1 us; a change of an input, ~15 us the first time
(~70 us when the input is narrowed to columns: the parse tree is walked), then
~2 us from a cache keyed by the shared `Analysis` object.

Known blind spots, which the report documents: changes through a view, a
trigger, a foreign-key cascade, a function body or a renamed table are not seen,
because the analyzer only knows what the statement text names.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from dbgov.models.effects import WHOLE_ROWS, changed_columns
from dbgov.policy.model import PolicyFile
from dbgov.policy.resolve import StatementView, parse_search_path, resolve_any
from dbgov.sql.model import Analysis, Category, Relation, Statement

__all__ = ["MODEL_INPUT", "Model", "ModelInput", "ModelRegistry", "model_links"]

log = logging.getLogger(__name__)

MODEL_INPUT: Final = "model_input"
"""The tag every input table of a declared model carries."""
_CHANGES: Final = frozenset({Category.WRITE, Category.DDL})
LINKS_CACHE: Final = 4096
_NOT_A_CHANGE: Final = frozenset({"prepare"})


@dataclass(frozen=True, slots=True)
class ModelInput:
    """One table feeding a model; `columns` None means the whole row."""

    table: str
    columns: frozenset[str] | None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"table": self.table}
        if self.columns is not None:
            out["columns"] = sorted(self.columns)
        return out


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    description: str
    owners: frozenset[str]
    targets: frozenset[str]  # empty: every target ("*")
    inputs: tuple[ModelInput, ...]
    large_rows: int | None

    def on(self, target: str) -> bool:
        return not self.targets or target in self.targets

    def input(self, table: str) -> ModelInput | None:
        return next((i for i in self.inputs if i.table == table), None)

    def may_mark(self, groups: Iterable[str], admin_groups: Iterable[str]) -> bool:
        """Owners and admin groups may mark retrains (token groups, never JIT grants)."""
        mine = set(groups)
        return bool(mine & self.owners or mine & set(admin_groups))

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "owners": sorted(self.owners),
            "targets": sorted(self.targets) or ["*"],
            "inputs": [i.as_json() for i in self.inputs],
            "large_rows": self.large_rows,
        }


class ModelRegistry:
    """Declared models by name, their inputs by table, and table tags."""

    __slots__ = ("_bare", "_by_table", "_links", "models", "tags")

    def __init__(self, models: Mapping[str, Model], tags: Mapping[str, frozenset[str]]) -> None:
        self.models = dict(models)
        by_table: dict[str, list[tuple[Model, ModelInput]]] = {}
        all_tags = {t: set(v) for t, v in tags.items()}
        for model in self.models.values():
            for inp in model.inputs:
                by_table.setdefault(inp.table, []).append((model, inp))
                all_tags.setdefault(inp.table, set()).add(MODEL_INPUT)
        self._by_table = {t: tuple(v) for t, v in by_table.items()}
        self._bare = frozenset(t.rpartition(".")[2] for t in by_table)
        self.tags = {t: frozenset(v) for t, v in all_tags.items()}
        # model_links results by (id(analysis), search_path, target); the entry keeps
        # the Analysis alive, so its id() cannot be reused while cached.
        self._links: OrderedDict[
            tuple[int, tuple[str, ...], str], tuple[Analysis, list[dict[str, Any]] | None]
        ] = OrderedDict()

    @classmethod
    def of(cls, policy: PolicyFile) -> ModelRegistry:
        models = {
            name: Model(
                name,
                spec.description,
                frozenset(spec.owners),
                frozenset() if "*" in spec.targets else frozenset(spec.targets),
                tuple(
                    ModelInput(i.table, frozenset(i.columns) if i.columns else None)
                    for i in spec.inputs
                ),
                spec.large_rows,
            )
            for name, spec in policy.models.items()
        }
        return cls(models, {t: frozenset(tags) for t, tags in policy.table_tags.items()})

    def __bool__(self) -> bool:
        return bool(self.models)

    def __iter__(self) -> Iterator[Model]:
        return iter(sorted(self.models.values(), key=lambda m: m.name))

    def get(self, name: str) -> Model | None:
        return self.models.get(name)

    def tags_of(self, tables: Iterable[str]) -> frozenset[str]:
        return frozenset(tag for t in tables for tag in self.tags.get(t, ()))

    def may_change_inputs(self, stmt: Statement) -> bool:
        """Cheapest pre-check, before any name resolution: a WRITE or DDL statement
        writing a relation named like some input table."""
        return bool(stmt.categories & _CHANGES) and any(r.name in self._bare for r in stmt.writes)

    def inputs_written(self, stmt: Statement, tables: Iterable[str]) -> bool:
        """Cheap pre-check: does a changing statement write any declared input?"""
        return bool(stmt.categories & _CHANGES) and any(t in self._by_table for t in tables)

    def affected(
        self, view: StatementView, target: str, *, executed: bool = False
    ) -> dict[str, tuple[str, ...]]:
        """Models whose inputs this statement changes on `target`, with those tables.

        `executed`: the statement is a PREPARE being run by EXECUTE, so its query
        counts as a change.
        """
        stmt = view.stmt
        if (stmt.kind in _NOT_A_CHANGE and not executed) or not self._by_table:
            return {}
        writes = view.write_names()
        if not self.inputs_written(stmt, writes):
            return {}
        out: dict[str, list[str]] = {}
        for table in writes:
            pairs = self._by_table.get(table)
            if not pairs:
                continue
            changed: list[frozenset[str] | None] = []  # computed once, when first needed
            for model, inp in pairs:
                if not model.on(target):
                    continue
                if inp.columns is not None:
                    if not changed:
                        changed.append(changed_columns(stmt, _matcher(table, view.paths)))
                    columns = changed[0]
                    if columns is not WHOLE_ROWS and not (columns & inp.columns):
                        continue
                tables = out.setdefault(model.name, [])
                if table not in tables:
                    tables.append(table)
        return {name: tuple(sorted(tables)) for name, tables in sorted(out.items())}

    def affected_coarse(self, view: StatementView, target: str) -> dict[str, tuple[str, ...]]:
        """Table-level links, ignoring column narrowing: the fallback when the precise
        answer fails (over-linking is the safe side)."""
        out: dict[str, list[str]] = {}
        for table in view.write_names():
            for model, _ in self._by_table.get(table, ()):
                if model.on(target):
                    out.setdefault(model.name, []).append(table)
        return {name: tuple(sorted(set(t))) for name, t in sorted(out.items())}


def _matcher(table: str, paths: tuple[tuple[str, ...], ...]) -> Callable[[Relation], bool]:
    def is_table(rel: Relation) -> bool:
        return table in resolve_any(rel, paths).candidates

    return is_table


def model_links(
    policy: object,
    analysis: Analysis,
    search_path: tuple[str, ...],
    target: str,
    prepared: Mapping[str, Analysis] | None = None,
) -> list[dict[str, Any]] | None:
    """The `models` field of a statement event, or None when it links no model.

    `policy` is the gate's policy (a `PolicyEngine` carries `.models`); `prepared`
    maps SQL-level PREPARE names to their analyses, so `EXECUTE p` links what `p`
    changes. Never raises: if the precise answer fails, table-level links are
    returned instead (over-linking is the safe side).
    """
    registry = getattr(policy, "models", None)
    if not isinstance(registry, ModelRegistry) or not registry:
        return None
    stmts = analysis.statements
    if any(s.execute_name is not None for s in stmts):
        return _links(registry, analysis, search_path, target, prepared)  # session state
    if not any(registry.may_change_inputs(s) for s in stmts):
        return None  # the hot path: reads, and writes of tables no model reads
    key = (id(analysis), search_path, target)
    hit = registry._links.get(key)
    if hit is not None and hit[0] is analysis:
        return hit[1]
    result = _links(registry, analysis, search_path, target, None)
    registry._links[key] = (analysis, result)
    if len(registry._links) > LINKS_CACHE:
        registry._links.popitem(last=False)
    return result


def _links(
    registry: ModelRegistry,
    analysis: Analysis,
    search_path: tuple[str, ...],
    target: str,
    prepared: Mapping[str, Analysis] | None,
) -> list[dict[str, Any]] | None:
    links: dict[str, dict[str, Any]] = {}
    paths: tuple[tuple[str, ...], ...] = (search_path,)
    for i, stmt in enumerate(analysis.statements):
        inner: tuple[Statement, ...] = (stmt,)
        executed = False
        if stmt.execute_name is not None and prepared:
            found = prepared.get(stmt.execute_name)  # the PREPARE statement it runs
            if found is not None:
                inner, executed = found.statements, True
        for s in inner:
            if not registry.may_change_inputs(s):
                continue  # the hot path: most statements name no input table at all
            view = StatementView.of(s, paths)
            try:
                affected = registry.affected(view, target, executed=executed)
            except Exception:  # a parse-tree shape we did not expect
                log.exception("model links: falling back to table-level links")
                affected = registry.affected_coarse(view, target)
            for name, tables in affected.items():
                link = links.setdefault(name, {"name": name, "tables": [], "statements": []})
                link["tables"] = sorted(set(link["tables"]) | set(tables))
                if i not in link["statements"]:
                    link["statements"].append(i)
        # A SET search_path inside the query changes how later statements resolve;
        # like the engine, resolve them under the old and the new path.
        if stmt.set_param is not None and stmt.set_param[0] == "search_path":
            new = parse_search_path(stmt.set_param[1])
            if new is not None and new not in paths:
                paths = (*paths, new)
    return [links[name] for name in sorted(links)] or None
