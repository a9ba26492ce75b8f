"""What a bench run prints and writes: the table, the targets, results.json, one chart.

Ratios are throughput ratios (TPS, rows/s). A ratio to direct uses the direct
row of the same phase (see `scenarios.py`); a ratio to PgBouncer the PgBouncer
row of the same load and phase. The "base" ratio is the comparison a scenario
exists for: policy = demo policy / allow-all, ledger-mode = strict / async.
"cpu us/tx" is the proxy's own CPU time per transaction (dbgov: the supervisor,
which runs the ledger sequencer, plus the workers; PgBouncer: its process): unlike
throughput on a shared machine, it does not depend on what else is running.
"pg us/tx" is PostgreSQL's CPU time per transaction (postmaster, backends and
background processes): the same statements cost the server more behind a proxy
that keeps the cores busy between them, and this column shows by how much.
"ledger s" is how long dbgov's ledger took, once pgbench had ended, to integrate
the run's last events: the sequencer runs niced and falls behind under a
saturating load. The next run starts only after it, and "cpu us/tx" includes it.
"seq us/tx" is the part of dbgov's "cpu us/tx" its ledger sequencer took (the
supervisor process), catch-up included; the rest is the workers'.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.scenarios import Results, Row

BASE = {"policy": "dbgov-allow-all", "ledger-mode": "dbgov-async"}
SCENARIO_ORDER = ("select", "tpcb", "churn", "sustained", "policy", "ledger-mode")


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def _find(
    rows: list[Row], scenario: str, label: str, system: str, phase: str | None = None
) -> Row | None:
    for r in rows:
        if (r.scenario, r.label, r.system) == (scenario, label, system) and (
            phase is None or r.phase == phase
        ):
            return r
    return None


def enrich(results: Results) -> list[dict[str, Any]]:
    """Every row as JSON with its ratios."""
    out = []
    for r in results.rows:
        d = r.to_json()
        direct = _find(results.rows, r.scenario, r.label, "direct", r.phase)
        bouncer = _find(results.rows, r.scenario, r.label, "pgbouncer", r.phase)
        d["ratio_to_direct"] = _ratio(r.result.tps, direct.result.tps if direct else None)
        d["ratio_to_pgbouncer"] = _ratio(r.result.tps, bouncer.result.tps if bouncer else None)
        base = BASE.get(r.scenario)
        if base and r.system == "dbgov":
            other = _find(results.rows, r.scenario, r.label, base)
            d["ratio_to_base"] = _ratio(r.result.tps, other.result.tps if other else None)
            d["base"] = base
            # The same comparison from the proxy's CPU per transaction (base / this): on a
            # shared machine it moves far less than throughput does between phases.
            d["cpu_ratio_to_base"] = _ratio(
                other.result.proxy_cpu_us_per_tx if other else None, r.result.proxy_cpu_us_per_tx
            )
        out.append(d)
    return out


def latency_added(results: Results) -> list[dict[str, Any]]:
    """p50/p99 added over direct at 1 client, per query mode and ledger mode (µs)."""
    out = []
    for mode in ("simple", "prepared"):
        label = f"-S {mode} c=1"
        for system, phase, ledger in (("dbgov", "A", "strict"), ("dbgov-async", "C", "async")):
            row = _find(results.rows, "select", label, system, phase)
            direct = _find(results.rows, "select", label, "direct", phase)
            if not row or not direct or None in (row.result.p50_ms, direct.result.p50_ms):
                continue
            assert row.result.p50_ms is not None and direct.result.p50_ms is not None
            assert row.result.p99_ms is not None and direct.result.p99_ms is not None
            out.append(
                {
                    "mode": mode,
                    "ledger": ledger,
                    "p50_added_us": round((row.result.p50_ms - direct.result.p50_ms) * 1000),
                    "p99_added_us": round((row.result.p99_ms - direct.result.p99_ms) * 1000),
                    "direct_p50_ms": direct.result.p50_ms,
                    "dbgov_p50_ms": row.result.p50_ms,
                }
            )
    return out


# ---------------------------------------------------------------------------- targets


@dataclass
class Target:
    issue: int
    what: str
    value: float | None
    limit: float
    unit: str = "x"
    higher_is_better: bool = True
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
            return "N/A"
        ok = self.value >= self.limit if self.higher_is_better else self.value <= self.limit
        return "PASS" if ok else "MISS"

    def line(self) -> str:
        op = ">=" if self.higher_is_better else "<="
        if self.value is None:
            shown = "not measured"
        elif self.unit == "x":
            shown = f"{self.value:.2f}x"
        else:
            shown = f"{self.value:,.0f} {self.unit}"
        limit = f"{self.limit:g}x" if self.unit == "x" else f"{self.limit:,.0f} {self.unit}"
        note = f" ({self.note})" if self.note else ""
        return f"  [{self.verdict:<4}] issue {self.issue}: {self.what} {op} {limit}: {shown}{note}"


def targets(results: Results, rows: list[dict[str, Any]]) -> list[Target]:
    def ratio(scenario: str, label: str, key: str, system: str = "dbgov") -> float | None:
        for d in rows:
            if (d["scenario"], d["label"], d["system"]) == (scenario, label, system) and (
                d["phase"] == "A"
            ):
                v = d.get(key)
                return float(v) if v is not None else None
        return None

    def masked(user: str, key: str) -> float | None:
        v = results.masked.get(user, {}).get(key, {}).get("ratio")
        return float(v) if v is not None else None

    out: list[Target] = []
    for mode in ("simple", "prepared"):
        out.append(
            Target(
                2,
                f"-S {mode} 8 clients, dbgov / direct",
                ratio("select", f"-S {mode} c=8", "ratio_to_direct"),
                0.6,
            )
        )

    def cpu_note(scenario: str, label: str) -> str:
        v = ratio(scenario, label, "cpu_ratio_to_base")
        return f"by proxy CPU per tx: {v:.2f}x" if v is not None else ""

    for mode in ("simple", "prepared"):
        label = f"-S {mode} c=8"
        out.append(
            Target(
                3,
                f"-S {mode} 8 clients, demo policy / allow-all",
                ratio("policy", label, "ratio_to_base"),
                0.9,
                note=cpu_note("policy", label),
            )
        )
    led = results.ledger or {}
    out.append(
        Target(
            5, "journal append (strict, one process)", led.get("append_per_s"), 50_000, "events/s"
        )
    )
    out.append(Target(5, "full verification", led.get("verify_per_s"), 200_000, "events/s"))
    for mode in ("simple", "prepared"):
        label = f"-S {mode} c=8"
        out.append(
            Target(
                5,
                f"-S {mode} 8 clients, strict / async",
                ratio("ledger-mode", label, "ratio_to_base"),
                0.8,
                note=cpu_note("ledger-mode", label),
            )
        )

    def fetch_note(key: str) -> str:
        v = masked("alice", f"{key}/fetch")
        return f"fetched into Python: {v:.2f}x" if v is not None else ""

    out.append(
        Target(
            4,
            "masked scan customers (column masks, wire), dbgov / direct",
            masked("alice", "customers/wire"),
            0.5,
            note=fetch_note("customers"),
        )
    )
    out.append(
        Target(
            4,
            "masked scan prompts (pii_text, wire), dbgov / direct",
            masked("alice", "prompts/wire"),
            0.25,
            note=fetch_note("prompts"),
        )
    )
    for mode in ("simple", "prepared"):
        v = ratio("select", f"-S {mode} c=8", "ratio_to_pgbouncer")
        out.append(Target(8, f"-S {mode} 8 clients, dbgov / PgBouncer (first step)", v, 0.8))
        out.append(Target(8, f"-S {mode} 8 clients, dbgov / PgBouncer", v, 1.0))
    for la in latency_added(results):
        limit = 60 if la["ledger"] == "async" else 120
        out.append(
            Target(
                8,
                f"p50 latency added at 1 client, {la['mode']}, {la['ledger']}",
                la["p50_added_us"],
                limit,
                "µs",
                higher_is_better=False,
            )
        )
    for key in ("customers/wire", "prompts/wire"):
        out.append(
            Target(
                8,
                f"masked scan {key.split('/')[0]} (wire), dbgov / direct",
                masked("alice", key),
                0.5,
                note=fetch_note(key.split("/")[0]),
            )
        )
    sc = results.scale or {}
    out.append(
        Target(
            8,
            f"errors with {sc.get('connections', 2000):,} connections",
            sc.get("errors"),
            0,
            "errors",
            higher_is_better=False,
        )
    )
    out.append(
        Target(
            8,
            "dbgov workers' RSS per idle connection",
            sc.get("rss_per_connection_kib"),
            64,
            "KiB",
            higher_is_better=False,
        )
    )
    return out


# ---------------------------------------------------------------------------- text


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def table(results: Results, rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'scenario':<12} {'load':<24} {'system':<16} {'ph':<2} {'TPS':>10} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'x direct':>8} {'x pgb':>6} {'x base':>7} "
        f"{'cpu us/tx':>9} {'seq us/tx':>9} {'pg us/tx':>8} {'ledger s':>8}"
    )
    lines = [head, "-" * len(head)]
    order = {s: i for i, s in enumerate(SCENARIO_ORDER)}
    seen: list[tuple[str, str]] = []
    for d in rows:
        key = (d["scenario"], d["label"])
        if key not in seen:
            seen.append(key)
    seen.sort(key=lambda k: order.get(k[0], 99))
    for scenario, label in seen:
        group = [d for d in rows if (d["scenario"], d["label"]) == (scenario, label)]
        group.sort(key=lambda d: (d["phase"], d["system"] != "direct"))
        for i, d in enumerate(group):
            tps = _f(d["tps"], ",.0f") if not d["error"] else "FAILED"
            base = _f(d.get("ratio_to_base"), ".2f")
            lines.append(
                f"{scenario if i == 0 else '':<12} {label if i == 0 else '':<24} "
                f"{d['system']:<16} {d['phase']:<2} {tps:>10} {_f(d['p50_ms'], '.3f'):>8} "
                f"{_f(d['p99_ms'], '.3f'):>8} {_f(d['ratio_to_direct'], '.2f'):>8} "
                f"{_f(d['ratio_to_pgbouncer'], '.2f'):>6} {base:>7} "
                f"{_f(d['proxy_cpu_us_per_tx'], '.0f'):>9} "
                f"{_f(d.get('ledger_cpu_us_per_tx'), '.0f'):>9} "
                f"{_f(d.get('server_cpu_us_per_tx'), '.0f'):>8} "
                f"{_f(d.get('ledger_settle_s'), '.1f'):>8}"
            )
        lines.append("")
    return "\n".join(lines).rstrip()


def details(results: Results) -> str:
    out: list[str] = []
    la = latency_added(results)
    if la:
        out.append("Latency added over direct at 1 client (-S), same phase:")
        for d in la:
            out.append(
                f"  {d['mode']:<8} {d['ledger']:<6} p50 +{d['p50_added_us']} µs  "
                f"p99 +{d['p99_added_us']} µs  (direct p50 {d['direct_p50_ms']:.3f} ms,"
                f" dbgov p50 {d['dbgov_p50_ms']:.3f} ms)"
            )
    if results.masked:
        out.append("Full scans, rows/s (best of runs; wire = libpq only, fetch = to Python):")
        for user, data in results.masked.items():
            path = "masked" if user == "alice" else "unmasked"
            for key, v in data.items():
                first = v.get("masked_first_rows_per_s")
                cold = f"  (first, cold scan: {first:,})" if first is not None else ""
                out.append(
                    f"  {key:<16} {user:<5} ({path:<8}) {v['masked_rows_per_s']:>10,}  "
                    f"direct {v['direct_rows_per_s']:>10,}  x{v['ratio']:.2f}{cold}"
                )
    if results.ledger:
        led = results.ledger
        ver = ", ".join(f"{k} {v['events_per_s']:,}/s" for k, v in led["verify"].items())
        out.append(
            f"Ledger ({led['events']:,} events, mean {led['mean_event_bytes']} bytes): "
            f"append {led['append_per_s']:,}/s (strict, durable per event), "
            f"encode {led['encode_per_s']:,}/s, encode+append "
            f"{led['encode_and_append_per_s']:,}/s, sequencer integration "
            f"{led['integrate_per_s']:,}/s, verify {ver}"
        )
    if results.scale:
        s = results.scale
        b = s.get("busy") or {}
        busy = (
            f"pgbench {s.get('busy_label', '')} beside them {_f(b.get('tps'), ',.0f')} tps "
            f"p50 {_f(b.get('p50_ms'), '.3f')} ms p99 {_f(b.get('p99_ms'), '.3f')} ms; "
            if b
            else ""
        )
        out.append(
            f"Scale: {s['opened']:,}/{s['connections']:,} idle connections open in "
            f"{s['open_seconds']} s ({s['logins_per_s']}/s), errors {s['errors']}; {busy}"
            f"{s['idle_probed']} idle ones probed after; {s['workers']} workers' RSS "
            f"{s['workers_rss_before_kib']:,} -> {s['workers_rss_after_kib']:,} KiB = "
            f"{s['rss_per_connection_kib']} KiB per connection"
        )
        if s["error_samples"]:
            out.append("  first errors: " + " | ".join(s["error_samples"]))
    drift = _drift(results)
    if drift:
        out.append("Direct PostgreSQL across phases (noise between phases): " + drift)
    return "\n".join(out)


def _drift(results: Results) -> str:
    parts = []
    for r in results.rows:
        if r.system != "direct" or r.phase == "A" or r.result.tps is None:
            continue
        ref = _find(results.rows, "select", r.label, "direct", "A") or _find(
            results.rows, r.scenario, r.label, "direct", "A"
        )
        if ref and ref.result.tps:
            parts.append(f"{r.label} {r.phase}/A {r.result.tps / ref.result.tps:.2f}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------- files


def write_json(
    path: Path,
    meta: dict[str, Any],
    results: Results,
    rows: list[dict[str, Any]],
    goals: list[Target],
) -> None:
    doc = {
        **meta,
        "rows": rows,
        "latency_added_1_client": latency_added(results),
        "masked_scan": results.masked,
        "ledger": results.ledger,
        "scale": results.scale,
        "phases": results.phases,
        "targets": [
            {
                "issue": t.issue,
                "what": t.what,
                "value": t.value,
                "limit": t.limit,
                "unit": t.unit,
                "verdict": t.verdict,
                "note": t.note,
            }
            for t in goals
        ],
        "errors": results.errors,
    }
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def chart(path: Path, results: Results, rows: list[dict[str, Any]], title: str) -> None:
    """One PNG: every throughput ratio, grouped by load."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars: list[tuple[str, str, float]] = []  # (category, series, value)
    for d in rows:
        if d["phase"] != "A" or d["scenario"] not in ("select", "tpcb", "churn"):
            continue
        cat = f"{d['scenario']}: {d['label']}"
        if d["system"] == "pgbouncer" and d["ratio_to_direct"] is not None:
            bars.append((cat, "PgBouncer / direct", d["ratio_to_direct"]))
        if d["system"] == "dbgov":
            if d["ratio_to_direct"] is not None:
                bars.append((cat, "dbgov / direct", d["ratio_to_direct"]))
            if d["ratio_to_pgbouncer"] is not None:
                bars.append((cat, "dbgov / PgBouncer", d["ratio_to_pgbouncer"]))
    for d in rows:
        if d["system"] == "dbgov-async" and d["scenario"] == "select" and d["ratio_to_direct"]:
            bars.append((f"select: {d['label']} (async)", "dbgov / direct", d["ratio_to_direct"]))
        if d.get("ratio_to_base") is not None:
            what = "demo / allow-all" if d["scenario"] == "policy" else "strict / async"
            bars.append((f"{d['scenario']}: {d['label']}", what, d["ratio_to_base"]))
    for user, data in results.masked.items():
        for key, v in data.items():
            seen = "masked" if user == "alice" else "unmasked"
            bars.append((f"scan {key} as {user} ({seen})", "dbgov / direct", v["ratio"]))
    if not bars:
        return
    cats = list(dict.fromkeys(c for c, _, _ in bars))
    series = list(dict.fromkeys(s for _, s, _ in bars))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color = {s: colors[i % len(colors)] for i, s in enumerate(series)}
    fig, ax = plt.subplots(figsize=(11, 0.28 * len(bars) + 0.25 * len(cats) + 1.5))
    labelled: set[str] = set()
    for ci, c in enumerate(cats):
        mine = [(s, v) for c2, s, v in bars if c2 == c]
        height = min(0.8 / len(mine), 0.3)
        for k, (s, v) in enumerate(mine):
            y = ci + height * (k + 0.5 - len(mine) / 2)
            ax.barh(y, v, height=height * 0.95, color=color[s], label=None if s in labelled else s)
            labelled.add(s)
            ax.text(v, y, f" {v:.2f}", va="center", fontsize=7)
    ax.set_yticks(range(len(cats)))
    ax.set_yticklabels(cats, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(1.0, color="black", linewidth=0.8)
    for limit, style in ((0.6, ":"), (0.8, "--")):
        ax.axvline(limit, color="grey", linewidth=0.6, linestyle=style)
    ax.set_xlabel("throughput ratio (1.0 = parity; dotted 0.6, dashed 0.8)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
