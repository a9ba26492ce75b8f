"""`/metrics`: Prometheus metrics computed from the ledger store, not from counters in memory.

The proxy workers are separate processes; the ledger is what they all share.
So a custom collector reads the store at scrape time. Counts are folded in
incrementally (only events after the last scrape's index are read), so a
scrape costs the new events, not the whole ledger; a restart re-reads it once.

The approval queue is derived from the ledger too: requests whose
`*.requested` event has no `approved`, `denied`, `timed_out` or `withdrawn` yet.

No metric carries an identity or a table name as a label: /metrics needs no
login, and aggregate counts are all it reveals.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from dbgov.ledger.lag import integrated_offsets, lag_bytes
from dbgov.pids import pid_alive
from dbgov.store.sqlite import LedgerStore
from dbgov.web import queries
from dbgov.web.services import Services

LATENCY_BUCKETS_S: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
DECISIONS: Final = ("allow", "deny", "approval")
ENDS_WAITING: Final = frozenset({"approved", "denied", "timed_out", "withdrawn"})


@dataclass
class Tally:
    """Running totals over ledger events up to `cursor` (inclusive)."""

    cursor: int = -1
    statements: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    duration_sum_s: float = 0.0
    masked_results: int = 0
    pending: set[str] = field(default_factory=set)  # "approval:<id>" still undecided

    def fold(self, store: LedgerStore, batch: int = 50_000) -> None:
        """Add every event after `cursor`."""
        while True:
            rows = store.conn.execute(
                "SELECT idx, type, decision, CASE WHEN type = 'statement.done' THEN "
                f"json_extract({queries.BODY}, '$.duration_us') END, CASE WHEN type = "
                f"'statement.done' THEN json_extract({queries.BODY}, '$.masked') IS NOT NULL END, "
                "CASE WHEN type LIKE 'approval.%' OR type LIKE 'grant.%' THEN "
                f"coalesce(json_extract({queries.BODY}, '$.approval'), "
                f"json_extract({queries.BODY}, '$.grant')) END "
                "FROM events WHERE idx > ? ORDER BY idx LIMIT ?",
                (self.cursor, batch),
            ).fetchall()
            for idx, type_, decision, duration_us, masked, request in rows:
                self.events[str(type_)] += 1
                if request is not None:
                    family, _, what = str(type_).partition(".")
                    key = f"{family}:{request}"
                    if what == "requested":
                        self.pending.add(key)
                    elif what in ENDS_WAITING:
                        self.pending.discard(key)
                if type_ == "statement":
                    self.statements[str(decision or "unknown")] += 1
                elif type_ == "statement.done":
                    if masked:
                        self.masked_results += 1
                    if duration_us is not None:
                        self._observe(float(duration_us) / 1e6)
                self.cursor = int(idx)
            if len(rows) < batch:
                return

    def _observe(self, seconds: float) -> None:
        self.duration_sum_s += seconds
        for i, bound in enumerate(LATENCY_BUCKETS_S):
            if seconds <= bound:
                self.buckets[i] += 1
                return
        self.buckets[-1] += 1

    def histogram(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip(LATENCY_BUCKETS_S, self.buckets, strict=False):
            total += n
            out.append((repr(bound), float(total)))
        out.append(("+Inf", float(total + self.buckets[-1])))
        return out


class LedgerCollector(Collector):
    """Reads the store on each scrape; `collect` runs in the scraping thread."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.tally = Tally()
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        svc = self.services
        store = svc.open_store()
        try:
            with self._lock:
                self.tally.fold(store)
                tally = self.tally
                statements = CounterMetricFamily(
                    "dbgov_statements", "Statements decided, by decision", labels=["decision"]
                )
                for decision in sorted(set(DECISIONS) | set(tally.statements)):
                    statements.add_metric([decision], tally.statements.get(decision, 0))
                yield statements
                events = CounterMetricFamily(
                    "dbgov_ledger_events_by_type", "Ledger events, by type", labels=["type"]
                )
                for type_, n in sorted(tally.events.items()):
                    events.add_metric([type_], n)
                yield events
                yield CounterMetricFamily(
                    "dbgov_masked_results",
                    "Statements whose results had masked columns",
                    value=tally.masked_results,
                )
                yield GaugeMetricFamily(
                    "dbgov_approvals_pending",
                    "Approval and access requests waiting for a decision (per the ledger)",
                    value=len(tally.pending),
                )
                yield HistogramMetricFamily(
                    "dbgov_statement_duration_seconds",
                    "Statement duration at the proxy (statement.done duration_us)",
                    buckets=tally.histogram(),
                    sum_value=tally.duration_sum_s,
                )
            state = svc.state()
            sessions = queries.open_sessions(store, None, state, pid_alive)
            yield GaugeMetricFamily(
                "dbgov_connections_open", "Sessions open now", value=len(sessions)
            )
            yield GaugeMetricFamily("dbgov_ledger_size", "Events in the ledger", value=store.size())
            latest = store.latest_checkpoint()
            yield GaugeMetricFamily(
                "dbgov_ledger_checkpoint_size",
                "Size of the latest signed checkpoint",
                value=latest[0] if latest else 0,
            )
            yield GaugeMetricFamily(
                "dbgov_ledger_lag_bytes",
                "Journal bytes written but not yet integrated",
                value=lag_bytes(svc.journal_bytes(), integrated_offsets(store)),
            )
        finally:
            store.close()


def build_registry(collector: LedgerCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
