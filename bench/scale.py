"""Connection scale: thousands of idle client connections held open through dbgov.

`connections` asyncpg connections are opened (at most `concurrency` logins in
flight) and held; then `busy` of them run the pgbench -S query in a loop for
`busy_seconds` while the rest stay idle. Reported: connection and query errors
(the target is 0), how long the logins took, the busy subset's throughput and
latency, and the dbgov workers' memory: the sum of the workers' VmRSS
(/proc/<pid>/status) before opening and with everything open, divided by the
number of connections (target <= 64 KiB per idle connection).

Before the baseline is taken, a warm-up opens one connection per worker several
times and runs the query, so one-time costs (imports, caches, the first upstream
login) are not charged to the idle connections.

Every dbgov session holds its own upstream connection, so the database needs
`max_connections` above `connections` (the harness raises the embedded server's).
The caller MUST have raised RLIMIT_NOFILE above `connections`.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from bench.pgbench import percentile
from bench.systems import Endpoint

QUERY = "SELECT abalance FROM pgbench_accounts WHERE aid = $1"
ACCOUNTS = 1_000_000  # pgbench -s 10
RSS_TARGET_KIB = 64


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


async def _busy(conn: asyncpg.Connection, until: float, lat: list[int], errors: list[str]) -> None:
    rng = random.Random()
    while time.monotonic() < until:
        started = time.perf_counter_ns()
        try:
            await conn.fetchval(QUERY, rng.randint(1, ACCOUNTS))
        except (asyncpg.PostgresError, OSError) as exc:
            errors.append(f"query: {exc}")
            return
        lat.append((time.perf_counter_ns() - started) // 1000)


async def _run(
    ep: Endpoint,
    worker_pids: list[int],
    connections: int,
    concurrency: int,
    busy: int,
    busy_seconds: float,
) -> dict[str, Any]:
    for _ in range(3):  # warm-up: more than one connection lands on each worker
        warm = await asyncio.gather(*(_connect(ep) for _ in range(2 * len(worker_pids))))
        for c in warm:
            await c.fetchval(QUERY, 1)
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
            except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
                errors.append(f"connect: {type(exc).__name__}: {exc}")

    started = time.monotonic()
    try:
        await asyncio.gather(*(open_one() for _ in range(connections)))
        open_s = time.monotonic() - started
        await asyncio.sleep(2.0)  # let the workers settle
        after = workers_rss_kib(worker_pids)
        alive = sum(1 for c in conns if not c.is_closed())

        lat: list[int] = []
        until = time.monotonic() + busy_seconds
        await asyncio.gather(*(_busy(c, until, lat, errors) for c in conns[:busy]))
        during = workers_rss_kib(worker_pids)
        # The idle ones must still answer after all that.
        probe = conns[busy:][:: max(1, len(conns) // 50)]
        for c in probe:
            try:
                await c.fetchval("SELECT 1")
            except (asyncpg.PostgresError, OSError) as exc:
                errors.append(f"idle probe: {exc}")
    finally:
        await asyncio.gather(*(c.close(timeout=10) for c in conns), return_exceptions=True)
    lat.sort()
    opened = len(conns)
    return {
        "connections": connections,
        "opened": opened,
        "alive_after_open": alive,
        "errors": len(errors),
        "error_samples": errors[:5],
        "open_seconds": round(open_s, 2),
        "logins_per_s": round(opened / open_s) if open_s else None,
        "busy_connections": busy,
        "busy_queries": len(lat),
        "busy_qps": round(len(lat) / busy_seconds),
        "busy_p50_ms": percentile(lat, 0.5) / 1000 if lat else None,
        "busy_p99_ms": percentile(lat, 0.99) / 1000 if lat else None,
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
    busy: int = 32,
    busy_seconds: float = 5.0,
) -> dict[str, Any]:
    """Hold `connections` idle connections to `ep`, with `busy` of them querying."""
    return asyncio.run(_run(ep, worker_pids, connections, concurrency, busy, busy_seconds))
