"""Leftover journals are folded in before the CLI reads, with the log's own key only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dbgov.layout import Layout
from dbgov.ledger.canonical import canonical_json
from dbgov.ledger.integrate import integrate_if_idle
from dbgov.ledger.note import generate_signer
from dbgov.ledger.sequencer import MAX_BATCH, SequencerLock, _pause
from ledger.kit import LedgerKit, run_cli, synthetic_events


def _leftover(layout: Layout, n: int, seed: int) -> None:
    lines = b"".join(canonical_json(e) + b"\n" for e in synthetic_events(n, seed))
    (layout.journal / "99999999-left.00000000.jsonl").write_bytes(lines)


def test_leftovers_are_integrated_and_signed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kit = LedgerKit(tmp_path / "data")
    kit.build(100, 100)
    kit.close()
    _leftover(kit.layout, 40, seed=2)
    code = run_cli("audit", "verify", "--data-dir", str(kit.layout.root), "--json")
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["events"] == 140
    assert report["checkpoints"]["latest"]["size"] == 140
    assert not list(kit.layout.journal.glob("*.jsonl"))


def test_a_dead_writers_torn_tail_is_dropped_and_its_segment_finished(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kit = LedgerKit(tmp_path / "data")
    kit.build(10, 10)
    kit.close()
    whole = b"".join(canonical_json(e) + b"\n" for e in synthetic_events(3, seed=5))
    torn = kit.layout.journal / "99999999-torn.00000000.jsonl"  # no such process
    torn.write_bytes(whole + b'{"v":1,"type":"stat')
    assert integrate_if_idle(kit.layout) == 3
    assert "99999999-torn.00000000.jsonl ends with a torn record; ignored" in caplog.text
    assert not torn.exists()  # finished: it no longer counts as ledger lag
    again = LedgerKit(kit.layout.root, signer=kit.signer)
    assert again.seq.tree.size == 13 and again.seq.lag == 0
    assert not again.seq.store.meta_items("journal:")


def test_nothing_while_a_sequencer_runs(tmp_path: Path) -> None:
    kit = LedgerKit(tmp_path / "data")
    kit.build(10, 10)
    _leftover(kit.layout, 5, seed=3)
    lock = SequencerLock(kit.layout.root)
    assert lock.acquire()
    try:
        assert integrate_if_idle(kit.layout) == 0
    finally:
        lock.release()
    assert integrate_if_idle(kit.layout) == 5


def test_never_signs_with_a_key_the_log_does_not_use(tmp_path: Path) -> None:
    kit = LedgerKit(tmp_path / "data")
    kit.build(10, 10)
    kit.close()
    skey, vkey = generate_signer(kit.origin)
    kit.layout.ledger_key.write_text(skey)  # not the key that signed the log
    kit.layout.ledger_pub.write_text(vkey)
    _leftover(kit.layout, 5, seed=4)
    assert integrate_if_idle(kit.layout) == 5
    again = LedgerKit(kit.layout.root, signer=kit.signer)
    assert again.seq.tree.size == 15
    assert again.seq.store.latest_checkpoint()[0] == 10, "left uncovered, not signed"
    again.close()


def test_writers_interleave_by_event_time_and_keep_their_own_order(tmp_path: Path) -> None:
    # Two processes' journals integrated in one pass: the CLI approved (its writer name
    # sorts last) before a proxy consumed the approval. The log must say so, whatever
    # the names; and a writer whose clock stepped back keeps its own order.
    kit = LedgerKit(tmp_path / "data")
    kit.layout.journal.mkdir(parents=True, exist_ok=True)

    def event(n: int, second: int) -> bytes:
        ev = {"v": 1, "type": f"t{n}", "id": f"e:{n}", "ts": f"2026-11-27T10:00:{second:02d}Z"}
        return canonical_json(ev) + b"\n"

    (kit.layout.journal / "99999998-zz-cli.00000000.jsonl").write_bytes(event(1, 10))
    proxy = event(2, 11) + event(3, 9) + event(4, 12)  # its clock stepped back at e:3
    (kit.layout.journal / "99999997-aa-proxy.00000000.jsonl").write_bytes(proxy)
    assert kit.seq.integrate_once() == 4
    rows = kit.seq.store.conn.execute("SELECT id FROM events ORDER BY idx").fetchall()
    assert [r[0] for r in rows] == ["e:1", "e:2", "e:3", "e:4"]
    kit.close()


@pytest.mark.parametrize("sizes", [(1, 63, 64, 65, 130), (200,)])
def test_every_event_lands_at_its_index_whatever_the_pass_size(
    tmp_path: Path, sizes: tuple[int, ...]
) -> None:
    """Passes insert rows 64 to a statement, then the remainder one by one: each event's
    bytes must be at its own index, and every done still found through its ref."""
    kit = LedgerKit(tmp_path / "data")
    events = list(synthetic_events(sum(sizes), seed=11))
    start = 0
    for n in sizes:
        assert kit.append(events[start : start + n]) == start + n
        start += n
    store = kit.seq.store
    for i, ev in enumerate(events):
        row = store.event(i)
        assert row is not None and row.body == canonical_json(ev) and row.id == ev["id"]
    dones = [ev for ev in events if ev["type"] == "statement.done"]
    assert dones
    for ev in dones:
        (found,) = store.search(ref=ev["ref"])
        assert found.id == ev["id"]
    plan = store.conn.execute(
        "EXPLAIN QUERY PLAN SELECT body FROM events WHERE type = 'statement.done' AND ref = ?",
        (dones[0]["ref"],),
    ).fetchall()
    assert "INDEX events_ref (ref=?)" in str(plan)  # the partial index serves ref lookups
    kit.close()
    assert run_cli("audit", "verify", "--data-dir", str(kit.layout.root)) == 0


def test_a_stream_of_events_is_integrated_in_fewer_passes() -> None:
    # The first events after a quiet spell wait the short pause; while passes keep
    # finding events, the idle pause lets a batch build; a backlog keeps the short one.
    poll, idle = 0.02, 0.1
    assert _pause(0, False, poll, idle) == idle
    assert _pause(0, True, poll, idle) == idle
    assert _pause(3, False, poll, idle) == poll
    assert _pause(3, True, poll, idle) == idle
    assert _pause(MAX_BATCH, True, poll, idle) == poll
