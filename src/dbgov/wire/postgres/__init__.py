"""PostgreSQL wire protocol 3.0/3.2: a sans-I/O codec and state machine.

Knows nothing about policy or sockets. `messages` holds frozen message values,
`framing` splits streams into frames, `states` is the phase table, and
`connection` runs startup and authentication in both directions.
"""

from dbgov.wire.postgres.connection import (
    CONNECTION_CLOSED,
    NEED_DATA,
    ClientConnection,
    ConnectionClosed,
    ServerConnection,
)
from dbgov.wire.postgres.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from dbgov.wire.postgres.framing import DIRECT_TLS, FrameBuffer, read_startup_packet
from dbgov.wire.postgres.states import Phase, backend_step, frontend_step

__all__ = [
    "CONNECTION_CLOSED",
    "DIRECT_TLS",
    "NEED_DATA",
    "ClientConnection",
    "ConnectionClosed",
    "FrameBuffer",
    "LocalProtocolError",
    "Phase",
    "ProtocolError",
    "RemoteProtocolError",
    "ServerConnection",
    "backend_step",
    "frontend_step",
    "read_startup_packet",
]
