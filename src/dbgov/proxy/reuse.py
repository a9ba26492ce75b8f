"""Upstream connections kept for the next session of the same identity and target.

A client that connects, runs a statement or two and leaves (`pgbench -C`, cron jobs,
serverless functions) would cost the database a backend and dbgov a SCRAM login
each time. When such a session ends cleanly (the client's Terminate, nothing in
flight, no open transaction), its upstream connection is reset with `DISCARD ALL`
and kept for `upstream_reuse_s`; the next session of the same identity, target and
upstream startup parameters takes it instead of logging in again.

Never across identities: the key holds the identity (issuer and name), so no session
can see what another identity's session left behind on the server, even if `DISCARD
ALL` missed something. `DISCARD ALL` drops temporary tables, prepared statements and
cursors, releases advisory locks, stops LISTENs and resets every setting and the
session authorization; a connection whose reset does not end in an idle
ReadyForQuery is closed, never kept. The session that takes one sets its own
`application_name` before its first statement (an internal query, see session.py).
Both statements are dbgov's own, not a client's: the ledger lists them in the
`internal_sql` field of the sessions' connection.open and connection.close events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from dbgov.wire.postgres.errors import RemoteProtocolError
from dbgov.wire.postgres.framing import FrameBuffer
from dbgov.wire.postgres.messages import ParameterStatus, Query, Terminate

log = logging.getLogger(__name__)

RESET_SQL = "DISCARD ALL"
PER_KEY = 16  # idle connections kept per key: bounds what reuse holds on the server
RESET_TIMEOUT_S = 5.0
Key = tuple[str, str, str, tuple[tuple[str, str], ...]]  # target, issuer, user, params


def key(target: str, issuer: str, user: str, params: dict[str, str]) -> Key:
    """The upstream's startup parameters make part of the key (search_path, time
    zone, ... reset to them), except application_name, which each session sets."""
    kept = sorted(item for item in params.items() if item[0] != "application_name")
    return (target, issuer, user, tuple(kept))


@dataclass
class Idle:
    """An upstream connection between two sessions."""

    transport: asyncio.Transport
    pid: int  # the backend's, for CancelRequests
    secret: bytes
    params: dict[str, str]  # the server's ParameterStatus values as they stand
    until: float = 0.0  # monotonic: closed when still idle then
    lost: bool = False


class UpstreamPool:
    """One worker's idle upstream connections. Loop thread only."""

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        self._idle: dict[Key, list[Idle]] = {}
        self._sweep: asyncio.TimerHandle | None = None

    def take(self, k: Key) -> Idle | None:
        """A reset connection for `k`, most recently kept first, or None."""
        kept = self._idle.get(k)
        now = time.monotonic()
        while kept:
            conn = kept.pop()
            if not conn.lost and conn.until > now and not conn.transport.is_closing():
                return conn
            terminate(conn.transport)
        return None

    def release(
        self, k: Key, transport: asyncio.Transport, pid: int, secret: bytes, params: dict[str, str]
    ) -> bool:
        """Reset a connection whose session ended cleanly and keep it; or close it.
        True if the reset (`DISCARD ALL`) was sent."""
        if self.idle_s <= 0 or len(self._idle.get(k, ())) >= PER_KEY:
            terminate(transport)
            return False
        conn = Idle(transport, pid, secret, dict(params))
        reset = _Reset(self, k, conn)
        transport.set_protocol(reset)
        transport.resume_reading()
        transport.write(Query(RESET_SQL).encode())
        reset.timer = asyncio.get_running_loop().call_later(RESET_TIMEOUT_S, reset.fail, "timeout")
        return True

    def _keep(self, k: Key, conn: Idle) -> None:
        conn.until = time.monotonic() + self.idle_s
        conn.transport.set_protocol(_Watch(conn))
        self._idle.setdefault(k, []).append(conn)
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(self.idle_s, self._expire)

    def _expire(self) -> None:
        self._sweep = None
        now = time.monotonic()
        for k, kept in list(self._idle.items()):
            alive = []
            for c in kept:
                if c.lost:
                    continue
                if c.until <= now:
                    terminate(c.transport)
                else:
                    alive.append(c)
            if alive:
                self._idle[k] = alive
            else:
                del self._idle[k]
        if self._idle:
            soonest = min(c.until for kept in self._idle.values() for c in kept)
            self._sweep = asyncio.get_running_loop().call_later(
                max(0.0, soonest - now), self._expire
            )

    def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for kept in self._idle.values():
            for c in kept:
                terminate(c.transport)
        self._idle.clear()


def terminate(transport: asyncio.Transport) -> None:
    """Say goodbye to the server, then close (a write error only means it is gone)."""
    if not transport.is_closing():
        with contextlib.suppress(Exception):
            transport.write(Terminate().encode())
        transport.close()


class _Reset(asyncio.Protocol):
    """Reads the answer to DISCARD ALL: kept on an idle ReadyForQuery, else closed."""

    def __init__(self, pool: UpstreamPool, k: Key, conn: Idle) -> None:
        self.pool, self.k, self.conn = pool, k, conn
        self.frames = FrameBuffer(frontend=False)
        self.timer: asyncio.TimerHandle | None = None
        self.done = False

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        frames = self.frames
        try:
            frames.feed(data)
            while (t := frames.advance()) >= 0:
                body = frames.buf[frames.start + 5 : frames.end]
                if t == 0x53:  # ParameterStatus: RESET ALL reports what it changed back
                    ps = ParameterStatus.decode(body)
                    self.conn.params[ps.name] = ps.value
                elif t == 0x5A:  # ReadyForQuery
                    if body != b"I" or frames.pending():
                        self.fail("not idle after DISCARD ALL")
                        return
                    self._finish()
                    self.pool._keep(self.k, self.conn)
                    return
                elif t not in (0x43, 0x4E):  # CommandComplete, NoticeResponse
                    self.fail(f"unexpected message {chr(t)!r} after DISCARD ALL")
                    return
        except (RemoteProtocolError, ValueError) as exc:
            self.fail(str(exc))

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.lost = True
        self._finish()

    def fail(self, why: str) -> None:
        if self.done:
            return
        log.info("upstream connection not kept for reuse: %s", why)
        self._finish()
        terminate(self.conn.transport)

    def _finish(self) -> None:
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class _Watch(asyncio.Protocol):
    """An idle kept connection: anything the server says (a shutdown notice, an
    error before it closes) retires it."""

    def __init__(self, conn: Idle) -> None:
        self.conn = conn

    def data_received(self, data: bytes) -> None:
        self.conn.lost = True
        terminate(self.conn.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.lost = True
