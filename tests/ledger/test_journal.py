"""The journal's two cadences: records nothing waits on reach the file within
WRITE_INTERVAL_S, and what is written is fdatasync'ed within fsync_interval_ms."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dbgov.ledger import journal as journal_mod
from dbgov.ledger.journal import Journal


def _lines(directory: Path) -> list[bytes]:
    return [ln for f in sorted(directory.glob("*.jsonl")) for ln in f.read_bytes().splitlines()]


async def _until(check: Callable[[], object], limit_s: float) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > limit_s:
            raise AssertionError("not within the time allowed")
        await asyncio.sleep(0.002)
    return time.monotonic() - start


@pytest.mark.parametrize("mode", ["strict", "async"])
def test_a_record_nothing_waits_on_is_written_long_before_the_sync_is_due(
    tmp_path: Path, mode: str
) -> None:
    async def main() -> None:
        j = Journal(tmp_path, "1-test", mode, fsync_interval_ms=10_000)
        try:
            j.append(b'{"n":1}')
            j.when_durable(lambda err: None)  # strict: written now; async: on the tick
            await asyncio.sleep(0.05)
            j.append(b'{"n":2}')  # a completion: the tick armed for the sync is 10 s away
            waited = await _until(lambda: len(_lines(tmp_path)) == 2, limit_s=2.0)
            assert waited < 1.0
            assert _lines(tmp_path) == [b'{"n":1}', b'{"n":2}']
        finally:
            j.close()

    asyncio.run(main())


def test_strict_fdatasyncs_what_it_wrote_within_the_interval_not_per_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[float] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        real(fd)
        synced.append(time.monotonic())

    monkeypatch.setattr(journal_mod.os, "fdatasync", counting)

    async def main() -> None:
        j = Journal(tmp_path, "1-test", "strict", fsync_interval_ms=200)
        try:
            start = time.monotonic()
            for n in range(40):  # 400 ms of statements, one every 10 ms, each completed
                j.append(b'{"n":%d}' % n)
                assert j.write_now() is None
                j.append(b'{"done":%d}' % n)  # pending: the journal ticks every 10 ms
                await asyncio.sleep(0.01)
            last_write = time.monotonic()
            await _until(lambda: len(_lines(tmp_path)) == 80, limit_s=2.0)
            await _until(lambda: synced and synced[-1] > last_write, limit_s=2.0)
            # At the interval: one sync per 200 ms of the loop, so two or three. A sync
            # per tick (the bug this guards: the `_sync_due` gate missing) makes one per
            # iteration, 40, which breaks the bound unless the 40 iterations took over
            # 7.6 s; it fails with the gate removed. The bound follows the time the loop
            # really took, so a slow machine does not fail it.
            during = [t for t in synced if t <= last_write]
            assert 1 <= len(during) <= (last_write - start) / 0.2 + 2
        finally:
            j.close()

    asyncio.run(main())
