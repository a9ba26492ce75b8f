"""Accepting connections: the pre-protocol handshake before a session exists.

Before PostgreSQL's startup packet a client may send SSLRequest, GSSENCRequest,
or (PostgreSQL 17+) a TLS ClientHello directly. We answer these on the raw
socket, peeking before reading, so that a session's protocol object only ever
sees a settled stream: plain, or TLS already negotiated.

- SSLRequest: 'S' then TLS (or 'N' without a certificate). Bytes already buffered
  after the SSLRequest mean a man-in-the-middle injection (CVE-2021-23214): drop.
- GSSENCRequest: 'N' (no GSSAPI), then the client continues.
- Direct TLS: first byte 0x16; ALPN "postgresql" is required, as the server does.
- CancelRequest: routed to the owning worker, answered with nothing.

A worker holds at most `listen.max_clients_per_worker` clients (negotiating,
logging in or logged in). Running out of descriptors must not take it down
either: the last `fd_reserve()` descriptors are kept for logins, upstream
connections and the ledger. Past either limit, the oldest connection that has not
logged in is dropped to admit the new one (proxy/pending.py); with none to drop,
the new client is refused. Refused clients get FATAL 53300 in answer to their
first packet (libpq reads an error in place of the SSL answer, as from a server
that cannot fork). If accept()
fails anyway (EMFILE, ENFILE, ENOBUFS, ENOMEM), accepting pauses for ACCEPT_PAUSE_S and
the kernel's backlog holds the waiting clients: a listening socket left readable
would otherwise spin the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
import struct
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from dbgov.ledger import events
from dbgov.proxy.cancel import worker_of
from dbgov.proxy.pending import SHED_HINT, SHED_MESSAGE, expire_now
from dbgov.wire.postgres.framing import MAX_STARTUP_PACKET
from dbgov.wire.postgres.messages import (
    CANCEL_REQUEST_CODE,
    GSSENC_REQUEST_CODE,
    MAX_CANCEL_KEY,
    SSL_REQUEST_CODE,
    CancelRequest,
    ErrorResponse,
)

if TYPE_CHECKING:
    from dbgov.proxy.context import ProxyContext
    from dbgov.proxy.session import Session

log = logging.getLogger(__name__)
NEGOTIATION_TIMEOUT_S = 10.0
ACCEPT_PAUSE_S = 0.1
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_TOO_MANY = ErrorResponse.build(
    "FATAL",
    "53300",
    "dbgov: too many client connections on this proxy worker",
    hint="try again later; the operator may raise listen.max_clients_per_worker "
    "or the descriptor limit (ulimit -n)",
).encode()
_PENDING = ErrorResponse.build(
    "FATAL",
    "53300",
    "dbgov: too many connections still logging in from this address",
    hint="finish or close the logins in progress; the operator may raise "
    "listen.max_pending_logins_per_source",
).encode()
_SHED = ErrorResponse.build("FATAL", "53300", SHED_MESSAGE, hint=SHED_HINT).encode()
_HEAD = struct.Struct("!II")


def cancel_socket_path(data_dir: Path, worker_id: int) -> Path:
    return data_dir / "run" / f"cancel-{worker_id}.sock"


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(sock.fileno(), ready)
    try:
        await fut
    finally:
        loop.remove_reader(sock.fileno())


async def _peek(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    """Wait until `n` bytes are buffered (or fewer if the first byte is TLS or EOF)."""
    while True:
        try:
            data = sock.recv(n, socket.MSG_PEEK)
        except BlockingIOError:
            data = None
        if data is not None:
            if len(data) >= n or not data or data[0] == 0x16:
                return data
            if len(data) >= 4 and n == 8:
                (length,) = struct.unpack_from("!I", data)
                if length < 8 or length > MAX_STARTUP_PACKET:
                    raise _Refused(f"invalid length of startup packet: {length}")
        await _readable(loop, sock)
        if data is not None and len(data) < n:
            await asyncio.sleep(0.001)  # more of a fragmented packet is on its way


class _Refused(Exception):
    """A client broke the protocol before a session existed: FATAL 08P01, audited."""


class Listener:
    def __init__(self, ctx: ProxyContext, host: str, port: int) -> None:
        self.ctx = ctx
        self.host = host
        self.port = port
        self.sock: socket.socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._paused: asyncio.TimerHandle | None = None  # accept() ran out of resources
        self.max_clients = ctx.config.listen.max_clients_per_worker

    def open(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((self.host, self.port))
        sock.listen(4096)
        sock.setblocking(False)
        self.sock = sock
        self.port = sock.getsockname()[1]

    def start(self) -> None:
        if self.sock is None:
            self.open()
        assert self.sock is not None
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._accept)

    def stop(self) -> None:
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        if self.sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None

    def _pause(self, exc: OSError) -> None:
        assert self.sock is not None
        loop = asyncio.get_running_loop()
        loop.remove_reader(self.sock.fileno())
        if self._paused is None:  # once per episode: the resumes retry quietly
            log.warning("accept failed (%s); new clients wait in the backlog", exc)
        self._paused = loop.call_later(ACCEPT_PAUSE_S, self._resume)

    def _resume(self) -> None:
        if self.sock is not None:
            asyncio.get_running_loop().add_reader(self.sock.fileno(), self._accept)

    def _accept(self) -> None:
        assert self.sock is not None
        loop = asyncio.get_running_loop()
        for _ in range(256):
            try:
                conn, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self._pause(exc)
                else:  # ECONNABORTED and the like: that client is gone, not us
                    log.info("accept failed: %s", exc)
                return
            if self._paused is not None:
                self._paused = None
                log.warning("accepting clients again")
            conn.setblocking(False)
            host = str(addr[0]) if isinstance(addr, tuple) else ""
            pending = self.ctx.pending
            limit = _fd_limit()
            # Descriptors are handed out lowest first: this one says how many are open.
            fds_low = conn.fileno() >= limit - fd_reserve(limit)
            full = fds_low or len(self._tasks) + self.ctx.clients >= self.max_clients
            refusal = None
            if pending.at_cap(host):
                refusal = _PENDING
            elif full and not pending.shed_oldest():
                refusal = _TOO_MANY
            if refusal is not None:
                self._spawn(_turn_away(loop, conn, refusal))
                continue
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            shed = _Shed()
            key = pending.add(host, shed)
            self._spawn(self._negotiate(conn, shed, key))
            if fds_low:
                # The shed connection's descriptor closes when its task runs: accept
                # no more until then, or a burst would eat into the reserve.
                return

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _negotiate(self, sock: socket.socket, shed: _Shed, key: int) -> None:
        """The first packets, up to a session's start. The connection counts as a pending
        login (`key`) meanwhile; a session counts itself from its connection_made."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(-1.0 if shed.done else NEGOTIATION_TIMEOUT_S) as t:
                shed.deadline = t
                await self._negotiate_inner(loop, sock)
        except _Refused as exc:
            self._refuse(sock, str(exc))
        except (TimeoutError, OSError, ConnectionError) as exc:
            if shed.done:
                with contextlib.suppress(OSError):
                    sock.send(_SHED)  # in place of the first answer, as _turn_away does
            log.debug("connection dropped during negotiation: %s", exc)
            sock.close()
        except Exception:
            log.exception("connection negotiation failed")
            sock.close()
        finally:
            shed.deadline = None
            self.ctx.pending.done(key)

    def _refuse(self, sock: socket.socket, message: str) -> None:
        err = ErrorResponse.build("FATAL", "08P01", f"dbgov: {message}")
        with contextlib.suppress(OSError):
            sock.send(err.encode())
        try:
            host, port = sock.getpeername()[:2]
        except OSError:
            host, port = "", 0
        sock.close()
        self.ctx.audit.auth_failed(
            events.new_session_id(), f"{host}:{port}", False, "protocol_violation", message
        )

    async def _negotiate_inner(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        from dbgov.proxy.session import Session

        ctx = self.ctx
        while True:
            head = await _peek(loop, sock, 8)
            if not head:
                sock.close()
                return
            if head[0] == 0x16:  # TLS ClientHello without SSLRequest
                if ctx.server_tls is None:
                    sock.close()
                    return
                transport, _ = await loop.connect_accepted_socket(
                    lambda: _protocol(Session(ctx, tls=True, direct_tls=True)),
                    sock,
                    ssl=ctx.server_tls,
                    ssl_handshake_timeout=NEGOTIATION_TIMEOUT_S,
                )
                ssl_obj = transport.get_extra_info("ssl_object")
                if ssl_obj is None or ssl_obj.selected_alpn_protocol() != "postgresql":
                    transport.abort()  # direct SSL requires ALPN "postgresql"
                return
            if len(head) < 8:
                raise ConnectionError("incomplete startup packet")
            length, code = _HEAD.unpack(head)
            if length == 8 and code == SSL_REQUEST_CODE:
                sock.recv(8)
                if ctx.server_tls is None:
                    sock.send(b"N")
                    continue
                try:
                    extra = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                except BlockingIOError:
                    extra = b""
                if extra:
                    log.warning("bytes sent after SSLRequest before the TLS handshake; dropping")
                    sock.close()
                    return
                sock.send(b"S")
                await loop.connect_accepted_socket(
                    lambda: _protocol(Session(ctx, tls=True)),
                    sock,
                    ssl=ctx.server_tls,
                    ssl_handshake_timeout=NEGOTIATION_TIMEOUT_S,
                )
                return
            if length == 8 and code == GSSENC_REQUEST_CODE:
                sock.recv(8)
                sock.send(b"N")
                continue
            if code == CANCEL_REQUEST_CODE and 16 <= length <= 12 + MAX_CANCEL_KEY:
                data = await _peek(loop, sock, length)
                sock.recv(length)
                sock.close()
                if len(data) == length:
                    with contextlib.suppress(Exception):
                        await route_cancel(ctx, CancelRequest.decode(data[4:]))
                return
            await loop.connect_accepted_socket(lambda: _protocol(Session(ctx)), sock)
            return


class _Shed:
    """A negotiating connection's `Shed` (proxy/pending.py): expires its timeout now."""

    __slots__ = ("deadline", "done")

    def __init__(self) -> None:
        self.deadline: asyncio.Timeout | None = None  # set once `_negotiate` runs
        self.done = False

    def __call__(self) -> bool:
        if self.done or not expire_now(self.deadline):
            return False
        self.done = True
        return True


def _fd_limit() -> int:
    """The descriptor limit now (read per accept: an operator may change it live)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def fd_reserve(limit: int) -> int:
    """Descriptors kept from new clients: the accepted clients' upstream connections
    during login, the ledger, stores, cancel routing."""
    return min(64, limit // 4)


async def _turn_away(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, error: bytes = _TOO_MANY
) -> None:
    """FATAL 53300 in answer to the client's first packet (SSLRequest or startup),
    read first so that closing sends FIN, not a reset that could hide the message."""
    try:
        async with asyncio.timeout(1):
            await _readable(loop, sock)
        sock.recv(MAX_STARTUP_PACKET)
        sock.send(error)
    except (OSError, TimeoutError):
        pass
    finally:
        sock.close()


def _protocol(session: Session) -> asyncio.Protocol:
    """Sessions are protocols by duck typing (a compiled class cannot extend one)."""
    return cast(asyncio.Protocol, session)


async def route_cancel(ctx: ProxyContext, req: CancelRequest) -> None:
    """Cancel locally, or hand the request to the worker that owns the key."""
    owner = worker_of(req.pid)
    if owner == ctx.worker_id:
        ctx.cancels.cancel(req.pid, req.key)
        return
    path = cancel_socket_path(ctx.config.data_dir, owner)
    try:
        async with asyncio.timeout(2):
            _, writer = await asyncio.open_unix_connection(str(path))
            writer.write(req.encode())
            await writer.drain()
            writer.close()
    except (OSError, TimeoutError):
        log.info("cancel for worker %d could not be delivered", owner)


async def serve_cancels(ctx: ProxyContext) -> asyncio.AbstractServer:
    """The unix socket other workers forward CancelRequests to."""
    path = cancel_socket_path(ctx.config.data_dir, ctx.worker_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            data = await asyncio.wait_for(reader.read(8 + 256 + 4), 2)
            (length,) = struct.unpack_from("!I", data)
            if length == len(data):
                req = CancelRequest.decode(data[4:])
                ctx.cancels.cancel(req.pid, req.key)
        except Exception:  # noqa: S110 - malformed forwards are dropped like bad keys
            pass
        finally:
            writer.close()

    server = await asyncio.start_unix_server(handle, str(path))
    path.chmod(0o600)
    return server
