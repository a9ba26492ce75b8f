"""Serving the web app inside the supervisor's event loop (uvicorn)."""

from __future__ import annotations

import asyncio

from dbgov.config import Config


async def serve_web(config: Config, stop: asyncio.Event) -> None:
    await stop.wait()
