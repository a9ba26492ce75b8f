"""Serving the web app inside the supervisor's event loop (uvicorn).

The supervisor owns signals: uvicorn's own handlers are disabled (they would
replace the supervisor's SIGINT/SIGTERM handling), and the server stops when
the supervisor sets `stop`. Open SSE streams watch the same event, so shutdown
does not wait on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator

import uvicorn

from dbgov.config import Config
from dbgov.web.app import build_app

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without signal handlers: the supervisor's `stop` event ends it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def _serve(server: uvicorn.Server, where: str, sock: socket.socket) -> None:
    """`server.serve()`, except that a failed start is logged, not `sys.exit`: uvicorn
    exits the process when its startup fails, and the proxy must keep running."""
    try:
        await server.serve(sockets=[sock])
    except SystemExit:
        log.error("dashboard could not start on %s; the proxy runs on", where)


def bind_web(config: Config) -> socket.socket | None:
    """The dashboard's listening socket, bound now, so that the address written to
    state.json is the real one (port 0 included). None when there is no dashboard or
    the address is taken: the proxy runs on without it."""
    addr = config.listen.web_addr()
    if addr is None:
        return None
    host, port = addr
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, where = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        log.error("dashboard cannot listen on %s:%s (%s); the proxy runs on", host, port, exc)
        return None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(where)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        log.error("dashboard cannot listen on %s:%s (%s); the proxy runs on", host, port, exc)
        return None
    sock.setblocking(False)
    return sock


def web_address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve_web(config: Config, stop: asyncio.Event, sock: socket.socket | None) -> None:
    """Serve the dashboard on `sock` (from `bind_web`) until `stop` is set."""
    if sock is None:
        await stop.wait()
        return
    app = build_app(config, stop)
    cfg = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=3,
    )
    server = _Server(cfg)
    serving = asyncio.get_running_loop().create_task(_serve(server, web_address(sock), sock))
    stopping = asyncio.get_running_loop().create_task(stop.wait())
    done, _ = await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if serving in done:
        stopping.cancel()
        exc = serving.exception()
        if exc is not None:
            log.error("dashboard stopped: %s", exc)
        await stop.wait()
        return
    server.should_exit = True
    await serving
