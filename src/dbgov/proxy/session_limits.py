"""How many sessions one identity holds at once, across every worker of a data dir.

`listen.max_sessions_per_user` caps them: past it, a login is refused with FATAL
53300 and an `auth.failed` event (reason `session_limit`), before any upstream
connection is opened. Each session holds a server backend, so without a cap one
identity (a runaway script, a leaked token) can take every connection the
database allows and lock everyone else out; `max_clients_per_worker` only bounds
the proxy as a whole.

Workers are processes, so the count lives outside them: one SQLite table of live
sessions under the data dir's `run/`, written in one short transaction per login
and per close (no fsync: the table describes running processes, and the
supervisor empties it when it starts). A worker that dies leaves rows behind; the
supervisor removes them when it notices the death, and an admission that finds
the user at the cap first drops rows of processes that no longer exist.

Counting fails closed: if the table cannot be read or written, the login is
refused (an operator who set a cap wants it held).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from dbgov.pids import pid_alive

BUSY_TIMEOUT_S = 2.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS live (
    session TEXT PRIMARY KEY,
    user    TEXT NOT NULL,
    pid     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS live_user ON live(user);
"""


class SessionLimitError(RuntimeError):
    """The live-session table cannot be used: the login is refused."""


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.executescript(_SCHEMA)
    return conn


class SessionLimits:
    """One worker's view of the live-session table."""

    def __init__(self, path: Path, limit: int, pid: int | None = None) -> None:
        self.path = path
        self.limit = limit
        self.pid = os.getpid() if pid is None else pid
        self._conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = _connect(self.path)
        return self._conn

    def admit(self, session: str, user: str) -> int | None:
        """Count `session` against `user`'s cap: None if admitted, else how many
        sessions `user` holds. Raises SessionLimitError if the table fails."""
        try:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                held = self._held(db, user)
                if held >= self.limit:
                    self._forget_dead(db, user)
                    held = self._held(db, user)
                if held >= self.limit:
                    db.execute("COMMIT")
                    return held
                db.execute("INSERT INTO live VALUES (?, ?, ?)", (session, user, self.pid))
                db.execute("COMMIT")
                return None
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise SessionLimitError(str(exc)) from exc

    def release(self, session: str) -> None:
        """`session` ended. A failure only leaves a row that the next admission at
        the cap, or the supervisor, removes once this process is gone."""
        try:
            self._db().execute("DELETE FROM live WHERE session = ?", (session,))
        except sqlite3.Error:
            pass

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @staticmethod
    def _held(db: sqlite3.Connection, user: str) -> int:
        return int(db.execute("SELECT count(*) FROM live WHERE user = ?", (user,)).fetchone()[0])

    @staticmethod
    def _forget_dead(db: sqlite3.Connection, user: str) -> None:
        pids = [r[0] for r in db.execute("SELECT DISTINCT pid FROM live WHERE user = ?", (user,))]
        for pid in pids:
            if not pid_alive(pid):
                db.execute("DELETE FROM live WHERE pid = ?", (pid,))


def forget_worker(path: Path, pid: int) -> None:
    """The supervisor saw worker `pid` die: its sessions are gone."""
    if not path.exists():
        return
    with contextlib.suppress(sqlite3.Error), contextlib.closing(_connect(path)) as db:
        db.execute("DELETE FROM live WHERE pid = ?", (pid,))


def reset(path: Path) -> None:
    """The supervisor starts with no worker running: no session is live."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()
