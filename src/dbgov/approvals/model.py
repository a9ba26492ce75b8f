"""What approvals talk about: requests, votes, grants, and the outcome of a hold.

Requests, votes and grants are the control store's records (`store/control.py`),
re-exported here under their domain names: the store owns their shape because it
persists them, and the store imports nothing from approvals (DESIGN.md arrows).

An `Outcome` is what a held or refused statement ends with. When it is not an
approval it turns itself into the denial the session sends, worded as DESIGN.md
asks: `dbgov: approval #17 denied by carol: "not during business hours"`.
"""

from __future__ import annotations

from dataclasses import dataclass

from dbgov.gate import Decision, Verdict
from dbgov.store.control import (
    APPROVED,
    CONSUMED,
    DENIED,
    EXPIRED,
    PENDING,
    STATES,
    TIMED_OUT,
    WITHDRAWN,
    GrantRecord,
    RequestRecord,
    VoteRecord,
)

Request = RequestRecord
Vote = VoteRecord
Grant = GrantRecord

STATEMENT = "statement"
GRANT = "grant"

__all__ = [
    "APPROVED",
    "CONSUMED",
    "DENIED",
    "EXPIRED",
    "GRANT",
    "PENDING",
    "STATEMENT",
    "STATES",
    "TIMED_OUT",
    "WITHDRAWN",
    "Grant",
    "Outcome",
    "Request",
    "Vote",
    "event_prefix",
    "format_duration",
]


def event_prefix(request: Request) -> str:
    """Ledger event family: `approval.*` for statements, `grant.*` for access requests."""
    return "grant" if request.kind == GRANT else "approval"


def format_duration(seconds: float) -> str:
    """600 -> "10m", 5400 -> "1h30m", 90 -> "1m30s": how people write durations."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, s = divmod(s, size)
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts[:2])


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a statement that needed approval ends, for the session.

    `approved` means: run the exact statement now, and put `ref` in its ledger
    event as `approval_ref`. Otherwise `as_decision()` is the error to send.
    """

    approved: bool
    request_id: int | None
    message: str = ""  # the client-facing sentence, "dbgov: approval #N ..."
    hint: str | None = None
    sqlstate: str = "42501"

    @property
    def ref(self) -> str:
        return "" if self.request_id is None else str(self.request_id)

    def as_decision(self, original: Decision) -> Decision:
        return Decision(
            Verdict.DENY,
            original.rule,
            self.message.removeprefix("dbgov: "),
            self.hint,
            original.statement_index,
            None,
            self.sqlstate,
            original.grants_used,
            original.masking,
            from_approval=True,
            approval_id=self.request_id,
        )
