"""PostgreSQL protocol messages as frozen values, with their wire encodings.

Protocol reference: https://www.postgresql.org/docs/current/protocol-message-formats.html
Each class knows how to `encode()` itself, type byte included, and how to be
decoded from a message body (`decode(body)`), the bytes after the 5-byte header.
Decoding distrusts every length and count: a short or malformed body raises
`RemoteProtocolError`, never IndexError or struct.error.

Only messages the proxy must read or write are decoded; everything else travels
as raw frames (see `framing.py`).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dbgov.wire.postgres.errors import RemoteProtocolError

PROTOCOL_3_0 = 3 << 16  # 196608
PROTOCOL_3_2 = (3 << 16) | 2  # 196610, PostgreSQL 18: variable-length cancel keys
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102
MAX_CANCEL_KEY = 256  # protocol 3.2 caps the secret key at 256 bytes

_I32 = struct.Struct("!i")
_I16 = struct.Struct("!h")
_HDR = struct.Struct("!cI")


def frame(type_byte: bytes, body: bytes) -> bytes:
    """Wrap a body in the 5-byte header: type byte and self-inclusive length."""
    return _HDR.pack(type_byte, len(body) + 4) + body


def cstr(s: str) -> bytes:
    b = s.encode()
    if b"\x00" in b:
        raise ValueError("strings on the wire must not contain NUL")
    return b + b"\x00"


class _Reader:
    """Cursor over a message body; every read checks bounds."""

    __slots__ = ("buf", "pos", "what")

    def __init__(self, buf: bytes | memoryview, what: str) -> None:
        self.buf = bytes(buf)
        self.pos = 0
        self.what = what

    def _short(self) -> RemoteProtocolError:
        return RemoteProtocolError(f"malformed {self.what} message: too short")

    # The integer readers index the bytes: compiled, that is a few machine
    # instructions, where struct.unpack_from is a Python-level call.
    def int32(self) -> int:
        v = self.uint32()
        return v - 0x1_0000_0000 if v >= 0x8000_0000 else v

    def uint32(self) -> int:
        p = self.pos
        b = self.buf
        if p + 4 > len(b):
            raise self._short()
        self.pos = p + 4
        return (b[p] << 24) | (b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3]

    def int16(self) -> int:
        p = self.pos
        b = self.buf
        if p + 2 > len(b):
            raise self._short()
        self.pos = p + 2
        v = (b[p] << 8) | b[p + 1]
        return v - 0x1_0000 if v >= 0x8000 else v

    def byte(self) -> int:
        if self.pos >= len(self.buf):
            raise self._short()
        v = self.buf[self.pos]
        self.pos += 1
        return v

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise self._short()
        v = self.buf[self.pos : self.pos + n]
        self.pos += n
        return v

    def cstr(self) -> str:
        end = self.buf.find(b"\x00", self.pos)
        if end == self.pos:  # the unnamed statement or portal
            self.pos = end + 1
            return ""
        if end < 0:
            raise RemoteProtocolError(f"malformed {self.what} message: unterminated string")
        raw = self.buf[self.pos : end]
        self.pos = end + 1
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise RemoteProtocolError(
                f"malformed {self.what} message: invalid UTF-8", sqlstate="22021"
            ) from None

    def values(self, n: int) -> list[bytes | None]:
        """`n` length-prefixed values, -1 meaning NULL (DataRow, Bind)."""
        out: list[bytes | None] = []
        for _ in range(n):
            ln = self.int32()
            if ln == -1:
                out.append(None)
            elif ln < -1:
                raise RemoteProtocolError(f"malformed {self.what} message: negative length")
            else:
                out.append(self.take(ln))
        return out

    def rest(self) -> bytes:
        v = self.buf[self.pos :]
        self.pos = len(self.buf)
        return v

    def count(self, width: int) -> int:
        """A 16-bit element count, checked against the bytes left."""
        n = self.int16()
        if n < 0 or n * width > len(self.buf) - self.pos:
            raise RemoteProtocolError(f"malformed {self.what} message: bad count {n}")
        return n

    def done(self) -> None:
        if self.pos != len(self.buf):
            raise RemoteProtocolError(f"malformed {self.what} message: trailing bytes")


# ---------------------------------------------------------------------------
# Startup-phase messages: no type byte, only a length and a code.


@dataclass(frozen=True, slots=True)
class StartupMessage:
    protocol: int
    params: Mapping[str, str]

    def encode(self) -> bytes:
        body = _I32.pack(self.protocol)
        for k, v in self.params.items():
            body += cstr(k) + cstr(v)
        body += b"\x00"
        return _I32.pack(len(body) + 4) + body

    @classmethod
    def decode(cls, body: bytes | memoryview) -> StartupMessage:
        r = _Reader(body, "StartupMessage")
        protocol = r.int32()
        params: dict[str, str] = {}
        while True:
            if r.pos >= len(r.buf):
                raise RemoteProtocolError("malformed StartupMessage: missing terminator")
            if r.buf[r.pos] == 0:
                r.pos += 1
                break
            key = r.cstr()
            value = r.cstr()
            if key in params:
                raise RemoteProtocolError(f"StartupMessage repeats parameter {key!r}")
            params[key] = value
        r.done()
        return cls(protocol, params)


@dataclass(frozen=True, slots=True)
class SSLRequest:
    def encode(self) -> bytes:
        return _I32.pack(8) + _I32.pack(SSL_REQUEST_CODE)


@dataclass(frozen=True, slots=True)
class GSSENCRequest:
    def encode(self) -> bytes:
        return _I32.pack(8) + _I32.pack(GSSENC_REQUEST_CODE)


@dataclass(frozen=True, slots=True)
class CancelRequest:
    pid: int
    key: bytes

    def encode(self) -> bytes:
        body = _I32.pack(CANCEL_REQUEST_CODE) + _I32.pack(self.pid) + self.key
        return _I32.pack(len(body) + 4) + body

    @classmethod
    def decode(cls, body: bytes | memoryview) -> CancelRequest:
        r = _Reader(body, "CancelRequest")
        if r.int32() != CANCEL_REQUEST_CODE:
            raise RemoteProtocolError("not a CancelRequest")
        pid = r.int32()
        key = r.rest()
        if not 4 <= len(key) <= MAX_CANCEL_KEY:
            raise RemoteProtocolError("malformed CancelRequest: bad key length")
        return cls(pid, key)


# ---------------------------------------------------------------------------
# Frontend messages (client -> server).


@dataclass(frozen=True, slots=True)
class Query:
    sql: str

    def encode(self) -> bytes:
        return frame(b"Q", cstr(self.sql))

    @classmethod
    def decode(cls, body: bytes | memoryview) -> Query:
        r = _Reader(body, "Query")
        sql = r.cstr()
        r.done()
        return cls(sql)


@dataclass(frozen=True, slots=True)
class Parse:
    name: str
    sql: str
    param_oids: tuple[int, ...] = ()

    def encode(self) -> bytes:
        body = (
            cstr(self.name)
            + cstr(self.sql)
            + struct.pack(f"!h{len(self.param_oids)}I", len(self.param_oids), *self.param_oids)
        )
        return frame(b"P", body)

    @classmethod
    def decode(cls, body: bytes | memoryview) -> Parse:
        r = _Reader(body, "Parse")
        name = r.cstr()
        sql = r.cstr()
        n = r.count(4)
        oids = tuple(r.uint32() for _ in range(n))
        r.done()
        return cls(name, sql, oids)


@dataclass(frozen=True, slots=True)
class Bind:
    portal: str
    statement: str
    param_formats: tuple[int, ...] = ()
    params: tuple[bytes | None, ...] = ()
    result_formats: tuple[int, ...] = ()

    def encode(self) -> bytes:
        parts = [cstr(self.portal), cstr(self.statement)]
        parts.append(
            struct.pack(
                f"!h{len(self.param_formats)}h", len(self.param_formats), *self.param_formats
            )
        )
        parts.append(_I16.pack(len(self.params)))
        for p in self.params:
            if p is None:
                parts.append(_I32.pack(-1))
            else:
                parts.append(_I32.pack(len(p)) + p)
        parts.append(
            struct.pack(
                f"!h{len(self.result_formats)}h", len(self.result_formats), *self.result_formats
            )
        )
        return frame(b"B", b"".join(parts))

    @classmethod
    def decode(cls, body: bytes | memoryview) -> Bind:
        return cls(*bind_fields(body))

    def param_format(self, i: int) -> int:
        if not self.param_formats:
            return 0
        return self.param_formats[0] if len(self.param_formats) == 1 else self.param_formats[i]


@dataclass(frozen=True, slots=True)
class Describe:
    kind: str  # "S" statement or "P" portal
    name: str

    def encode(self) -> bytes:
        return frame(b"D", self.kind.encode() + cstr(self.name))

    @classmethod
    def decode(cls, body: bytes | memoryview) -> Describe:
        return cls(*describe_fields(body))


@dataclass(frozen=True, slots=True)
class Execute:
    portal: str
    max_rows: int = 0

    def encode(self) -> bytes:
        return frame(b"E", cstr(self.portal) + _I32.pack(self.max_rows))

    @classmethod
    def decode(cls, body: bytes | memoryview) -> Execute:
        return cls(*execute_fields(body))


@dataclass(frozen=True, slots=True)
class Close:
    kind: str
    name: str

    def encode(self) -> bytes:
        return frame(b"C", self.kind.encode() + cstr(self.name))

    @classmethod
    def decode(cls, body: bytes | memoryview) -> Close:
        return cls(*close_fields(body))


@dataclass(frozen=True, slots=True)
class Sync:
    def encode(self) -> bytes:
        return frame(b"S", b"")


@dataclass(frozen=True, slots=True)
class Flush:
    def encode(self) -> bytes:
        return frame(b"H", b"")


@dataclass(frozen=True, slots=True)
class Terminate:
    def encode(self) -> bytes:
        return frame(b"X", b"")


@dataclass(frozen=True, slots=True)
class CopyFail:
    message: str

    def encode(self) -> bytes:
        return frame(b"f", cstr(self.message))

    @classmethod
    def decode(cls, body: bytes | memoryview) -> CopyFail:
        r = _Reader(body, "CopyFail")
        msg = r.cstr()
        r.done()
        return cls(msg)


@dataclass(frozen=True, slots=True)
class PasswordMessage:
    """'p' in reply to a cleartext or md5 request: a NUL-terminated password."""

    password: str

    def encode(self) -> bytes:
        return frame(b"p", cstr(self.password))

    @classmethod
    def decode(cls, body: bytes | memoryview) -> PasswordMessage:
        r = _Reader(body, "PasswordMessage")
        pw = r.cstr()
        r.done()
        return cls(pw)


@dataclass(frozen=True, slots=True)
class SASLInitialResponse:
    mechanism: str
    data: bytes | None

    def encode(self) -> bytes:
        body = cstr(self.mechanism)
        body += _I32.pack(-1) if self.data is None else _I32.pack(len(self.data)) + self.data
        return frame(b"p", body)

    @classmethod
    def decode(cls, body: bytes | memoryview) -> SASLInitialResponse:
        r = _Reader(body, "SASLInitialResponse")
        mech = r.cstr()
        n = r.int32()
        data = None if n == -1 else r.take(n)
        r.done()
        return cls(mech, data)


@dataclass(frozen=True, slots=True)
class SASLResponse:
    data: bytes

    def encode(self) -> bytes:
        return frame(b"p", self.data)

    @classmethod
    def decode(cls, body: bytes | memoryview) -> SASLResponse:
        return cls(bytes(body))


# ---------------------------------------------------------------------------
# Backend messages (server -> client).

AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12


@dataclass(frozen=True, slots=True)
class Authentication:
    """'R': `code` selects the variant; `data` is the salt, SASL mechanisms or payload."""

    code: int
    data: bytes = b""

    def encode(self) -> bytes:
        return frame(b"R", _I32.pack(self.code) + self.data)

    @classmethod
    def decode(cls, body: bytes | memoryview) -> Authentication:
        r = _Reader(body, "Authentication")
        code = r.int32()
        return cls(code, r.rest())

    @classmethod
    def sasl(cls, mechanisms: Sequence[str]) -> Authentication:
        return cls(AUTH_SASL, b"".join(cstr(m) for m in mechanisms) + b"\x00")

    def sasl_mechanisms(self) -> list[str]:
        return [m.decode() for m in self.data.split(b"\x00") if m]


@dataclass(frozen=True, slots=True)
class BackendKeyData:
    pid: int
    key: bytes

    def encode(self) -> bytes:
        return frame(b"K", _I32.pack(self.pid) + self.key)

    @classmethod
    def decode(cls, body: bytes | memoryview) -> BackendKeyData:
        r = _Reader(body, "BackendKeyData")
        pid = r.int32()
        key = r.rest()
        if not 4 <= len(key) <= MAX_CANCEL_KEY:
            raise RemoteProtocolError("malformed BackendKeyData: bad key length")
        return cls(pid, key)


@dataclass(frozen=True, slots=True)
class ParameterStatus:
    name: str
    value: str

    def encode(self) -> bytes:
        return frame(b"S", cstr(self.name) + cstr(self.value))

    @classmethod
    def decode(cls, body: bytes | memoryview) -> ParameterStatus:
        r = _Reader(body, "ParameterStatus")
        name = r.cstr()
        value = r.cstr()
        r.done()
        return cls(name, value)


@dataclass(frozen=True, slots=True)
class ReadyForQuery:
    status: str  # "I" idle, "T" in transaction, "E" failed transaction

    def encode(self) -> bytes:
        return frame(b"Z", self.status.encode())

    @classmethod
    def decode(cls, body: bytes | memoryview) -> ReadyForQuery:
        return cls(ready_status(body))


@dataclass(frozen=True, slots=True)
class FieldDescription:
    name: str
    table_oid: int
    attnum: int
    type_oid: int
    typlen: int
    typmod: int
    format: int


@dataclass(frozen=True, slots=True)
class RowDescription:
    fields: tuple[FieldDescription, ...]

    def encode(self) -> bytes:
        parts = [_I16.pack(len(self.fields))]
        for f in self.fields:
            parts.append(cstr(f.name))
            parts.append(
                struct.pack(
                    "!IhIhih", f.table_oid, f.attnum, f.type_oid, f.typlen, f.typmod, f.format
                )
            )
        return frame(b"T", b"".join(parts))

    @classmethod
    def decode(cls, body: bytes | memoryview) -> RowDescription:
        r = _Reader(body, "RowDescription")
        n = r.count(19)
        out = []
        for _ in range(n):
            name = r.cstr()
            table_oid = r.uint32()
            attnum = r.int16()
            type_oid = r.uint32()
            typlen = r.int16()
            typmod = r.int32()
            fmt = r.int16()
            out.append(FieldDescription(name, table_oid, attnum, type_oid, typlen, typmod, fmt))
        r.done()
        return cls(tuple(out))


NULL_FIELD = b"\xff\xff\xff\xff"  # a DataRow field that is NULL: length -1


def datarow_field(value: bytes | None) -> bytes:
    """One DataRow field: the value's int32 length, then its bytes (NULL: length -1)."""
    return NULL_FIELD if value is None else _I32.pack(len(value)) + value


@dataclass(frozen=True, slots=True)
class DataRow:
    values: tuple[bytes | None, ...]

    def encode(self) -> bytes:
        parts = [_I16.pack(len(self.values))]
        parts.extend(datarow_field(v) for v in self.values)
        return frame(b"D", b"".join(parts))

    @classmethod
    def decode(cls, body: bytes | memoryview) -> DataRow:
        r = _Reader(body, "DataRow")
        vals = r.values(r.count(4))
        r.done()
        return cls(tuple(vals))


@dataclass(frozen=True, slots=True)
class CommandComplete:
    tag: str

    def encode(self) -> bytes:
        return frame(b"C", cstr(self.tag))

    @classmethod
    def decode(cls, body: bytes | memoryview) -> CommandComplete:
        return cls(command_tag(body))

    def rows(self) -> int | None:
        return tag_rows(self.tag)


# The proxy's pump reads the messages of every statement through the functions
# below rather than the frozen classes (whose decoders call them): a dataclass's
# __init__ runs as Python even when this module is compiled.
def bind_fields(
    body: bytes | memoryview,
) -> tuple[str, str, tuple[int, ...], tuple[bytes | None, ...], tuple[int, ...]]:
    """A Bind body's (portal, statement, param formats, params, result formats), checked."""
    r = _Reader(body, "Bind")
    portal = r.cstr()
    statement = r.cstr()
    fmts = tuple([r.int16() for _ in range(r.count(2))])
    params = r.values(r.count(4))
    rfmts = tuple([r.int16() for _ in range(r.count(2))])
    r.done()
    for f in fmts:
        if f != 0 and f != 1:
            raise RemoteProtocolError(f"malformed Bind message: format code {f}")
    for f in rfmts:
        if f != 0 and f != 1:
            raise RemoteProtocolError(f"malformed Bind message: format code {f}")
    if len(fmts) not in (0, 1, len(params)):
        raise RemoteProtocolError("malformed Bind message: format count mismatch")
    return portal, statement, fmts, tuple(params), rfmts


def describe_fields(body: bytes | memoryview) -> tuple[str, str]:
    """A Describe body's (kind, name), checked; kind is "S" or "P"."""
    return _kind_and_name(body, "Describe")


def close_fields(body: bytes | memoryview) -> tuple[str, str]:
    """A Close body's (kind, name), checked; kind is "S" or "P"."""
    return _kind_and_name(body, "Close")


def _kind_and_name(body: bytes | memoryview, what: str) -> tuple[str, str]:
    r = _Reader(body, what)
    b = r.byte()
    if b != 0x53 and b != 0x50:  # S, P
        raise RemoteProtocolError(f"malformed {what} message: kind {chr(b)!r}")
    name = r.cstr()
    r.done()
    return ("S" if b == 0x53 else "P"), name


def execute_fields(body: bytes | memoryview) -> tuple[str, int]:
    """An Execute body's (portal, row limit), checked."""
    r = _Reader(body, "Execute")
    portal = r.cstr()
    max_rows = r.int32()
    r.done()
    if max_rows < 0:
        raise RemoteProtocolError("malformed Execute message: negative row limit")
    return portal, max_rows


def command_tag(body: bytes | memoryview) -> str:
    """The tag of a CommandComplete body, checked."""
    if isinstance(body, bytes) and body[-1:] == b"\x00" and body.find(b"\x00") == len(body) - 1:
        try:
            return body[:-1].decode()  # the usual case: one search, no reader
        except UnicodeDecodeError:
            pass  # the reader reports it
    r = _Reader(body, "CommandComplete")
    tag = r.cstr()
    r.done()
    return tag


def tag_rows(tag: str) -> int | None:
    """Row count of INSERT/UPDATE/DELETE/SELECT/MERGE/COPY/FETCH/MOVE tags."""
    last = tag.rsplit(" ", 1)
    if len(last) == 2 and last[1].isdigit():
        return int(last[1])
    return None


def ready_status(body: bytes | memoryview) -> str:
    """The transaction status of a ReadyForQuery body: "I", "T" or "E"."""
    if len(body) == 1:
        b = body[0]
        if b == 0x49:
            return "I"
        if b == 0x54:
            return "T"
        if b == 0x45:
            return "E"
    raise RemoteProtocolError("malformed ReadyForQuery message")


# ErrorResponse / NoticeResponse field codes, by name.
FIELD_CODES: Mapping[str, str] = {
    "S": "severity_localized",
    "V": "severity",
    "C": "sqlstate",
    "M": "message",
    "D": "detail",
    "H": "hint",
    "P": "position",
    "p": "internal_position",
    "q": "internal_query",
    "W": "where",
    "s": "schema",
    "t": "table",
    "c": "column",
    "d": "datatype",
    "n": "constraint",
    "F": "file",
    "L": "line",
    "R": "routine",
}


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """'E' (or 'N' for notices): ordered (code, value) fields."""

    fields: tuple[tuple[str, str], ...]

    def encode(self, type_byte: bytes | None = None) -> bytes:
        body = b"".join(code.encode() + cstr(value) for code, value in self.fields) + b"\x00"
        return frame(type_byte or b"E", body)

    @classmethod
    def decode(cls, body: bytes | memoryview) -> ErrorResponse:
        r = _Reader(body, "ErrorResponse")
        out = []
        while True:
            code = r.byte()
            if code == 0:
                break
            out.append((chr(code), r.cstr()))
        r.done()
        return cls(tuple(out))

    @classmethod
    def build(
        cls,
        severity: str,
        sqlstate: str,
        message: str,
        *,
        detail: str | None = None,
        hint: str | None = None,
    ) -> ErrorResponse:
        fields = [("S", severity), ("V", severity), ("C", sqlstate), ("M", message)]
        if detail:
            fields.append(("D", detail))
        if hint:
            fields.append(("H", hint))
        return cls(tuple(fields))

    def get(self, code: str) -> str | None:
        for c, v in self.fields:
            if c == code:
                return v
        return None

    @property
    def sqlstate(self) -> str | None:
        return self.get("C")

    @property
    def message(self) -> str | None:
        return self.get("M")

    @property
    def severity(self) -> str | None:
        return self.get("V") or self.get("S")


@dataclass(frozen=True, slots=True)
class NoticeResponse:
    fields: tuple[tuple[str, str], ...]

    def encode(self) -> bytes:
        return ErrorResponse(self.fields).encode(b"N")

    @classmethod
    def decode(cls, body: bytes | memoryview) -> NoticeResponse:
        return cls(ErrorResponse.decode(body).fields)

    @classmethod
    def build(cls, message: str, *, hint: str | None = None) -> NoticeResponse:
        e = ErrorResponse.build("NOTICE", "00000", message, hint=hint)
        return cls(e.fields)


@dataclass(frozen=True, slots=True)
class NotificationResponse:
    pid: int
    channel: str
    payload: str

    def encode(self) -> bytes:
        return frame(b"A", _I32.pack(self.pid) + cstr(self.channel) + cstr(self.payload))

    @classmethod
    def decode(cls, body: bytes | memoryview) -> NotificationResponse:
        r = _Reader(body, "NotificationResponse")
        pid = r.int32()
        channel = r.cstr()
        payload = r.cstr()
        r.done()
        return cls(pid, channel, payload)


@dataclass(frozen=True, slots=True)
class ParameterDescription:
    oids: tuple[int, ...]

    def encode(self) -> bytes:
        return frame(b"t", struct.pack(f"!h{len(self.oids)}I", len(self.oids), *self.oids))

    @classmethod
    def decode(cls, body: bytes | memoryview) -> ParameterDescription:
        r = _Reader(body, "ParameterDescription")
        n = r.count(4)
        oids = tuple(r.uint32() for _ in range(n))
        r.done()
        return cls(oids)


@dataclass(frozen=True, slots=True)
class CopyResponse:
    """'G' CopyInResponse, 'H' CopyOutResponse, 'W' CopyBothResponse."""

    type_byte: bytes
    format: int
    column_formats: tuple[int, ...] = field(default=())

    def encode(self) -> bytes:
        body = struct.pack(
            f"!bh{len(self.column_formats)}h",
            self.format,
            len(self.column_formats),
            *self.column_formats,
        )
        return frame(self.type_byte, body)

    @classmethod
    def decode(cls, type_byte: bytes, body: bytes | memoryview) -> CopyResponse:
        r = _Reader(body, "CopyResponse")
        fmt = r.byte()
        n = r.count(2)
        cols = tuple(r.int16() for _ in range(n))
        r.done()
        return cls(type_byte, fmt, cols)


@dataclass(frozen=True, slots=True)
class NegotiateProtocolVersion:
    newest_minor: int
    unrecognized: tuple[str, ...] = ()

    def encode(self) -> bytes:
        body = _I32.pack(self.newest_minor) + _I32.pack(len(self.unrecognized))
        body += b"".join(cstr(o) for o in self.unrecognized)
        return frame(b"v", body)

    @classmethod
    def decode(cls, body: bytes | memoryview) -> NegotiateProtocolVersion:
        r = _Reader(body, "NegotiateProtocolVersion")
        minor = r.int32()
        n = r.int32()
        if n < 0 or n > len(r.buf):
            raise RemoteProtocolError("malformed NegotiateProtocolVersion")
        opts = tuple(r.cstr() for _ in range(n))
        r.done()
        return cls(minor, opts)


# Bodiless backend messages, pre-encoded.
PARSE_COMPLETE = frame(b"1", b"")
BIND_COMPLETE = frame(b"2", b"")
CLOSE_COMPLETE = frame(b"3", b"")
NO_DATA = frame(b"n", b"")
EMPTY_QUERY = frame(b"I", b"")
PORTAL_SUSPENDED = frame(b"s", b"")
AUTH_OK_BYTES = Authentication(AUTH_OK).encode()
