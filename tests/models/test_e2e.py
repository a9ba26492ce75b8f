"""Model provenance end to end: real proxy, real clients, real ledger (issue: models, 1-5).

A dedicated `dbgov up` (its own embedded PostgreSQL and ledger), so that nothing
else the suite does lands between two retrains. The story, run once:

    retrain churn-v2 5, support-llm 3 (fingerprints)
    carol changes a customer's email          (not a churn-v2 column: no link)
    retrain churn-v2 6                        (same digest as 5)
    bob inserts two feature rows              (allowed)
    bob updates a feature value               (held; carol approves with the CLI)
    carol changes a customer's country        (allowed, outside the owners)
    bob tries to change a country             (denied: no grant)
    etl inserts a prompt                      (linked to support-llm only)
    bob inserts a training run                (no model input)
    retrain churn-v2 7, support-llm 4         (digests changed)
    dbgov models report churn-v2 --bundle ...

and each test checks one part of what a user, an auditor or the ledger shows.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import Dbgov, start_dbgov, stop_dbgov  # tests/conftest.py
from dbgov.models.fingerprint import SETTINGS, row_hash_sum
from dbgov.store.control import ControlStore

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def dbgov(d: Dbgov, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DBGOV_TOKEN"}
    if user is not None:
        env["DBGOV_TOKEN"] = d.token(user)
    return subprocess.run(
        [sys.executable, "-m", "dbgov", *args, "--data-dir", str(d.data_dir)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


def retrain(d: Dbgov, model: str, version: str, *extra: str, user: str = "bob") -> dict[str, Any]:
    res = dbgov(d, "models", "retrain", model, "--version", version, "--json", *extra, user=user)
    assert res.returncode == 0, res.stderr
    marker: dict[str, Any] = json.loads(res.stdout)
    return marker


def psql(d: Dbgov, user: str, sql: str) -> subprocess.CompletedProcess[str]:
    return d.psql_run(user, sql)


def wait_request(d: Dbgov, requester: str, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (d.data_dir / "control.db").exists():
            store = ControlStore(d.data_dir / "control.db")
            try:
                pending = [
                    r
                    for r in store.list_requests(limit=100)
                    if r.requester == requester and r.state == "pending"
                ]
            finally:
                store.close()
            if pending:
                return pending[0].id
        time.sleep(0.1)
    raise AssertionError(f"no pending request from {requester}")


def statement(d: Dbgov, needle: str, user: str) -> dict[str, Any]:
    evs = d.wait_events(
        lambda e: needle in e.get("sql", "") and e.get("user") == user, types=["statement"]
    )
    assert evs, f"no statement event of {user} with {needle!r}"
    return evs[-1]


def index_of(d: Dbgov, event_id: str) -> int:
    from dbgov.store.sqlite import LedgerStore

    store = LedgerStore(d.data_dir / "ledger" / "ledger.db", readonly=True)
    try:
        row = store.event_by_id(event_id)
        assert row is not None
        return row.idx
    finally:
        store.close()


def reference_digest(d: Dbgov, table: str, columns: list[str] | None) -> tuple[int, str]:
    """The digest computed here, from the row texts, as an independent reference."""
    row = "t::text" if columns is None else f"ROW({', '.join('t.' + c for c in columns)})::text"
    dsn = d.admin_dsn.replace("dbname=postgres", "dbname=prod")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, value in SETTINGS:
            conn.execute("SELECT set_config(%s, %s, false)", (name, value))
        texts = [r[0] for r in conn.execute(f"SELECT {row} FROM {table} AS t").fetchall()]
    return len(texts), row_hash_sum(texts)


# ---------------------------------------------------------------------------- the story


@pytest.fixture(scope="module")
def world(tmp_root: Path) -> Iterator[Dbgov]:
    d = start_dbgov(tmp_root / "models")
    yield d
    stop_dbgov(d)


@pytest.fixture(scope="module")
def story(world: Dbgov, tmp_root: Path) -> dict[str, Any]:
    d = world
    out: dict[str, Any] = {"dir": tmp_root / "models-out"}
    out["dir"].mkdir(exist_ok=True)
    cid = int(
        d.app("SELECT DISTINCT customer_id FROM feature_store ORDER BY 1 LIMIT 1 OFFSET 7")[0][0]
    )
    out["cid"] = cid
    out["m5"] = retrain(d, "churn-v2", "5", "--fingerprint", "--note", "baseline")
    out["llm3"] = retrain(d, "support-llm", "3", "--fingerprint")

    res = psql(d, "carol", "UPDATE customers SET email = 'models.probe@example.com' WHERE id = 11")
    assert res.returncode == 0, res.stderr
    out["email"] = statement(d, "models.probe@example.com", "carol")
    out["m6"] = retrain(d, "churn-v2", "6", "--fingerprint")

    res = psql(
        d,
        "bob",
        "INSERT INTO feature_store (customer_id, feature, value, updated_at) "
        f"VALUES ({cid}, 'models_probe_a', 0.5, now()), "
        f"({cid}, 'models_probe_b', 0.25, now())",
    )
    assert res.returncode == 0, res.stderr
    out["insert"] = statement(d, "models_probe_a", "bob")

    update = (
        f"UPDATE feature_store SET value = 0.875 WHERE customer_id = {cid} "
        "AND feature = 'models_probe_a'"
    )
    env = dict(os.environ, PGPASSWORD=d.token("bob"), PGCONNECT_TIMEOUT="10")
    held = subprocess.Popen(
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
            "bob",
            "-d",
            "prod",
            "-c",
            update,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        request_id = wait_request(d, "bob")
        assert held.poll() is None  # waiting for a dba
        ok = dbgov(
            d, "approvals", "approve", str(request_id), "--reason", "label fix", user="carol"
        )
        assert ok.returncode == 0, ok.stderr
        _, err = held.communicate(timeout=60)
    finally:
        if held.poll() is None:
            held.kill()
            held.communicate()
    assert held.returncode == 0, err
    out["approval_id"] = str(request_id)
    out["update"] = statement(d, "value = 0.875", "bob")

    res = psql(d, "carol", "UPDATE customers SET country = 'FR' WHERE id = 12")
    assert res.returncode == 0, res.stderr
    out["country"] = statement(d, "country = 'FR' WHERE id = 12", "carol")
    res = psql(d, "bob", "UPDATE customers SET country = 'DE' WHERE id = 13")
    assert res.returncode != 0 and 'denied by rule "not-granted"' in res.stderr
    out["denied"] = statement(d, "country = 'DE' WHERE id = 13", "bob")
    res = psql(
        d,
        "etl",
        "INSERT INTO prompts (model, prompt_text, created_at) "
        "VALUES ('support-llm-v4', 'models probe prompt', now())",
    )
    assert res.returncode == 0, res.stderr
    out["prompt"] = statement(d, "models probe prompt", "etl")
    res = psql(
        d,
        "bob",
        "INSERT INTO training_runs (model, started_at, rows_used) VALUES ('churn-v2', now(), 5002)",
    )
    assert res.returncode == 0, res.stderr
    out["training"] = statement(d, "5002", "bob")

    out["m7"] = retrain(d, "churn-v2", "7", "--fingerprint", "--note", "weekly retrain")
    out["llm4"] = retrain(d, "support-llm", "4", "--fingerprint")
    out["reference"] = {
        t["table"]: reference_digest(d, t["table"], t.get("columns"))
        for t in out["m7"]["fingerprint"]["tables"]
    }

    bundle = out["dir"] / "bundle"
    res = dbgov(
        d,
        "models",
        "report",
        "churn-v2",
        "--format",
        "json",
        "--out",
        str(out["dir"] / "report.json"),
        "--bundle",
        str(bundle),
    )
    assert res.returncode == 0, res.stderr
    out["report"] = json.loads((out["dir"] / "report.json").read_text())
    out["bundle"] = bundle
    return out


# ---------------------------------------------------------------------------- the ledger


def test_statement_events_link_model_inputs(world: Dbgov, story: dict[str, Any]) -> None:
    assert story["insert"]["models"] == [
        {"name": "churn-v2", "tables": ["public.feature_store"], "statements": [0]}
    ]
    assert story["update"]["models"] == story["insert"]["models"]
    assert story["update"]["approval_ref"] == story["approval_id"]
    assert story["country"]["models"] == [
        {"name": "churn-v2", "tables": ["public.customers"], "statements": [0]}
    ]
    assert story["prompt"]["models"] == [
        {"name": "support-llm", "tables": ["public.prompts"], "statements": [0]}
    ]
    assert "models" not in story["email"]  # email is not one of churn-v2's columns
    assert "models" not in story["training"]
    # rows affected: in statement.done, linked by ref
    done = world.wait_events(
        lambda e: e.get("ref") == story["insert"]["id"], types=["statement.done"]
    )
    assert done and done[0]["rows"] == [2] and done[0]["sqlstate"] == "00000"


def test_retrain_markers_seal_the_ledger(world: Dbgov, story: dict[str, Any]) -> None:
    m6, m7 = story["m6"], story["m7"]
    assert (m6["model"], m6["version"], m6["user"], m6["via"]) == ("churn-v2", "6", "bob", "cli")
    assert m7["note"] == "weekly retrain" and m7["owners"] == ["ml-engineers"]
    assert m7["inputs"] == [
        {"table": "public.feature_store"},
        {"table": "public.customers", "columns": ["country", "created_at"]},
    ]
    assert m6["seal"] <= m6["index"] and m7["seal"] <= m7["index"]
    # everything done before a retrain lies below its seal, everything after at or above
    assert index_of(world, story["email"]["id"]) < m6["seal"]
    for key in ("insert", "update", "country", "prompt"):
        assert m6["seal"] <= index_of(world, story[key]["id"]) < m7["seal"], key
    event = world.wait_events(lambda e: e.get("id") == m7["id"], types=["model.retrain"])
    assert event and event[0]["seal"] == m7["seal"] and event[0]["groups"] == ["ml-engineers"]


def test_only_owners_and_admins_mark_and_versions_are_unique(
    world: Dbgov, story: dict[str, Any]
) -> None:
    refused = dbgov(world, "models", "retrain", "churn-v2", "--version", "99", user="alice")
    assert refused.returncode == 1
    assert (
        "alice may not mark retrains of churn-v2: only members of dba, ml-engineers may"
        in refused.stderr
    )
    again = dbgov(world, "models", "retrain", "churn-v2", "--version", "7", user="bob")
    assert again.returncode == 1 and "churn-v2 version 7 is already marked" in again.stderr
    unknown = dbgov(world, "models", "retrain", "fraud-v1", "--version", "1", user="bob")
    assert unknown.returncode == 1 and "no model 'fraud-v1' is declared" in unknown.stderr
    no_token = dbgov(world, "models", "retrain", "churn-v2", "--version", "100")
    assert no_token.returncode == 1 and "a dbgov token is required" in no_token.stderr
    listed = dbgov(world, "models", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    churn = next(m for m in json.loads(listed.stdout) if m["name"] == "churn-v2")
    assert [r["version"] for r in churn["retrains"]][:3] == ["5", "6", "7"]


def test_fingerprint_changes_if_and_only_if_the_inputs_changed(story: dict[str, Any]) -> None:
    m5, m6, m7 = (story[k]["fingerprint"] for k in ("m5", "m6", "m7"))
    assert m5["algorithm"] == "sha256-sum256/v1"
    assert m5["digest"] == m6["digest"]  # only an email changed: not a churn-v2 column
    assert m6["digest"] != m7["digest"]
    changed = {
        t["table"]
        for t6, t in zip(m6["tables"], m7["tables"], strict=True)
        if t6["digest"] != t["digest"]
    }
    assert changed == {"public.feature_store", "public.customers"}
    rows = {t["table"]: t["rows"] for t in m7["tables"]}
    assert (
        rows["public.feature_store"]
        == {t["table"]: t["rows"] for t in m6["tables"]}["public.feature_store"] + 2
    )
    assert story["llm3"]["fingerprint"]["digest"] != story["llm4"]["fingerprint"]["digest"]
    # the server-side digest equals one computed here from the row texts
    for t in m7["tables"]:
        assert story["reference"][t["table"]] == (t["rows"], t["digest"]), t["table"]


# ---------------------------------------------------------------------------- the report


def test_the_report_lists_exactly_those_changes(story: dict[str, Any]) -> None:
    r = story["report"]
    assert (r["model"], r["from"]["version"], r["to"]["version"]) == ("churn-v2", "6", "7")
    assert r["window"] == {"first": story["m6"]["seal"], "end": story["m7"]["seal"]}
    assert r["fingerprint_changed"] is True
    got = [(c["id"], c["user"], c["rows"], c["flags"]) for c in r["changes"]]
    assert got == [
        (story["insert"]["id"], "bob", 2, ["no_approval"]),
        (story["update"]["id"], "bob", 1, []),
        (story["country"]["id"], "carol", 1, ["no_approval", "outside_owners"]),
    ]
    insert, update, country = r["changes"]
    assert insert["statement"]["sql"] == story["insert"]["sql"]
    assert insert["groups"] == ["ml-engineers"] and insert["target"] == "prod"
    assert insert["decision"] == {"verdict": "allow"}
    assert update["decision"]["verdict"] == "approval"
    assert update["decision"]["rule"] == "feature-edits-need-dba"
    approval = update["approval"]
    assert (approval["id"], approval["requested_by"], approval["approvers"], approval["state"]) == (
        story["approval_id"],
        "bob",
        ["carol"],
        "consumed",
    )
    assert [(v["user"], v["verdict"], v["reason"]) for v in approval["votes"]] == [
        ("carol", "approve", "label fix")
    ]
    assert country["groups"] == ["dba"] and country["tables"] == ["public.customers"]
    assert country["statement"].get("redacted") is True  # customers is masked for auditors
    assert [c["id"] for c in r["not_applied"]] == [story["denied"]["id"]]
    assert r["not_applied"][0]["outcome"] == "refused"
    assert r["summary"]["flags"] == {"no_approval": 2, "outside_owners": 1}
    assert story["prompt"]["id"] not in json.dumps(r)  # support-llm's, not churn-v2's


def test_report_thresholds_versions_and_html(
    world: Dbgov, story: dict[str, Any], tmp_path: Path
) -> None:
    low = dbgov(
        world,
        "models",
        "report",
        "churn-v2",
        "--from",
        "6",
        "--to",
        "7",
        "--format",
        "json",
        "--large-rows",
        "2",
    )
    assert low.returncode == 0, low.stderr
    flags = [c["flags"] for c in json.loads(low.stdout)["changes"]]
    assert flags == [["no_approval", "large_rows"], [], ["no_approval", "outside_owners"]]
    quiet = dbgov(
        world, "models", "report", "churn-v2", "--from", "5", "--to", "6", "--format", "json"
    )
    assert quiet.returncode == 0, quiet.stderr
    doc = json.loads(quiet.stdout)
    assert doc["changes"] == [] and doc["fingerprint_changed"] is False
    llm = dbgov(world, "models", "report", "support-llm", "--format", "json")
    assert [c["id"] for c in json.loads(llm.stdout)["changes"]] == [story["prompt"]["id"]]
    html = tmp_path / "report.html"
    res = dbgov(
        world, "models", "report", "churn-v2", "--from", "6", "--to", "7", "--out", str(html)
    )
    assert res.returncode == 0, res.stderr
    text = html.read_text()
    assert "Model churn-v2: what changed in its inputs" in text
    assert f"#{story['approval_id']} consumed: requested by bob" in text
    assert "outside_owners" in text and "The input digest changed" in text
    missing = dbgov(world, "models", "report", "churn-v2", "--to", "42")
    assert missing.returncode == 1 and "churn-v2 version 42 is not marked" in missing.stderr


def test_the_evidence_verifies_offline_and_fails_after_tampering(
    world: Dbgov, story: dict[str, Any], tmp_path: Path
) -> None:
    key = str(world.data_dir / "keys" / "ledger.pub")
    bundle = story["bundle"]
    report = story["report"]
    verified = subprocess.run(
        [sys.executable, "-m", "dbgov", "audit", "verify", "--bundle", str(bundle), "--key", key],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "bundle verified" in verified.stdout
    lines = [json.loads(x) for x in (bundle / "events.jsonl").read_text().splitlines()]
    in_bundle = {x["index"] for x in lines}
    assert set(report["evidence"]) <= in_bundle
    receipt = bundle / "receipts" / f"{report['changes'][1]['index']}.json"
    checked = subprocess.run(
        [sys.executable, "-m", "dbgov", "audit", "verify-receipt", str(receipt), "--key", key],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert "statement" in checked.stdout and "user=bob" in checked.stdout

    forged = tmp_path / "forged"
    shutil.copytree(bundle, forged)
    path = forged / "events.jsonl"
    text = path.read_text()
    original = f'"approval_ref":"{story["approval_id"]}"'
    assert original in text
    path.write_text(text.replace(original, '"approval_ref":"999"'))
    failed = subprocess.run(
        [sys.executable, "-m", "dbgov", "audit", "verify", "--bundle", str(forged), "--key", key],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert failed.returncode == 10, failed.stdout + failed.stderr
    assert "FAILED verification" in failed.stdout


# ---------------------------------------------------------------------------- the dashboard


@pytest.fixture(scope="module")
def client(world: Dbgov, story: dict[str, Any]) -> Iterator[Any]:
    from dbgov.config import load_config
    from dbgov.web.app import build_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    app = build_app(load_config(world.data_dir / "run" / "config.json"))
    with TestClient(app) as c:
        yield c


def bearer(world: Dbgov, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.token(user)}"}


def test_models_page_and_api(world: Dbgov, story: dict[str, Any], client: Any) -> None:
    dave = bearer(world, "dave")
    listed = client.get("/api/models", headers=dave)
    assert listed.status_code == 200, listed.text
    churn = next(m for m in listed.json()["models"] if m["name"] == "churn-v2")
    assert churn["last_retrain"]["version"] == "7" and churn["owners"] == ["ml-engineers"]
    timeline = client.get("/api/models/churn-v2", headers=dave).json()
    changes = [i["change"] for i in timeline["timeline"] if i["kind"] == "change"]
    by_id = {c["id"]: c for c in changes}
    assert by_id[story["country"]["id"]]["flags"] == ["no_approval", "outside_owners"]
    assert by_id[story["update"]["id"]]["version"] == "7"
    retrains = [i["retrain"]["version"] for i in timeline["timeline"] if i["kind"] == "retrain"]
    assert retrains[:3] == ["7", "6", "5"]  # newest first
    report = client.get("/api/models/churn-v2/report?from=6&to=7", headers=dave).json()
    assert [c["id"] for c in report["changes"]] == [c["id"] for c in story["report"]["changes"]]
    # bob sees the retrains and his own changes only
    mine = client.get("/api/models/churn-v2", headers=bearer(world, "bob")).json()
    users = {i["change"]["user"] for i in mine["timeline"] if i["kind"] == "change"}
    assert users == {"bob"} and mine["hidden"] >= 1
    assert (
        client.get("/api/models/churn-v2/report", headers=bearer(world, "bob")).status_code == 403
    )
    assert client.get("/api/models/fraud-v1", headers=dave).status_code == 404
    page = client.get("/models/churn-v2", headers=dave)
    assert page.status_code == 200
    assert f'href="/audit/events/{story["m7"]["index"]}"' in page.text
    assert "outside_owners" in page.text and "retrain, version 7" in page.text
    assert 'href="/models"' in client.get("/models", headers=dave).text


def test_training_pipelines_mark_retrains_over_the_api(
    world: Dbgov, story: dict[str, Any], client: Any
) -> None:
    url = "/api/models/churn-v2/retrain"
    marked = client.post(
        url,
        headers=bearer(world, "bob"),
        json={"version": "8", "note": "from the pipeline", "fingerprint": True},
    )
    assert marked.status_code == 200, marked.text
    body = marked.json()
    assert (body["version"], body["via"], body["user"]) == ("8", "api", "bob")
    assert body["fingerprint"]["digest"] == story["m7"]["fingerprint"]["digest"]  # no change
    assert body["seal"] >= story["m7"]["index"] + 1
    again = client.post(url, headers=bearer(world, "bob"), json={"version": "8"})
    assert again.status_code == 409 and "already marked" in again.json()["detail"]
    refused = client.post(url, headers=bearer(world, "alice"), json={"version": "9"})
    assert refused.status_code == 403
    bad = client.post(url, headers=bearer(world, "bob"), json={"note": "no version"})
    assert bad.status_code == 400
    # a browser session is not bearer-authenticated: it needs the CSRF token
    client.cookies.clear()
    page = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf
    login = client.post(
        "/login",
        data={"token": world.token("bob"), "csrf_token": csrf.group(1)},
        follow_redirects=False,
    )
    assert login.status_code == 303
    forged = client.post(url, json={"version": "10"})
    assert forged.status_code == 403 and forged.json()["error"] == "csrf"
    client.get("/models")  # sets the CSRF cookie for this session
    token = client.cookies.get("dbgov_csrf")
    with_csrf = client.post(url, json={"version": "10"}, headers={"X-CSRF-Token": token})
    assert with_csrf.status_code == 200, with_csrf.text
    client.cookies.clear()
