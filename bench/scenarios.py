"""The scenarios of `make bench`, and the order they run in.

Names (for `--only`): select, tpcb, churn, sustained, policy, ledger-mode, masked, ledger,
scale.

One dbgov instance runs at a time, so the run is cut in phases; every load is
run against its systems back to back, so that ratios compare minutes, not hours:

- phase "ledger": no servers (journal, sequencer, verification);
- phase "A", dbgov = demo-strict: select (direct, pgbouncer, dbgov at 1, 8, 64
  clients, simple and prepared), tpcb, churn, masked; last, the demo-strict half
  of policy and ledger-mode (measured again right before the instance changes);
- phase "S", demo-strict with `ledger.max_lag_mb` at SUSTAINED_LAG_MB: sustained, a
  -S simple c=8 load four times as long (direct, pgbouncer, dbgov). The short runs
  leave the sequencer's backlog for after the run; here dbgov runs at its bound,
  where backpressure keeps the ledger within it;
- phase "B", allow-all: the other half of policy;
- phase "C", demo-async: the other half of ledger-mode, and the 1-client select
  loads for the latency added in async mode;
- phase "D", a fresh demo-strict instance: scale.

`--quick` runs 3 s loads at 1 and 8 clients, leaves out TPC-B, scans with fewer
repeats and builds a 200,000-event ledger.

Phases B and C run each load against direct PostgreSQL too, right before the
dbgov variant, so a ratio across phases can be read against how much direct
itself moved (machine noise). Ratios to direct always use the direct row of the
same phase.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import masked_scan, pgbench, scale
from bench.systems import DbgovInstance, EmbeddedWorld, Endpoint, PgBouncer

ALL = (
    "select",
    "tpcb",
    "churn",
    "sustained",
    "policy",
    "ledger-mode",
    "masked",
    "ledger",
    "scale",
)
SERVER_SCENARIOS = frozenset(ALL) - {"ledger"}
QUICK = frozenset(ALL) - {"tpcb"}
SCALE_BUSY_CLIENTS = 32  # pgbench clients running beside the idle connections


@dataclass(frozen=True)
class Settings:
    quick: bool
    only: frozenset[str]
    workers: int
    seconds: int
    warmup_seconds: int
    select_clients: tuple[int, ...]
    ledger_events: int
    masked_repeats: int
    scale_connections: int
    rounds: int

    @classmethod
    def make(
        cls,
        quick: bool,
        only: Iterable[str],
        workers: int,
        seconds: int | None = None,
        rounds: int = 1,
    ) -> Settings:
        # --quick leaves out TPC-B (it has no target) and 64 clients, unless asked for.
        chosen = frozenset(only) or (QUICK if quick else frozenset(ALL))
        return cls(
            quick=quick,
            only=chosen,
            workers=workers,
            seconds=seconds or (3 if quick else 8),
            warmup_seconds=1 if quick else 2,
            select_clients=(1, 8) if quick else (1, 8, 64),
            ledger_events=200_000 if quick else 1_000_000,
            masked_repeats=3 if quick else 15,
            scale_connections=2000,
            rounds=max(1, rounds),
        )

    @property
    def sustained_seconds(self) -> int:
        return 4 * self.seconds

    def wants(self, name: str) -> bool:
        return name in self.only


@dataclass
class Row:
    """One measurement: a load (label) against one system, in one phase."""

    scenario: str
    label: str
    system: str
    phase: str
    load: dict[str, Any]
    result: pgbench.Result
    loadavg: float

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "label": self.label,
            "system": self.system,
            "phase": self.phase,
            "load": self.load,
            "loadavg_1m": self.loadavg,
            **self.result.to_json(),
        }


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    masked: dict[str, Any] = field(default_factory=dict)
    ledger: dict[str, Any] | None = None
    scale: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def cpu_busy(seconds: float = 1.0) -> float:
    """Share of all CPUs busy over `seconds` (other users' load before a phase)."""

    def sample() -> tuple[int, int]:
        vals = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = vals[3] + vals[4]
        return sum(vals), idle

    t0, i0 = sample()
    time.sleep(seconds)
    t1, i1 = sample()
    return round(1 - (i1 - i0) / max(1, t1 - t0), 3)


class Runner:
    """Runs loads and records rows; prints one progress line per run."""

    def __init__(
        self,
        settings: Settings,
        world: EmbeddedWorld | None,
        bouncer: PgBouncer | None,
        workdir: Path,
        results: Results,
    ) -> None:
        self.s = settings
        self.world = world
        self.bouncer = bouncer
        self.workdir = workdir
        self.results = results
        self._tokens: dict[str, str] = {}

    # -- helpers -----------------------------------------------------------------------

    def token(self, user: str, group: str) -> str:
        assert self.world is not None
        if user not in self._tokens:
            self._tokens[user] = self.world.token(user, group)
        return self._tokens[user]

    def phase(self, name: str, what: str) -> None:
        busy = cpu_busy()
        self.results.phases[name] = {
            "what": what,
            "cpu_busy_before": busy,
            "loadavg_before": loadavg(),
            "started": time.time(),
        }
        print(
            f"\n== phase {name}: {what} (machine CPU busy before: {busy:.0%}, "
            f"load {loadavg():.2f})",
            flush=True,
        )

    def measure(
        self, scenario: str, load: pgbench.Load, systems: list[tuple[str, Endpoint]], phase: str
    ) -> None:
        """Run `load` against each system, `rounds` times in alternating order; one row per
        system with its best round (on a shared machine, disturbance only ever slows)."""
        assert self.world is not None
        runs: dict[str, list[pgbench.Result]] = {name: [] for name, _ in systems}
        la = loadavg()
        server = self.world.postmaster_pid()
        for rnd in range(self.s.rounds):
            order = systems if rnd % 2 == 0 else systems[::-1]
            for name, ep in order:
                result = pgbench.run(self.world.pgbench, ep, load, self.workdir, server)
                runs[name].append(result)
                self._print(scenario, load, name, result, rnd)
        for name, _ in systems:
            results = runs[name]
            ok = [r for r in results if r.tps is not None and not r.error]
            best = max(ok, key=lambda r: r.tps or 0.0) if ok else results[-1]
            best.tps_rounds = [r.tps for r in results]
            load_json = {
                "script": load.script,
                "mode": load.mode,
                "clients": load.clients,
                "seconds": load.seconds,
                "connect": load.connect,
            }
            self.results.rows.append(Row(scenario, load.label, name, phase, load_json, best, la))
            for r in results:
                if r.error:
                    self.results.errors.append(f"{scenario} {load.label} {name}: {r.error}")

    def _print(
        self, scenario: str, load: pgbench.Load, system: str, result: pgbench.Result, rnd: int
    ) -> None:
        tps = f"{result.tps:10,.0f} tps" if result.tps is not None else "    failed"
        lat = (
            f"p50 {result.p50_ms:7.3f} ms  p99 {result.p99_ms:7.3f} ms"
            if result.p50_ms is not None and result.p99_ms is not None
            else ""
        )
        if result.proxy_cpu_us_per_tx is not None:
            lat += f"  proxy cpu {result.proxy_cpu_us_per_tx:5.0f} us/tx"
        if result.ledger_cpu_us_per_tx is not None:
            lat += f" (sequencer {result.ledger_cpu_us_per_tx:.0f})"
        if result.server_cpu_us_per_tx is not None:
            lat += f"  postgres cpu {result.server_cpu_us_per_tx:5.0f} us/tx"
        if result.ledger_settle_s:
            lat += f"  ledger +{result.ledger_settle_s:.1f} s"
        err = f"  ERROR {result.error}" if result.error else ""
        fail = f"  failed tx {result.failed}" if result.failed else ""
        tag = f" #{rnd + 1}" if self.s.rounds > 1 else ""
        print(
            f"  {scenario:<11} {load.label:<24} {system + tag:<19} {tps}  {lat}{fail}{err}",
            flush=True,
        )

    def warm_up(self, systems: list[tuple[str, Endpoint]], modes: Iterable[str]) -> None:
        assert self.world is not None
        for mode in modes:
            load = pgbench.Load("select", mode, 8, self.s.warmup_seconds)
            for _, ep in systems:
                pgbench.run(self.world.pgbench, ep, load, self.workdir)

    def load(self, script: str, mode: str, clients: int, connect: bool = False) -> pgbench.Load:
        return pgbench.Load(script, mode, clients, self.s.seconds, connect)

    # -- phases --------------------------------------------------------------------------

    def main_systems(self, dbgov: DbgovInstance) -> list[tuple[str, Endpoint]]:
        assert self.world is not None
        systems = [("direct", self.world.direct())]
        if self.bouncer is not None:
            systems.append(("pgbouncer", self.bouncer.endpoint()))
        systems.append(("dbgov", dbgov.endpoint("carol", self.token("carol", "dba"))))
        return systems

    def phase_a(self, dbgov: DbgovInstance) -> None:
        """demo-strict: the main comparisons, masked scans, then the strict halves."""
        s = self.s
        systems = self.main_systems(dbgov)
        self.warm_up(systems, ("simple", "prepared"))
        if s.wants("select"):
            for mode in ("simple", "prepared"):
                for clients in s.select_clients:
                    load = self.load("select", mode, clients)
                    self.measure("select", load, systems, "A")
        if s.wants("tpcb"):
            load = self.load("tpcb", "simple", 8)
            self.measure("tpcb", load, systems, "A")
        if s.wants("churn"):
            load = self.load("select", "simple", 8, connect=True)
            self.measure("churn", load, systems, "A")
        if s.wants("masked"):
            self.masked(dbgov)
        dbgov_ep = systems[-1][1]
        direct = systems[0][1]
        for scenario in ("policy", "ledger-mode"):
            if s.wants(scenario):
                for mode in ("simple", "prepared"):
                    load = self.load("select", mode, 8)
                    self.measure(scenario, load, [("direct", direct), ("dbgov", dbgov_ep)], "A")

    def sustained(self, dbgov: DbgovInstance) -> None:
        """-S simple c=8 for 4x the usual run, against dbgov with a low ledger lag bound
        (SUSTAINED_LAG_MB): the rate dbgov keeps up with the ledger kept current, where
        the short runs leave the sequencer's backlog for after the run."""
        systems = self.main_systems(dbgov)
        self.warm_up(systems[-1:], ("simple",))
        load = pgbench.Load("select", "simple", 8, self.s.sustained_seconds)
        self.measure("sustained", load, systems, "S")

    def phase_variant(
        self, phase: str, dbgov: DbgovInstance, system: str, loads: list[tuple[str, pgbench.Load]]
    ) -> None:
        """Phases B and C: each load against direct, then the variant."""
        assert self.world is not None
        direct = self.world.direct()
        ep = dbgov.endpoint("carol", self.token("carol", "dba"))
        self.warm_up([(system, ep)], {load.mode for _, load in loads})
        for scenario, load in loads:
            self.measure(scenario, load, [("direct", direct), (system, ep)], phase)

    def masked(self, dbgov: DbgovInstance) -> None:
        assert self.world is not None
        direct = self.world.direct().dsn("prod")
        for user, group in (("alice", "analysts"), ("carol", "dba")):
            ep = dbgov.endpoint(user, self.token(user, group), "prod")
            print(f"  masked      SELECT * as {user} (dbgov) vs dbgov_app (direct) ...", flush=True)
            try:
                out = masked_scan.run(ep.dsn(), direct, self.s.masked_repeats)
            except Exception as exc:  # a failure here must not lose the other scenarios
                self.results.errors.append(f"masked scan as {user}: {exc}")
                print(f"  masked      ERROR as {user}: {exc}", flush=True)
                continue
            self.results.masked[user] = out
            for key, v in out.items():
                print(
                    f"  masked      {key:<16} as {user:<6} dbgov {v['masked_rows_per_s']:>10,}"
                    f" rows/s  direct {v['direct_rows_per_s']:>10,} rows/s  "
                    f"x{v['ratio']:.2f}",
                    flush=True,
                )

    def scale(self, dbgov: DbgovInstance) -> None:
        assert self.world is not None
        world = self.world
        ep = dbgov.endpoint("carol", self.token("carol", "dba"))
        n = self.s.scale_connections
        busy_load = pgbench.Load("select", "simple", SCALE_BUSY_CLIENTS, self.s.seconds)

        def busy() -> pgbench.Result:
            return pgbench.run(world.pgbench, ep, busy_load, self.workdir)

        print(
            f"  scale       opening {n:,} idle connections to dbgov, then pgbench "
            f"{busy_load.label} beside them ...",
            flush=True,
        )
        try:
            out = scale.run(ep, dbgov.worker_pids, connections=n, busy=busy)
        except Exception as exc:
            self.results.errors.append(f"scale: {type(exc).__name__}: {exc}")
            print(f"  scale       ERROR {type(exc).__name__}: {exc}", flush=True)
            return
        out["busy_label"] = busy_load.label
        self.results.scale = out
        b = out["busy"] or {}
        print(
            f"  scale       {out['opened']:,}/{n:,} open in {out['open_seconds']} s, "
            f"errors {out['errors']}, busy {_num(b.get('tps'))} tps, "
            f"workers RSS +{out['rss_per_connection_kib']} KiB/conn",
            flush=True,
        )


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def run_ledger(settings: Settings, workdir: Path) -> dict[str, Any]:
    """bench.ledger_speed in a fresh process (see its docstring for why)."""
    print(
        f"  ledger      {settings.ledger_events:,} events: encode, append, integrate, verify ...",
        flush=True,
    )
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.ledger_speed",
            "--events",
            str(settings.ledger_events),
            "--workdir",
            str(workdir),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if res.returncode != 0:
        raise RuntimeError(f"bench.ledger_speed failed:\n{res.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(res.stdout)
    print(
        f"  ledger      append {out['append_per_s']:,}/s  integrate "
        f"{out['integrate_per_s']:,}/s  verify {out['verify_per_s']:,}/s  "
        f"(encode {out['encode_per_s']:,}/s)",
        flush=True,
    )
    return out


def variant_loads(runner: Runner, phase: str) -> list[tuple[str, pgbench.Load]]:
    s = runner.s
    loads: list[tuple[str, pgbench.Load]] = []
    if phase == "B" and s.wants("policy"):
        loads += [("policy", runner.load("select", m, 8)) for m in ("simple", "prepared")]
    if phase == "C":
        if s.wants("select"):
            loads += [("select", runner.load("select", m, 1)) for m in ("simple", "prepared")]
        if s.wants("ledger-mode"):
            loads += [("ledger-mode", runner.load("select", m, 8)) for m in ("simple", "prepared")]
    return loads


def guarded(results: Results, what: str, fn: Callable[[], None]) -> None:
    """Run one phase; an error is recorded and the bench goes on with the next."""
    try:
        fn()
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        results.errors.append(f"{what}: {type(exc).__name__}: {exc}")
        print(f"bench: {what} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


def cpu_count() -> int:
    return os.cpu_count() or 1
