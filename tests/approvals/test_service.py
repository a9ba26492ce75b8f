"""The approval rules, against a real SQLite control store (issue: approvals, items 2-6)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from dbgov.approvals.jit import JitError, parse_jit_grants
from dbgov.approvals.model import Outcome
from dbgov.approvals.service import ApprovalRefused, AuditUnavailable, ended_message
from dbgov.gate import Decision, Verdict
from dbgov.store.control import ControlStore

from .conftest import ALICE, BOB, CAROL, ERIN, ident, other_process, statement

# -- separation of duties ---------------------------------------------------------------


def test_nobody_approves_their_own_request_not_even_a_dba(svc, audit):
    req = statement(svc, CAROL)  # carol (dba) asks, e.g. her own DDL on prod
    with pytest.raises(ApprovalRefused, match="nobody approves their own request"):
        svc.vote(req.id, CAROL, approve=True)
    assert svc.get(req.id).state == "pending"
    assert svc.votes(req.id) == []
    done = svc.vote(req.id, ERIN, approve=True)
    assert done.state == "approved" and done.decided_by == "erin"
    assert audit.types() == ["approval.requested", "approval.vote", "approval.approved"]


def test_self_approval_refused_whatever_groups_the_token_claims(svc):
    req = statement(svc, BOB)
    bob_as_dba = ident("bob", "ml-engineers", "dba")
    with pytest.raises(ApprovalRefused, match="separation of duties"):
        svc.vote(req.id, bob_as_dba, approve=True)
    # ...and the requester may not deny either: withdrawing is how one cancels.
    with pytest.raises(ApprovalRefused, match="own request"):
        svc.vote(req.id, bob_as_dba, approve=False, reason="changed my mind")


def test_only_approver_groups_vote(svc):
    req = statement(svc, BOB)
    with pytest.raises(ApprovalRefused, match="only members of dba"):
        svc.vote(req.id, ALICE, approve=True)


def test_jit_groups_do_not_make_an_approver(svc):
    req = statement(svc, BOB)
    alice_granted_dba = ALICE.with_grant("dba", "99")
    with pytest.raises(ApprovalRefused, match="only members of dba"):
        svc.vote(req.id, alice_granted_dba, approve=True)


# -- quorum, deny, expiry ------------------------------------------------------------------


def test_quorum_counts_distinct_approvers(svc, audit):
    req = statement(svc, BOB, quorum=2)
    assert svc.vote(req.id, CAROL, approve=True).state == "pending"
    with pytest.raises(ApprovalRefused, match="already voted"):
        svc.vote(req.id, CAROL, approve=True)
    done = svc.vote(req.id, ERIN, approve=True)
    assert done.state == "approved"
    votes = audit.of("approval.vote")
    assert [(v["user"], v["approvals"], v["quorum"]) for v in votes] == [
        ("carol", 1, 2),
        ("erin", 2, 2),
    ]
    approved = audit.of("approval.approved")[0]
    assert approved["approval"] == str(req.id) and approved["approvers"] == ["carol", "erin"]


def test_a_deny_decides_at_once_with_its_reason(svc, audit):
    req = statement(svc, BOB, quorum=2)
    svc.vote(req.id, CAROL, approve=True)
    with pytest.raises(ApprovalRefused, match="needs a reason"):
        svc.vote(req.id, ERIN, approve=False)
    done = svc.vote(req.id, ERIN, approve=False, reason="not during business hours")
    assert (done.state, done.decided_by, done.decision_reason) == (
        "denied",
        "erin",
        "not during business hours",
    )
    with pytest.raises(ApprovalRefused, match="already denied"):
        svc.vote(req.id, ident("frank", "dba"), approve=True)
    denied = audit.of("approval.denied")[0]
    assert denied["user"] == "erin" and denied["reason"] == "not during business hours"
    message = ended_message(done)
    assert message == f'dbgov: approval #{req.id} denied by erin: "not during business hours"'


def test_pending_requests_time_out(svc, audit, clock):
    req = statement(svc, BOB, timeout_s=60)
    other = statement(svc, BOB, timeout_s=600, params_hash="p2")
    clock.advance(61)
    with pytest.raises(ApprovalRefused, match="timed out"):
        svc.vote(req.id, CAROL, approve=True)
    assert svc.get(req.id).state == "timed_out"
    assert ended_message(svc.get(req.id)) == f"dbgov: approval #{req.id} timed out after 1m"
    assert svc.sweep() == 0  # already recorded; the 10-minute one is still open
    clock.advance(600)
    assert svc.sweep() == 1
    assert svc.get(other.id).state == "timed_out"
    assert [e["approval"] for e in audit.of("approval.timed_out")] == [str(req.id), str(other.id)]


def test_an_audit_failure_changes_nothing(svc, audit):
    req = statement(svc, BOB)
    audit.fail = OSError(28, "No space left on device")
    with pytest.raises(AuditUnavailable):
        svc.vote(req.id, CAROL, approve=True)
    assert svc.get(req.id).state == "pending"
    assert svc.votes(req.id) == []


# -- refuse mode: exactly that statement, once, while valid ---------------------------------


def _match(svc, who=BOB, target="prod", params_hash="p1", rule="feature-edits-need-dba"):
    return svc.consume_match(who, target, "fp1", params_hash, rule, "s2")


def test_an_approval_authorizes_exactly_that_statement_once(svc, audit):
    req = statement(svc, BOB, mode="refuse")
    assert _match(svc) is None  # pending is not approved
    svc.vote(req.id, CAROL, approve=True)
    assert _match(svc, params_hash="p2") is None  # other literal values or parameters
    assert _match(svc, who=ident("bob", "ml-engineers", issuer="corp-sso")) is None
    assert _match(svc, who=ident("mallory", "ml-engineers")) is None
    assert _match(svc, target="staging") is None
    assert _match(svc, rule="another-rule") is None
    used = _match(svc)
    assert used is not None and used.id == req.id
    assert _match(svc) is None  # consumed: anything again needs a new approval
    row = svc.get(req.id)
    assert row.state == "consumed" and row.consumed_session == "s2"
    consumed = audit.of("approval.consumed")
    assert len(consumed) == 1 and consumed[0]["session"] == "s2"


def test_consume_is_once_across_processes(svc, config, clock):
    req = statement(svc, BOB, mode="refuse")
    svc.vote(req.id, CAROL, approve=True)
    approved = svc.get(req.id)
    workers = [other_process(config, clock) for _ in range(8)]
    results: list[bool] = []
    barrier = threading.Barrier(len(workers))

    def go(w):
        barrier.wait()
        results.append(w.consume(approved, "s-race"))

    threads = [threading.Thread(target=go, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    for w in workers:
        w.close()


def test_an_unused_approval_expires(svc, audit, clock):
    req = statement(svc, BOB, mode="refuse")
    svc.vote(req.id, CAROL, approve=True)
    clock.advance(3601)
    assert _match(svc) is None
    assert svc.sweep() == 1
    assert svc.get(req.id).state == "expired"
    assert audit.of("approval.expired")[0]["approval"] == str(req.id)


def test_withdraw_is_the_requesters_and_only_while_pending(svc, audit):
    req = statement(svc, BOB)
    assert not svc.withdraw(req.id, "carol", "not hers")
    assert svc.withdraw(req.id, "bob", "cancelled by the client")
    assert not svc.withdraw(req.id, "bob", "twice")
    assert svc.get(req.id).state == "withdrawn"
    assert audit.of("approval.withdrawn")[0]["reason"] == "cancelled by the client"


# -- waiting across processes --------------------------------------------------------------


def test_wait_sees_a_vote_cast_by_another_process(svc, config):
    req = statement(svc, BOB)
    cli = other_process(config)  # its own connection, like `dbgov approvals approve`

    async def scenario():
        async def approve_later():
            await asyncio.sleep(0.3)
            cli.vote(req.id, CAROL, approve=True)

        task = asyncio.create_task(approve_later())
        final = await svc.wait(req.id, poll_s=0.05)
        await task
        return final

    assert asyncio.run(scenario()).state == "approved"
    cli.close()


def test_wait_times_the_request_out_at_its_deadline(svc, audit):
    import time

    svc.clock = time.time
    req = statement(svc, BOB, timeout_s=0.3)
    final = asyncio.run(svc.wait(req.id, poll_s=0.05))
    assert final.state == "timed_out"
    assert audit.types()[-1] == "approval.timed_out"


# -- outcomes ------------------------------------------------------------------------------


def test_outcome_denial_reads_as_the_approval_sentence():
    original = Decision(
        Verdict.APPROVAL, "feature-edits-need-dba", "changes churn-v2 inputs", statement_index=1
    )
    out = Outcome(False, 17, 'dbgov: approval #17 denied by carol: "not during business hours"')
    d = out.as_decision(original)
    assert d.verdict is Verdict.DENY and d.sqlstate == "42501" and d.statement_index == 1
    assert d.message() == 'dbgov: approval #17 denied by carol: "not during business hours"'
    assert d.as_event() == {
        "verdict": "deny",
        "rule": "feature-edits-need-dba",
        "reason": 'approval #17 denied by carol: "not during business hours"',
        "approval": "17",
    }
    assert Outcome(True, 17).ref == "17"


# -- just-in-time grants -----------------------------------------------------------------


def test_grant_requests_follow_the_jit_section(svc):
    with pytest.raises(ApprovalRefused, match="at most 4h"):
        svc.request_grant(BOB, "prod", "writers", 5 * 3600, "backfill")
    with pytest.raises(ApprovalRefused, match="only be requested by members of ml-engineers"):
        svc.request_grant(ALICE, "prod", "writers", 3600, "backfill")
    with pytest.raises(ApprovalRefused, match="no jit_grants entry"):
        svc.request_grant(BOB, "staging", "writers", 3600, "backfill")
    with pytest.raises(ApprovalRefused, match="no jit_grants entry"):
        svc.request_grant(BOB, "prod", "dba", 3600, "backfill")
    with pytest.raises(ApprovalRefused, match="why"):
        svc.request_grant(BOB, "prod", "writers", 3600, " ")


def test_a_grant_adds_its_group_for_its_window_only(svc, audit, clock):
    req = svc.request_grant(BOB, "prod", "writers", 3600, "backfill churn features")
    assert svc.identity_with_grants(BOB, "prod") == BOB  # not before approval
    with pytest.raises(ApprovalRefused, match="own request"):
        svc.vote(req.id, BOB, approve=True)
    svc.vote(req.id, CAROL, approve=True)
    clock.advance(2)  # past the worker's look-up cache
    granted = svc.identity_with_grants(BOB, "prod")
    assert "writers" in granted.groups and granted.grants == (("writers", str(req.id)),)
    assert svc.identity_with_grants(BOB, "staging") == BOB  # the grant names its target
    assert svc.active_grants("bob", "prod") == [("writers", str(req.id), clock.now + 3598)]
    clock.advance(3599)
    # The window has closed: dropped at once, even from the cached look-up.
    assert svc.identity_with_grants(BOB, "prod") == BOB
    assert svc.sweep() == 1
    assert svc.grant(req.id).state == "ended"
    assert audit.types() == ["grant.requested", "grant.vote", "grant.approved", "grant.expired"]
    approved = audit.of("grant.approved")[0]
    assert approved["grant"] == str(req.id) and approved["group"] == "writers"


def test_grants_view_says_how_long_its_answer_stands(svc, clock):
    # The proxy reuses the answer per session until `until`: never past the look-up
    # cache, and never past the end of a grant it includes.
    ident, until = svc.grants_view(BOB, "prod")
    assert ident == BOB and until == clock.now + 1.0
    req = svc.request_grant(BOB, "prod", "writers", 60, "backfill")
    svc.vote(req.id, CAROL, approve=True)
    clock.advance(2)
    ident, until = svc.grants_view(BOB, "prod")
    assert "writers" in ident.groups and until == clock.now + 1.0
    ends = svc.active_grants("bob", "prod")[0][2]
    clock.advance(ends - clock.now - 0.5)  # it ends within the cache's second: that bounds it
    ident, until = svc.grants_view(BOB, "prod")
    assert "writers" in ident.groups and until == ends < clock.now + 1.0
    generation = svc.generation
    clock.advance(1)
    assert svc.sweep() == 1 and svc.generation == generation + 1


def test_jit_section_errors_name_the_entry_and_key():
    with pytest.raises(JitError) as exc:
        parse_jit_grants(
            [
                {
                    "group": "writers",
                    "requesters": [],
                    "approvers": ["dba"],
                    "max_duration": "forever",
                }
            ],
            "policy.yaml",
        )
    text = str(exc.value)
    assert "policy.yaml: jit_grants[0].requesters:" in text
    assert "policy.yaml: jit_grants[0].max_duration: bad duration 'forever'" in text
    with pytest.raises(JitError, match="expected a list"):
        parse_jit_grants({"group": "writers"}, "policy.yaml")


def test_the_store_survives_reopening(config, audit, clock, tmp_path):
    """Pending requests and grants live in the file: a restarted proxy finds them."""
    from dbgov.approvals.service import Approvals

    first = Approvals(config, ControlStore(tmp_path / "control.db"), audit, clock=clock)
    req = statement(first, BOB)
    first.close()
    again = Approvals(config, ControlStore(tmp_path / "control.db"), audit, clock=clock)
    assert again.get(req.id).state == "pending"
    assert again.vote(req.id, CAROL, approve=True).state == "approved"
    again.close()
