"""SQLite implementation of the ledger store (the embedded default).

One database file, `<data_dir>/ledger/ledger.db`, in WAL mode so readers (CLI,
dashboard) never block the sequencer. Only the sequencer writes events; it
records the journal offsets it has consumed in the same transaction as the
events, so ingestion is exactly-once across crashes.

Rows keep the canonical event bytes (`body`, the Merkle leaf data) plus a few
columns copied out of them for searching. Verification never trusts those
columns: it re-hashes `body`.

`checkpoints` holds each signed checkpoint note; `cosignatures` the witness
cosignature lines returned for them (c2sp.org/tlog-witness), one per
(size, witness key), appended to the note when a receipt or bundle is made.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

# sqlite3 binds int, float, str and bytearray directly, but sends bytes and None
# through its adaptation protocol, which looks up __adapt__/__conform__ and formats
# an AttributeError for each: half the cost of an event insert (5.6 -> 3.0 us per
# row measured). Identity adapters for both make that a dict lookup and a C call
# (for None, `{}.get`: it returns None, as it must, without running Python code).
# The registry is process-wide and the values bound are unchanged.
sqlite3.register_adapter(bytes, bytes)
_NONE_TO_NONE: dict[None, None] = {}
sqlite3.register_adapter(type(None), _NONE_TO_NONE.get)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    idx      INTEGER PRIMARY KEY,
    id       TEXT NOT NULL,
    type     TEXT NOT NULL,
    ts       TEXT NOT NULL,
    session  TEXT,
    user     TEXT,
    target   TEXT,
    ref      TEXT,
    decision TEXT,
    body     BLOB NOT NULL,
    leaf     BLOB NOT NULL
);
-- Few indexes on purpose: each costs the sequencer on every event. Session events
-- have ids "<session>:<n>", so the id index also finds a session's events. Half the
-- events (statements) have no ref: the partial index leaves them out, and `ref = ?`
-- and `ref IN (...)` still use it. (Stores made before keep their full index.)
CREATE INDEX IF NOT EXISTS events_id ON events(id);
CREATE INDEX IF NOT EXISTS events_user ON events(user, idx);
CREATE INDEX IF NOT EXISTS events_type ON events(type, idx);
CREATE INDEX IF NOT EXISTS events_ref ON events(ref) WHERE ref IS NOT NULL;
CREATE TABLE IF NOT EXISTS checkpoints (
    size  INTEGER PRIMARY KEY,
    root  BLOB NOT NULL,
    note  BLOB NOT NULL,
    ts    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tiles (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB NOT NULL,
    PRIMARY KEY (level, idx)
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value BLOB
);
CREATE TABLE IF NOT EXISTS cosignatures (
    size    INTEGER NOT NULL,
    witness TEXT NOT NULL,
    line    BLOB NOT NULL,
    ts      TEXT NOT NULL,
    PRIMARY KEY (size, witness)
);
"""


@dataclass(frozen=True, slots=True)
class EventRow:
    idx: int
    id: str
    type: str
    ts: str
    session: str | None
    user: str | None
    target: str | None
    ref: str | None
    decision: str | None
    body: bytes
    leaf: bytes


WRITER_CACHE_KIB = 64 * 1024  # holds the sequencer's largest pass: 20,000 events, indexes too
_COLS = "idx, id, type, ts, session, user, target, ref, decision, body, leaf"
_ROW_MARKS = "(?,?,?,?,?,?,?,?,?,?,?)"
# Rows per INSERT statement. One statement per row costs a bind-step-reset round and
# a GIL hand-off each; 64 rows (704 variables, far below SQLite's limit) share one.
_ROWS_PER_INSERT = 64
_INSERT_ONE = f"INSERT INTO events ({_COLS}) VALUES {_ROW_MARKS}"
_INSERT_MANY = f"INSERT INTO events ({_COLS}) VALUES " + ",".join([_ROW_MARKS] * _ROWS_PER_INSERT)


def insert_events(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert full event rows (idx first, as `_COLS`), inside the caller's transaction."""
    whole = len(rows) - len(rows) % _ROWS_PER_INSERT
    if whole:
        conn.executemany(
            _INSERT_MANY,
            [
                list(chain.from_iterable(rows[i : i + _ROWS_PER_INSERT]))
                for i in range(0, whole, _ROWS_PER_INSERT)
            ],
        )
    if whole < len(rows):
        conn.executemany(_INSERT_ONE, rows[whole:])


def ts_window(since: str | None, until: str | None, col: str = "ts") -> tuple[list[str], list[Any]]:
    """WHERE clauses and their arguments for the half-open window ``[since, until)`` on
    an ISO 8601 text column (compared as text); an empty bound is no bound."""
    clauses: list[str] = []
    args: list[Any] = []
    if since:
        clauses.append(f"{col} >= ?")
        args.append(since)
    if until:
        clauses.append(f"{col} < ?")
        args.append(until)
    return clauses, args


def use_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """`PRAGMA journal_mode=WAL`, retried while another process holds the file.

    Switching a new database to WAL takes an exclusive lock, and SQLite answers
    "database is locked" at once, without its busy handler, when that would deadlock
    with another connection's transaction: two workers starting on a fresh data dir
    did (1 open in 13 in a test, and a bench run lost a proxy to it). The mode is
    persistent, so once one process has set it the others' PRAGMA only reads it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def connect(path: Path, *, readonly: bool = False, timeout: float = 10.0) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, timeout=timeout, check_same_thread=False
        )
    else:
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
        # For the sequencer, which commits a pass of events at a time (issue 8): with
        # SQLite's defaults (4 KiB pages, a 2 MiB cache) a pass spilled dirty pages
        # before its commit and wrote each page as its own WAL frame, 4.0 write()
        # calls a pgbench transaction; with 16 KiB pages and room for a whole pass,
        # 1.7, and 17% less sequencer CPU. The page size only applies to a new file.
        conn.execute("PRAGMA page_size=16384")
        conn.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
        use_wal(conn, timeout)
        # The journal is the durable copy; the store is made durable explicitly
        # (`LedgerStore.sync`) before any journal segment is deleted.
        conn.execute("PRAGMA synchronous=NORMAL")
    return conn


class LedgerStore:
    """Events, checkpoints, tree tiles and sequencer metadata."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        if readonly and not path.exists():
            # A reader before the first event: create the empty store.
            LedgerStore(path).close()
        self.conn = connect(path, readonly=readonly)
        if not readonly:
            self.conn.executescript(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    def sync(self) -> None:
        """Make everything committed so far durable (WAL checkpoint with fsync)."""
        self.conn.execute("PRAGMA wal_checkpoint(FULL)")

    # -- sequencing ------------------------------------------------------------------

    def size(self) -> int:
        row = self.conn.execute("SELECT max(idx) FROM events").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def meta_get(self, key: str) -> bytes | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def meta_items(self, prefix: str) -> dict[str, bytes]:
        rows = self.conn.execute(
            "SELECT key, value FROM meta WHERE key >= ? AND key < ?", (prefix, prefix + "\uffff")
        ).fetchall()
        return {k: bytes(v) for k, v in rows}

    def meta_set(self, items: dict[str, bytes]) -> None:
        self.conn.executemany(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            list(items.items()),
        )

    # -- tree --------------------------------------------------------------------------

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        rows = self.conn.execute(
            "SELECT leaf FROM events WHERE idx >= ? AND idx < ? ORDER BY idx", (start, end)
        ).fetchall()
        return [bytes(r[0]) for r in rows]

    def iter_bodies(
        self, start: int = 0, end: int | None = None, batch: int = 50_000
    ) -> Iterable[tuple[int, bytes, bytes]]:
        """(idx, body, stored leaf) in index order, in batches (for verification)."""
        pos = start
        while True:
            hi = pos + batch if end is None else min(pos + batch, end)
            if end is not None and pos >= end:
                return
            rows = self.conn.execute(
                "SELECT idx, body, leaf FROM events WHERE idx >= ? AND idx < ? ORDER BY idx",
                (pos, hi),
            ).fetchall()
            if not rows:
                return
            for r in rows:
                yield int(r[0]), bytes(r[1]), bytes(r[2])
            pos = hi

    def put_tiles(self, tiles: Iterable[tuple[int, int, bytes]]) -> None:
        self.conn.executemany(
            "INSERT OR REPLACE INTO tiles(level, idx, hash) VALUES (?, ?, ?)", list(tiles)
        )

    def get_tile(self, level: int, index: int) -> bytes | None:
        row = self.conn.execute(
            "SELECT hash FROM tiles WHERE level = ? AND idx = ?", (level, index)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def get_tiles(self, level: int, start: int, end: int) -> dict[int, bytes]:
        """Stored subtree hashes at ``level`` for node indices in ``[start, end)``."""
        rows = self.conn.execute(
            "SELECT idx, hash FROM tiles WHERE level = ? AND idx >= ? AND idx < ?",
            (level, start, end),
        ).fetchall()
        return {int(r[0]): bytes(r[1]) for r in rows}

    # -- checkpoints --------------------------------------------------------------------

    def put_checkpoint(self, size: int, root: bytes, note: bytes, ts: str) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO checkpoints(size, root, note, ts) VALUES (?, ?, ?, ?)",
            (size, root, note, ts),
        )

    def latest_checkpoint(self) -> tuple[int, bytes, bytes, str] | None:
        row = self.conn.execute(
            "SELECT size, root, note, ts FROM checkpoints ORDER BY size DESC LIMIT 1"
        ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]), bytes(row[2]), str(row[3]))

    def checkpoints(self) -> list[tuple[int, bytes, bytes, str]]:
        rows = self.conn.execute("SELECT size, root, note, ts FROM checkpoints ORDER BY size")
        return [(int(r[0]), bytes(r[1]), bytes(r[2]), str(r[3])) for r in rows]

    def put_cosignatures(self, size: int, lines: Iterable[tuple[str, bytes]], ts: str) -> None:
        """Witness cosignature lines for the checkpoint at ``size``, keyed by witness key."""
        self.conn.executemany(
            "INSERT OR REPLACE INTO cosignatures(size, witness, line, ts) VALUES (?, ?, ?, ?)",
            [(size, witness, line, ts) for witness, line in lines],
        )

    def cosignatures(self, size: int) -> list[bytes]:
        """Cosignature lines stored for the checkpoint at ``size`` (none in an older store)."""
        try:
            rows = self.conn.execute(
                "SELECT line FROM cosignatures WHERE size = ? ORDER BY witness", (size,)
            ).fetchall()
        except sqlite3.OperationalError:  # a read-only store created before the table
            return []
        return [bytes(r[0]) for r in rows]

    def checkpoint_covering(self, index: int) -> tuple[int, bytes, bytes, str] | None:
        row = self.conn.execute(
            "SELECT size, root, note, ts FROM checkpoints WHERE size > ? ORDER BY size LIMIT 1",
            (index,),
        ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]), bytes(row[2]), str(row[3]))

    # -- reading events -------------------------------------------------------------------

    def _rows(self, sql: str, args: Sequence[Any]) -> list[EventRow]:
        return [
            EventRow(
                int(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], bytes(r[9]), bytes(r[10])
            )
            for r in self.conn.execute(sql, args).fetchall()
        ]

    def event(self, idx: int) -> EventRow | None:
        rows = self._rows(f"SELECT {_COLS} FROM events WHERE idx = ?", (idx,))
        return rows[0] if rows else None

    def event_by_id(self, event_id: str) -> EventRow | None:
        rows = self._rows(
            f"SELECT {_COLS} FROM events WHERE id = ? ORDER BY idx LIMIT 1", (event_id,)
        )
        return rows[0] if rows else None

    def search(
        self,
        *,
        user: str | None = None,
        target: str | None = None,
        types: Sequence[str] | None = None,
        session: str | None = None,
        ref: str | None = None,
        decision: str | None = None,
        since: str | None = None,
        until: str | None = None,
        after: int | None = None,
        text: str | None = None,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[EventRow]:
        where: list[str] = []
        args: list[Any] = []
        for col, val in (("user", user), ("target", target), ("ref", ref), ("decision", decision)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        if session is not None:
            where.append("id >= ? AND id < ?")
            args.extend((f"{session}:", f"{session};"))
        if types:
            where.append(f"type IN ({','.join('?' * len(types))})")
            args.extend(types)
        clauses, window_args = ts_window(since, until)
        where += clauses
        args += window_args
        if after is not None:
            where.append("idx > ?")
            args.append(after)
        if text:
            where.append("instr(lower(CAST(body AS TEXT)), lower(?)) > 0")
            args.append(text)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        order = "DESC" if newest_first else "ASC"
        return self._rows(
            f"SELECT {_COLS} FROM events {clause} ORDER BY idx {order} LIMIT ?", (*args, limit)
        )
