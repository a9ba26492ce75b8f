"""Connection scale: thousands of idle client connections held open through dbgov.

`connections` asyncpg connections are opened (at most `concurrency` logins in
flight) and held idle; then a busy load (pgbench -S, passed in by the harness)
runs through the same dbgov while they stay open, and afterwards a sample of the
idle connections must still answer. Reported: connection, query and pgbench
errors (the target is 0), how long the logins took, the busy load's throughput
and latency, and the dbgov workers' memory: the sum of the workers' VmRSS
(/proc/<pid>/status) before opening and with everything open, divided by the
number of connections (target <= 64 KiB per idle connection).

Before the baseline is taken, a warm-up opens two connections per worker three
times and runs a query, so one-time costs (imports, caches, the first upstream
login) are not charged to the idle connections.

Every dbgov session holds its own upstream connection, so the database needs
`max_connections` above `connections` plus the busy clients (the harness raises
the embedded server's). The caller MUST have raised RLIMIT_NOFILE above
`connections`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from bench.pgbench import Result
from bench.systems import Endpoint

RSS_TARGET_KIB = 64
_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def workers_rss_kib(pids: list[int]) -> int:
    return sum(rss_kib(p) for p in pids)


async def _connect(ep: Endpoint) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=ep.host,
        port=ep.port,
        user=ep.user,
        password=ep.password,
        database=ep.dbname,
        ssl=False,
        timeout=60,
        statement_cache_size=0,
    )


async def _run(
    ep: Endpoint,
    worker_pids: list[int],
    connections: int,
    concurrency: int,
    busy: Callable[[], Result] | None,
) -> dict[str, Any]:
    for _ in range(3):  # warm-up: more than one connection lands on each worker
        warm = await asyncio.gather(*(_connect(ep) for _ in range(2 * len(worker_pids))))
        for c in warm:
            await c.fetchval("SELECT count(*) FROM pgbench_branches")
        await asyncio.gather(*(c.close() for c in warm))
    await asyncio.sleep(1.0)
    before = workers_rss_kib(worker_pids)

    gate = asyncio.Semaphore(concurrency)
    errors: list[str] = []
    conns: list[asyncpg.Connection] = []

    async def open_one() -> None:
        async with gate:
            try:
                conns.append(await _connect(ep))
            except _ERRORS as exc:
                errors.append(f"connect: {type(exc).__name__}: {exc}")

    started = time.monotonic()
    busy_result: Result | None = None
    try:
        await asyncio.gather(*(open_one() for _ in range(connections)))
        open_s = time.monotonic() - started
        await asyncio.sleep(2.0)  # let the workers settle
        after = workers_rss_kib(worker_pids)
        if busy is not None:
            # Blocks the loop on purpose: the idle connections need no attention.
            busy_result = busy()
            if busy_result.error:
                errors.append(f"busy load: {busy_result.error}")
            if busy_result.failed:
                errors.append(f"busy load: {busy_result.failed} failed transactions")
        during = workers_rss_kib(worker_pids)
        probe = conns[:: max(1, len(conns) // 100)]
        for c in probe:  # the idle ones must still answer after all that
            try:
                await c.fetchval("SELECT 1")
            except _ERRORS as exc:
                errors.append(f"idle probe: {type(exc).__name__}: {exc}")
    finally:
        await asyncio.gather(*(c.close(timeout=10) for c in conns), return_exceptions=True)
    opened = len(conns)
    return {
        "connections": connections,
        "opened": opened,
        "errors": len(errors),
        "error_samples": errors[:5],
        "open_seconds": round(open_s, 2),
        "logins_per_s": round(opened / open_s) if open_s else None,
        "busy": busy_result.to_json() if busy_result else None,
        "idle_probed": len(probe),
        "workers": len(worker_pids),
        "workers_rss_before_kib": before,
        "workers_rss_after_kib": after,
        "workers_rss_busy_kib": during,
        "rss_per_connection_kib": round((after - before) / max(1, opened), 1),
        "rss_target_kib": RSS_TARGET_KIB,
    }


def run(
    ep: Endpoint,
    worker_pids: list[int],
    connections: int = 2000,
    concurrency: int = 32,
    busy: Callable[[], Result] | None = None,
) -> dict[str, Any]:
    """Hold `connections` idle connections to `ep` while `busy()` loads the same dbgov."""
    return asyncio.run(_run(ep, worker_pids, connections, concurrency, busy))
