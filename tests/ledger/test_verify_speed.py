"""How fast `dbgov audit verify` rechecks a large ledger: measured and printed, not asserted.

The store is built the real way (synthetic journal segments through the
Sequencer, a signed checkpoint every 20,000 events), then verified with one
process and with the default worker count. Set ``DBGOV_SPEED_EVENTS`` to change
the size (default 1,000,000; the issue's target is 200,000 events/s or more).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from dbgov.ledger.canonical import canonical_json
from dbgov.ledger.verify import verify_store
from ledger.kit import LedgerKit, synthetic_events

EVENTS = int(os.environ.get("DBGOV_SPEED_EVENTS", "1000000"))
SEGMENT = 20_000


@pytest.mark.slow
def test_verification_speed(tmp_path: Path) -> None:
    kit = LedgerKit(tmp_path / "speed")
    started = time.perf_counter()
    lines = [canonical_json(e) for e in synthetic_events(EVENTS)]
    mean = sum(map(len, lines)) / len(lines)
    for start in range(0, EVENTS, SEGMENT):
        kit.append(lines[start : start + SEGMENT])
        kit.checkpoint()
    built = time.perf_counter() - started
    del lines
    print(f"\nbuilt {EVENTS:,} events (mean {mean:.0f} bytes) in {built:.1f} s")
    for workers in (1, None):
        best = None
        for _ in range(2):
            report = verify_store(kit.db, kit.signer.verifier, workers=workers)
            assert report.ok, report.to_json()["message"]
            best = report.seconds if best is None else min(best, report.seconds)
        assert best is not None
        label = "1 process" if workers == 1 else f"default workers ({os.cpu_count()} CPUs)"
        print(f"verify, {label}: {best:.2f} s, {EVENTS / best:,.0f} events/s")
    kit.close()
