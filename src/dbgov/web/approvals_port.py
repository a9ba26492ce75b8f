"""The dashboard's door to the approvals engine (`dbgov.approvals`).

Approve and deny MUST go through `Approvals.vote`, the method behind
`dbgov approvals approve|deny`, so the same rules hold everywhere: approver
groups from the verified token, no self-approval, quorum, deadlines. This
module only adapts the viewer to an `Identity` and records to present; it
decides nothing. Votes are written write-ahead to the ledger through the web
process's own journal, like the CLI's.

Threading: the engine's journal arms timers on the running event loop, so every
call here runs on the loop thread (they are short SQLite transactions).

When the engine is missing or cannot open its store, `available` is False and
every call raises `ApprovalsUnavailable` with the reason the pages show.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from dbgov.config import Config
from dbgov.identity.model import Identity
from dbgov.layout import Layout
from dbgov.web.types import JSON, Viewer

log = logging.getLogger(__name__)


class ApprovalsUnavailable(Exception):
    """The approvals engine is missing or failed to start; the message says why."""


class VoteRefused(Exception):
    """The engine refused the vote (not an approver, own request, already decided...)."""


@dataclass
class ApprovalsPort:
    config: Config
    service: Any = None  # dbgov.approvals.Approvals, once started
    journal: Any = None  # dbgov.ledger.journal.Journal the votes are written to
    why_unavailable: str | None = None

    @classmethod
    def create(cls, config: Config) -> ApprovalsPort:
        """A port; the engine itself starts in `start()`, on the serving loop."""
        return cls(config)

    def start(self) -> None:
        try:
            from dbgov.approvals import Approvals
            from dbgov.ledger.journal import Journal
            from dbgov.proxy.audit import Audit
        except ImportError as exc:
            self.why_unavailable = f"the approvals engine is not installed ({exc.name or exc})"
            return
        try:
            layout = Layout(self.config.data_dir)
            self.journal = Journal(
                layout.journal,
                f"{os.getpid()}-web",
                self.config.ledger.mode,
                self.config.ledger.fsync_interval_ms,
            )
            self.service = Approvals.open(self.config, Audit(self.journal))
        except Exception as exc:  # an engine that cannot start must not take the web app down
            log.warning("approvals engine unavailable: %s", exc)
            self.why_unavailable = f"the approvals engine could not start: {exc}"
            self.service = None

    def close(self) -> None:
        if self.service is not None:
            self.service.close()
            self.service = None
        if self.journal is not None:
            self.journal.close()
            self.journal = None

    @property
    def available(self) -> bool:
        return self.service is not None

    def _svc(self) -> Any:
        if self.service is None:
            raise ApprovalsUnavailable(self.why_unavailable or "approvals not available")
        return self.service

    @staticmethod
    def identity(viewer: Viewer) -> Identity:
        """The viewer as the engine sees a voter: token groups only, no JIT grants."""
        return Identity(
            viewer.user, viewer.groups, "token", viewer.issuer, expires_at=viewer.expires_at
        )

    def _present(self, req: Any, me: Identity) -> JSON:
        svc = self._svc()
        votes = svc.votes(req.id)
        return {
            "id": req.id,
            "kind": req.kind,
            "state": svc.effective_state(req),
            "requester": req.requester,
            "requester_groups": list(req.requester_groups),
            "target": req.target,
            "session": req.session,
            "mode": req.mode,
            "sql": req.sql,
            "params": list(req.params) if req.params is not None else None,
            "tables": list(req.tables),
            "rule": req.rule,
            "reason": req.reason,
            "risk": req.risk,
            "approvers": list(req.approvers),
            "quorum": req.quorum,
            "grant_group": req.grant_group,
            "grant_seconds": req.grant_seconds,
            "created_at": req.created_at,
            "expires_at": req.expires_at,
            "decided_at": req.decided_at,
            "decided_by": req.decided_by,
            "decision_reason": req.decision_reason,
            "approvals": sum(v.verdict == "approve" for v in votes),
            "votes": [
                {"voter": v.voter, "verdict": v.verdict, "reason": v.reason, "at": v.at}
                for v in votes
            ],
            "may_decide": svc.may_decide(me, req) and svc.effective_state(req) == "pending",
        }

    def queue(self, viewer: Viewer, *, pending_only: bool = True, limit: int = 100) -> list[JSON]:
        """Requests the viewer may see: auditors and dba all, others theirs and those
        they could decide."""
        svc = self._svc()
        me = self.identity(viewer)
        states = ("pending",) if pending_only else None
        out = []
        for req in svc.requests(states=states, limit=limit):
            if viewer.sees_all or svc.visible_to(me, req):
                out.append(self._present(req, me))
        return out

    def pending_count(self) -> int | None:
        if self.service is None:
            return None
        now = time.time()
        return sum(
            1
            for r in self.service.requests(states=("pending",), limit=10_000)
            if r.expires_at > now
        )

    def vote(self, viewer: Viewer, request_id: int, approve: bool, reason: str) -> JSON:
        from dbgov.approvals import ApprovalRefused, AuditUnavailable

        svc = self._svc()
        me = self.identity(viewer)
        try:
            req = svc.vote(request_id, me, approve=approve, reason=reason)
        except ApprovalRefused as exc:
            raise VoteRefused(str(exc)) from None
        except AuditUnavailable as exc:
            raise ApprovalsUnavailable(str(exc)) from None
        return self._present(req, me)
