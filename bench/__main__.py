"""`python -m bench` (`make bench`): direct PostgreSQL vs PgBouncer vs dbgov, in one run.

Starts everything itself on free loopback ports under a temporary directory (the
embedded PostgreSQL through `dbgov up`, PgBouncer from Debian if installed,
dbgov instances one at a time), runs the scenarios (see `bench/scenarios.py`),
prints a table and the issue targets, and writes `bench/results.json` and
`bench/results.png`. Every process it starts is stopped on the way out, Ctrl-C
and errors included.

    python -m bench                  # everything, ~10-15 minutes
    python -m bench --quick          # a ~3 minute subset
    python -m bench --only select --only masked
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from bench import report
from bench.scenarios import (
    ALL,
    SERVER_SCENARIOS,
    Results,
    Runner,
    Settings,
    cpu_busy,
    guarded,
    run_ledger,
    variant_loads,
)
from bench.systems import (
    SUSTAINED_LAG_MB,
    VARIANTS,
    DbgovInstance,
    EmbeddedWorld,
    PgBouncer,
    pgbouncer_binary,
    pgbouncer_version,
)
from dbgov import native

HERE = Path(__file__).resolve().parent
MAX_CONNECTIONS = 2200  # the scale scenario's 2,000 sessions each hold an upstream connection
NOFILE_WANTED = 8192


def _raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard == resource.RLIM_INFINITY else max(soft, min(hard, 1 << 20))
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """First Ctrl-C/SIGTERM: unwind and stop everything; further ones are ignored so the
    stopping is never cut short."""
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total_mib() -> int:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 0


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def _tool_version(argv: list[str]) -> str | None:
    with contextlib.suppress(OSError):
        out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        return out.splitlines()[0].strip() if out else None
    return None


@contextlib.contextmanager
def _running(instance: DbgovInstance) -> Iterator[DbgovInstance]:
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a ~3 minute subset")
    ap.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only these scenarios (repeatable or comma-separated): {', '.join(ALL)}",
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="dbgov worker processes (default: CPU count)",
    )
    ap.add_argument("--seconds", type=int, default=None, help="seconds per pgbench run")
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run each load N times, alternating the order of systems, and keep each "
        "system's best round (a noisy machine; ~N times the pgbench time)",
    )
    ap.add_argument("--out", type=Path, default=HERE, help="where results.json/.png go")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)
    only = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
    unknown = sorted(set(only) - set(ALL))
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(ALL)}")
    args.only = only
    return args


def _run(
    settings: Settings,
    root: Path,
    results: Results,
    meta: dict[str, Any],
    stack: contextlib.ExitStack,
) -> None:
    if settings.wants("ledger"):

        def ledger() -> None:
            results.ledger = run_ledger(settings, root / "ledger")

        print("\n== phase ledger: journal, sequencer, verification (no servers)", flush=True)
        guarded(results, "ledger", ledger)
    if not settings.only & SERVER_SCENARIOS:
        return

    world = EmbeddedWorld(root)
    stack.callback(world.stop)
    print("\n== starting the embedded PostgreSQL (dbgov up) ...", flush=True)
    world.start()
    if settings.wants("scale") and world.ensure_max_connections(MAX_CONNECTIONS):
        print(f"   max_connections raised to {MAX_CONNECTIONS} (dbgov up restarted)", flush=True)
    spent = world.ensure_bench_db()
    print(f"   database bench ready (pgbench -i -s 10 in {spent:.1f} s)", flush=True)
    meta["versions"]["postgresql"] = world.server_version()
    meta["versions"]["pgbench"] = _tool_version([world.pgbench, "--version"])
    meta["settings"]["max_connections"] = world.max_connections()

    bouncer = None
    binary = pgbouncer_binary()
    meta["versions"]["pgbouncer"] = pgbouncer_version(binary) if binary else None
    if settings.only & {"select", "tpcb", "churn", "sustained"}:
        if binary is None:
            # Not a failure: the rows go without PgBouncer (make bench installs it).
            meta["settings"]["pgbouncer"] = "not installed"
            print("bench: pgbouncer is not installed; its rows are left out", file=sys.stderr)
        else:
            bouncer = PgBouncer(root, world, binary)
            stack.callback(bouncer.stop)
            bouncer.start()
    runner = Runner(settings, world, bouncer, root, results)

    def instance(name: str) -> DbgovInstance:
        return DbgovInstance(VARIANTS[name], world, settings.workers)

    if settings.only & {"select", "tpcb", "churn", "masked", "policy", "ledger-mode"}:

        def phase_a() -> None:
            with _running(instance("demo-strict")) as inst:
                runner.phase("A", "dbgov = demo policy, ledger strict")
                runner.phase_a(inst)

        guarded(results, "phase A (demo-strict)", phase_a)
    if settings.wants("sustained"):

        def phase_s() -> None:
            with _running(instance("demo-bounded")) as inst:
                runner.phase(
                    "S", f"dbgov = demo policy, ledger strict, max_lag_mb {SUSTAINED_LAG_MB}"
                )
                runner.sustained(inst)

        guarded(results, "phase S (sustained)", phase_s)
    if bouncer is not None:
        bouncer.stop()  # only phase A uses it; its pooled server connections go too
    for phase, name, system in (
        ("B", "allow-all", "dbgov-allow-all"),
        ("C", "demo-async", "dbgov-async"),
    ):
        loads = variant_loads(runner, phase)
        if not loads:
            continue

        def variant(
            phase: str = phase, name: str = name, system: str = system, loads: list[Any] = loads
        ) -> None:
            with _running(instance(name)) as inst:
                runner.phase(phase, f"dbgov = {name}")
                runner.phase_variant(phase, inst, system, loads)

        guarded(results, f"phase {phase} ({name})", variant)
    if settings.wants("scale"):

        def phase_d() -> None:
            with _running(instance("demo-strict")) as inst:
                runner.phase("D", "a fresh demo-strict instance: connection scale")
                runner.scale(inst)

        guarded(results, "phase D (scale)", phase_d)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    settings = Settings.make(args.quick, args.only, args.workers, args.seconds, args.rounds)
    nofile = _raise_nofile()
    started = time.monotonic()
    meta: dict[str, Any] = {
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "hostname": platform.node(),
            "kernel": platform.release(),
            "cpu": _cpu_model(),
            "cpus": os.cpu_count(),
            "memory_mib": _mem_total_mib(),
            "loadavg_at_start": os.getloadavg(),
            "cpu_busy_at_start": cpu_busy(),
        },
        "versions": {
            "python": platform.python_version(),
            "dbgov": _version("dbgov"),
            # True: the hot path ran compiled (mypyc, `make native`); False: pure Python.
            "dbgov_compiled": native.loaded(),
            "psycopg": _version("psycopg"),
            "asyncpg": _version("asyncpg"),
            "uvloop": _version("uvloop"),
            "matplotlib": _version("matplotlib"),
        },
        "settings": {
            "quick": settings.quick,
            "scenarios": sorted(settings.only),
            "dbgov_workers": settings.workers,
            "seconds_per_run": settings.seconds,
            "rounds": settings.rounds,
            "warmup_seconds": settings.warmup_seconds,
            "pgbench_scale": 10,
            "ledger_events": settings.ledger_events,
            "nofile": nofile,
            "client_sslmode": "disable",
            "dbgov_bench_target_env": "production",
            "dbgov_up_workers": 1,  # dbgov up only hosts the embedded server here
            "pgbouncer": "pool_mode=session, auth_type=scram-sha-256 (role secret in userlist)",
        },
    }
    print(
        f"bench: {', '.join(sorted(settings.only))}; {settings.seconds} s per run; dbgov "
        f"{settings.workers} workers; {os.cpu_count()} CPUs (machine CPU busy "
        f"{meta['machine']['cpu_busy_at_start']:.0%} before start)",
        flush=True,
    )
    if nofile < NOFILE_WANTED and settings.wants("scale"):
        print(f"bench: open files limit is {nofile}; the scale scenario may fail", file=sys.stderr)

    root = Path(tempfile.mkdtemp(prefix="dbgov-bench-"))
    root.chmod(0o755)  # the embedded server and PgBouncer run as other users
    results = Results()
    interrupted = False
    old = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        with contextlib.ExitStack() as stack:
            try:
                _run(settings, root, results, meta, stack)
            finally:
                # Stopping what was started must not be cut short by a second Ctrl-C.
                for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    signal.signal(s, signal.SIG_IGN)
                print("\n== stopping everything ...", flush=True)
    except KeyboardInterrupt:
        interrupted = True
        results.errors.append("interrupted")
        print("bench: interrupted; reporting what was measured", file=sys.stderr)
    except Exception as exc:
        results.errors.append(f"{type(exc).__name__}: {exc}")
        print(f"bench: {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if args.keep:
            print(f"bench: kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    runtime = time.monotonic() - started
    meta["runtime_s"] = round(runtime, 1)
    meta["machine"]["loadavg_at_end"] = os.getloadavg()
    rows = report.enrich(results)
    goals = report.targets(results, rows)
    print()
    if rows:
        print(report.table(results, rows))
        print()
    text = report.details(results)
    if text:
        print(text)
        print()
    print("Targets:")
    for g in goals:
        print(g.line())
    if results.errors:
        print("\nErrors:")
        for e in results.errors:
            print(f"  {e}")
    args.out.mkdir(parents=True, exist_ok=True)
    report.write_json(args.out / "results.json", meta, results, rows, goals)
    title = (
        f"dbgov bench {meta['started_at']} - {os.cpu_count()} CPUs, "
        f"{settings.workers} dbgov workers, {settings.seconds} s per run"
    )
    report.chart(args.out / "results.png", results, rows, title)
    print(
        f"\nWrote {args.out / 'results.json'} and {args.out / 'results.png'}; "
        f"total runtime {runtime / 60:.1f} min ({runtime:.0f} s)"
    )
    return 130 if interrupted else (1 if results.errors else 0)


if __name__ == "__main__":
    sys.exit(main())
