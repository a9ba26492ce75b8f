"""`dbgov up` as a user runs it: ready with state.json and a banner, stops on SIGINT and
SIGTERM with no orphaned postgres, reuses its data dir, and the audit CLI reads it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from conftest import ROOT, start_dbgov, stop_dbgov


def _postgres_pids(data_dir: Path) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\x00")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"/postgres") and str(data_dir).encode() in b" ".join(cmd):
            out.append(int(proc.name))
    return out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_up_stops_cleanly_and_reuses_its_data_dir(tmp_root: Path, sig: signal.Signals) -> None:
    data = tmp_root / f"up-{sig.name}-{uuid.uuid4().hex[:6]}"
    d = start_dbgov(data)
    state = json.loads((data / "state.json").read_text())
    assert set(state) >= {"proxy", "web", "admin_dsn", "workers", "pid"}
    assert _postgres_pids(data), "the embedded server runs"
    conn = psycopg.connect(d.dsn("carol"), autocommit=True)
    conn.execute("CREATE TEMP TABLE t_up (x int)")  # a session is open while we stop
    assert d.proc is not None
    d.proc.send_signal(sig)
    assert d.proc.wait(60) == 0
    with pytest.raises(psycopg.OperationalError):  # FATAL 57P01 reached the open session
        conn.execute("SELECT 1")
    conn.close()
    deadline = time.monotonic() + 10
    while _postgres_pids(data) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _postgres_pids(data) == [], "no orphaned postgres after the stop"
    assert not (data / "state.json").exists()
    log = (data.parent / f"{data.name}.log").read_text()
    assert "demo data loaded" in log
    # Second start: same data, no reseeding, and the ledger carries on where it was.
    size_before = len(d.events())
    d2 = start_dbgov(data)
    try:
        log = (data.parent / f"{data.name}.log").read_text()
        assert log.count("demo data loaded") == 1
        with psycopg.connect(d2.dsn("carol")) as conn:
            assert conn.execute("SELECT count(*) FROM customers").fetchone() == (5000,)
        assert len(d2.events()) >= size_before
    finally:
        stop_dbgov(d2)


def test_kill_9_of_up_leaves_no_postgres(tmp_root: Path) -> None:
    data = tmp_root / f"up-kill-{uuid.uuid4().hex[:6]}"
    d = start_dbgov(data)
    assert d.proc is not None
    os.kill(d.proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while _postgres_pids(data) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _postgres_pids(data) == []


def test_audit_tail_and_search(dbgov) -> None:
    marker = f"tail-{uuid.uuid4().hex[:8]}"
    dbgov.psql_run("carol", f"SELECT '{marker}'", check=True)
    dbgov.wait_events(lambda e: marker in e.get("sql", ""), types=["statement"])

    def cli(*args: str) -> str:
        res = subprocess.run(
            [sys.executable, "-m", "dbgov", "audit", *args, "--data-dir", str(dbgov.data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert res.returncode == 0, res.stderr
        return res.stdout

    tail = cli("tail", "-n", "200")
    assert marker in tail and "user=carol" in tail and "decision=allow" in tail
    found = cli("search", "--user", "carol", "--since", "10m", "--text", marker, "--json")
    events = [json.loads(line) for line in found.splitlines()]
    assert [e["type"] for e in events] == ["statement"]
    assert cli("search", "--user", "nobody-at-all") == ""


def test_the_dashboard_address_in_state_json_is_the_one_bound(tmp_root: Path) -> None:
    """`--web-listen 127.0.0.1:0` records the port the kernel chose; an address that is
    taken leaves the proxy running, with no dashboard recorded."""
    import socket
    import urllib.request

    d = start_dbgov(tmp_root / f"web0-{uuid.uuid4().hex[:6]}", "--web-listen", "127.0.0.1:0")
    try:
        web = d.state["web"]
        host, _, port = web.rpartition(":")
        assert host == "127.0.0.1" and int(port) > 0
        with urllib.request.urlopen(f"http://{web}/healthz", timeout=10) as r:
            assert json.loads(r.read())["ok"] is True
        banner = (d.data_dir.parent / f"{d.data_dir.name}.log").read_text()
        assert f"dashboard  http://{web}/" in banner
    finally:
        stop_dbgov(d)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        d = start_dbgov(tmp_root / f"webbusy-{uuid.uuid4().hex[:6]}", "--web-listen", busy)
        try:
            assert d.state["web"] is None
            with psycopg.connect(d.dsn("carol"), autocommit=True) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            log = (d.data_dir.parent / f"{d.data_dir.name}.log").read_text()
            assert f"dashboard cannot listen on {busy}" in log
            assert f"dashboard  not running ({busy} is taken" in log
        finally:
            stop_dbgov(d)
    finally:
        taken.close()
