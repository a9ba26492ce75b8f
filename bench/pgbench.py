"""Running pgbench against one endpoint and reading its results.

Throughput is pgbench's own `tps` line ("without initial connection time";
with `-C` it includes the reconnections, which is the point of that scenario).
Latency percentiles come from pgbench's per-transaction log (`-l`), never from
its averages: every transaction's elapsed time in microseconds, all threads'
files together, nearest-rank p50 and p99. With `-C` the logged time excludes the
connection set-up, so there the latency is the time between one client's
consecutive transaction ends: disconnect + connect + authenticate + transaction,
what an application that connects per request waits.

Every run uses `-n` (no VACUUM before the run: the same for all systems, and dbgov
is not asked to decide maintenance statements during a benchmark).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import re
import shutil
import subprocess
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.systems import Endpoint, cpu_seconds, server_cpu_seconds


@dataclass(frozen=True)
class Load:
    """One pgbench workload; the same `Load` is run against every system."""

    script: str  # "select" (-S) or "tpcb" (the default TPC-B-like script)
    mode: str  # "simple" or "prepared" (-M)
    clients: int
    seconds: int
    connect: bool = False  # -C: a new connection per transaction

    @property
    def label(self) -> str:
        name = "-S" if self.script == "select" else "TPC-B"
        extra = " -C" if self.connect else ""
        return f"{name}{extra} {self.mode} c={self.clients}"

    def argv(self) -> list[str]:
        args = [
            "-n",
            "-T",
            str(self.seconds),
            "-c",
            str(self.clients),
            "-j",
            str(2 if self.clients >= 2 else 1),
            "-M",
            self.mode,
        ]
        if self.script == "select":
            args.append("-S")
        if self.connect:
            args.append("-C")
        return args


@dataclass
class Result:
    tps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    transactions: int = 0
    failed: int = 0
    latency_basis: str = "transaction"
    error: str | None = None
    # CPU time of the proxy's processes (dbgov: supervisor with the ledger sequencer, and
    # workers; PgBouncer: its one process) per transaction, in microseconds.
    proxy_cpu_us_per_tx: float | None = None
    # dbgov: the part of proxy_cpu_us_per_tx spent integrating the ledger (the supervisor
    # process, with its sequencer thread), including the catch-up after the run.
    ledger_cpu_us_per_tx: float | None = None
    # CPU time of PostgreSQL (postmaster, backends, background processes) per
    # transaction, in microseconds: what the server spent behind this system.
    server_cpu_us_per_tx: float | None = None
    # dbgov: seconds its ledger took, after pgbench ended, to integrate every event of the
    # run (the sequencer runs niced and catches up after a saturating load).
    ledger_settle_s: float | None = None
    # With --rounds: every round's TPS (this result is the best round).
    tps_rounds: list[float | None] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_TPS = re.compile(r"^tps = ([0-9.]+)", re.M)
_FAILED = re.compile(r"number of failed transactions: (\d+)")
_DONE = re.compile(r"number of transactions actually processed: (\d+)")


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of an ascending list (q in 0..1)."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def read_latencies(files: list[Path], cycle: bool) -> list[int]:
    """Microseconds per transaction from pgbench `-l` files (see the module docstring)."""
    if not cycle:
        out: list[int] = []
        for f in files:
            with f.open() as fh:
                out.extend(int(line.split(" ", 3)[2]) for line in fh)
        return out
    ends: dict[tuple[str, str], list[int]] = defaultdict(list)
    for f in files:
        with f.open() as fh:
            for line in fh:
                cols = line.split()
                ends[(f.name, cols[0])].append(int(cols[4]) * 1_000_000 + int(cols[5]))
    deltas: list[int] = []
    for stamps in ends.values():
        stamps.sort()
        deltas.extend(b - a for a, b in itertools.pairwise(stamps))
    return deltas


def _server_cpu(postmaster: int | None) -> float | None:
    """`server_cpu_seconds`, or None (the column shows "-") if it cannot be read."""
    if postmaster is None:
        return None
    try:
        return server_cpu_seconds(postmaster)
    except RuntimeError:  # children kept coming and going: the run itself still counts
        return None


def run(
    pgbench: str, endpoint: Endpoint, load: Load, workdir: Path, server_pid: int | None = None
) -> Result:
    """Run `load` against `endpoint`; failures come back as `Result.error`, not raised.
    With `server_pid` (the postmaster's), PostgreSQL's CPU per transaction is read too."""
    logdir = workdir / "pgbench-logs"
    shutil.rmtree(logdir, ignore_errors=True)
    logdir.mkdir(parents=True)
    argv = [
        pgbench,
        *load.argv(),
        "-l",
        f"--log-prefix={logdir / 'tx'}",
        "-h",
        endpoint.host,
        "-p",
        str(endpoint.port),
        "-U",
        endpoint.user,
        endpoint.dbname,
    ]
    cpu_before = cpu_seconds(endpoint.cpu_pids)
    ledger_before = cpu_seconds(endpoint.ledger_pids)
    server_before = _server_cpu(server_pid)
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=endpoint.env(),
        cwd=logdir,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=load.seconds + 120)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
        raise
    result = Result(latency_basis="connect+transaction" if load.connect else "transaction")
    if endpoint.settle is not None:
        try:
            result.ledger_settle_s = endpoint.settle()
        except RuntimeError as exc:
            result.error = str(exc)
    cpu = cpu_seconds(endpoint.cpu_pids) - cpu_before
    ledger_cpu = cpu_seconds(endpoint.ledger_pids) - ledger_before
    server_after = _server_cpu(server_pid)
    if m := _FAILED.search(out):
        result.failed = int(m.group(1))
    if m := _DONE.search(out):
        result.transactions = int(m.group(1))
    tps = _TPS.search(out)
    if proc.returncode != 0 or tps is None:
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        result.error = f"pgbench exit {proc.returncode}: " + " | ".join(lines[-3:])[:400]
    if tps is not None:
        result.tps = float(tps.group(1))
    if endpoint.cpu_pids and result.transactions:
        result.proxy_cpu_us_per_tx = round(cpu * 1e6 / result.transactions, 1)
    if endpoint.ledger_pids and result.transactions:
        result.ledger_cpu_us_per_tx = round(ledger_cpu * 1e6 / result.transactions, 1)
    if server_before is not None and server_after is not None and result.transactions:
        spent = server_after - server_before
        result.server_cpu_us_per_tx = round(spent * 1e6 / result.transactions, 1)
    lat = sorted(read_latencies(sorted(logdir.glob("tx.*")), cycle=load.connect))
    if lat:
        result.p50_ms = percentile(lat, 0.50) / 1000
        result.p99_ms = percentile(lat, 0.99) / 1000
        result.mean_ms = round(sum(lat) / len(lat) / 1000, 3)
    shutil.rmtree(logdir, ignore_errors=True)
    return result
