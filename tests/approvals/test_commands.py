"""`dbgov approvals ...` and `dbgov access ...` run as subprocesses against a tmp data
dir: token authentication, the rules as the CLI reports them, and the ledger events
the CLI's own journal carries (issue: approvals, items 3-5)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from dbgov.approvals.service import Approvals
from dbgov.identity.issuer import LocalIssuer
from dbgov.store.control import ControlStore

from .conftest import BOB, JIT, RecordingAudit, dbgov_cmd, make_config, statement


@pytest.fixture
def world(tmp_path: Path):
    """A data dir as `dbgov up` leaves it: effective config, issuer key, a policy with
    a jit_grants section; plus a pending request from bob, made by 'the proxy'."""
    data = tmp_path / "data"
    (data / "run").mkdir(parents=True)
    policy = tmp_path / "policy.yaml"
    policy.write_text(json.dumps({"version": 1, "jit_grants": JIT}))
    raw = make_config(data).model_dump(mode="json")
    raw["policy"] = str(policy)
    (data / "run" / "config.json").write_text(json.dumps(raw))
    issuer = LocalIssuer.from_file(data / "keys" / "issuer.key", "dbgov-local", "dbgov")
    config = make_config(data)
    proxy = Approvals(config, ControlStore(config.data_dir / "control.db"), RecordingAudit())
    statement(proxy, BOB)
    proxy.close()

    class World:
        dir = data

        def token(self, user: str, *groups: str, ttl: int = 600) -> str:
            return issuer.issue(user, list(groups), ttl)

        def run(
            self, *args: str, user: str | None = None, groups: tuple[str, ...] = ()
        ) -> subprocess.CompletedProcess[str]:
            token = self.token(user, *groups) if user else None
            return dbgov_cmd(*args, "--data-dir", str(data), token=token)

        def events(self, type_: str) -> list[dict]:
            res = dbgov_cmd("audit", "search", "--data-dir", str(data), "--type", type_, "--json")
            assert res.returncode == 0, res.stderr
            return [json.loads(line) for line in res.stdout.splitlines()]

    return World()


def test_a_dba_approves_from_the_cli_and_the_ledger_says_so(world):
    listed = world.run("approvals", "list", user="carol", groups=("dba",))
    assert listed.returncode == 0, listed.stderr
    assert "#1" in listed.stdout and "UPDATE feature_store SET value = 0.5" in listed.stdout
    assert "bob" in listed.stdout and "0/1 of dba" in listed.stdout
    unrelated = world.run("approvals", "list", user="alice", groups=("analysts",))
    assert unrelated.stdout.strip() == "no pending requests you made or may decide"

    done = world.run(
        "approvals", "approve", "1", "--reason", "ticket OPS-12", user="carol", groups=("dba",)
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "approval #1: approved by carol"
    shown = json.loads(
        world.run("approvals", "show", "1", "--json", user="bob", groups=("ml-engineers",)).stdout
    )
    assert shown["state"] == "approved" and shown["votes"][0]["voter"] == "carol"
    vote = world.events("approval.vote")
    assert [(e["user"], e["approval"], e["verdict"], e["reason"]) for e in vote] == [
        ("carol", "1", "approve", "ticket OPS-12")
    ]
    assert world.events("approval.approved")[0]["approvers"] == ["carol"]


def test_the_cli_refuses_self_approval_and_non_approvers(world):
    own = world.run("approvals", "approve", "1", user="bob", groups=("ml-engineers", "dba"))
    assert own.returncode == 1
    assert "nobody approves their own request (separation of duties)" in own.stderr
    alice = world.run("approvals", "approve", "1", user="alice", groups=("analysts",))
    assert alice.returncode == 1 and "only members of dba may decide it" in alice.stderr
    assert world.events("approval.vote") == []


def test_deny_needs_a_reason_and_records_it(world):
    bare = world.run("approvals", "deny", "1", user="carol", groups=("dba",))
    assert bare.returncode == 2 and "--reason" in bare.stderr
    done = world.run(
        "approvals",
        "deny",
        "1",
        "--reason",
        "not during business hours",
        user="erin",
        groups=("dba",),
    )
    assert done.returncode == 0 and done.stdout.strip() == "approval #1: denied by erin"
    denied = world.events("approval.denied")
    assert denied[0]["user"] == "erin" and denied[0]["reason"] == "not during business hours"


def test_commands_need_a_valid_token(world):
    missing = world.run("approvals", "list")
    assert missing.returncode == 1 and "a dbgov token is required" in missing.stderr
    forger = LocalIssuer.from_file(world.dir.parent / "other.key", "dbgov-local", "dbgov")
    forged = dbgov_cmd(
        "approvals",
        "approve",
        "1",
        "--data-dir",
        str(world.dir),
        "--token",
        forger.issue("carol", ["dba"], 600),
    )
    assert forged.returncode == 1 and "signed by an unknown key" in forged.stderr
    expired = dbgov_cmd(
        "approvals",
        "list",
        "--data-dir",
        str(world.dir),
        token=world.token("carol", "dba", ttl=-120),
    )
    assert expired.returncode == 1 and "expired" in expired.stderr
    nowhere = dbgov_cmd(
        "approvals",
        "list",
        "--data-dir",
        str(world.dir.parent / "nope"),
        token=world.token("carol", "dba"),
    )
    assert nowhere.returncode == 1 and "no dbgov config" in nowhere.stderr


def test_access_request_approve_and_list(world):
    asked = world.run(
        "access",
        "request",
        "--target",
        "prod",
        "--group",
        "writers",
        "--for",
        "1h",
        "--reason",
        "backfill churn features",
        user="bob",
        groups=("ml-engineers",),
    )
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.startswith(
        "access request #2: group writers on prod for 1h; waiting for group dba"
    )
    too_long = world.run(
        "access",
        "request",
        "--target",
        "prod",
        "--group",
        "writers",
        "--for",
        "8h",
        "--reason",
        "x",
        user="bob",
        groups=("ml-engineers",),
    )
    assert too_long.returncode == 1 and "at most 4h" in too_long.stderr
    self_ok = world.run("approvals", "approve", "2", user="bob", groups=("ml-engineers", "dba"))
    assert self_ok.returncode == 1 and "own request" in self_ok.stderr
    done = world.run("approvals", "approve", "2", user="carol", groups=("dba",))
    assert done.returncode == 0, done.stderr
    assert "bob has group writers on prod until" in done.stdout
    mine = world.run("access", "list", user="bob", groups=("ml-engineers",))
    assert mine.stdout.startswith("grant #2     active  group writers on prod until")
    approved = world.events("grant.approved")[0]
    assert approved["grant"] == "2" and approved["requester"] == "bob"
    assert [e["type"] for e in world.events("grant.requested")] == ["grant.requested"]
