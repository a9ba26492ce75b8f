"""The control-plane store: approval requests, votes, just-in-time grants, and the
webhook outbox. SQLite by default (`<data_dir>/control.db`).

Several processes share this file at once: every proxy worker (holds, expiry,
grant look-ups), the CLI and the web app (votes). SQLite in WAL mode lets
readers run beside a writer; writers take the lock with `BEGIN IMMEDIATE` and
wait up to `BUSY_TIMEOUT_S` for each other. State changes are conditional
updates (`... WHERE state = 'pending'`), so when two processes race to decide,
time out or consume the same request exactly one of them wins and reports it.

`ControlPort` is the interface the approvals service uses; a PostgreSQL
implementation (several proxy hosts) implements the same methods, with
`transaction()` as `BEGIN ... COMMIT` and `SELECT ... FOR UPDATE` where this
one relies on SQLite's single writer. No SQL lives outside this file.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from dbgov.store.sqlite import use_wal

BUSY_TIMEOUT_S = 5.0
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,  -- the #N people see
    kind             TEXT NOT NULL,      -- statement | grant
    state            TEXT NOT NULL,      -- see STATES
    requester        TEXT NOT NULL,
    requester_issuer TEXT NOT NULL,
    requester_groups TEXT NOT NULL,      -- JSON list, as verified at request time
    target           TEXT NOT NULL,
    session          TEXT,               -- the proxy session that asked (statements)
    mode             TEXT NOT NULL,      -- hold | refuse (statements), grant (grants)
    sql              TEXT,
    fingerprint      TEXT,
    params_hash      TEXT,
    params           TEXT,               -- JSON list of bind parameters as text, or NULL
    tables           TEXT NOT NULL,      -- JSON list
    rule             TEXT,
    reason           TEXT NOT NULL,      -- why approval is needed / why access is asked
    risk             TEXT NOT NULL,
    approvers        TEXT NOT NULL,      -- JSON list of groups
    quorum           INTEGER NOT NULL,
    grant_group      TEXT,
    grant_seconds    INTEGER,
    created_at       REAL NOT NULL,      -- unix seconds
    expires_at       REAL NOT NULL,      -- undecided past this: timed_out
    decided_at       REAL,
    decided_by       TEXT,
    decision_reason  TEXT,
    valid_until      REAL,               -- approved statements: usable until then
    consumed_at      REAL,
    consumed_session TEXT
);
CREATE INDEX IF NOT EXISTS requests_state ON requests(state, expires_at);
CREATE INDEX IF NOT EXISTS requests_match ON requests(requester, target, fingerprint, state);
CREATE TABLE IF NOT EXISTS votes (
    request_id    INTEGER NOT NULL REFERENCES requests(id),
    voter         TEXT NOT NULL,
    voter_issuer  TEXT NOT NULL,
    voter_groups  TEXT NOT NULL,         -- JSON list, as verified when voting
    verdict       TEXT NOT NULL,         -- approve | deny
    reason        TEXT,
    at            REAL NOT NULL,
    PRIMARY KEY (request_id, voter)      -- one vote per person: quorum counts people
);
CREATE TABLE IF NOT EXISTS grants (
    id         INTEGER PRIMARY KEY REFERENCES requests(id),  -- grant id = its request id
    user       TEXT NOT NULL,
    grp        TEXT NOT NULL,
    target     TEXT NOT NULL,
    starts_at  REAL NOT NULL,
    ends_at    REAL NOT NULL,
    state      TEXT NOT NULL              -- active | ended
);
CREATE INDEX IF NOT EXISTS grants_user ON grants(user, target, ends_at);
CREATE TABLE IF NOT EXISTS notifications (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id  INTEGER NOT NULL,
    event       TEXT NOT NULL,
    payload     TEXT NOT NULL,            -- JSON, ready to POST
    state       TEXT NOT NULL,            -- pending | sending | sent | failed
    attempts    INTEGER NOT NULL DEFAULT 0,
    claimed_at  REAL,
    error       TEXT,
    created_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS notifications_state ON notifications(state, id);
"""

# Request states. Only `pending` may be voted on; only `approved` may be consumed.
PENDING = "pending"
APPROVED = "approved"
DENIED = "denied"
TIMED_OUT = "timed_out"  # nobody decided before expires_at
WITHDRAWN = "withdrawn"  # the requester cancelled
EXPIRED = "expired"  # approved, never used within valid_until
CONSUMED = "consumed"  # approved and used (statements: exactly once)
STATES = (PENDING, APPROVED, DENIED, TIMED_OUT, WITHDRAWN, EXPIRED, CONSUMED)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    id: int
    kind: str
    state: str
    requester: str
    requester_issuer: str
    requester_groups: tuple[str, ...]
    target: str
    session: str | None
    mode: str
    sql: str | None
    fingerprint: str | None
    params_hash: str | None
    params: tuple[str | None, ...] | None
    tables: tuple[str, ...]
    rule: str | None
    reason: str
    risk: str
    approvers: tuple[str, ...]
    quorum: int
    grant_group: str | None
    grant_seconds: int | None
    created_at: float
    expires_at: float
    decided_at: float | None = None
    decided_by: str | None = None
    decision_reason: str | None = None
    valid_until: float | None = None
    consumed_at: float | None = None
    consumed_session: str | None = None


@dataclass(frozen=True, slots=True)
class NewRequest:
    """What a caller supplies; the store assigns id, state and timestamps' defaults."""

    kind: str
    requester: str
    requester_issuer: str
    requester_groups: tuple[str, ...]
    target: str
    mode: str
    reason: str
    risk: str
    approvers: tuple[str, ...]
    quorum: int
    created_at: float
    expires_at: float
    session: str | None = None
    sql: str | None = None
    fingerprint: str | None = None
    params_hash: str | None = None
    params: tuple[str | None, ...] | None = None
    tables: tuple[str, ...] = ()
    rule: str | None = None
    grant_group: str | None = None
    grant_seconds: int | None = None


@dataclass(frozen=True, slots=True)
class VoteRecord:
    request_id: int
    voter: str
    voter_issuer: str
    voter_groups: tuple[str, ...]
    verdict: str  # approve | deny
    reason: str | None
    at: float


@dataclass(frozen=True, slots=True)
class GrantRecord:
    id: int
    user: str
    group: str
    target: str
    starts_at: float
    ends_at: float
    state: str  # active | ended


@dataclass(frozen=True, slots=True)
class Notification:
    id: int
    request_id: int
    event: str
    payload: dict[str, Any]
    attempts: int


class DuplicateVote(Exception):
    """The voter has already voted on this request."""


class ControlPort(Protocol):
    """What the approvals service needs from a control-plane store."""

    def transaction(self) -> Any:
        """A context manager: everything inside commits together or not at all,
        and no other writer interleaves (a write lock is held from the start)."""
        ...

    def create_request(self, new: NewRequest) -> RequestRecord: ...

    def get_request(self, request_id: int) -> RequestRecord | None: ...

    def list_requests(
        self,
        *,
        states: Sequence[str] | None = None,
        kind: str | None = None,
        requester: str | None = None,
        limit: int = 100,
    ) -> list[RequestRecord]: ...

    def find_requests(
        self,
        *,
        state: str,
        requester: str,
        requester_issuer: str,
        target: str,
        fingerprint: str,
        params_hash: str,
        rule: str | None,
    ) -> list[RequestRecord]: ...

    def transition(
        self,
        request_id: int,
        from_states: Sequence[str],
        to_state: str,
        *,
        at: float,
        by: str | None = None,
        reason: str | None = None,
        valid_until: float | None = None,
    ) -> bool: ...

    def consume(self, request_id: int, *, at: float, session: str | None) -> bool: ...

    def due(self, *, at: float) -> tuple[list[RequestRecord], list[RequestRecord]]: ...

    def add_vote(self, vote: VoteRecord) -> None: ...

    def votes(self, request_id: int) -> list[VoteRecord]: ...

    def create_grant(self, grant: GrantRecord) -> None: ...

    def get_grant(self, grant_id: int) -> GrantRecord | None: ...

    def active_grants(self, user: str, target: str, *, at: float) -> list[GrantRecord]: ...

    def list_grants(
        self, *, user: str | None = None, active_at: float | None = None, limit: int = 100
    ) -> list[GrantRecord]: ...

    def ended_grants(self, *, at: float) -> list[GrantRecord]: ...

    def end_grant(self, grant_id: int) -> bool: ...

    def enqueue(
        self, request_id: int, event: str, payload: dict[str, Any], *, at: float
    ) -> None: ...

    def claim_notifications(
        self, *, at: float, stale_before: float, limit: int = 20
    ) -> list[Notification]: ...

    def finish_notification(
        self, notification_id: int, *, sent: bool, attempts: int, error: str | None
    ) -> None: ...

    def close(self) -> None: ...


_REQ_COLS = (
    "id, kind, state, requester, requester_issuer, requester_groups, target, session, mode, "
    "sql, fingerprint, params_hash, params, tables, rule, reason, risk, approvers, quorum, "
    "grant_group, grant_seconds, created_at, expires_at, decided_at, decided_by, "
    "decision_reason, valid_until, consumed_at, consumed_session"
)
_GRANT_COLS = "id, user, grp, target, starts_at, ends_at, state"


def _tuple(text: str) -> tuple[str, ...]:
    value = json.loads(text)
    return tuple(str(v) for v in value)


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _request(r: tuple[Any, ...]) -> RequestRecord:
    params = None if r[12] is None else tuple(json.loads(r[12]))
    return RequestRecord(
        int(r[0]),
        r[1],
        r[2],
        r[3],
        r[4],
        _tuple(r[5]),
        r[6],
        r[7],
        r[8],
        r[9],
        r[10],
        r[11],
        params,
        _tuple(r[13]),
        r[14],
        r[15],
        r[16],
        _tuple(r[17]),
        int(r[18]),
        r[19],
        None if r[20] is None else int(r[20]),
        float(r[21]),
        float(r[22]),
        _opt_float(r[23]),
        r[24],
        r[25],
        _opt_float(r[26]),
        _opt_float(r[27]),
        r[28],
    )


def _grant(r: tuple[Any, ...]) -> GrantRecord:
    return GrantRecord(int(r[0]), r[1], r[2], r[3], float(r[4]), float(r[5]), r[6])


class ControlStore:
    """SQLite implementation of `ControlPort`. One connection per process, guarded
    by a lock so the web app's threads and the event loop can share it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.RLock()
        self._depth = 0
        self.conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        use_wal(self.conn, BUSY_TIMEOUT_S)
        # Decisions must survive a power cut once reported: sync every commit.
        self.conn.execute("PRAGMA synchronous = FULL")
        self.conn.execute("PRAGMA foreign_keys = ON")
        with self.transaction():
            version = int(self.conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{path}: control store schema v{version} is newer than "
                    f"this dbgov (v{SCHEMA_VERSION})"
                )
            for statement in re.split(r";\s*$", SCHEMA, flags=re.MULTILINE):
                if statement.strip():
                    self.conn.execute(statement)
            self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT; nested calls join the outer transaction."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self.conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except BaseException:
                self._depth = 0
                self.conn.execute("ROLLBACK")
                raise
            self._depth = 0
            self.conn.execute("COMMIT")

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self.conn.execute(sql, args).fetchall())

    def _run(self, sql: str, args: Sequence[Any] = ()) -> int:
        with self._lock:
            return int(self.conn.execute(sql, args).rowcount)

    # -- requests ------------------------------------------------------------------------

    def create_request(self, new: NewRequest) -> RequestRecord:
        with self.transaction():
            cur = self.conn.execute(
                "INSERT INTO requests (kind, state, requester, requester_issuer, "
                "requester_groups, target, session, mode, sql, fingerprint, params_hash, params, "
                "tables, rule, reason, risk, approvers, quorum, grant_group, grant_seconds, "
                "created_at, expires_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    new.kind,
                    PENDING,
                    new.requester,
                    new.requester_issuer,
                    json.dumps(sorted(new.requester_groups)),
                    new.target,
                    new.session,
                    new.mode,
                    new.sql,
                    new.fingerprint,
                    new.params_hash,
                    None if new.params is None else json.dumps(list(new.params)),
                    json.dumps(list(new.tables)),
                    new.rule,
                    new.reason,
                    new.risk,
                    json.dumps(list(new.approvers)),
                    new.quorum,
                    new.grant_group,
                    new.grant_seconds,
                    new.created_at,
                    new.expires_at,
                ),
            )
            request_id = cur.lastrowid
            assert request_id is not None
            record = self.get_request(int(request_id))
        assert record is not None
        return record

    def get_request(self, request_id: int) -> RequestRecord | None:
        rows = self._all(f"SELECT {_REQ_COLS} FROM requests WHERE id = ?", (request_id,))
        return _request(rows[0]) if rows else None

    def list_requests(
        self,
        *,
        states: Sequence[str] | None = None,
        kind: str | None = None,
        requester: str | None = None,
        limit: int = 100,
    ) -> list[RequestRecord]:
        where: list[str] = []
        args: list[Any] = []
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args.extend(states)
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        if requester is not None:
            where.append("requester = ?")
            args.append(requester)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        args.append(limit)
        rows = self._all(
            f"SELECT {_REQ_COLS} FROM requests {clause} ORDER BY id DESC LIMIT ?", args
        )
        return [_request(r) for r in rows]

    def find_requests(
        self,
        *,
        state: str,
        requester: str,
        requester_issuer: str,
        target: str,
        fingerprint: str,
        params_hash: str,
        rule: str | None,
    ) -> list[RequestRecord]:
        """Statement requests in `state` that match a statement exactly, oldest first."""
        rows = self._all(
            f"SELECT {_REQ_COLS} FROM requests WHERE kind = 'statement' AND state = ? "
            "AND requester = ? AND requester_issuer = ? AND target = ? AND fingerprint = ? "
            "AND params_hash = ? AND rule IS ? ORDER BY id",
            (state, requester, requester_issuer, target, fingerprint, params_hash, rule),
        )
        return [_request(r) for r in rows]

    def transition(
        self,
        request_id: int,
        from_states: Sequence[str],
        to_state: str,
        *,
        at: float,
        by: str | None = None,
        reason: str | None = None,
        valid_until: float | None = None,
    ) -> bool:
        """Move a request from one of `from_states` to `to_state`. False when it was not
        in one of them any more (another process got there first)."""
        marks = ",".join("?" * len(from_states))
        return (
            self._run(
                "UPDATE requests SET state = ?, decided_at = coalesce(decided_at, ?), "
                "decided_by = coalesce(?, decided_by), "
                "decision_reason = coalesce(?, decision_reason),"
                f" valid_until = coalesce(?, valid_until) WHERE id = ? AND state IN ({marks})",
                (to_state, at, by, reason, valid_until, request_id, *from_states),
            )
            == 1
        )

    def consume(self, request_id: int, *, at: float, session: str | None) -> bool:
        """approved -> consumed, only while valid. True for exactly one caller."""
        return (
            self._run(
                "UPDATE requests SET state = ?, consumed_at = ?, consumed_session = ? "
                "WHERE id = ? AND state = ? AND valid_until > ?",
                (CONSUMED, at, session, request_id, APPROVED, at),
            )
            == 1
        )

    def due(self, *, at: float) -> tuple[list[RequestRecord], list[RequestRecord]]:
        """(pending requests past their deadline, approved statements past validity)."""
        late = self._all(
            f"SELECT {_REQ_COLS} FROM requests WHERE state = ? AND expires_at <= ?", (PENDING, at)
        )
        lapsed = self._all(
            f"SELECT {_REQ_COLS} FROM requests WHERE state = ? AND kind = 'statement' "
            "AND valid_until <= ?",
            (APPROVED, at),
        )
        return [_request(r) for r in late], [_request(r) for r in lapsed]

    # -- votes ------------------------------------------------------------------------------

    def add_vote(self, vote: VoteRecord) -> None:
        try:
            self._run(
                "INSERT INTO votes (request_id, voter, voter_issuer, voter_groups, verdict, "
                "reason, at) VALUES (?,?,?,?,?,?,?)",
                (
                    vote.request_id,
                    vote.voter,
                    vote.voter_issuer,
                    json.dumps(sorted(vote.voter_groups)),
                    vote.verdict,
                    vote.reason,
                    vote.at,
                ),
            )
        except sqlite3.IntegrityError:
            raise DuplicateVote(vote.voter) from None

    def votes(self, request_id: int) -> list[VoteRecord]:
        rows = self._all(
            "SELECT request_id, voter, voter_issuer, voter_groups, verdict, reason, at "
            "FROM votes WHERE request_id = ? ORDER BY at, voter",
            (request_id,),
        )
        return [
            VoteRecord(int(r[0]), r[1], r[2], _tuple(r[3]), r[4], r[5], float(r[6])) for r in rows
        ]

    # -- grants ------------------------------------------------------------------------------

    def create_grant(self, grant: GrantRecord) -> None:
        self._run(
            f"INSERT INTO grants ({_GRANT_COLS}) VALUES (?,?,?,?,?,?,?)",
            (
                grant.id,
                grant.user,
                grant.group,
                grant.target,
                grant.starts_at,
                grant.ends_at,
                grant.state,
            ),
        )

    def get_grant(self, grant_id: int) -> GrantRecord | None:
        rows = self._all(f"SELECT {_GRANT_COLS} FROM grants WHERE id = ?", (grant_id,))
        return _grant(rows[0]) if rows else None

    def active_grants(self, user: str, target: str, *, at: float) -> list[GrantRecord]:
        rows = self._all(
            f"SELECT {_GRANT_COLS} FROM grants WHERE user = ? AND target = ? AND state = 'active' "
            "AND starts_at <= ? AND ends_at > ? ORDER BY id",
            (user, target, at, at),
        )
        return [_grant(r) for r in rows]

    def list_grants(
        self, *, user: str | None = None, active_at: float | None = None, limit: int = 100
    ) -> list[GrantRecord]:
        where: list[str] = []
        args: list[Any] = []
        if user is not None:
            where.append("user = ?")
            args.append(user)
        if active_at is not None:
            where.append("state = 'active' AND ends_at > ?")
            args.append(active_at)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        args.append(limit)
        rows = self._all(
            f"SELECT {_GRANT_COLS} FROM grants {clause} ORDER BY id DESC LIMIT ?", args
        )
        return [_grant(r) for r in rows]

    def ended_grants(self, *, at: float) -> list[GrantRecord]:
        rows = self._all(
            f"SELECT {_GRANT_COLS} FROM grants WHERE state = 'active' AND ends_at <= ?", (at,)
        )
        return [_grant(r) for r in rows]

    def end_grant(self, grant_id: int) -> bool:
        return (
            self._run(
                "UPDATE grants SET state = 'ended' WHERE id = ? AND state = 'active'", (grant_id,)
            )
            == 1
        )

    # -- webhook outbox ----------------------------------------------------------------------

    def enqueue(self, request_id: int, event: str, payload: dict[str, Any], *, at: float) -> None:
        self._run(
            "INSERT INTO notifications (request_id, event, payload, state, created_at) "
            "VALUES (?, ?, ?, 'pending', ?)",
            (request_id, event, json.dumps(payload, sort_keys=True), at),
        )

    def claim_notifications(
        self, *, at: float, stale_before: float, limit: int = 20
    ) -> list[Notification]:
        """Take up to `limit` notifications to send, oldest first: pending ones, and
        ones claimed before `stale_before` by a sender that never finished (it died)."""
        with self.transaction():
            rows = self._all(
                "SELECT id, request_id, event, payload, attempts FROM notifications "
                "WHERE state = 'pending' OR (state = 'sending' AND claimed_at < ?) "
                "ORDER BY id LIMIT ?",
                (stale_before, limit),
            )
            for r in rows:
                self._run(
                    "UPDATE notifications SET state = 'sending', claimed_at = ? WHERE id = ?",
                    (at, r[0]),
                )
        return [Notification(int(r[0]), int(r[1]), r[2], json.loads(r[3]), int(r[4])) for r in rows]

    def finish_notification(
        self, notification_id: int, *, sent: bool, attempts: int, error: str | None
    ) -> None:
        self._run(
            "UPDATE notifications SET state = ?, attempts = attempts + ?, error = ? WHERE id = ?",
            ("sent" if sent else "failed", attempts, error, notification_id),
        )

    def notifications(self, request_id: int | None = None) -> list[tuple[str, str, int]]:
        """(event, state, attempts) of each notification, oldest first (for operators)."""
        if request_id is None:
            rows = self._all("SELECT event, state, attempts FROM notifications ORDER BY id")
        else:
            rows = self._all(
                "SELECT event, state, attempts FROM notifications WHERE request_id = ? ORDER BY id",
                (request_id,),
            )
        return [(r[0], r[1], int(r[2])) for r in rows]
