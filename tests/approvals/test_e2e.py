"""Approvals through the real proxy, with real clients (issue: approvals, items 1-6).

bob's statement waits in his psql or psycopg session; a dba approves or denies from
the CLI (another process); bob sees the result or ERROR 42501. Every step is
checked in the ledger.

The demo world (`dbgov` fixture) covers holds; a second proxy on the same embedded
server (`custom`) runs the demo policy plus three rules (refuse mode, quorum 2, a
3-second timeout) and a webhook URL served by this test process.

Skipped until the proxy worker opens the approvals service (`ctx.approvals`; the
worker then creates `<data_dir>/control.db`), and the JIT test until the session
applies grants (`identity_with_grants`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from dbgov.store.control import ControlStore, RequestRecord
from dbgov.wire.postgres.messages import Query

from .conftest import Hook, dbgov_cmd

pytest.importorskip("dbgov.policy")
from conftest import Dbgov, free_port, start_dbgov, stop_dbgov  # tests/conftest.py
from pgwire import RawClient, error_of, rows_of

pytestmark = pytest.mark.slow

# Rules of the `custom` proxy, ahead of the demo policy's own.
EXTRA_RULES: list[dict[str, Any]] = [
    {
        "name": "training-deletes-need-dba",
        "match": {
            "groups": ["ml-engineers"],
            "targets": ["prod"],
            "kinds": ["delete"],
            "tables": ["public.training_runs"],
        },
        "action": "require_approval",
        "message": "deleting training runs rewrites model lineage",
        "approval": {
            "approvers": ["dba"],
            "quorum": 1,
            "mode": "refuse",
            "timeout": "10m",
            "risk": "medium",
        },
    },
    {
        "name": "feature-deletes-need-two-dbas",
        "match": {
            "groups": ["ml-engineers"],
            "targets": ["prod"],
            "kinds": ["delete"],
            "tables": ["public.feature_store"],
        },
        "action": "require_approval",
        "message": "deleting feature rows needs two dbas",
        "approval": {
            "approvers": ["dba"],
            "quorum": 2,
            "mode": "hold",
            "timeout": "10m",
            "risk": "critical",
        },
    },
    {
        "name": "training-updates-time-out",
        "match": {
            "groups": ["ml-engineers"],
            "targets": ["prod"],
            "kinds": ["update"],
            "tables": ["public.training_runs"],
        },
        "action": "require_approval",
        "message": "a short hold, for the timeout test",
        "approval": {
            "approvers": ["dba"],
            "quorum": 1,
            "mode": "hold",
            "timeout": "3s",
            "risk": "low",
        },
    },
]
# For the CLI only (the policy loader does not take jit_grants yet): alice (analysts)
# may ask for ml-engineers' rights on prod.
JIT_GRANTS = [
    {
        "group": "ml-engineers",
        "targets": ["prod"],
        "requesters": ["analysts"],
        "approvers": ["dba"],
        "quorum": 1,
        "max_duration": "1h",
    }
]


# ---------------------------------------------------------------------------- helpers


def requests(d: Dbgov) -> list[RequestRecord]:
    store = ControlStore(d.data_dir / "control.db")
    try:
        return store.list_requests(limit=1000)
    finally:
        store.close()


def last_id(d: Dbgov) -> int:
    rows = requests(d)
    return max((r.id for r in rows), default=0)


def wait_request(
    d: Dbgov, after: int, requester: str = "bob", state: str | None = "pending", timeout: float = 20
) -> RequestRecord:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in requests(d):
            if r.id > after and r.requester == requester and (state is None or r.state == state):
                return r
        time.sleep(0.1)
    raise AssertionError(f"no {state} request from {requester} after #{after}")


def request(d: Dbgov, request_id: int) -> RequestRecord:
    return next(r for r in requests(d) if r.id == request_id)


def psql_bg(d: Dbgov, user: str, sql: str, target: str = "prod") -> subprocess.Popen[str]:
    env = dict(os.environ, PGPASSWORD=d.token(user), PGCONNECT_TIMEOUT="10")
    return subprocess.Popen(
        [
            d.psql,
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            d.host,
            "-p",
            str(d.port),
            "-U",
            user,
            "-d",
            target,
            "-c",
            sql,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextmanager
def running(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """Kill the client if the test fails while it is still waiting."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def cli(
    d: Dbgov, *args: str, user: str, config: Path | None = None
) -> subprocess.CompletedProcess[str]:
    if config is None and not (d.data_dir / "run" / "config.json").exists():
        config = d.data_dir.parent / "dbgov.json"  # a `dbgov proxy --config` instance
    extra = ["--config", str(config)] if config else []
    return dbgov_cmd(*args, "--data-dir", str(d.data_dir), *extra, token=d.token(user))


def chain(d: Dbgov, request_id: int, last: str, key: str = "approval") -> set[str]:
    """The types of the ledger events linked to one request, once `last` is in."""
    evs = d.wait_events(lambda e: e.get(key) == str(request_id) and e["type"] == last, timeout=15)
    assert evs, f"no {last} event for #{request_id}"
    return {e["type"] for e in d.events() if e.get(key) == str(request_id)}


def customer(d: Dbgov, offset: int) -> int:
    return int(
        d.app(
            "SELECT DISTINCT customer_id FROM feature_store ORDER BY 1 LIMIT 1 OFFSET %s", (offset,)
        )[0][0]
    )


# ---------------------------------------------------------------------------- the custom proxy


def start_custom(main: Dbgov, root: Path, webhook_url: str | None) -> tuple[Dbgov, Path]:
    """`dbgov proxy --config` on the main embedded server, with its own data dir."""
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data"
    cfg = root / "dbgov.json"
    if not cfg.exists():
        from dbgov.demo.world import demo_policy_path

        policy = yaml.safe_load(demo_policy_path().read_text())
        policy["rules"] = EXTRA_RULES + policy["rules"]
        (root / "policy.yaml").write_text(yaml.safe_dump(policy))
        raw = json.loads((main.data_dir / "run" / "config.json").read_text())
        raw.update(
            data_dir=str(data),
            policy=str(root / "policy.yaml"),
            listen={"proxy": f"127.0.0.1:{free_port()}", "web": None, "workers": 1},
            approvals={"webhook_url": webhook_url, "webhook_timeout_s": 2, "webhook_retries": 2},
        )
        cfg.write_text(json.dumps(raw))
        jit = dict(raw, policy=str(root / "jit.yaml"))
        (root / "jit.yaml").write_text(yaml.safe_dump({"jit_grants": JIT_GRANTS}))
        (root / "cli.json").write_text(json.dumps(jit))
    d = start_dbgov(data, config=cfg)
    d.state.update({k: main.state[k] for k in ("admin_dsn", "psql", "pgbench")})
    return d, cfg


@pytest.fixture(scope="module")
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


@pytest.fixture(scope="module")
def custom(dbgov: Dbgov, tmp_root: Path, hook: Hook) -> Iterator[Dbgov]:
    d, _ = start_custom(dbgov, tmp_root / "approvals-custom", hook.url)
    yield d
    stop_dbgov(d)


# ---------------------------------------------------------------------------- holds (demo world)


def test_hold_then_approve_runs_in_the_same_psql_session(dbgov):
    d = dbgov
    cid, last = customer(d, 10), last_id(d)
    sql = (
        f"UPDATE feature_store SET value = 0.125 WHERE customer_id = {cid} "
        "RETURNING customer_id, value"
    )
    with running(psql_bg(d, "bob", sql)) as proc:
        req = wait_request(d, last)
        assert (req.sql, req.rule, req.risk, req.target, req.approvers) == (
            sql,
            "feature-edits-need-dba",
            "high",
            "prod",
            ("dba",),
        )
        assert req.tables == ("feature_store",) and req.fingerprint
        assert proc.poll() is None  # still waiting
        ok = cli(d, "approvals", "approve", str(req.id), user="carol")
        assert ok.returncode == 0, ok.stderr
        code, out, err = finish(proc)
    assert code == 0, err
    assert "0.125" in out and "UPDATE" in out
    assert f"NOTICE:  dbgov: approval #{req.id} requested from group dba; waiting up to 10m" in err
    assert f"dbgov: approval #{req.id} approved by carol; running the statement" in err
    assert d.app("SELECT DISTINCT value FROM feature_store WHERE customer_id = %s", (cid,)) == [
        (0.125,)
    ]
    ran = d.wait_events(lambda e: e.get("approval_ref") == str(req.id), types=["statement"])
    assert ran and ran[0]["user"] == "bob" and ran[0]["decision"]["verdict"] == "approval"
    assert chain(d, req.id, "approval.consumed") == {
        "approval.requested",
        "approval.vote",
        "approval.approved",
        "approval.consumed",
    }


def test_hold_with_psycopg_extended_protocol_inside_a_transaction(dbgov):
    d = dbgov
    cid, last = customer(d, 20), last_id(d)
    result: dict[str, Any] = {}

    def bob() -> None:
        try:
            with psycopg.connect(d.dsn("bob")) as conn:
                notices: list[str] = []
                conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
                conn.execute("SELECT count(*) FROM training_runs")  # the transaction is open
                cur = conn.execute(
                    "UPDATE feature_store SET value = %s WHERE customer_id = %s", (0.25, cid)
                )
                result["rowcount"] = cur.rowcount
                result["status"] = conn.info.transaction_status.name
                conn.commit()
                result["notices"] = notices
        except Exception as exc:
            result["error"] = exc

    t = threading.Thread(target=bob)
    t.start()
    try:
        req = wait_request(d, last)
        assert req.params is not None and len(req.params) == 2
        ok = cli(d, "approvals", "approve", str(req.id), user="erin")
        assert ok.returncode == 0, ok.stderr
    finally:
        t.join(60)
    assert "error" not in result, result.get("error")
    assert result["rowcount"] > 0 and result["status"] == "INTRANS"
    assert any(f"approval #{req.id} requested" in n for n in result["notices"])
    assert d.app("SELECT DISTINCT value FROM feature_store WHERE customer_id = %s", (cid,)) == [
        (0.25,)
    ]
    ran = d.wait_events(lambda e: e.get("approval_ref") == str(req.id), types=["statement"])
    assert ran and ran[0]["protocol"] == "extended" and ran[0]["in_txn"] is True


def test_a_denial_names_who_and_why_and_nothing_runs(dbgov):
    d = dbgov
    cid, last = customer(d, 30), last_id(d)
    before = d.app(
        "SELECT value FROM feature_store WHERE customer_id = %s ORDER BY feature", (cid,)
    )
    sql = f"UPDATE feature_store SET value = 0.75 WHERE customer_id = {cid}"
    with running(psql_bg(d, "bob", sql)) as proc:
        req = wait_request(d, last)
        no = cli(
            d,
            "approvals",
            "deny",
            str(req.id),
            "--reason",
            "not during business hours",
            user="erin",
        )
        assert no.returncode == 0, no.stderr
        code, _, err = finish(proc)
    assert code != 0
    assert f'ERROR:  dbgov: approval #{req.id} denied by erin: "not during business hours"' in err
    assert (
        d.app("SELECT value FROM feature_store WHERE customer_id = %s ORDER BY feature", (cid,))
        == before
    )
    assert chain(d, req.id, "approval.denied") == {
        "approval.requested",
        "approval.vote",
        "approval.denied",
    }


def test_ctrl_c_withdraws_the_request(dbgov):
    d = dbgov
    cid, last = customer(d, 40), last_id(d)
    sql = f"UPDATE feature_store SET value = 0.5 WHERE customer_id = {cid}"
    with running(psql_bg(d, "bob", sql)) as proc:
        req = wait_request(d, last)
        proc.send_signal(signal.SIGINT)  # psql sends a CancelRequest
        code, _, err = finish(proc)
    assert code != 0 and "ERROR" in err
    assert request(d, req.id).state == "withdrawn"
    evs = d.wait_events(lambda e: e.get("approval") == str(req.id), types=["approval.withdrawn"])
    assert evs and evs[0]["reason"] == "cancelled by the client" and evs[0]["user"] == "bob"
    late = cli(d, "approvals", "approve", str(req.id), user="carol")
    assert late.returncode == 1 and "already withdrawn" in late.stderr


def test_a_held_session_stops_reading_what_its_client_pipelines_behind(dbgov):
    """While bob's UPDATE waits for a vote, the 24 MB of queries his client pipelines
    behind it are not read into the proxy's memory: past about a megabyte, the client's
    writes block (a client of 2.4 GB once grew a worker to match). After the vote,
    every one of them runs and is answered, in order."""
    d = dbgov
    cid, last = customer(d, 45), last_id(d)
    client = RawClient(d.host, d.port)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)  # no autotuning
    try:
        assert error_of(client.startup("bob", "prod", d.token("bob"))) is None
        update = f"UPDATE feature_store SET value = 0.5 WHERE customer_id = {cid}"
        client.send(Query(update).encode())
        req = wait_request(d, last)
        filler = Query("SELECT 1 /*" + "x" * 65000 + "*/").encode()
        total = 384  # 24 MB
        stream = filler * total
        client.sock.setblocking(False)
        sent, idle_since = 0, time.monotonic()
        while sent < len(stream) and time.monotonic() - idle_since < 3:
            try:
                sent += client.sock.send(stream[sent : sent + (1 << 20)])
                idle_since = time.monotonic()
            except BlockingIOError:
                time.sleep(0.02)
        # The bound is the proxy's buffer (1 MiB), the kernel's socket buffers (a
        # receive buffer autotunes to 6 MiB on Linux) and our 64 KiB send buffer.
        assert sent < 16 << 20, f"the proxy read {sent} bytes while the statement was held"
        no = cli(d, "approvals", "deny", str(req.id), "--reason", "flood test", user="erin")
        assert no.returncode == 0, no.stderr
        client.sock.setblocking(True)
        client.sock.settimeout(60)
        rest = threading.Thread(target=client.sock.sendall, args=(stream[sent:],))
        rest.start()
        denied = error_of(client.until_ready())
        assert denied is not None and denied.sqlstate == "42501"
        answers = [rows_of(client.until_ready()) for _ in range(total)]
        rest.join()
        assert answers == [[(b"1",)]] * total
    finally:
        client.close()


def test_a_dba_cannot_approve_their_own_ddl(dbgov):
    d = dbgov
    last = last_id(d)
    try:
        with running(
            psql_bg(d, "carol", "ALTER TABLE training_runs ADD COLUMN approval_probe text")
        ) as proc:
            req = wait_request(d, last, requester="carol")
            assert req.rule == "ddl_on_production"
            own = cli(d, "approvals", "approve", str(req.id), user="carol")
            assert own.returncode == 1
            assert "nobody approves their own request (separation of duties)" in own.stderr
            ok = cli(d, "approvals", "approve", str(req.id), user="erin")
            assert ok.returncode == 0, ok.stderr
            code, out, err = finish(proc)
        assert code == 0, err
        assert "ALTER TABLE" in out
    finally:
        d.app("ALTER TABLE training_runs DROP COLUMN IF EXISTS approval_probe")
    votes = d.wait_events(lambda e: e.get("approval") == str(req.id), types=["approval.vote"])
    assert [v["user"] for v in votes] == ["erin"]


# ---------------------------------------------------------------------------- the custom proxy


def test_quorum_two_needs_two_different_dbas(custom):
    d = custom
    last = last_id(d)
    with running(psql_bg(d, "bob", "DELETE FROM feature_store WHERE customer_id = -1")) as proc:
        req = wait_request(d, last)
        assert req.quorum == 2
        first = cli(d, "approvals", "approve", str(req.id), user="carol")
        assert first.stdout.strip() == f"approval #{req.id}: vote recorded (1 of 2 approvals)"
        again = cli(d, "approvals", "approve", str(req.id), user="carol")
        assert again.returncode == 1 and "carol has already voted" in again.stderr
        assert proc.poll() is None
        second = cli(d, "approvals", "approve", str(req.id), user="erin")
        assert second.returncode == 0, second.stderr
        code, out, err = finish(proc)
    assert code == 0, err
    assert "DELETE 0" in out
    assert f"dbgov: approval #{req.id}: approved by carol (1 of 2)" in err
    approved = d.wait_events(
        lambda e: e.get("approval") == str(req.id), types=["approval.approved"]
    )
    assert approved[0]["approvers"] == ["carol", "erin"]


def test_refuse_mode_runs_exactly_that_statement_once(custom):
    d = custom
    sql = "DELETE FROM training_runs WHERE id = -1"
    first = d.psql_run("bob", sql)
    assert first.returncode != 0
    req = max((r for r in requests(d) if r.sql == sql), key=lambda r: r.id)
    assert (
        f"ERROR:  dbgov: approval #{req.id} required; ask an approver, then run the statement again"
    ) in first.stderr
    ok = cli(d, "approvals", "approve", str(req.id), user="carol")
    assert ok.returncode == 0, ok.stderr
    changed = d.psql_run("bob", "DELETE FROM training_runs WHERE id = -2")
    assert changed.returncode != 0 and "required" in changed.stderr
    assert f"#{req.id} " not in changed.stderr
    rerun = d.psql_run("bob", sql)
    assert rerun.returncode == 0, rerun.stderr
    assert "DELETE 0" in rerun.stdout
    assert f"dbgov: running with approval #{req.id} (approved by carol)" in rerun.stderr
    once_more = d.psql_run("bob", sql)
    assert once_more.returncode != 0 and "required" in once_more.stderr
    assert f"#{req.id} " not in once_more.stderr
    ran = d.wait_events(lambda e: e.get("approval_ref") == str(req.id), types=["statement"])
    assert len(ran) == 1
    assert chain(d, req.id, "approval.consumed") == {
        "approval.requested",
        "approval.vote",
        "approval.approved",
        "approval.consumed",
    }


def test_an_undecided_hold_times_out(custom):
    d = custom
    res = d.psql_run("bob", "UPDATE training_runs SET rows_used = rows_used WHERE id = -1")
    assert res.returncode != 0
    req = max((r for r in requests(d) if r.rule == "training-updates-time-out"), key=lambda r: r.id)
    assert f"ERROR:  dbgov: approval #{req.id} timed out after 3s" in res.stderr
    assert request(d, req.id).state == "timed_out"
    assert "approval.timed_out" in chain(d, req.id, "approval.timed_out")


def test_the_webhook_announces_request_and_decision(custom, hook):
    d = custom
    last = last_id(d)
    sql = "UPDATE feature_store SET value = 0.5 WHERE customer_id = -7"
    with running(psql_bg(d, "bob", sql)) as proc:
        req = wait_request(d, last)

        def got(word: str) -> dict[str, Any]:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                for r in list(hook.received):
                    if f"#{req.id} " in r["json"]["text"] and word in r["json"]["text"]:
                        return dict(r["json"])
                time.sleep(0.1)
            raise AssertionError(f"no webhook with {word!r} for #{req.id}: {hook.received}")

        asked = got("by bob on prod")
        assert "needs 1 approval(s) from dba" in asked["text"]
        assert (
            "UPDATE feature_store SET value = 0.5 WHERE customer_id = -7"
            in asked["blocks"][2]["text"]["text"]
        )
        assert "*Rule*\nfeature-edits-need-dba" in [f["text"] for f in asked["blocks"][1]["fields"]]
        ok = cli(d, "approvals", "approve", str(req.id), user="carol")
        assert ok.returncode == 0, ok.stderr
        assert got("approved by carol")["text"] == f"dbgov: Approval #{req.id} approved by carol"
        assert finish(proc)[0] == 0


def test_a_jit_grant_ends_in_open_sessions(custom, tmp_root):
    d = custom
    cfg = tmp_root / "approvals-custom" / "cli.json"
    cid = customer(d, 50)
    feature = f"jit_probe_{int(time.time())}"
    insert = (
        "INSERT INTO feature_store (customer_id, feature, value, updated_at) "
        "VALUES (%s, %s, 1, now())"
    )
    try:
        with psycopg.connect(d.dsn("alice"), autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(insert, (cid, feature + "_a"))
            asked = cli(
                d,
                "access",
                "request",
                "--target",
                "prod",
                "--group",
                "ml-engineers",
                "--for",
                "8s",
                "--reason",
                "label backfill",
                user="alice",
                config=cfg,
            )
            assert asked.returncode == 0, asked.stderr
            grant_id = int(asked.stdout.split("#")[1].split(":")[0])
            ok = cli(d, "approvals", "approve", str(grant_id), user="carol", config=cfg)
            assert ok.returncode == 0, ok.stderr
            time.sleep(1.2)  # a worker re-reads grants at most once a second
            conn.execute(insert, (cid, feature + "_b"))  # the same session, now with the grant
            used = d.wait_events(
                lambda e: (
                    e.get("user") == "alice"
                    and (e.get("decision") or {}).get("grants") == [str(grant_id)]
                ),
                types=["statement"],
            )
            assert used, "the statement event does not carry the grant id"
            store = ControlStore(d.data_dir / "control.db")
            ends = store.get_grant(grant_id).ends_at  # type: ignore[union-attr]
            store.close()
            time.sleep(max(0.0, ends - time.time()) + 0.3)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(insert, (cid, feature + "_c"))
        assert chain(d, grant_id, "grant.expired", key="grant") == {
            "grant.requested",
            "grant.vote",
            "grant.approved",
            "grant.expired",
        }
    finally:
        d.app("DELETE FROM feature_store WHERE feature LIKE %s", (feature + "%",))


def test_a_request_survives_a_proxy_restart(dbgov, tmp_root):
    root = tmp_root / "approvals-restart"
    d, cfg = start_custom(dbgov, root, None)
    cid = customer(d, 60)
    sql = f"UPDATE feature_store SET value = 0.375 WHERE customer_id = {cid}"
    try:
        with running(psql_bg(d, "bob", sql)) as proc:
            req = wait_request(d, 0)
            stop_dbgov(d)  # the waiting session ends with a clear error...
            code, _, err = finish(proc)
        assert code != 0 and "the proxy is shutting down" in err
        assert request(d, req.id).state == "pending"  # ...and the request stays open
        ok = cli(d, "approvals", "approve", str(req.id), user="carol", config=cfg)
        assert ok.returncode == 0, ok.stderr
        d, _ = start_custom(dbgov, root, None)
        rerun = d.psql_run("bob", sql)
        assert rerun.returncode == 0, rerun.stderr
        assert f"dbgov: running with approval #{req.id} (approved by carol)" in rerun.stderr
        assert d.app("SELECT DISTINCT value FROM feature_store WHERE customer_id = %s", (cid,)) == [
            (0.375,)
        ]
        ran = d.wait_events(lambda e: e.get("approval_ref") == str(req.id), types=["statement"])
        assert ran and ran[0]["sql"] == sql
    finally:
        stop_dbgov(d)
