"""The SOC 2 report's figures, recounted independently with sqlite3 over the ledger file."""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .conftest import TestClient

Client = Callable[..., TestClient]


def _count(db: Path, where: str) -> set[int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {int(r[0]) for r in conn.execute(f"SELECT idx FROM events WHERE {where}")}
    finally:
        conn.close()


def _independent(db: Path, cutoff: str) -> dict[str, set[int]]:
    bound = f"ts < '{cutoff}'"
    return {
        "access": _count(db, f"type = 'connection.open' AND {bound}"),
        "failed_logins": _count(db, f"type = 'auth.failed' AND {bound}"),
        "denials": _count(
            db,
            f"type = 'statement' AND {bound} AND "
            "json_extract(CAST(body AS TEXT), '$.decision.verdict') = 'deny'",
        ),
        "masked_reads": _count(
            db,
            f"type = 'statement.done' AND {bound} AND "
            "json_array_length(CAST(body AS TEXT), '$.masked') > 0",
        ),
    }


def _build(data_dir: Path) -> tuple[Any, str]:
    from dbgov.report.soc2 import build_report
    from dbgov.store.sqlite import LedgerStore
    from dbgov.web.redact import Redactor
    from dbgov.web.verification import load_ledger_verifier

    store = LedgerStore(data_dir / "ledger" / "ledger.db", readonly=True)
    deadline = time.monotonic() + 20  # the sequencer signs a checkpoint at least every 10 s
    while store.latest_checkpoint() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        # Pin the period to what exists now, so later traffic cannot move the figures.
        # (Ledger order is not time order across writers: take the latest timestamp.)
        latest = str(store.conn.execute("SELECT max(ts) FROM events").fetchone()[0])
        cutoff = latest + "~"  # sorts just after the latest timestamp
        report = build_report(
            store,
            since=None,
            until=cutoff,
            verifier=load_ledger_verifier(data_dir / "keys" / "ledger.pub"),
            redactor=Redactor.nothing(),
        )
    finally:
        store.close()
    return report, cutoff


def test_report_figures_match_the_ledger(data_dir: Path) -> None:
    report, cutoff = _build(data_dir)
    expected = _independent(data_dir / "ledger" / "ledger.db", cutoff)
    for key, idxs in expected.items():
        fig = report.figures[key]
        assert fig.count == len(idxs), key
        assert set(fig.indexes) <= idxs and (fig.truncated or set(fig.indexes) == idxs), key
    assert report.figures["failed_logins"].count >= 1
    assert report.figures["denials"].count >= 2
    assert {p["user"] for p in report.access} >= {"alice", "bob", "carol"}
    alice = next(p for p in report.access if p["user"] == "alice")
    assert alice["groups"] == ["analysts"]
    assert report.verification["ok"] is True
    assert report.verification["checkpoint_note"]
    carol_statements = _count(
        data_dir / "ledger" / "ledger.db",
        f"type = 'statement' AND user = 'carol' AND ts < '{cutoff}'",
    )
    assert carol_statements <= set(report.figures["privileged"].indexes)


def test_report_html_links_every_figure_to_events(data_dir: Path) -> None:
    from dbgov.report.soc2 import render_html

    report, _ = _build(data_dir)
    html = render_html(report, "http://127.0.0.1:8432")
    for control in ("CC6.1", "CC6.2", "CC6.3", "CC6.6", "CC6.7", "CC7.2", "CC7.3", "CC8.1"):
        assert f'id="{control}"' in html
    for idx in report.figures["denials"].indexes:
        assert f'href="http://127.0.0.1:8432/audit/events/{idx}"' in html
    shown = {m.group(1): int(m.group(2)) for m in re.finditer(r'data-figure="(\w+)">(\d+)<', html)}
    for key, value in shown.items():
        assert value == report.figures[key].count
    assert "<script" not in html


def test_report_command_writes_html(data_dir: Path, tmp_path: Path) -> None:
    from dbgov.report.commands import add_report_commands

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir")
    parser = argparse.ArgumentParser(prog="dbgov")
    add_report_commands(parser.add_subparsers(dest="command", required=True), common)
    out = tmp_path / "report.html"
    args = parser.parse_args(
        [
            "report",
            "soc2",
            "--data-dir",
            str(data_dir),
            "--from",
            "2000-01-01",
            "--to",
            "2999-12-31",
            "--out",
            str(out),
        ]
    )
    assert args.func(args) == 0
    html = out.read_text()
    assert "SOC 2 evidence" in html and "verified" in html
    bad = parser.parse_args(["report", "soc2", "--data-dir", str(data_dir), "--from", "soon"])
    assert bad.func(bad) == 2


def test_report_page_and_api(client_for: Client) -> None:
    dave = client_for("dave")
    page = dave.get("/reports/soc2")
    assert page.status_code == 200 and "CC8.1" in page.text
    data = dave.get("/api/reports/soc2").json()
    assert set(data["figures"]) >= {
        "access",
        "changes",
        "denials",
        "failed_logins",
        "masked_reads",
        "privileged",
        "verification",
    }
    json.dumps(data)
