"""Logging in to the upstream database with the target's own credentials.

The client never sees these credentials or the upstream's authentication
exchange: dbgov answers the client itself and speaks to the database as the
target's service user (SCRAM-SHA-256, md5, cleartext or trust; TLS as
configured). SCRAM verifies the server's signature too, so a fake upstream
cannot harvest a usable proof.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from dbgov.proxy.upstream_scram import ScramClient, ScramError
from dbgov.wire.postgres import NEED_DATA, ClientConnection, ConnectionClosed, RemoteProtocolError
from dbgov.wire.postgres.messages import (
    AUTH_CLEARTEXT,
    AUTH_MD5,
    AUTH_OK,
    AUTH_SASL,
    AUTH_SASL_CONTINUE,
    AUTH_SASL_FINAL,
    PROTOCOL_3_0,
    Authentication,
    BackendKeyData,
    CancelRequest,
    ErrorResponse,
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

log = logging.getLogger(__name__)


class UpstreamError(Exception):
    """The upstream refused or broke the login. `sqlstate` is safe to show."""

    def __init__(self, message: str, sqlstate: str = "08006", detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate
        self.detail = detail


@dataclass
class UpstreamLogin:
    params: dict[str, str] = field(default_factory=dict)
    pid: int = 0
    key: bytes = b""
    notices: list[NoticeResponse] = field(default_factory=list)


class UpstreamProtocol(asyncio.Protocol):
    """Owns the upstream socket. Until login completes it feeds the handshake;
    afterwards every chunk goes to `on_data` (the session's pump)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.on_data: Callable[[bytes], None] | None = None
        self.on_lost: Callable[[Exception | None], None] | None = None
        self.on_pause: Callable[[bool], None] | None = None
        self._handshake: asyncio.Queue[bytes] = asyncio.Queue()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop SSL transports are duck-typed

    def data_received(self, data: bytes) -> None:
        if self.on_data is not None:
            self.on_data(data)
        else:
            self._handshake.put_nowait(data)

    def eof_received(self) -> bool:
        if self.on_data is None:
            self._handshake.put_nowait(b"")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.on_data is None:
            self._handshake.put_nowait(b"")
        elif self.on_lost is not None:
            self.on_lost(exc)

    def pause_writing(self) -> None:
        if self.on_pause is not None:
            self.on_pause(True)

    def resume_writing(self) -> None:
        if self.on_pause is not None:
            self.on_pause(False)

    async def recv(self) -> bytes:
        return await self._handshake.get()


def _md5_password(user: str, password: str, salt: bytes) -> str:
    inner = hashlib.md5((password + user).encode()).hexdigest()  # noqa: S324 (protocol-mandated)
    return "md5" + hashlib.md5(inner.encode() + salt).hexdigest()  # noqa: S324


async def connect_upstream(
    host: str,
    port: int,
    *,
    user: str,
    database: str,
    password: str | None,
    params: Mapping[str, str],
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None = None,
    connect_timeout: float = 10.0,
) -> tuple[asyncio.Transport, UpstreamProtocol, UpstreamLogin]:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(connect_timeout):
            if host.startswith("/"):
                transport, proto = await loop.create_unix_connection(
                    UpstreamProtocol, f"{host}/.s.PGSQL.{port}"
                )
            else:
                transport, proto = await loop.create_connection(UpstreamProtocol, host, port)
            try:
                if ssl_context is not None:
                    transport.write(SSLRequest().encode())
                    answer = await proto.recv()
                    if answer[:1] != b"S":
                        raise UpstreamError(
                            "upstream does not accept TLS but the target requires it"
                        )
                    if len(answer) > 1:
                        raise UpstreamError("upstream sent data before the TLS handshake", "08P01")
                    new = await loop.start_tls(
                        transport, proto, ssl_context, server_hostname=server_hostname or host
                    )
                    if new is None:
                        raise UpstreamError("upstream TLS handshake did not complete")
                    transport = new
                    proto.transport = new
                login = await _login(transport, proto, user, database, password, params)
            except BaseException:
                transport.abort()
                raise
    except TimeoutError:
        raise UpstreamError(
            f"upstream {host}:{port} did not answer within {connect_timeout:.0f} s"
        ) from None
    except ssl.SSLError as exc:
        raise UpstreamError(f"upstream TLS failed: {exc.reason or exc}") from None
    except OSError as exc:
        raise UpstreamError(f"cannot reach upstream {host}:{port}: {exc.strerror or exc}") from None
    return transport, proto, login


async def _login(
    transport: asyncio.Transport,
    proto: UpstreamProtocol,
    user: str,
    database: str,
    password: str | None,
    params: Mapping[str, str],
) -> UpstreamLogin:
    conn = ClientConnection()
    startup = {"user": user, "database": database, **params}
    transport.write(conn.send(StartupMessage(PROTOCOL_3_0, startup)))
    login = UpstreamLogin()
    scram: ScramClient | None = None

    def need_password() -> str:
        if password is None:
            raise UpstreamError("upstream asks for a password but the target has none configured")
        return password

    while True:
        try:
            event = conn.next_event()
        except RemoteProtocolError as exc:
            raise UpstreamError(f"upstream broke the protocol at login: {exc}", "08P01") from None
        if event is NEED_DATA:
            conn.receive_data(await proto.recv())
            continue
        if isinstance(event, ConnectionClosed):
            raise UpstreamError("upstream closed the connection during login")
        if isinstance(event, ErrorResponse):
            code = event.sqlstate or "08006"
            if code.startswith("28"):
                # Never echo upstream auth details (they name the service user).
                raise UpstreamError(
                    "dbgov could not log in to the target with its credentials", "08006"
                )
            raise UpstreamError(
                event.message or "upstream refused the connection", code, event.get("D")
            )
        if isinstance(event, Authentication):
            if event.code == AUTH_OK:
                continue
            if event.code == AUTH_CLEARTEXT:
                transport.write(conn.send(PasswordMessage(need_password())))
            elif event.code == AUTH_MD5:
                transport.write(
                    conn.send(PasswordMessage(_md5_password(user, need_password(), event.data[:4])))
                )
            elif event.code == AUTH_SASL:
                mechs = event.sasl_mechanisms()
                if "SCRAM-SHA-256" not in mechs:
                    raise UpstreamError(f"upstream offers no supported SASL mechanism: {mechs}")
                scram = ScramClient(need_password())
                transport.write(conn.send(SASLInitialResponse("SCRAM-SHA-256", scram.first())))
            elif event.code == AUTH_SASL_CONTINUE and scram is not None:
                try:
                    final = scram.final(event.data)
                except (ScramError, ValueError) as exc:
                    raise UpstreamError(f"upstream SCRAM exchange failed: {exc}") from None
                transport.write(conn.send(SASLResponse(final)))
            elif event.code == AUTH_SASL_FINAL and scram is not None:
                try:
                    scram.verify(event.data)
                except (ScramError, ValueError):
                    raise UpstreamError("upstream failed SCRAM server verification") from None
            else:
                raise UpstreamError(f"unexpected authentication request {event.code}")
        elif isinstance(event, ParameterStatus):
            login.params[event.name] = event.value
        elif isinstance(event, BackendKeyData):
            login.pid, login.key = event.pid, event.key
        elif isinstance(event, NoticeResponse):
            login.notices.append(event)
        elif isinstance(event, NegotiateProtocolVersion):
            continue  # we ask for 3.0 with no options; nothing to downgrade
        elif isinstance(event, ReadyForQuery):
            if conn.take_leftover():
                raise UpstreamError("upstream sent data after ReadyForQuery at login", "08P01")
            return login


async def send_cancel(
    host: str, port: int, pid: int, key: bytes, ssl_context: ssl.SSLContext | None
) -> None:
    """Fire a CancelRequest at the upstream (its own pid and key, never the client's).
    Best effort, as in libpq: a server that does not answer in time is logged."""
    try:
        await _send_cancel(host, port, pid, key, ssl_context)
    except (TimeoutError, OSError) as exc:
        log.info("cancel request to %s:%s (backend %d) failed: %r", host, port, pid, exc)


async def _send_cancel(
    host: str, port: int, pid: int, key: bytes, ssl_context: ssl.SSLContext | None
) -> None:
    async with asyncio.timeout(5):
        if host.startswith("/"):
            reader, writer = await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
        else:
            reader, writer = await asyncio.open_connection(host, port)
        try:
            if ssl_context is not None:
                writer.write(SSLRequest().encode())
                if await reader.read(1) == b"S":
                    await writer.start_tls(ssl_context, server_hostname=host)
            writer.write(CancelRequest(pid, key).encode())
            await writer.drain()
            await reader.read(1)  # the server closes when done
        finally:
            writer.close()
