"""Proxy workers start together on a fresh data dir: each opens the control store and
(the sequencer, CLI) the ledger store at once. Every one of them must open it; the
first switch to WAL used to fail another with "database is locked" (a bench run lost
a proxy to it)."""

from __future__ import annotations

import multiprocessing as mp
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest

OPENERS = 4
ROUNDS = 15


def _open(kind: str, path: str, barrier: Barrier, results: Any) -> None:
    from dbgov.store.control import ControlStore
    from dbgov.store.sqlite import connect

    barrier.wait()
    try:
        if kind == "control":
            ControlStore(Path(path)).close()
        else:
            connect(Path(path)).close()
        results.put("ok")
    except Exception as exc:  # reported to the test, which shows it
        results.put(repr(exc))


@pytest.mark.parametrize("kind", ["control", "ledger"])
def test_processes_opening_a_new_store_at_once_all_succeed(tmp_path: Path, kind: str) -> None:
    ctx = mp.get_context("fork")
    outcomes: list[str] = []
    for i in range(ROUNDS):
        path = tmp_path / f"{i}" / "store.db"
        barrier = ctx.Barrier(OPENERS)
        results = ctx.Queue()
        procs = [
            ctx.Process(target=_open, args=(kind, str(path), barrier, results))
            for _ in range(OPENERS)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        outcomes += [results.get(timeout=5) for _ in procs]
    assert [o for o in outcomes if o != "ok"] == []
