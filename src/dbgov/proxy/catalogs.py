"""Per-target catalog snapshots for masking: relations, columns, views, functions.

Loaded through dbgov's own upstream connection (the target's credentials), once
per target and worker, and reloaded after a session runs DDL on that target.
Masking decisions made while a reload is in flight use the previous snapshot;
a relation the snapshot does not know makes lineage incomplete, and masking then
fails closed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import psycopg

from dbgov.sql.catalog import Catalog, CatalogColumn, CatalogRelation

if TYPE_CHECKING:
    from dbgov.config import Config, Target

log = logging.getLogger(__name__)

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


async def load_catalog(target: Target, version: int) -> Catalog:
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
    return Catalog.of(relations, [(n, p) for n, p in funcs], version)


class Catalogs:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._snapshots: dict[str, Catalog] = {}
        self._loading: dict[str, asyncio.Task[None]] = {}
        self._version = 0

    def get(self, target: str) -> Catalog | None:
        return self._snapshots.get(target)

    async def ensure(self, target: str) -> None:
        if target in self._snapshots:
            return
        self._start(target)
        task = self._loading.get(target)
        if task is not None:
            await asyncio.shield(task)

    def invalidate(self, target: str) -> None:
        """DDL ran: reload in the background (the old snapshot serves meanwhile)."""
        self._start(target)

    def _start(self, target: str) -> None:
        if target in self._loading:
            return
        t = self.config.target(target)
        if t is None:
            return

        async def run() -> None:
            try:
                self._version += 1
                self._snapshots[target] = await load_catalog(t, self._version)
            except Exception as exc:
                log.warning("catalog of %s could not be loaded: %s", target, exc)
            finally:
                self._loading.pop(target, None)

        self._loading[target] = asyncio.get_running_loop().create_task(run())
