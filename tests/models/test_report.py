"""The report over a real ledger store built from events, without a proxy (issue: models, 4).

Events are journalled and integrated by the real Sequencer (`ledger/kit.py`), so
the report reads exactly what it would read in production; each case is the
ledger trail of one situation a report must get right: approvals, JIT grants,
transactions that committed or rolled back, statements that never completed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dbgov.ledger.bundle import verify_bundle
from dbgov.ledger.receipts import verify_receipt
from dbgov.models.report import (
    ReportError,
    build_report,
    changes_between,
    render_html,
    write_evidence,
)
from dbgov.store.sqlite import LedgerStore
from ledger.kit import LedgerKit

MODEL = "churn-v2"
LINK = [{"name": MODEL, "tables": ["public.feature_store"], "statements": [0]}]


class Trail:
    """Builds ledger events the way the proxy, approvals and markers write them."""

    def __init__(self, kit: LedgerKit) -> None:
        self.kit = kit
        self.events: list[dict[str, Any]] = []
        self.n = 0

    def _ts(self) -> str:
        self.n += 1
        return f"2025-06-01T12:00:{self.n // 1000:02d}.{self.n % 1000:03d}000Z"

    def add(self, type_: str, event_id: str, **fields: Any) -> dict[str, Any]:
        ev = {
            "v": 1,
            "type": type_,
            "id": event_id,
            "ts": self._ts(),
            **{k: v for k, v in fields.items() if v is not None},
        }
        self.events.append(ev)
        return ev

    def flush(self) -> int:
        size = self.kit.append(self.events)
        self.events = []
        return size

    def session(self, sid: str, user: str, groups: list[str]) -> None:
        self.add(
            "connection.open", f"{sid}:0", session=sid, user=user, groups=groups, target="prod"
        )

    def statement(
        self,
        sid: str,
        n: int,
        user: str,
        sql: str,
        *,
        kinds: list[str] | None = None,
        verdict: str = "allow",
        models: Any = LINK,
        done: dict[str, Any] | None = None,
        **extra: Any,
    ) -> str:
        sid_n = f"{sid}:{n}"
        self.add(
            "statement",
            sid_n,
            session=sid,
            user=user,
            target="prod",
            sql=sql,
            kinds=kinds or ["update"],
            writes=["feature_store"],
            decision={"verdict": verdict, **extra.pop("decision", {})},
            models=models,
            **extra,
        )
        if done is not None:
            self.add(
                "statement.done",
                f"{sid}:{n + 1}",
                session=sid,
                user=user,
                target="prod",
                ref=sid_n,
                **done,
            )
        return sid_n

    def retrain(self, version: str, seal: int) -> None:
        self.add(
            "model.retrain",
            f"model:{MODEL}:{version}:x",
            user="bob",
            groups=["ml-engineers"],
            model=MODEL,
            version=version,
            seal=seal,
            owners=["ml-engineers"],
            targets=["prod"],
            inputs=[{"table": "public.feature_store"}],
            via="cli",
        )


def ok(rows: int, tags: list[str] | None = None) -> dict[str, Any]:
    return {"rows": [rows], "tags": tags or [f"UPDATE {rows}"], "sqlstate": "00000"}


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[tuple[LedgerKit, Trail]]:
    kit = LedgerKit(tmp_path / "data")
    trail = Trail(kit)
    trail.retrain("1", 0)
    yield kit, trail
    kit.close()


def build(kit: LedgerKit, **kw: Any) -> Any:
    store = LedgerStore(kit.db, readonly=True)
    try:
        return build_report(store, MODEL, **kw)
    finally:
        store.close()


def by_sql(changes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["statement"]["sql"]: c for c in changes}


def test_flags_approvals_grants_and_transactions(ledger: tuple[LedgerKit, Trail]) -> None:
    kit, t = ledger
    t.session("s1", "bob", ["ml-engineers"])
    t.statement("s1", 1, "bob", "plain", kinds=["insert"], done=ok(2, ["INSERT 0 2"]))
    t.session("s2", "carol", ["dba"])
    t.statement("s2", 1, "carol", "big", done=ok(1500))
    # approved: requested by bob, approved by carol
    for kind, user, fields in (
        ("requested", "bob", {"rule": "feature-edits-need-dba", "reason": "r", "risk": "high"}),
        ("vote", "carol", {"verdict": "approve", "reason": "looks right"}),
        ("approved", "carol", {"approvers": ["carol"]}),
        ("consumed", "bob", {}),
    ):
        t.add(f"approval.{kind}", f"approval:5:{kind}", approval="5", user=user, **fields)
    t.statement(
        "s1",
        3,
        "bob",
        "approved",
        decision={"rule": "feature-edits-need-dba"},
        verdict="approval",
        approval_ref="5",
        done=ok(1),
    )
    # alice through a JIT grant of ml-engineers
    t.add(
        "grant.requested",
        "grant:9:a",
        grant="9",
        user="alice",
        group="ml-engineers",
        reason="backfill",
    )
    t.add("grant.approved", "grant:9:b", grant="9", user="erin", approvers=["erin"])
    t.session("s3", "alice", ["analysts"])
    t.statement("s3", 1, "alice", "jit", decision={"grants": ["9"]}, done=ok(1))
    # transactions
    t.session("s4", "bob", ["ml-engineers"])
    t.statement("s4", 1, "bob", "rolled back later", in_txn=True, done=ok(1))
    t.statement(
        "s4",
        3,
        "bob",
        "ROLLBACK",
        kinds=["rollback"],
        models=None,
        done={"tags": ["ROLLBACK"], "sqlstate": "00000"},
    )
    t.session("s5", "bob", ["ml-engineers"])
    t.statement("s5", 1, "bob", "failed commit", in_txn=True, done=ok(1))
    t.statement(
        "s5",
        3,
        "bob",
        "COMMIT",
        kinds=["commit"],
        models=None,
        done={"tags": ["ROLLBACK"], "sqlstate": "00000"},
    )
    t.session("s6", "bob", ["ml-engineers"])
    t.statement("s6", 1, "bob", "disconnected", in_txn=True, done=ok(1))
    t.add("connection.close", "s6:9", session="s6", user="bob", reason="client")
    t.session("s7", "bob", ["ml-engineers"])
    t.statement("s7", 1, "bob", "still open", in_txn=True, done=ok(1))
    t.session("s8", "bob", ["ml-engineers"])
    t.statement(
        "s8",
        1,
        "bob",
        "one query",
        kinds=["begin", "update", "commit"],
        models=[{"name": MODEL, "tables": ["public.feature_store"], "statements": [1]}],
        done={
            "rows": [None, 3, None],
            "tags": ["BEGIN", "UPDATE 3", "COMMIT"],
            "sqlstate": "00000",
        },
    )
    t.session("s9", "bob", ["ml-engineers"])
    t.statement(
        "s9",
        1,
        "bob",
        "denied",
        verdict="deny",
        decision={"rule": "not-granted"},
        done={"sqlstate": "42501"},
    )
    t.statement("s9", 3, "bob", "duplicate key", done={"sqlstate": "23505", "rows": [None]})
    t.statement("s9", 5, "bob", "never finished")
    t.statement(
        "s9",
        7,
        "bob",
        "other model",
        models=[{"name": "support-llm", "tables": ["public.prompts"], "statements": [0]}],
        done=ok(1),
    )
    seal = t.flush()
    t.retrain("2", seal)
    t.flush()

    report = build(kit)
    assert (report.frm.version, report.to.version, report.window) == ("1", "2", (0, seal))
    changes = by_sql(report.changes)
    assert list(changes) == [
        "plain",
        "big",
        "approved",
        "jit",
        "still open",
        "one query",
        "never finished",
    ]
    assert {k: c["flags"] for k, c in changes.items()} == {
        "plain": ["no_approval"],
        "big": ["no_approval", "outside_owners", "large_rows"],
        "approved": [],
        "jit": ["no_approval", "outside_owners", "jit_grant"],
        "still open": ["no_approval", "uncommitted"],
        "one query": ["no_approval"],
        "never finished": ["no_approval", "outcome_unknown"],
    }
    assert [changes[k]["rows"] for k in changes] == [2, 1500, 1, 1, 1, 3, None]
    assert changes["one query"]["transaction"] == "committed"
    approval = changes["approved"]["approval"]
    assert (
        approval["id"],
        approval["state"],
        approval["requested_by"],
        approval["approvers"],
        approval["rule"],
    ) == ("5", "consumed", "bob", ["carol"], "feature-edits-need-dba")
    assert [(v["user"], v["verdict"], v["reason"]) for v in approval["votes"]] == [
        ("carol", "approve", "looks right")
    ]
    grant = changes["jit"]["grants"][0]
    assert (grant["id"], grant["group"], grant["approvers"]) == ("9", "ml-engineers", ["erin"])
    assert changes["jit"]["groups"] == ["analysts"]
    others = {c["statement"]["sql"]: c["outcome"] for c in report.not_applied}
    assert others == {
        "rolled back later": "rolled_back",
        "failed commit": "rolled_back",
        "disconnected": "rolled_back",
        "denied": "refused",
        "duplicate key": "failed",
    }
    doc = report.as_json()
    assert doc["summary"]["flags"] == {
        "no_approval": 6,
        "outside_owners": 2,
        "large_rows": 1,
        "jit_grant": 1,
        "outcome_unknown": 1,
        "uncommitted": 1,
    }
    # every approval, grant and session event the answer rests on is evidence
    assert set(approval["evidence"]) <= set(report.evidence)
    assert set(grant["evidence"]) <= set(report.evidence)
    html = render_html(doc)
    assert "jit_grant" in html and "approved by carol" in html and "rolled_back" in html

    lower = build(kit, large_rows=2)
    assert "large_rows" in by_sql(lower.changes)["plain"]["flags"]


def test_windows_between_retrains(ledger: tuple[LedgerKit, Trail]) -> None:
    kit, t = ledger
    t.session("s1", "bob", ["ml-engineers"])
    t.statement("s1", 1, "bob", "before 2", done=ok(1))
    seal2 = t.flush()
    t.retrain("2", seal2)
    t.statement("s1", 3, "bob", "before 3", done=ok(1))
    seal3 = t.flush()
    t.retrain("3", seal3)
    t.statement("s1", 5, "bob", "after 3", done=ok(1))
    t.flush()

    assert [c["statement"]["sql"] for c in build(kit).changes] == ["before 3"]
    assert [c["statement"]["sql"] for c in build(kit, to_version="2").changes] == ["before 2"]
    wide = build(kit, from_version="1", to_version="3")
    assert [c["statement"]["sql"] for c in wide.changes] == ["before 2", "before 3"]
    with pytest.raises(ReportError, match="version 9 is not marked; marked: 1, 2, 3"):
        build(kit, to_version="9")
    with pytest.raises(ReportError, match="give --from the earlier version"):
        build(kit, from_version="3", to_version="2")
    store = LedgerStore(kit.db, readonly=True)
    try:
        with pytest.raises(ReportError, match="no retrain of other is marked"):
            build_report(store, "other")
        # the dashboard's scope: one identity's changes, newest first
        mine = changes_between(
            store, MODEL, 0, None, owners=["ml-engineers"], user="bob", newest_first=True, limit=2
        )
        assert [c["statement"]["sql"] for c in mine] == ["after 3", "before 3"]
        assert changes_between(store, MODEL, 0, None, owners=[], user="carol") == []
    finally:
        store.close()


def test_a_single_retrain_reports_from_the_start(tmp_path: Path) -> None:
    kit = LedgerKit(tmp_path / "data")
    try:
        t = Trail(kit)
        t.session("s1", "bob", ["ml-engineers"])
        t.statement("s1", 1, "bob", "first", done=ok(1))
        seal = t.flush()
        t.retrain("1", seal)
        t.flush()
        report = build(kit)
        assert report.frm is None and report.window == (0, seal)
        assert [c["statement"]["sql"] for c in report.changes] == ["first"]
    finally:
        kit.close()


def test_evidence_verifies_offline_and_fails_after_tampering(
    ledger: tuple[LedgerKit, Trail], tmp_path: Path
) -> None:
    kit, t = ledger
    t.session("s1", "bob", ["ml-engineers"])
    t.statement("s1", 1, "bob", "change", done=ok(1))
    seal = t.flush()
    t.retrain("2", seal)
    t.flush()
    report = build(kit)
    store = LedgerStore(kit.db, readonly=True)
    try:
        from dbgov.ledger.receipts import NotCoveredError

        with pytest.raises(NotCoveredError):  # nothing signed yet
            write_evidence(store, report, tmp_path / "early")
        kit.checkpoint()
        out = tmp_path / "evidence"
        info = write_evidence(store, report, out, key=str(kit.signer.verifier))
    finally:
        store.close()
    assert info["first"] == 0 and info["end"] >= report.evidence[-1] + 1
    verifier = kit.signer.verifier
    assert verify_bundle(out, verifier).ok
    receipts = sorted(out.glob("receipts/*.json"))
    assert [int(p.stem) for p in sorted(receipts, key=lambda p: int(p.stem))] == report.evidence
    for path in receipts:
        assert verify_receipt(json.loads(path.read_text()), verifier).ok
    assert json.loads((out / "report.json").read_text())["evidence"] == report.evidence

    lines = (out / "events.jsonl").read_bytes().splitlines(keepends=True)
    target = next(i for i, line in enumerate(lines) if b'"sql":"change"' in line)
    lines[target] = lines[target].replace(b'"sql":"change"', b'"sql":"chang3"')
    (out / "events.jsonl").write_bytes(b"".join(lines))
    tampered = verify_bundle(out, verifier)
    assert not tampered.ok and int(tampered.exit_code) == 10
