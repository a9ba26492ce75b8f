"""Protocol errors, split by who broke the protocol (h11 `_util.py` habit).

`RemoteProtocolError` means the peer sent something invalid; the proxy answers with
an ErrorResponse (FATAL when it must close) using `sqlstate`. `LocalProtocolError`
means dbgov itself tried to send something invalid: a bug, never the peer's fault.
"""

from __future__ import annotations


class ProtocolError(Exception):
    sqlstate = "08P01"  # protocol_violation

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        if sqlstate is not None:
            self.sqlstate = sqlstate


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the PostgreSQL protocol."""


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol does not allow."""
