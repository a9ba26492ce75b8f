"""The pump's inline phase checks agree with the protocol state tables they skip."""

from __future__ import annotations

from dbgov.proxy import session
from dbgov.wire.postgres.states import (
    BACKEND_ALLOWED,
    FRONTEND_ALLOWED,
    Phase,
    backend_step,
    frontend_step,
)


def test_frontend_types_kept_inline_leave_ready_unchanged() -> None:
    for t in session._READY_FRONTEND_STAY:
        assert frontend_step(Phase.READY, t) is Phase.READY, chr(t)
    # The rest of READY's legal types go through the table: they move the phase.
    for t in FRONTEND_ALLOWED[Phase.READY] - session._READY_FRONTEND_STAY:
        assert frontend_step(Phase.READY, t) is not Phase.READY, chr(t)


def test_backend_types_kept_inline_leave_ready_unchanged() -> None:
    for t in session._READY_STAY | {ord("D")}:
        assert t in BACKEND_ALLOWED[Phase.READY], chr(t)
        assert backend_step(Phase.READY, t) is Phase.READY, chr(t)
