"""LedgerBackpressure's bounds, over real journal files and a real ledger store: it
engages past the bound, holds until the lag is under half of it, and keeps its
state when the ledger cannot be read."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dbgov.layout import Layout
from dbgov.ledger.lag import OFFSET_PREFIX
from dbgov.proxy.backpressure import LedgerBackpressure
from dbgov.store.sqlite import LedgerStore


class Client:
    """Records what a session was told (Session.ledger_backpressure)."""

    def __init__(self) -> None:
        self.calls: list[bool] = []

    def ledger_backpressure(self, paused: bool) -> None:
        self.calls.append(paused)


@pytest.fixture
def world(tmp_path: Path) -> tuple[Layout, Path, LedgerStore]:
    layout = Layout(tmp_path / "data")
    layout.journal.mkdir(parents=True)
    segment = layout.journal / "1-a.00000000.jsonl"
    segment.write_bytes(b"")
    return layout, segment, LedgerStore(layout.ledger_db)


def _integrated(store: LedgerStore, segment: Path, n: int) -> None:
    """Record, as the sequencer does, that the first n bytes of a segment are in the ledger."""
    store.meta_set({OFFSET_PREFIX + segment.name: str(n).encode()})


def test_engages_past_the_bound_and_releases_under_half(world) -> None:
    layout, segment, store = world
    clients = {"s1": Client(), "s2": Client()}
    bp = LedgerBackpressure(layout, 1000, clients)
    segment.write_bytes(b"x" * 1000)
    bp.check()
    assert not bp.engaged and bp.lag == 1000  # at the bound, not past it
    segment.write_bytes(b"x" * 1001)
    bp.check()
    assert bp.engaged and [c.calls for c in clients.values()] == [[True], [True]]
    _integrated(store, segment, 400)  # lag 601: under the bound, but not under half of it
    bp.check()
    assert bp.engaged and bp.lag == 601
    _integrated(store, segment, 501)  # lag 500
    bp.check()
    assert not bp.engaged and [c.calls for c in clients.values()] == [[True, False]] * 2


def test_a_sustained_overload_is_reported_once_a_minute(world, caplog) -> None:
    layout, segment, store = world
    bp = LedgerBackpressure(layout, 10, {"s": Client()})
    with caplog.at_level(logging.WARNING):
        for _ in range(3):  # pause, resume, three times within a second
            segment.write_bytes(b"x" * 11)
            bp.check()
            assert bp.engaged
            _integrated(store, segment, 11)
            bp.check()
            assert not bp.engaged
            _integrated(store, segment, 0)
    assert bp.pauses == 3
    assert caplog.text.count("pausing client reads") == 1


def test_an_unreadable_ledger_keeps_the_last_state(world, caplog) -> None:
    layout, segment, store = world
    client = Client()
    bp = LedgerBackpressure(layout, 10, {"s": client})
    segment.write_bytes(b"x" * 11)
    bp.check()
    assert bp.engaged
    store.conn.execute("DROP TABLE meta")  # the offsets can no longer be read
    with caplog.at_level(logging.WARNING):
        bp.check()
    assert bp.engaged and client.calls == [True]
    assert "cannot read the ledger lag" in caplog.text
