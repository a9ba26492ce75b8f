"""Approvals: requests, votes, quorum, holds, just-in-time grants, notifiers.

    svc = Approvals.open(config, audit)                # over <data_dir>/control.db
    outcome = await wait_for_approval(session, sql, analysis, decision, params)
    identity = svc.identity_with_grants(identity, target)   # per statement

`service.py` holds the rules (separation of duties, quorum, consume once),
`hold.py` what a proxy session awaits, `jit.py` the jit_grants policy section,
`webhook.py` the Slack-compatible notifier, `commands.py` the CLI.
"""

from dbgov.approvals.model import Grant, Outcome, Request, Vote
from dbgov.approvals.service import ApprovalRefused, Approvals, AuditUnavailable

__all__ = [
    "ApprovalRefused",
    "Approvals",
    "AuditUnavailable",
    "Grant",
    "Outcome",
    "Request",
    "Vote",
]
