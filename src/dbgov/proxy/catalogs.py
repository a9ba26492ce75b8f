"""Per-target catalog snapshots for masking: relations, columns, views, functions.

Loaded through dbgov's own upstream connection (the target's credentials), once
per target and worker. With them, the distinct values of the columns pii_text
masks look for in free text (masking/known.py).

When a snapshot may be wrong, and what serves meanwhile:
- DDL committed through dbgov (`invalidate`): a view's new definition must not be
  traced with its old one, so no snapshot serves until a reload that began after
  the commit has finished. Meanwhile, as before the first load, a masked
  identity's result columns have no known origin: the statement is refused with
  "retry in a moment" (or, with `on_unknown_origin: mask`, every column is masked).
  The worker that saw the DDL stamps a file in the run dir; the other workers look
  at it every `SCHEMA_CHECK_S` and do the same. The client that ran the DDL waits
  for its own worker's reload before it gets ReadyForQuery (proxy/session.py).
- A write through dbgov to a table with known values (`wrote`): stamped the same
  way in a file of its own, looked at every `STAMP_CHECK_S`; the values are
  reloaded while the old snapshot serves (the schema did not change).
- DDL made outside dbgov: found by the reload every `REFRESH_S` seconds (the old
  snapshot serves until then), or at once when a query names a relation the
  snapshot does not know (lineage is incomplete: masking fails closed, `refresh`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from dbgov.layout import Layout
from dbgov.masking.known import MAX_VALUES, REFRESH_S
from dbgov.sql.catalog import Catalog, CatalogColumn, CatalogRelation

if TYPE_CHECKING:
    from dbgov.config import Config, Target

log = logging.getLogger(__name__)
STAMP_CHECK_S = 0.5  # how often a worker looks for writes stamped by the others
# ... and for DDL: one stat() per target at most this often, so that a view replaced
# through another worker is traced by its old definition for no longer than this.
SCHEMA_CHECK_S = 0.01
STAMP_SLACK_S = 0.05
STALE_RETRY_S = 1.0  # how often a failed reload of a stale snapshot is tried again

_RELATIONS = """
SELECT c.oid, n.nspname, c.relname, c.relkind,
       CASE WHEN c.relkind IN ('v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            THEN pg_get_viewdef(c.oid) END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
"""
_COLUMNS = """
SELECT a.attrelid, a.attname, a.attnum, a.atttypid
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
ORDER BY a.attrelid, a.attnum
"""
_FUNCTIONS = """
SELECT n.nspname, p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
"""


def conninfo(target: Target) -> str:
    parts = {
        "host": target.host,
        "port": str(target.port),
        "dbname": target.database,
        "user": target.user,
        "application_name": "dbgov/catalog",
        "connect_timeout": "10",
    }
    password = target.password()
    if password is not None:
        parts["password"] = password
    if target.tls == "require":
        parts["sslmode"] = "require"
    elif target.tls == "verify-full":
        parts["sslmode"] = "verify-full"
        parts["sslrootcert"] = str(target.ca)
    return psycopg.conninfo.make_conninfo(**parts)


async def load_catalog(
    target: Target, version: int, known: frozenset[str] = frozenset()
) -> Catalog:
    async with await psycopg.AsyncConnection.connect(conninfo(target), autocommit=True) as conn:
        rels = await (await conn.execute(_RELATIONS)).fetchall()
        cols = await (await conn.execute(_COLUMNS)).fetchall()
        funcs = await (await conn.execute(_FUNCTIONS)).fetchall()
        by_rel: dict[int, list[CatalogColumn]] = {}
        for relid, name, attnum, typid in cols:
            by_rel.setdefault(int(relid), []).append(CatalogColumn(name, int(attnum), int(typid)))
        relations = [
            CatalogRelation(int(oid), nsp, rel, kind, tuple(by_rel.get(int(oid), ())), viewdef)
            for oid, nsp, rel, kind, viewdef in rels
        ]
        catalog = Catalog.of(relations, [(n, p) for n, p in funcs], version)
        for column in sorted(known):
            catalog.known[column] = await _known_values(conn, catalog, target, column)
    return catalog


async def _known_values(
    conn: psycopg.AsyncConnection[Any], catalog: Catalog, target: Target, column: str
) -> tuple[str, ...] | None:
    """The distinct values of `column`; () where the target has no such column, None
    (the masks that need them then redact whole texts) when they cannot be read."""
    schema, table, name = column.split(".")
    rel = catalog.relations.get((schema, table))
    if rel is None or name not in rel.column_names():
        return ()
    col = sql.Identifier(name)
    query = sql.SQL("SELECT DISTINCT {}::text FROM {}.{} WHERE {} IS NOT NULL LIMIT {}").format(
        col, sql.Identifier(schema), sql.Identifier(table), col, MAX_VALUES + 1
    )
    try:
        rows = await (await conn.execute(query)).fetchall()
    except psycopg.Error as exc:
        log.warning("known values of %s on %s could not be read: %s", column, target.name, exc)
        return None
    if len(rows) > MAX_VALUES:
        log.warning(
            "%s on %s has more than %d distinct values: masks that look for them "
            "redact whole texts",
            column,
            target.name,
            MAX_VALUES,
        )
        return None
    return tuple(str(v) for (v,) in rows)


class Catalogs:
    def __init__(self, config: Config, known: frozenset[str] = frozenset()) -> None:
        self.config = config
        self.known = known  # columns whose values masks look for in free text
        self._known_tables = {c.split(".")[1] for c in known}
        self._snapshots: dict[str, Catalog] = {}
        self._loaded_at: dict[str, float] = {}  # monotonic, when the last load started
        self._loaded_wall: dict[str, float] = {}  # the same, on the wall clock
        self._checked_at: dict[str, float] = {}  # when a target's stamps were last looked at
        self._known_checked_at: dict[str, float] = {}  # ... its known-values stamp
        self._loading: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()  # targets to load again once the load in flight ends
        self._stale: set[str] = set()  # DDL seen: no snapshot serves until reloaded
        self._seen: dict[Path, float] = {}  # the stamps acted on, by their mtime
        self._run_dir = Layout(config.data_dir).run  # where the stamps are
        self._stamp_paths: dict[tuple[str, str], Path] = {}  # built once: pathlib is slow
        self._version = 0

    def get(self, target: str) -> Catalog | None:
        """The target's snapshot, or None while none can be trusted (not loaded yet,
        or DDL seen and not reloaded since)."""
        snapshot = self._snapshots.get(target)
        if snapshot is None:
            return None
        if target not in self._loading:
            now = time.monotonic()
            if target in self._stale:
                if now - self._loaded_at[target] > STALE_RETRY_S:
                    self._start(target)  # the last reload failed
            elif now - self._loaded_at[target] > REFRESH_S:
                self._start(target)  # DDL outside dbgov, known values' age: old serves
            elif now - self._checked_at.get(target, 0.0) > SCHEMA_CHECK_S:
                self._checked_at[target] = now
                # File times are coarse (a few ms): a stamp just before the load
                # started may be a change the load did not see.
                since = self._loaded_wall[target] - STAMP_SLACK_S
                if self._stamped(self._stamp_path(target, "schema"), since):
                    self._stale.add(target)  # another worker saw DDL
                    self._start(target)
                elif self.known and now - self._known_checked_at.get(target, 0.0) > STAMP_CHECK_S:
                    self._known_checked_at[target] = now
                    if self._stamped(self._stamp_path(target), since):
                        self._start(target)  # another worker saw a write
        return None if target in self._stale else snapshot

    def wrote(self, target: str, tables: Iterable[str]) -> None:
        """A statement wrote to `tables` (bare names) through this worker: if one holds
        known values, reload, and stamp the write for the other workers."""
        if self._known_tables.intersection(tables):
            self._touch(self._stamp_path(target))
            self._start(target)

    def _stamp_path(self, target: str, kind: str = "known-values") -> Path:
        path = self._stamp_paths.get((target, kind))
        if path is None:
            path = self._stamp_paths[(target, kind)] = self._run_dir / f"{kind}.{target}.stamp"
        return path

    def _touch(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()  # its mtime is the stamp
            self._seen[path] = path.stat().st_mtime  # acted on here already
        except OSError as exc:
            log.warning("cannot stamp %s for the other workers: %s", path.name, exc)

    def _stamped(self, path: Path, since: float) -> bool:
        """Is there a stamp newer than `since` that this worker has not acted on yet?"""
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return False
        if mtime <= since or self._seen.get(path) == mtime:
            return False
        self._seen[path] = mtime
        return True

    async def ensure(self, target: str) -> None:
        if target in self._snapshots:
            return
        if target not in self._loading:
            self._start(target)
        task = self._loading.get(target)
        if task is not None:
            await asyncio.shield(task)

    def invalidate(self, target: str) -> None:
        """DDL was committed through this worker: trust no snapshot of the target until
        a reload that starts now has finished, and tell the other workers."""
        self._touch(self._stamp_path(target, "schema"))
        self._stale.add(target)
        self._start(target)

    async def reloaded(self, target: str) -> None:
        """Wait until a snapshot of `target` serves again after DDL (at once if none
        is being loaded: the reload failed)."""
        while target in self._stale:
            task = self._loading.get(target)
            if task is None:
                return
            await asyncio.wait({task})  # its outcome is not ours: never raises here

    def refresh(self, target: str) -> None:
        """A query named a relation the snapshot does not know (it was refused): reload,
        the old snapshot serving meanwhile."""
        self._start(target)

    def _start(self, target: str) -> None:
        if target in self._loading:
            self._again.add(target)  # what changed may have been read already
            return
        t = self.config.target(target)
        if t is None:
            return

        async def run() -> None:
            self._loaded_at[target] = time.monotonic()  # the last attempt: no retry storm
            self._loaded_wall[target] = time.time()
            try:
                self._version += 1
                catalog = await load_catalog(t, self._version, self.known)
                previous = self._snapshots.get(target)
                if previous is not None:
                    # Unchanged values: keep the very tuples, so that the masking
                    # engine keeps its matcher and memos (it compares by identity).
                    for column, values in catalog.known.items():
                        old = previous.known.get(column)
                        if old is not None and old == values:
                            catalog.known[column] = old
                self._snapshots[target] = catalog
                if target not in self._again:
                    self._stale.discard(target)  # else what changed may not be in it
            except Exception as exc:
                log.warning("catalog of %s could not be loaded: %s", target, exc)
            finally:
                self._loading.pop(target, None)
                if target in self._again:
                    self._again.discard(target)
                    self._start(target)

        self._loading[target] = asyncio.get_running_loop().create_task(run())
