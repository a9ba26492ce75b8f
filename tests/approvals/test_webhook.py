"""The webhook notifier against a real local HTTP server (issue: approvals, item 4)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from dbgov.approvals import webhook
from dbgov.approvals.service import Approvals
from dbgov.store.control import ControlStore

from .conftest import BOB, CAROL, Hook, RecordingAudit, make_config, statement


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


def test_post_retries_after_a_server_error(hook):
    hook.statuses = [500, 200]
    sleeps: list[float] = []
    result = webhook.post(hook.url, {"text": "hello"}, timeout_s=2, retries=3, sleep=sleeps.append)
    assert result.ok and result.attempts == 2 and result.status == 200
    assert [r["status"] for r in hook.received] == [500, 200]
    assert hook.received[1] == {
        "status": 200,
        "type": "application/json",
        "json": {"text": "hello"},
    }
    assert sleeps == [0.5]


def test_post_gives_up_after_its_retries_and_on_client_errors(hook):
    hook.statuses = [503, 503, 503]
    result = webhook.post(hook.url, {"text": "x"}, timeout_s=2, retries=2, sleep=lambda s: None)
    assert not result.ok and result.attempts == 3 and result.error == "HTTP 503"
    hook.received.clear()
    hook.statuses = [404]
    result = webhook.post(hook.url, {"text": "x"}, timeout_s=2, retries=2, sleep=lambda s: None)
    assert not result.ok and result.attempts == 1  # a 404 will not get better


def test_post_times_out_instead_of_hanging(hook):
    hook.delay_s = 1.0
    t0 = time.monotonic()
    result = webhook.post(hook.url, {"text": "x"}, timeout_s=0.2, retries=1, sleep=lambda s: None)
    assert not result.ok and result.attempts == 2
    assert time.monotonic() - t0 < 1.5


def test_post_refuses_non_http_urls():
    result = webhook.post("file:///etc/passwd", {"text": "x"}, timeout_s=1, retries=0)
    assert not result.ok and result.attempts == 0


def test_the_service_announces_requests_and_decisions(hook, tmp_path):
    config = make_config(tmp_path, webhook_url=hook.url, webhook_timeout_s=2, webhook_retries=2)
    svc = Approvals(config, ControlStore(tmp_path / "control.db"), RecordingAudit())
    hook.statuses = [500]  # the first delivery fails once, then succeeds
    req = statement(svc, BOB, quorum=1)
    svc.vote(req.id, CAROL, approve=True)

    assert svc.deliver()
    assert svc._sender is not None
    svc._sender.join(10)
    texts = [r["json"]["text"] for r in hook.received if r["status"] == 200]
    assert texts == [
        f"dbgov: Approval #{req.id} by bob on prod: a statement (rule feature-edits-need-dba); "
        "needs 1 approval(s) from dba",
        f"dbgov: Approval #{req.id} approved by carol",
    ]
    requested = hook.received[1]["json"]
    fields = [f["text"] for f in requested["blocks"][1]["fields"]]
    assert "*Requester*\nbob" in fields and "*Risk*\nhigh" in fields
    assert "*Tables*\npublic.feature_store" in fields
    assert requested["blocks"][2]["text"]["text"] == (
        "```UPDATE feature_store SET value = 0.5 WHERE customer_id = 7```"
    )
    assert f"dbgov approvals approve {req.id}" in requested["blocks"][-1]["elements"][0]["text"]
    assert svc.store.notifications(req.id) == [("requested", "sent", 2), ("approved", "sent", 1)]
    assert not svc.deliver()  # nothing left to send
    svc.close()


def test_an_unreachable_webhook_never_blocks_the_caller(tmp_path):
    config = make_config(
        tmp_path, webhook_url="http://127.0.0.1:9/down", webhook_timeout_s=0.2, webhook_retries=1
    )
    svc = Approvals(config, ControlStore(tmp_path / "control.db"), RecordingAudit())
    statement(svc, BOB)
    t0 = time.monotonic()
    assert svc.deliver()
    assert time.monotonic() - t0 < 0.2  # the send runs in its own thread
    svc._sender.join(10)
    assert svc.store.notifications() == [("requested", "failed", 2)]
    svc.close()
