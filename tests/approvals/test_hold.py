"""What a proxy session gets from `wait_for_approval`: hold, refuse, cancel, restart.

The session here is a stand-in with the handful of attributes the hold uses; the
real proxy path is covered by test_e2e.py. The store and the rules are real.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from dbgov.approvals.hold import SHUTDOWN_REASON, params_hash, wait_for_approval
from dbgov.gate import ApprovalSpec, Decision, Verdict
from dbgov.sql.analyze import analyze_cached

from .conftest import BOB, CAROL, other_process

SQL = "UPDATE feature_store SET value = 0.5 WHERE customer_id = 7"


class Session:
    def __init__(self, svc, identity=BOB, target="prod", sid="s1") -> None:
        self.id = sid
        self.identity = identity
        self.target = SimpleNamespace(name=target)
        self.ctx = SimpleNamespace(approvals=svc)
        self.closed = False
        self.close_reason = "client disconnected"
        self.search_path = ("public",)
        self.notices: list[str] = []

    def notice(self, message: str, hint: str | None = None) -> None:
        self.notices.append(message)


def decision(mode: str = "hold", timeout_s: int = 600, quorum: int = 1) -> Decision:
    return Decision(
        Verdict.APPROVAL,
        "feature-edits-need-dba",
        "changes churn-v2 inputs",
        approval=ApprovalSpec(("dba",), quorum, mode, timeout_s, "high"),
    )


def run(session, sql=SQL, d=None, params=None, portal=None):
    return wait_for_approval(
        session, sql, analyze_cached(sql), d or decision(), params, portal=portal
    )


async def requested(svc) -> None:
    """Until the held statement's request is in the store."""
    for _ in range(500):
        if svc.requests():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("no request was made")


@pytest.fixture
def live(svc):
    svc.clock = time.time
    return svc


def test_refuse_mode_asks_then_runs_that_statement_once(live, audit):
    s = Session(live)
    first = asyncio.run(run(s, d=decision("refuse")))
    assert not first.approved and first.request_id == 1
    denial = first.as_decision(decision("refuse"))
    assert denial.message() == (
        "dbgov: approval #1 required; ask an approver, then run the statement again"
    )
    assert "valid for 1h" in (denial.hint or "")
    again = asyncio.run(run(s, d=decision("refuse")))
    assert again.message == (
        "dbgov: approval #1 is still pending; ask an approver, then run the statement again"
    )
    live.vote(1, CAROL, approve=True)
    changed = asyncio.run(run(s, sql=SQL.replace("0.5", "0.9"), d=decision("refuse")))
    assert not changed.approved and changed.request_id == 2  # other literals: new approval
    ok = asyncio.run(run(Session(live, sid="s2"), d=decision("refuse")))
    assert ok.approved and ok.ref == "1"
    once_more = asyncio.run(run(s, d=decision("refuse")))
    assert not once_more.approved and once_more.request_id == 3
    row = live.get(1)
    assert row.state == "consumed" and row.consumed_session == "s2"
    assert row.sql == SQL and row.tables == ("feature_store",)


def test_hold_waits_for_a_vote_from_another_process(live, config, audit):
    s = Session(live)
    cli = other_process(config)

    async def scenario():
        task = asyncio.create_task(run(s))
        await requested(live)
        cli.vote(live.requests()[0].id, CAROL, approve=True)
        return await task

    out = asyncio.run(scenario())
    assert out.approved and out.ref == "1"
    assert s.notices[0] == "dbgov: approval #1 requested from group dba; waiting up to 10m"
    assert s.notices[-1] == "dbgov: approval #1 approved by carol; running the statement"
    assert [e["type"] for e in audit.events] == ["approval.requested", "approval.consumed"]
    assert live.get(1).state == "consumed"
    cli.close()


def test_hold_reports_a_denial_with_who_and_why(live, config):
    s = Session(live)
    cli = other_process(config)

    async def scenario():
        task = asyncio.create_task(run(s))
        await requested(live)
        cli.vote(1, CAROL, approve=False, reason="not during business hours")
        return await task

    out = asyncio.run(scenario())
    assert not out.approved
    assert out.as_decision(decision()).message() == (
        'dbgov: approval #1 denied by carol: "not during business hours"'
    )
    cli.close()


def test_hold_times_out(live):
    out = asyncio.run(run(Session(live), d=decision(timeout_s=1)))
    assert not out.approved and out.message == "dbgov: approval #1 timed out after 1s"
    assert live.get(1).state == "timed_out"


def test_quorum_progress_is_shown_while_holding(live, config):
    s = Session(live)
    cli = other_process(config)

    async def scenario():
        task = asyncio.create_task(run(s, d=decision(quorum=2)))
        await requested(live)
        cli.vote(1, CAROL, approve=True)
        await asyncio.sleep(0.5)
        from .conftest import ERIN

        cli.vote(1, ERIN, approve=True)
        return await task

    out = asyncio.run(scenario())
    assert out.approved
    assert "dbgov: approval #1: approved by carol (1 of 2)" in s.notices
    assert s.notices[0].endswith("from group dba (2 approvals); waiting up to 10m")
    cli.close()


def test_a_client_cancel_withdraws_the_request(live, audit):
    s = Session(live)

    async def scenario():
        task = asyncio.create_task(run(s))
        await requested(live)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert live.get(1).state == "withdrawn"
    assert audit.of("approval.withdrawn")[0]["reason"] == "cancelled by the client"


def test_a_proxy_shutdown_leaves_the_request_open_for_a_rerun(live, audit):
    s = Session(live)

    async def scenario():
        task = asyncio.create_task(run(s))
        await requested(live)
        s.closed, s.close_reason = True, SHUTDOWN_REASON  # what the worker's drain does
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert live.get(1).state == "pending"  # still decidable after the restart
    live.vote(1, CAROL, approve=True)
    out = asyncio.run(run(Session(live, sid="after-restart")))
    assert out.approved and out.ref == "1"
    assert audit.of("approval.consumed")[0]["session"] == "after-restart"


def test_a_rerun_joins_a_pending_hold_instead_of_asking_twice(live, config):
    cli = other_process(config)

    async def scenario():
        old = Session(live, sid="old")
        first = asyncio.create_task(run(old))
        await requested(live)
        old.closed, old.close_reason = True, SHUTDOWN_REASON
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        s = Session(live, sid="new")  # after the restart, bob runs it again
        second = asyncio.create_task(run(s))
        await asyncio.sleep(0.3)
        cli.vote(1, CAROL, approve=True)
        return s, await second

    s, out = asyncio.run(scenario())
    assert out.approved and out.ref == "1" and len(live.requests(states=None)) == 1
    assert s.notices[0].startswith("dbgov: waiting for approval #1 (requested earlier)")
    cli.close()


def test_the_parameters_hash_is_exact():
    class Portal:
        def __init__(self, params, formats=(1,)):
            self.params, self.param_formats = params, formats

    big = b"\x00" * 2048
    # The audit text of binary parameters is cut at 1 KiB; the hash is not.
    a = params_hash("SELECT $1", ["x"], ("public",), Portal((big + b"a",)))
    b = params_hash("SELECT $1", ["x"], ("public",), Portal((big + b"b",)))
    assert a != b
    assert params_hash("SELECT $1", ["1"], ("public",), Portal((b"1",), (0,))) != params_hash(
        "SELECT $1", ["1"], ("public",), Portal((b"1",), (1,))
    )
    assert params_hash(SQL, None, ("public",)) != params_hash(SQL, None, ("other", "public"))
    assert params_hash(SQL, None, ("public",)) == params_hash(SQL, None, ("public",))


def test_an_audit_failure_refuses_the_statement(live, audit):
    audit.fail = OSError(28, "No space left on device")
    out = asyncio.run(run(Session(live)))
    assert not out.approved and out.sqlstate == "58000"
    assert "audit ledger cannot be written" in out.message
    assert live.requests(states=None) == []
