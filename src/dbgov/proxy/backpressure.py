"""Backpressure from the ledger: a worker stops reading client messages while the
sequencer trails the journals by more than `ledger.max_lag_mb`.

The journal holds every event before its statement runs, so integration may trail
without losing anything. But each byte of lag is audit data not yet in the Merkle
log: missing from the dashboard, from proofs and from signed checkpoints. The
sequencer runs niced so that statements go first, and under a saturating load it
falls behind; without a bound, a long enough burst leaves the verifiable log
minutes behind the database. Past the bound every worker pauses reading from its
clients. Statements already sent finish, new ones wait in the clients' sockets,
the CPU goes to the sequencer, and reading resumes once the lag is under half the
bound. Nothing is refused: clients see latency, never an error. (Tessera answers
the same overload with a pushback error; a SQL client would see a statement fail
that it may retry blindly.)

The lag is the one `dbgov_ledger_lag_bytes` reports: journal segment sizes against
the offsets the sequencer committed, read every `INTERVAL_S`. So a sequencer that
stops (its process stopped, its disk full) stops the proxy once the bound is
reached: audit before service. The bound can be overshot by what the workers
accept within one interval.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from typing import Any

from dbgov.layout import Layout
from dbgov.ledger.lag import integrated_offsets, journal_sizes, lag_bytes
from dbgov.store.sqlite import LedgerStore

log = logging.getLogger(__name__)

INTERVAL_S = 0.1
REPORT_EVERY_S = 60


class LedgerBackpressure:
    """Watches the ledger lag for one worker and pauses or resumes its sessions.

    `sessions` is the worker's live map (session id -> Session); a session that logs
    in while the bound is exceeded reads `engaged` and pauses itself."""

    def __init__(self, layout: Layout, limit_bytes: int, sessions: dict[str, Any]) -> None:
        self.layout = layout
        self.limit = limit_bytes
        self.sessions = sessions
        self.engaged = False
        self.lag = 0
        self._store: LedgerStore | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._failing = False
        self.pauses = 0
        self._quiet_until = 0.0

    def start(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(INTERVAL_S, self._tick)

    def stop(self) -> None:
        """Stop watching (shutdown). Paused sessions stay paused: the drain ends them."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def measure(self) -> int:
        sizes = journal_sizes(self.layout.journal)
        if not sizes:
            return 0
        if self._store is None:
            if not self.layout.ledger_db.exists():
                return lag_bytes(sizes, {})
            self._store = LedgerStore(self.layout.ledger_db, readonly=True)
        return lag_bytes(sizes, integrated_offsets(self._store))

    def _tick(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(INTERVAL_S, self._tick)
        self.check()

    def check(self) -> None:
        """Measure the lag; pause the sessions past the bound, resume them under half."""
        try:
            self.lag = self.measure()
        except (OSError, sqlite3.Error) as exc:
            # Keep the last state: a lag we cannot read is not a lag we know to be small.
            if not self._failing:
                log.warning("ledger backpressure: cannot read the ledger lag: %s", exc)
            self._failing = True
            return
        self._failing = False
        if not self.engaged and self.lag > self.limit:
            self.pauses += 1
            now = time.monotonic()
            if now >= self._quiet_until:  # a sustained overload pauses every second or so
                self._quiet_until = now + REPORT_EVERY_S
                log.warning(
                    "ledger: the sequencer trails the journals by %d bytes (bound %d); "
                    "pausing client reads until it catches up (pause %d of this worker; "
                    "the next are reported after %d s)",
                    self.lag,
                    self.limit,
                    self.pauses,
                    REPORT_EVERY_S,
                )
            self._set(True)
        elif self.engaged and self.lag <= self.limit // 2:
            log.info("ledger: lag down to %d bytes; resuming client reads", self.lag)
            self._set(False)

    def _set(self, engaged: bool) -> None:
        self.engaged = engaged
        for session in list(self.sessions.values()):
            session.ledger_backpressure(engaged)
