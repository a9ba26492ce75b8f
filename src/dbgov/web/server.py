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


async def _serve(server: uvicorn.Server, where: str) -> None:
    """`server.serve()`, except that a failed start is logged, not `sys.exit`: uvicorn
    exits the process when it cannot bind, and the proxy must keep running."""
    try:
        await server.serve()
    except SystemExit:
        log.error("dashboard could not start on %s (address in use?); the proxy runs on", where)


async def serve_web(config: Config, stop: asyncio.Event) -> None:
    addr = config.listen.web_addr()
    if addr is None:
        await stop.wait()
        return
    host, port = addr
    app = build_app(config, stop)
    cfg = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=3,
    )
    server = _Server(cfg)
    serving = asyncio.get_running_loop().create_task(_serve(server, f"{host}:{port}"))
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
