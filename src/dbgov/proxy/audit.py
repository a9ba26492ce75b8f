"""The proxy's side of the audit: build events, append them write-ahead.

`write_ahead()` is the one call the pump makes before forwarding a statement.
In strict mode the event is in the operating system when it returns None; any
error means the statement MUST NOT be forwarded (the session answers 58000).
In fsync mode durability arrives later through `Journal.when_durable`, and so it
does in strict mode for a statement appended with `append_ahead()` (a busy
worker's writes grouped per loop iteration, see `Session._forward_event`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from dbgov.ledger import events
from dbgov.ledger.journal import Journal

log = logging.getLogger(__name__)


class Audit:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._n = 0  # the last event number of this process

    @property
    def mode(self) -> str:
        return self.journal.mode

    @property
    def failed(self) -> OSError | None:
        return self.journal.failed

    def next_id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}:{self._n}"

    def append_event(self, ev: dict[str, Any]) -> None:
        """Append an event that nothing waits on (completions, closes, failures)."""
        try:
            self.journal.append(events.encode(ev))
        except (TypeError, ValueError):  # a bug in an event's shape, never user input
            log.exception("unencodable %s event dropped", ev.get("type"))

    def defer(self, build: Callable[[], None]) -> None:
        """Have `build()` append its events before the journal's next write (async mode's
        completions: built once the loop is idle, not between a response and the next
        request)."""
        self.journal.defer(build)

    def write_ahead_event(self, ev: dict[str, Any]) -> OSError | None:
        """Append an event and, in strict mode, write it to the OS before returning;
        otherwise report the journal's standing failure. Returns the error, if any."""
        self.journal.append(events.encode(ev))
        if self.journal.mode != "strict":
            return self.journal.failed
        return self.journal.write_now()

    def append_ahead(self, ev: dict[str, Any]) -> None:
        """Append the event of a statement that then waits on `when_durable` before it
        is forwarded (strict mode's grouped writes)."""
        self.journal.append(events.encode(ev))

    def record(self, type_: str, event_id: str, **fields: Any) -> dict[str, Any]:
        """`append_event` from keyword fields (None values left out)."""
        ev = events.base(type_, event_id, **fields)
        self.append_event(ev)
        return ev

    def auth_failed(
        self,
        session: str,
        client: str,
        tls: bool | None,
        reason: str,
        message: str,
        user: str | None = None,
        target: str | None = None,
    ) -> None:
        """A login refused, by the listener or a session: `user` and `target` as the
        startup packet named them, when it was read."""
        self.record(
            "auth.failed",
            self.next_id(session),
            session=session,
            user=user,
            target=target,
            reason=reason,
            message=message,
            client=client,
            tls=tls,
        )

    def write_ahead(self, type_: str, event_id: str, **fields: Any) -> OSError | None:
        """`write_ahead_event` from keyword fields (None values left out)."""
        return self.write_ahead_event(events.base(type_, event_id, **fields))

    def when_durable(self, callback: Callable[[OSError | None], None]) -> None:
        self.journal.when_durable(callback)
