"""Connections that have not logged in yet: counted per client address, kept oldest first.

Two defences against clients that connect and never log in (a flood, a slowloris):

- `listen.max_pending_logins_per_source` caps them per client address, so that one
  source cannot take a worker's client slots;
- a worker at its client cap sheds the oldest of them to admit a new connection, so
  that many sources together cannot either. Logged-in sessions are never shed: a
  client must hold credentials to keep a slot. A real login takes milliseconds, so
  to shed one a flood would have to fill every slot in that time.

A shed connection gets FATAL 53300 (if it can still read) and no ledger event: it
touched nothing, and an event per shed connection would let the flood write the
ledger at its own rate. The worker logs how many it shed, once a minute at most.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# Sheds the connection if it still may be shed (it has not authenticated): True if it did.
Shed = Callable[[], bool]
REPORT_EVERY_S = 60.0
# What a shed client reads (FATAL 53300).
SHED_MESSAGE = (
    "dbgov: this proxy worker is full; connections that had not logged in were dropped, "
    "oldest first"
)
SHED_HINT = "try again"


def expire_now(deadline: asyncio.Timeout | None) -> bool:
    """Make a login's timeout expire at once, which ends the login (None: its task has
    not begun, and checks its own flag). False if the login has just ended."""
    if deadline is None:
        return True
    try:
        deadline.reschedule(-1.0)  # a time past
    except RuntimeError:  # exited: nothing left to end
        return False
    return True


class PendingLogins:
    def __init__(self, per_source_cap: int) -> None:
        self.cap = per_source_cap  # 0: no cap per source
        self.by_source: dict[str, int] = {}
        self._oldest_first: dict[int, tuple[str, Shed]] = {}
        self._keys = itertools.count(1)
        self._unreported = 0
        self._reported_at = -REPORT_EVERY_S
        self._report: asyncio.TimerHandle | None = None

    def at_cap(self, host: str) -> bool:
        return self.cap > 0 and self.by_source.get(host, 0) >= self.cap

    def add(self, host: str, shed: Shed) -> int:
        """Count a connection from `host`; its key for `done`. The caller checks `at_cap`
        first where the cap applies."""
        self.by_source[host] = self.by_source.get(host, 0) + 1
        key = next(self._keys)
        self._oldest_first[key] = (host, shed)
        return key

    def done(self, key: int) -> None:
        """The connection `add` counted logged in or ended (or was shed: no-op)."""
        entry = self._oldest_first.pop(key, None)
        if entry is None:
            return
        host = entry[0]
        n = self.by_source.get(host, 0) - 1
        if n > 0:
            self.by_source[host] = n
        else:
            self.by_source.pop(host, None)

    def shed_oldest(self) -> bool:
        """Shed the oldest connection that may still be shed; False if there is none.
        It stops counting now, though its socket closes when its task next runs.
        A `Shed` that declines must not change this registry."""
        for key, (_host, shed) in self._oldest_first.items():
            if shed():
                self.done(key)  # changes the dict: the loop must not go on
                self._note_shed()
                return True
        return False

    def _note_shed(self) -> None:
        """Count a shed connection; the count is logged at once after a quiet minute,
        else when the minute since the last report is up (so a flood's last count is
        logged too)."""
        self._unreported += 1
        if self._report is None:
            wait = max(0.0, self._reported_at + REPORT_EVERY_S - time.monotonic())
            self._report = asyncio.get_running_loop().call_later(wait, self._log_shed)

    def _log_shed(self) -> None:
        self._report = None
        log.warning(
            "worker full: shed %d connection(s) that had not logged in, oldest first",
            self._unreported,
        )
        self._unreported = 0
        self._reported_at = time.monotonic()
