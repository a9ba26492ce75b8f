"""Everything that affects the protocol state machine lives here (h11 `_state.py`).

Theory of operation
-------------------
A PostgreSQL session has one phase at a time, seen identically from both ends:

    STARTUP ──SSLRequest/GSSENCRequest──▶ STARTUP (after the one-byte answer)
       │ StartupMessage
       ▼
    AUTHENTICATING ──AuthenticationOk … ReadyForQuery──▶ READY
    READY ──CopyInResponse──▶ COPY_IN ──CopyDone/CopyFail──▶ READY
    READY ──CopyOutResponse──▶ COPY_OUT ──CopyDone/ErrorResponse──▶ READY
    READY ──CopyBothResponse──▶ COPY_BOTH (replication only: refused by dbgov)
    any ──Terminate / EOF / fatal error──▶ CLOSED
    CLOSED by the client's Terminate: the server still answers what came before it

Transitions are tables keyed by (phase, message type byte); anything missing is a
protocol violation (raise), never a silent pass. The frontend tables say which
messages a client may send in a phase; the backend tables say what a server's
message does to the phase. The proxy keeps one `Phase` per session.
"""

from __future__ import annotations

from enum import Enum

from dbgov.wire.postgres.errors import RemoteProtocolError


class Phase(Enum):
    STARTUP = "startup"
    AUTHENTICATING = "authenticating"
    READY = "ready"  # between ReadyForQuery and the next command, and while commands run
    COPY_IN = "copy_in"  # client streams CopyData to the server
    COPY_OUT = "copy_out"  # server streams CopyData to the client
    CLOSED = "closed"


# Frontend messages legal in each phase once authenticated.
# 'F' FunctionCall is legal protocol; policy refuses it (it bypasses SQL analysis).
# CopyData/CopyDone/CopyFail stay legal in READY: after the server aborts a COPY IN
# with an error, the client may still be sending the rest, which the server discards.
_READY_FRONTEND = frozenset(b"QPBDECSHXFdcf")
FRONTEND_ALLOWED: dict[Phase, frozenset[int]] = {
    Phase.READY: _READY_FRONTEND,
    # During COPY IN the server ignores Sync and Flush (protocol-flow.html#PROTOCOL-COPY).
    Phase.COPY_IN: frozenset(b"dcfSHX"),
    # A client may pipeline its next commands while a COPY OUT is streaming.
    Phase.COPY_OUT: _READY_FRONTEND,
}

# Frontend messages that move the phase.
FRONTEND_TRANSITIONS: dict[tuple[Phase, int], Phase] = {
    (Phase.COPY_IN, ord("c")): Phase.READY,  # CopyDone
    (Phase.COPY_IN, ord("f")): Phase.READY,  # CopyFail
    (Phase.READY, ord("X")): Phase.CLOSED,
    (Phase.COPY_IN, ord("X")): Phase.CLOSED,
    (Phase.COPY_OUT, ord("X")): Phase.CLOSED,
}

# Backend messages that move the phase.
BACKEND_TRANSITIONS: dict[tuple[Phase, int], Phase] = {
    (Phase.READY, ord("G")): Phase.COPY_IN,  # CopyInResponse
    (Phase.READY, ord("H")): Phase.COPY_OUT,  # CopyOutResponse
    (Phase.COPY_OUT, ord("c")): Phase.READY,  # CopyDone
    (Phase.COPY_OUT, ord("E")): Phase.READY,  # error ends the copy
    (Phase.COPY_IN, ord("E")): Phase.READY,  # server aborted the copy
    (Phase.COPY_IN, ord("Z")): Phase.READY,
    (Phase.COPY_OUT, ord("Z")): Phase.READY,
}

# Backend messages legal in each phase (after authentication). 'W' CopyBothResponse
# only follows replication commands, which dbgov never forwards.
_READY_BACKEND = frozenset(b"123nIsTDCEZNASGHtVKv")
BACKEND_ALLOWED: dict[Phase, frozenset[int]] = {
    Phase.READY: _READY_BACKEND,
    Phase.COPY_IN: frozenset(b"ENASCZ"),
    Phase.COPY_OUT: frozenset(b"dcENASCZ"),
    # After the client's Terminate: answers to the commands it sent before (the
    # phase stays CLOSED; the proxy's units still check each answer).
    Phase.CLOSED: _READY_BACKEND,
}


def frontend_step(phase: Phase, type_byte: int) -> Phase:
    """Check a client message against the table; return the next phase."""
    allowed = FRONTEND_ALLOWED.get(phase)
    if allowed is None or type_byte not in allowed:
        raise RemoteProtocolError(
            f"unexpected message type {chr(type_byte)!r} from client in phase {phase.value}"
        )
    return FRONTEND_TRANSITIONS.get((phase, type_byte), phase)


def backend_step(phase: Phase, type_byte: int) -> Phase:
    """Check a server message against the table; return the next phase."""
    allowed = BACKEND_ALLOWED.get(phase)
    if allowed is None or type_byte not in allowed:
        raise RemoteProtocolError(
            f"unexpected message type {chr(type_byte)!r} from server in phase {phase.value}"
        )
    return BACKEND_TRANSITIONS.get((phase, type_byte), phase)
