"""Splitting a PostgreSQL byte stream into frames, distrusting every length.

After startup every message is `type byte | int32 length (self-inclusive) | body`.
Like PgBouncer's `get_header()` (src/proto.c), a length below 4 or above the
configured maximum is a protocol violation, and bodiless messages must have
length exactly 4. Startup-phase packets have no type byte and are capped at
10,000 bytes, as in PostgreSQL's MAX_STARTUP_PACKET_LENGTH.

`FrameBuffer` never copies a frame out: callers get `(type, start, end)` offsets
into its buffer and forward `view[start:end]` unchanged when nothing needs
rewriting. Readers follow h11's three-way contract: a value, None for "need more
bytes", or an exception.
"""

from __future__ import annotations

import struct

from dbgov.wire.postgres.errors import RemoteProtocolError
from dbgov.wire.postgres.messages import (
    CANCEL_REQUEST_CODE,
    GSSENC_REQUEST_CODE,
    SSL_REQUEST_CODE,
    CancelRequest,
    GSSENCRequest,
    SSLRequest,
    StartupMessage,
)

MAX_STARTUP_PACKET = 10_000
GATHER_AT = 256 * 1024  # frames at least this big are gathered, not re-copied per chunk
DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024
_U32 = struct.Struct("!I")

# Message types whose length must be exactly 4 (no body), by direction.
BODILESS_FRONTEND = frozenset(b"SHXc")
BODILESS_BACKEND = frozenset(b"123nIsc")


class FrameBuffer:
    """A receive buffer that yields frame offsets.

    `buf` is immutable bytes: a chunk that starts at a frame boundary becomes the
    buffer itself, with no copy, and compiled code reads its length words by
    indexing (dbgov.native). A frame of at least `GATHER_AT` bytes that has not
    fully arrived is gathered as a list of chunks and joined once, so a big message
    costs one copy rather than one per chunk.
    """

    __slots__ = ("_bodiless", "_have", "_need", "_parts", "buf", "end", "max_len", "pos", "start")

    def __init__(self, *, max_len: int = DEFAULT_MAX_MESSAGE, frontend: bool = True) -> None:
        self.buf = b""
        self.pos = 0
        self.start = self.end = 0  # the frame `advance` returned last
        self.max_len = max_len
        self._bodiless = BODILESS_FRONTEND if frontend else BODILESS_BACKEND
        self._parts: list[bytes] = []  # chunks of a big frame being gathered
        self._have = 0  # bytes in _parts
        self._need = 0  # end of the incomplete frame in buf; while gathering, its size

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        chunk = bytes(data)  # the same object when it is bytes already
        if self._parts:  # gathering a big frame
            self._parts.append(chunk)
            self._have += len(chunk)
            if self._have >= self._need:
                self.buf = b"".join(self._parts)
                self._parts = []
                self._have = self._need = 0
            return
        rest = len(self.buf) - self.pos
        if rest == 0:
            self.buf = chunk
        elif self._need - self.pos >= GATHER_AT and self._need - self.pos > rest + len(chunk):
            self._parts = [self.buf[self.pos :], chunk]
            self._have = rest + len(chunk)
            self._need -= self.pos
            self.buf = b""
        else:
            self.buf = self.buf[self.pos :] + chunk
            self._need = 0
        self.pos = 0

    def advance(self) -> int:
        """The type of the next whole frame, consumed, with its offsets in `start`
        and `end`; -1 when no whole frame is buffered (feed more).

        The pumps' hot loops call this once per frame: the offsets are attributes
        of a compiled class (dbgov.native), so a frame costs no tuple and no boxed
        integers.
        """
        buf = self.buf
        pos = self.pos
        if len(buf) - pos < 5:
            self._need = 0
            return -1
        t = buf[pos]
        n = (buf[pos + 1] << 24) | (buf[pos + 2] << 16) | (buf[pos + 3] << 8) | buf[pos + 4]
        if n < 4 or n > self.max_len:
            raise RemoteProtocolError(f"invalid message length {n} for type {chr(t)!r}")
        if n != 4 and t in self._bodiless:
            raise RemoteProtocolError(f"message type {chr(t)!r} must have no body")
        end = pos + 1 + n
        if end > len(buf):
            self._need = end  # where the incomplete frame ends: feed() may gather it
            return -1
        self.start = pos
        self.end = self.pos = end
        return t

    def advance_if(self, wanted: int) -> bool:
        """Consume the next frame, as `advance` does, only if it is whole and of type
        `wanted`; anything else (including a bad length, which `advance` will report)
        leaves the buffer as it was. Lets a pump take a run of DataRows in one call."""
        buf = self.buf
        pos = self.pos
        if len(buf) - pos < 5 or buf[pos] != wanted:
            return False
        n = (buf[pos + 1] << 24) | (buf[pos + 2] << 16) | (buf[pos + 3] << 8) | buf[pos + 4]
        end = pos + 1 + n
        if n < 4 or n > self.max_len or end > len(buf):
            return False
        self.start = pos
        self.end = self.pos = end
        return True

    def frames(self, limit: int = -1) -> list[tuple[int, int, int]]:
        """(type, start, end) of every whole frame buffered (at most `limit`), consumed."""
        out: list[tuple[int, int, int]] = []
        while limit != len(out):
            t = self.advance()
            if t < 0:
                break
            out.append((t, self.start, self.end))
        return out

    def next_frame(self) -> tuple[int, int, int] | None:
        """Return (type, start, end) of the next whole frame, or None if incomplete."""
        t = self.advance()
        return None if t < 0 else (t, self.start, self.end)

    def pending(self) -> int:
        return len(self.buf) - self.pos + self._have

    def take_rest(self) -> bytes:
        rest = b"".join([self.buf[self.pos :], *self._parts])
        self.buf = b""
        self.pos = 0
        self._parts = []
        self._have = self._need = 0
        return rest


class DirectTLS:
    """First byte 0x16: a TLS ClientHello sent without SSLRequest (PostgreSQL 17+)."""


DIRECT_TLS = DirectTLS()

StartupPacket = StartupMessage | SSLRequest | GSSENCRequest | CancelRequest | DirectTLS


def read_startup_packet(buf: bytes | bytearray) -> tuple[StartupPacket, int] | None:
    """Decode one startup-phase packet from the front of `buf`.

    Returns (packet, bytes consumed), None if more bytes are needed, or raises.
    """
    if not buf:
        return None
    if buf[0] == 0x16:
        return DIRECT_TLS, 0
    if len(buf) < 8:
        return None
    (n,) = _U32.unpack_from(buf, 0)
    if n < 8 or n > MAX_STARTUP_PACKET:
        raise RemoteProtocolError(f"invalid startup packet length {n}")
    if len(buf) < n:
        return None
    (code,) = _U32.unpack_from(buf, 4)
    body = bytes(buf[4:n])
    if code == SSL_REQUEST_CODE:
        if n != 8:
            raise RemoteProtocolError("malformed SSLRequest")
        return SSLRequest(), n
    if code == GSSENC_REQUEST_CODE:
        if n != 8:
            raise RemoteProtocolError("malformed GSSENCRequest")
        return GSSENCRequest(), n
    if code == CANCEL_REQUEST_CODE:
        return CancelRequest.decode(body), n
    if code >> 16 != 3:
        raise RemoteProtocolError(
            f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}: dbgov speaks 3.0 to 3.2",
            sqlstate="0A000",
        )
    return StartupMessage.decode(body), n
