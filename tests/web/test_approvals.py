"""Votes from the dashboard go through the approvals service, under the CLI's rules."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import pytest

from .conftest import TestClient, config_of, csrf_headers

Client = Callable[..., TestClient]


@pytest.fixture
def bob_request(traffic: Any) -> int:
    """A pending statement request by bob, opened through the service (as a held ALTER would)."""
    approvals = pytest.importorskip("dbgov.approvals")
    from dbgov.identity import Identity
    from dbgov.ledger.journal import Journal
    from dbgov.proxy.audit import Audit

    config = config_of(traffic)

    async def open_request() -> int:
        # The journal arms timers on a running loop, as in the CLI (asyncio.run).
        journal = Journal(traffic.data_dir / "ledger" / "journal", f"{os.getpid()}-test", "strict")
        svc = approvals.Approvals.open(config, Audit(journal))
        bob = Identity("bob", frozenset({"ml-engineers"}), "token", "dbgov-local")
        try:
            req = svc.request_statement(
                bob,
                "prod",
                sql="ALTER TABLE feature_store ADD COLUMN web_test text",
                fingerprint="f" * 16,
                params_hash="0" * 64,
                params=None,
                tables=["public.feature_store"],
                rule="ml-ddl-on-prod-needs-dba",
                reason="DDL on prod needs a dba's approval",
                approvers=["dba"],
                quorum=1,
                mode="refuse",
                timeout_s=600,
                risk="high",
            )
        finally:
            svc.close()
            journal.flush_sync()
            journal.close()
        return int(req.id)

    return asyncio.run(open_request())


def test_vote_rules_are_the_services(client_for: Client, bob_request: int) -> None:
    bob, alice, carol = client_for("bob"), client_for("alice"), client_for("carol")
    queue = carol.get("/api/approvals").json()
    mine = [r for r in queue["requests"] if r["id"] == bob_request]
    assert mine and mine[0]["may_decide"] is True
    # Nobody approves their own request; non-approvers cannot vote.
    r = bob.post(f"/api/approvals/{bob_request}/approve", headers=csrf_headers(bob), json={})
    assert r.status_code == 403 and "own request" in r.json()["error"]
    r = alice.post(f"/api/approvals/{bob_request}/approve", headers=csrf_headers(alice), json={})
    assert r.status_code == 403 and "dba" in r.json()["error"]
    assert alice.get("/api/approvals").json()["requests"] == []  # not hers to see
    # Without the CSRF token nothing happens.
    assert carol.post(f"/api/approvals/{bob_request}/approve", json={}).status_code == 403
    r = carol.post(
        f"/api/approvals/{bob_request}/approve",
        headers=csrf_headers(carol),
        json={"reason": "looks fine"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "approved"
    r = carol.post(
        f"/api/approvals/{bob_request}/deny",
        headers=csrf_headers(carol),
        json={"reason": "too late"},
    )
    assert r.status_code == 403 and "already" in r.json()["error"]


def test_approvals_page_form(client_for: Client, bob_request: int) -> None:
    erin = client_for("erin")
    page = erin.get("/approvals")
    assert f'id="request-{bob_request}"' in page.text
    r = erin.post(
        f"/approvals/{bob_request}/deny",
        data={"reason": "", "csrf_token": erin.cookies.get("dbgov_csrf")},
    )
    assert "needs a reason" in r.text  # the service's own rule, shown as is
    r = erin.post(
        f"/approvals/{bob_request}/deny",
        data={"reason": "not today", "csrf_token": erin.cookies.get("dbgov_csrf")},
    )
    assert f"approval #{bob_request}: denied" in r.text
