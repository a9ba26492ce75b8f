"""Ledger lag: journal bytes written but not yet integrated by the sequencer.

One definition for everything that reports or acts on it: the
`dbgov_ledger_lag_bytes` metric, the dashboard's health line, the workers'
backpressure (`proxy/backpressure.py`) and the benchmark's settle wait.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from dbgov.store.sqlite import LedgerStore

OFFSET_PREFIX = "journal:"  # the sequencer's committed offset of each segment (meta keys)


def journal_sizes(journal: Path) -> dict[str, int]:
    """Size of each journal segment file in a journal directory now."""
    out: dict[str, int] = {}
    try:
        with os.scandir(journal) as it:
            for entry in it:
                if entry.name.endswith(".jsonl"):
                    try:
                        out[entry.name] = entry.stat().st_size
                    except FileNotFoundError:
                        continue
    except FileNotFoundError:
        pass
    return out


def integrated_offsets(store: LedgerStore) -> dict[str, int]:
    """Bytes of each journal segment the sequencer has integrated (its own bookkeeping)."""
    out: dict[str, int] = {}
    for key, value in store.meta_items(OFFSET_PREFIX).items():
        try:
            out[key.removeprefix(OFFSET_PREFIX)] = int(value)
        except ValueError:
            continue
    return out


def lag_bytes(sizes: Mapping[str, int], offsets: Mapping[str, int]) -> int:
    """Journal bytes written but not yet integrated into the ledger."""
    return sum(max(0, size - offsets.get(name, 0)) for name, size in sizes.items())
