"""A tiny blocking PostgreSQL wire client for byte-level tests.

It speaks raw frames over a socket so tests can send exactly the bytes they mean
(pipelines, malformed messages, TLS tricks) and assert exactly what comes back.
Messages are encoded with dbgov's codec, which has its own unit tests.
"""

from __future__ import annotations

import socket
import ssl
import struct
from dataclasses import dataclass

from dbgov.wire.postgres.messages import (
    AUTH_CLEARTEXT,
    AUTH_OK,
    PROTOCOL_3_0,
    Authentication,
    BackendKeyData,
    CommandComplete,
    DataRow,
    ErrorResponse,
    NoticeResponse,
    ParameterStatus,
    PasswordMessage,
    Query,
    ReadyForQuery,
    RowDescription,
    SSLRequest,
    StartupMessage,
)

_DECODE = {
    b"R": Authentication.decode,
    b"K": BackendKeyData.decode,
    b"S": ParameterStatus.decode,
    b"Z": ReadyForQuery.decode,
    b"E": ErrorResponse.decode,
    b"N": NoticeResponse.decode,
    b"T": RowDescription.decode,
    b"D": DataRow.decode,
    b"C": CommandComplete.decode,
}


@dataclass
class Msg:
    type: bytes
    body: bytes

    def decode(self) -> object:
        fn = _DECODE.get(self.type)
        return fn(self.body) if fn else self.body


class RawClient:
    def __init__(
        self, host: str, port: int, timeout: float = 10.0, source: str | None = None
    ) -> None:
        """`source`: the local address to connect from (127.0.0.x: another client)."""
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            (host, port), timeout, source_address=(source, 0) if source else None
        )
        self.buf = b""
        self.key: BackendKeyData | None = None
        self.params: dict[str, str] = {}

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def recv_msg(self) -> Msg | None:
        while len(self.buf) < 5:
            if not self._fill():
                return None
        t = self.buf[:1]
        (n,) = struct.unpack("!I", self.buf[1:5])
        while len(self.buf) < 1 + n:
            if not self._fill():
                return None
        body = self.buf[5 : 1 + n]
        self.buf = self.buf[1 + n :]
        return Msg(t, body)

    def recv_byte(self) -> bytes:
        while not self.buf:
            if not self._fill():
                return b""
        b, self.buf = self.buf[:1], self.buf[1:]
        return b

    def query(self, sql: str) -> list[Msg]:
        """A simple-protocol Query and everything up to its ReadyForQuery."""
        self.send(Query(sql).encode())
        return self.until_ready()

    def until_ready(self) -> list[Msg]:
        out = []
        while True:
            m = self.recv_msg()
            if m is None:
                raise ConnectionError(f"closed after {[x.type for x in out]}")
            out.append(m)
            if m.type == b"Z":
                return out

    def until_closed(self) -> list[Msg]:
        out = []
        while True:
            try:
                m = self.recv_msg()
            except (ConnectionResetError, ssl.SSLError, TimeoutError):
                return out
            if m is None:
                return out
            out.append(m)

    def starttls(self, context: ssl.SSLContext | None = None) -> bytes:
        self.send(SSLRequest().encode())
        answer = self.recv_byte()
        if answer == b"S":
            ctx = context or insecure_context()
            self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")
        return answer

    def startup(
        self,
        user: str,
        database: str,
        password: str | None,
        protocol: int = PROTOCOL_3_0,
        **params: str,
    ) -> list[Msg]:
        """Log in; returns every message up to ReadyForQuery (or until an error)."""
        self.send(StartupMessage(protocol, {"user": user, "database": database, **params}).encode())
        seen = []
        while True:
            m = self.recv_msg()
            if m is None:
                return seen
            seen.append(m)
            if m.type == b"R":
                auth = Authentication.decode(m.body)
                if auth.code == AUTH_CLEARTEXT:
                    if password is None:
                        self.close()
                        return seen
                    self.send(PasswordMessage(password).encode())
                elif auth.code != AUTH_OK:
                    return seen
            elif m.type == b"K":
                self.key = BackendKeyData.decode(m.body)
            elif m.type == b"S":
                ps = ParameterStatus.decode(m.body)
                self.params[ps.name] = ps.value
            elif m.type in (b"Z", b"E"):
                return seen


def insecure_context(alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def error_of(msgs: list[Msg]) -> ErrorResponse | None:
    for m in msgs:
        if m.type == b"E":
            return ErrorResponse.decode(m.body)
    return None


def rows_of(msgs: list[Msg]) -> list[tuple[bytes | None, ...]]:
    return [DataRow.decode(m.body).values for m in msgs if m.type == b"D"]


def types_of(msgs: list[Msg]) -> bytes:
    return b"".join(m.type for m in msgs)
