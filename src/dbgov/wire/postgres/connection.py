"""Sans-I/O startup and authentication, both ways (h11 `_connection.py` habit).

`ServerConnection` is dbgov facing a client (dbgov plays the server);
`ClientConnection` is dbgov facing the upstream database (dbgov plays the client).
Both speak the same three verbs and never touch a socket:

    conn.receive_data(chunk)                  # b"" means EOF
    while (event := conn.next_event()) is not NEED_DATA:
        on_event(event)
    wire_bytes = conn.send(message)

What we send decides how the peer's next message is read: after sending
AuthenticationCleartextPassword a 'p' message is a password; after
AuthenticationSASL it is a SASLInitialResponse. Errors are sticky: once
`next_event()` raises, the connection is in phase CLOSED and raises again.
Once READY, the proxy's pump takes over the stream (`take_leftover()`).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any, Protocol, TypeAlias

from dbgov.wire.postgres.errors import LocalProtocolError, RemoteProtocolError
from dbgov.wire.postgres.framing import MAX_STARTUP_PACKET, FrameBuffer, read_startup_packet
from dbgov.wire.postgres.messages import (
    AUTH_CLEARTEXT,
    AUTH_MD5,
    AUTH_OK,
    AUTH_SASL,
    AUTH_SASL_CONTINUE,
    AUTH_SASL_FINAL,
    Authentication,
    BackendKeyData,
    CancelRequest,
    ErrorResponse,
    GSSENCRequest,
    NegotiateProtocolVersion,
    NoticeResponse,
    ParameterStatus,
    PasswordMessage,
    ReadyForQuery,
    SASLInitialResponse,
    SASLResponse,
    SSLRequest,
    StartupMessage,
)
from dbgov.wire.postgres.states import Phase


class _NeedData(Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA = _NeedData.NEED_DATA


class Encodable(Protocol):
    def encode(self) -> bytes: ...


class ConnectionClosed:
    """The peer closed the stream (EOF)."""

    __slots__ = ()


CONNECTION_CLOSED = ConnectionClosed()

ServerEvent: TypeAlias = (
    StartupMessage
    | SSLRequest
    | GSSENCRequest
    | CancelRequest
    | PasswordMessage
    | SASLInitialResponse
    | SASLResponse
    | ConnectionClosed
)

ClientEvent: TypeAlias = (
    Authentication
    | ParameterStatus
    | BackendKeyData
    | ReadyForQuery
    | ErrorResponse
    | NoticeResponse
    | NegotiateProtocolVersion
    | ConnectionClosed
)


def _sticky(conn: Any, step: Callable[[], Any]) -> Any:
    """Errors are sticky (h11 habit): after the peer broke the protocol once, the
    connection is CLOSED and every later call raises the same error."""
    if conn._error is not None:
        raise conn._error
    try:
        return step()
    except RemoteProtocolError as exc:
        conn._error = exc
        conn.phase = Phase.CLOSED
        raise


class _Expect(Enum):
    """What a 'p' message from the client means, given what we last asked for."""

    NOTHING = 0
    PASSWORD = 1
    SASL_INITIAL = 2
    SASL_RESPONSE = 3


class ServerConnection:
    """The client-facing side of startup and authentication."""

    def __init__(self) -> None:
        self.phase = Phase.STARTUP
        self._startup_buf = bytearray()
        self._frames = FrameBuffer(max_len=MAX_STARTUP_PACKET)
        self._expect = _Expect.NOTHING
        self._eof = False
        self._error: RemoteProtocolError | None = None

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
        elif self.phase is Phase.STARTUP:
            self._startup_buf += data
        else:
            self._frames.feed(data)

    def buffered(self) -> int:
        """Bytes received but not yet consumed as events."""
        return len(self._startup_buf) + self._frames.pending()

    def next_event(self) -> ServerEvent | _NeedData:
        return _sticky(self, self._next_event)  # type: ignore[no-any-return]

    def _next_event(self) -> ServerEvent | _NeedData:
        if self.phase is Phase.STARTUP:
            got = read_startup_packet(self._startup_buf)
            if got is None:
                return CONNECTION_CLOSED if self._eof else NEED_DATA
            packet, used = got
            if used == 0:  # direct TLS is decided by the I/O layer before we exist
                raise RemoteProtocolError("unexpected TLS handshake")
            del self._startup_buf[:used]
            if isinstance(packet, StartupMessage):
                self.phase = Phase.AUTHENTICATING
                self._frames.feed(self._startup_buf)
                self._startup_buf.clear()
            elif isinstance(packet, CancelRequest):
                self.phase = Phase.CLOSED
            return packet  # type: ignore[return-value]
        if self.phase is Phase.AUTHENTICATING:
            got_frame = self._frames.next_frame()
            if got_frame is None:
                return CONNECTION_CLOSED if self._eof else NEED_DATA
            t, start, end = got_frame
            if t != ord("p"):
                raise RemoteProtocolError(
                    f"expected password response, got message type {chr(t)!r}", sqlstate="28000"
                )
            body = self._frames.buf[start + 5 : end]
            expect = self._expect
            self._expect = _Expect.NOTHING
            if expect is _Expect.PASSWORD:
                return PasswordMessage.decode(body)
            if expect is _Expect.SASL_INITIAL:
                return SASLInitialResponse.decode(body)
            if expect is _Expect.SASL_RESPONSE:
                return SASLResponse.decode(body)
            raise RemoteProtocolError("unexpected password response", sqlstate="28000")
        if self._eof:
            return CONNECTION_CLOSED
        return NEED_DATA

    def send(self, message: Encodable) -> bytes:
        if self.phase is Phase.CLOSED and not isinstance(message, ErrorResponse):
            raise LocalProtocolError("connection is closed")
        if isinstance(message, Authentication):
            if self.phase is not Phase.AUTHENTICATING:
                raise LocalProtocolError("authentication request outside startup")
            self._expect = {
                AUTH_CLEARTEXT: _Expect.PASSWORD,
                AUTH_MD5: _Expect.PASSWORD,
                AUTH_SASL: _Expect.SASL_INITIAL,
                AUTH_SASL_CONTINUE: _Expect.SASL_RESPONSE,
            }.get(message.code, _Expect.NOTHING)
        elif isinstance(message, ReadyForQuery):
            self.phase = Phase.READY
        elif isinstance(message, ErrorResponse) and message.severity in ("FATAL", "PANIC"):
            self.phase = Phase.CLOSED
        return message.encode()

    def take_leftover(self) -> bytes:
        """Bytes the client pipelined after startup; the pump continues from them."""
        if self.phase is not Phase.READY:
            raise LocalProtocolError("leftover bytes are only handed over once READY")
        return self._frames.take_rest()


class ClientConnection:
    """The upstream-facing side: dbgov logging in to the database."""

    def __init__(self) -> None:
        self.phase = Phase.STARTUP
        self._frames = FrameBuffer(max_len=1 << 20, frontend=False)
        self._eof = False
        self._error: RemoteProtocolError | None = None

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
        else:
            self._frames.feed(data)

    def send(self, message: Encodable) -> bytes:
        if isinstance(message, StartupMessage):
            if self.phase is not Phase.STARTUP:
                raise LocalProtocolError("StartupMessage sent twice")
            self.phase = Phase.AUTHENTICATING
        return message.encode()

    def next_event(self) -> ClientEvent | _NeedData:
        return _sticky(self, self._next_event)  # type: ignore[no-any-return]

    _DECODERS: dict[int, Any] = {
        ord("R"): Authentication,
        ord("S"): ParameterStatus,
        ord("K"): BackendKeyData,
        ord("Z"): ReadyForQuery,
        ord("E"): ErrorResponse,
        ord("N"): NoticeResponse,
        ord("v"): NegotiateProtocolVersion,
    }

    def _next_event(self) -> ClientEvent | _NeedData:
        if self.phase is Phase.READY:
            return NEED_DATA  # what follows ReadyForQuery belongs to the pump
        got = self._frames.next_frame()
        if got is None:
            return CONNECTION_CLOSED if self._eof else NEED_DATA
        t, start, end = got
        decoder = self._DECODERS.get(t)
        if decoder is None or self.phase is not Phase.AUTHENTICATING:
            raise RemoteProtocolError(f"unexpected message type {chr(t)!r} from server at startup")
        event = decoder.decode(self._frames.buf[start + 5 : end])
        if isinstance(event, ReadyForQuery):
            self.phase = Phase.READY
        elif isinstance(event, ErrorResponse):
            self.phase = Phase.CLOSED
        elif isinstance(event, Authentication) and event.code not in (
            AUTH_OK,
            AUTH_CLEARTEXT,
            AUTH_MD5,
            AUTH_SASL,
            AUTH_SASL_CONTINUE,
            AUTH_SASL_FINAL,
        ):
            raise RemoteProtocolError(f"unsupported authentication method {event.code}")
        return event  # type: ignore[no-any-return]

    def take_leftover(self) -> bytes:
        return self._frames.take_rest()
