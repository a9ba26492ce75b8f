"""The seal of a retrain marker, over a real ledger store and real journal files (markers.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dbgov.ledger.canonical import canonical_json
from dbgov.models.markers import wait_sealed
from ledger.kit import LedgerKit


def event(n: int) -> dict[str, object]:
    return {
        "v": 1,
        "type": "statement",
        "id": f"s:{n}",
        "ts": f"2025-06-01T12:00:00.{n:06d}Z",
        "session": "s",
        "user": "bob",
        "sql": f"select {n}",
    }


def test_the_seal_covers_every_journal_and_skips_torn_tails(tmp_path: Path) -> None:
    kit = LedgerKit(tmp_path / "data")
    size = kit.append([event(1), event(2)])
    kit.checkpoint()
    layout = kit.layout
    kit.close()
    # Journals not integrated yet, as a proxy worker would leave them: one of them
    # ends in a record its writer (now dead) never finished.
    (layout.journal / "999999-dead.00000000.jsonl").write_bytes(
        canonical_json(event(3)) + b"\n" + b'{"v":1,"type":"stat'
    )
    (layout.journal / "999998-dead.00000000.jsonl").write_bytes(
        b"".join(canonical_json(event(n)) + b"\n" for n in (4, 5))
    )
    sealed = asyncio.run(wait_sealed(layout, timeout_s=10))
    assert sealed == size + 3  # every whole record journalled before the seal is below it
