"""The dashboard API against a ledger filled by real traffic: visibility, redaction,
CSRF, cookies, metrics and the OpenAPI document."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import SECRET_EMAIL, SECRET_ID, TestClient, csrf_headers, login, names_secret_id

Client = Callable[..., TestClient]


def _events(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    r = client.get("/api/audit/events", params={"limit": 1000, **params})
    assert r.status_code == 200, r.text
    return list(r.json()["events"])


def test_anonymous_is_refused(web_app: Any) -> None:
    with TestClient(web_app) as c:
        assert c.get("/api/audit/events").status_code == 401
        r = c.get("/live", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
        assert c.get("/healthz").json()["ok"] is True


def test_bad_token_cannot_log_in(web_app: Any) -> None:
    with TestClient(web_app) as c:
        page = c.get("/login")
        csrf = c.cookies.get("dbgov_csrf")
        r = c.post("/login", data={"token": "not-a-token", "csrf_token": csrf})
        assert r.status_code == 401
        assert "not a well-formed JWT" in r.text
        assert "dbgov_session" not in r.headers.get("set-cookie", "")
        assert page.status_code == 200


def test_alice_sees_only_her_own_events(client_for: Client) -> None:
    alice = client_for("alice")
    events = _events(alice)
    assert events and {e.get("user") for e in events} == {"alice"}
    assert _events(alice, user="carol") == []
    people = alice.get("/api/identities").json()["identities"]
    assert [p["user"] for p in people] == ["alice"]
    cells = alice.get("/api/matrix").json()["cells"]
    assert cells and {c["user"] for c in cells} == {"alice"}
    assert alice.get("/api/identities/carol").status_code == 404
    carol_event = _events(client_for("carol"), user="carol")[0]
    assert alice.get(f"/api/audit/events/{carol_event['idx']}").status_code == 404
    assert alice.get("/api/reports/soc2").status_code == 403


@pytest.mark.parametrize("user", ["dave", "carol"])
def test_auditors_and_dba_see_everyone(client_for: Client, user: str) -> None:
    c = client_for(user)
    users = {e.get("user") for e in _events(c)}
    assert {"alice", "bob", "carol"} <= users
    people = {p["user"] for p in c.get("/api/identities").json()["identities"]}
    assert {"alice", "bob", "carol"} <= people
    assert c.get("/api/reports/soc2").status_code == 200


def test_literals_on_masked_tables_are_redacted_for_alice(client_for: Client) -> None:
    alice = client_for("alice")
    statements = [e for e in _events(alice, type="statement") if "customers" in e.get("sql", "")]
    assert statements
    for e in statements:
        assert str(SECRET_ID) not in e["sql"] and SECRET_EMAIL not in e["sql"], e["sql"]
    # Other tests' statements without literals need no redaction; ours all had some.
    assert any(e.get("redacted") is True for e in statements)
    # A statement on an unmasked table keeps its text.
    plain = [e for e in _events(alice, type="statement") if "inference_log" in e.get("sql", "")]
    assert plain and "redacted" not in plain[0] and "0.5" in plain[0]["sql"]
    # Pages and the live API too, and the search box is no oracle.
    for path in ("/audit?type=statement", "/live", "/api/live/statements", "/identities/alice"):
        body = alice.get(path).text
        assert SECRET_EMAIL not in body and not names_secret_id(body), path
    assert _events(alice, text=SECRET_EMAIL) == []


def test_dba_sees_literals_and_dave_does_not(client_for: Client) -> None:
    sqls = [e["sql"] for e in _events(client_for("carol"), type="statement") if "sql" in e]
    assert any(names_secret_id(s) for s in sqls)
    sqls = [e["sql"] for e in _events(client_for("dave"), type="statement") if "sql" in e]
    # Auditors see PII masked, so statements on masked tables show no literals (other
    # tests' statements on unmasked tables may contain the same digits: not ours).
    assert not any(names_secret_id(s) for s in sqls)


def test_stream_pushes_new_events_redacted(client_for: Client, traffic: Any) -> None:
    alice = client_for("alice")
    with alice.stream("GET", "/api/stream", params={"after": -1}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        seen: list[dict[str, Any]] = []
        for line in r.iter_lines():
            if line.startswith("data: {"):
                seen.append(json.loads(line[6:]))
            if any("WHERE id = ?" in e.get("sql", "") for e in seen):
                break
    assert {e.get("user") for e in seen} == {"alice"}
    # Only what came from the client can carry the literal; indices, durations and
    # hashes are the ledger's own numbers and may contain the same digits by chance.
    client_text = [
        json.dumps([e.get(k) for k in ("sql", "params", "decision", "error", "message")])
        for e in seen
    ]
    assert not any(re.search(rf"\b{SECRET_ID}\b", t) for t in client_text)


def test_csrf_is_required_for_actions(client_for: Client) -> None:
    carol = client_for("carol")
    assert carol.post("/api/ledger/verify").status_code == 403
    assert carol.post("/api/ledger/verify", headers={"X-CSRF-Token": "forged"}).status_code == 403
    # A token from another session is useless here.
    other = client_for("dave")
    assert carol.post("/api/ledger/verify", headers=csrf_headers(other)).status_code == 403
    ok = carol.post("/api/ledger/verify", headers=csrf_headers(carol))
    assert ok.status_code == 200 and ok.json()["ok"] is True
    # Forms carry it as a field.
    form = carol.post("/audit/verify", data={"csrf_token": carol.cookies.get("dbgov_csrf")})
    assert form.status_code == 200 and "Verified" in form.text


def test_bearer_tokens_need_no_csrf(web_app: Any, traffic: Any) -> None:
    with TestClient(web_app) as c:
        auth = {"Authorization": f"Bearer {traffic.token('dave')}"}
        assert c.get("/api/me", headers=auth).json()["user"] == "dave"
        assert c.post("/api/ledger/verify", headers=auth).status_code == 200
        assert c.get("/api/me", headers={"Authorization": "Bearer junk"}).status_code == 401


def test_session_cookie_flags(web_app: Any, traffic: Any) -> None:
    for base, secure in (("http://127.0.0.1", False), ("https://127.0.0.1", True)):
        with TestClient(web_app, base_url=base) as c:
            c.get("/login")
            page = c.get("/login")
            csrf = c.cookies.get("dbgov_csrf")
            r = c.post(
                "/login",
                data={"token": traffic.token("dave"), "csrf_token": csrf},
                follow_redirects=False,
            )
            assert r.status_code == 303 and page.status_code == 200
            session = next(
                h for h in r.headers.get_list("set-cookie") if h.startswith("dbgov_session=")
            )
            flags = [f.strip().lower() for f in session.split(";")]
            assert "httponly" in flags
            assert "samesite=strict" in flags
            assert ("secure" in flags) is secure
            max_age = int(next(f for f in flags if f.startswith("max-age=")).split("=")[1])
            assert 0 < max_age <= 3600  # expires with the token
            assert traffic.token("dave") not in r.text


def test_tampered_cookie_is_refused(client_for: Client) -> None:
    dave = client_for("dave")
    cookie = dave.cookies.get("dbgov_session")
    assert cookie
    body, mac = cookie.split(".")
    dave.cookies.set("dbgov_session", body + "." + mac[::-1])
    assert dave.get("/api/me").status_code == 401


def test_metrics_parse(client_for: Client, web_app: Any) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    with TestClient(web_app) as c:
        r = c.get("/metrics")
    assert r.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    statements = {
        s.labels["decision"]: s.value
        for s in families["dbgov_statements"].samples
        if s.name == "dbgov_statements_total"
    }
    assert statements["allow"] >= 4 and statements["deny"] >= 2
    assert "dbgov_statement_duration_seconds" in families
    buckets = [
        s
        for s in families["dbgov_statement_duration_seconds"].samples
        if s.name.endswith("_bucket")
    ]
    assert buckets and buckets[-1].labels["le"] == "+Inf"
    for name in (
        "dbgov_connections_open",
        "dbgov_ledger_size",
        "dbgov_ledger_lag_bytes",
        "dbgov_approvals_pending",
        "dbgov_ledger_checkpoint_size",
    ):
        assert name in families, name
    assert families["dbgov_ledger_size"].samples[0].value > 0


def test_metrics_match_the_ledger(web_app: Any, data_dir: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    with TestClient(web_app) as c:
        text = c.get("/metrics").text
    db = sqlite3.connect(f"file:{data_dir / 'ledger' / 'ledger.db'}?mode=ro", uri=True)
    try:
        denied_now = db.execute(
            "SELECT count(*) FROM events WHERE type = 'statement' AND decision = 'deny'"
        ).fetchone()[0]
    finally:
        db.close()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    deny = next(
        s.value
        for s in fams["dbgov_statements"].samples
        if s.labels.get("decision") == "deny" and s.name.endswith("_total")
    )
    assert deny <= denied_now and deny >= denied_now - 5  # traffic of parallel tests may land


def test_openapi_lists_every_api_route(client_for: Client, web_app: Any) -> None:
    from starlette.routing import Route

    with TestClient(web_app) as c:
        r = c.get("/api/openapi.json")
    doc = json.loads(r.text)
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    for route in web_app.routes:
        if isinstance(route, Route) and route.path.startswith("/api/"):
            path = route.path.replace(":int}", "}").replace(":str}", "}")
            for method in route.methods - {"HEAD"}:
                assert method.lower() in paths[path], (method, path)
    assert "/api/audit/events" in paths and "/api/approvals/{id}/approve" in paths
    for ops in paths.values():
        for op in ops.values():
            assert op["summary"], op


def test_bad_parameters_are_400(client_for: Client) -> None:
    c = client_for("dave")
    assert c.get("/api/audit/events", params={"decision": "maybe"}).status_code == 400
    assert c.get("/api/charts/statements", params={"window": "3y"}).status_code == 400
    assert c.get("/api/charts/nope").status_code == 404


def test_event_detail_has_a_verified_inclusion_proof(client_for: Client, traffic: Any) -> None:
    import time

    c = client_for("dave")
    first = _events(c, type="connection.open")[-1]
    deadline = time.monotonic() + 15  # the sequencer signs a checkpoint at least every 10 s
    while True:
        detail = c.get(f"/api/audit/events/{first['idx']}").json()
        if detail["proof"]["status"] != "pending" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert detail["proof"]["status"] == "verified", detail["proof"]
    assert detail["proof"]["leaf_matches_body"] is True
    page = c.get(f"/audit/events/{first['idx']}")
    assert "verified" in page.text


def test_pages_render(client_for: Client) -> None:
    c = client_for("carol")
    for path in (
        "/live",
        "/live/sessions",
        "/identities",
        "/identities/alice",
        "/tables",
        "/tables/public.customers",
        "/approvals",
        "/audit",
        "/policy",
        "/reports/soc2",
    ):
        r = c.get(path)
        assert r.status_code == 200, (path, r.text[:300])
        assert "script-src 'self'" in r.headers["content-security-policy"]
    r = c.post(
        "/policy/explain",
        data={
            "sql": "DELETE FROM customers",
            "target": "prod",
            "user": "alice",
            "groups": "analysts",
            "csrf_token": c.cookies.get("dbgov_csrf"),
        },
    )
    assert r.status_code == 200 and "deny" in r.text


def test_login_keeps_redirects_on_site(web_app: Any, traffic: Any) -> None:
    with TestClient(web_app) as c:
        c.get("/login")
        r = c.post(
            "/login",
            data={
                "token": traffic.token("dave"),
                "next": "//evil.example/x",
                "csrf_token": c.cookies.get("dbgov_csrf"),
            },
            follow_redirects=False,
        )
        assert r.headers["location"] == "/live"


def test_login_helper_reuse(web_app: Any, traffic: Any) -> None:
    with TestClient(web_app) as c:
        login(c, traffic.token("bob"))
        assert c.get("/api/me").json()["groups"] == ["ml-engineers"]
