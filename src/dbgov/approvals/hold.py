"""Holding a statement for approval: the one call the proxy session awaits.

    outcome = await wait_for_approval(session, sql, analysis, decision, params)

Theory of operation
-------------------
A statement whose decision is APPROVAL first looks for an approval it may use:
an approved, unused request for exactly this statement (same fingerprint,
parameters hash, identity, target and rule) is consumed and the statement runs.
That is how refuse mode works (ask, get approved, run it again), and how a hold
whose session died (a proxy restart) can still be used once approved.

Otherwise a request is opened (or, if one for the same statement is still
pending, joined) and then:

- refuse mode: the statement fails at once with the request id;
- hold mode: the session waits, sending NOTICEs, until the request is approved
  (consume it, run), denied or timed out (ERROR 42501 saying so).

A client cancel (Ctrl-C) or disconnect cancels the waiting task: the request is
withdrawn. A proxy shutdown also cancels it, but then the request stays pending:
it can still be decided, and once approved the user runs the statement again.

The parameters hash covers what the fingerprint leaves out: the exact statement
text (the fingerprint ignores literal values), the bind parameters byte for byte
with their formats, and the search_path that resolves unqualified names. Any
change needs a new approval.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from dbgov.approvals.model import APPROVED, PENDING, Outcome, Request, Vote, format_duration
from dbgov.approvals.service import (
    ApprovalRefused,
    Approvals,
    AuditUnavailable,
    describe_wait,
    ended_message,
)
from dbgov.gate import ApprovalSpec, Decision
from dbgov.identity import Identity
from dbgov.ledger.canonical import canonical_json
from dbgov.sql.model import Analysis

log = logging.getLogger(__name__)

# Session.close_reason when the worker drains (proxy/worker.py): keep the request.
SHUTDOWN_REASON = "proxy shutdown"


class HeldSession(Protocol):
    """What `wait_for_approval` uses of a proxy session."""

    id: str
    identity: Identity | None
    target: Any  # config.Target: .name
    ctx: Any  # ProxyContext: .approvals
    closed: bool
    close_reason: str
    search_path: tuple[str, ...]

    def notice(self, message: str, hint: str | None = None) -> None: ...


def params_hash(
    sql: str, params: Sequence[str | None] | None, search_path: Sequence[str], portal: Any = None
) -> str:
    """SHA-256 over the exact text, the bind values (raw bytes and formats when the
    portal is given, else their audit text) and the search_path."""
    values: Any = list(params) if params is not None else None
    if portal is not None and getattr(portal, "params", None):
        fmts = tuple(getattr(portal, "param_formats", ()))
        values = [
            [
                fmts[0] if len(fmts) == 1 else (fmts[i] if fmts else 0),
                None if v is None else bytes(v).hex(),
            ]
            for i, v in enumerate(portal.params)
        ]
    doc = {"sql": sql, "params": values, "search_path": list(search_path)}
    return hashlib.sha256(canonical_json(doc)).hexdigest()


def _tables(analysis: Analysis) -> list[str]:
    return sorted({str(r) for s in analysis.statements for r in (*s.reads, *s.writes)})


def _approved_by(votes: Sequence[Vote]) -> str:
    return ", ".join(v.voter for v in votes if v.verdict == "approve") or "?"


async def wait_for_approval(
    session: HeldSession,
    sql: str,
    analysis: Analysis,
    decision: Decision,
    params: list[str | None] | None,
    *,
    portal: Any = None,
) -> Outcome:
    """Resolve a statement that needs approval. Never raises but CancelledError: a
    failure of the approvals machinery refuses the statement (fail closed)."""
    try:
        return await _resolve(session, sql, analysis, decision, params, portal)
    except asyncio.CancelledError:
        raise
    except AuditUnavailable as exc:
        return Outcome(
            False,
            None,
            f"dbgov: {exc}; the statement did not run",
            "retry when the ledger's disk is healthy",
            sqlstate="58000",
        )
    except ApprovalRefused as exc:
        return Outcome(False, None, f"dbgov: {exc}")
    except Exception:
        log.exception("session %s: approval handling failed", session.id)
        return Outcome(
            False,
            None,
            "dbgov: the approval could not be processed; the statement did not run",
            sqlstate="58000",
        )


async def _resolve(
    session: HeldSession,
    sql: str,
    analysis: Analysis,
    decision: Decision,
    params: list[str | None] | None,
    portal: Any,
) -> Outcome:
    svc: Approvals = session.ctx.approvals
    identity, target = session.identity, session.target
    assert identity is not None and target is not None
    spec = decision.approval or ApprovalSpec(())
    fingerprint = analysis.fingerprint or hashlib.sha256(sql.encode()).hexdigest()[:16]
    phash = params_hash(sql, params, session.search_path, portal)
    key = (identity, target.name, fingerprint, phash, decision.rule)

    used = svc.consume_match(*key, session.id)
    if used is not None:
        session.notice(
            f"dbgov: running with approval #{used.id} "
            f"(approved by {_approved_by(svc.votes(used.id))})"
        )
        return Outcome(True, used.id)

    pending = svc.find(PENDING, *key)
    if pending and pending[0].expires_at <= svc.clock():
        svc.time_out(pending[0].id)
        pending = []
    if pending:
        req = pending[0]
    else:
        from dbgov.proxy.redact import redact_sql

        req = svc.request_statement(
            identity,
            target.name,
            sql=redact_sql(sql, analysis),
            fingerprint=fingerprint,
            params_hash=phash,
            params=params,
            tables=_tables(analysis),
            rule=decision.rule,
            reason=decision.reason,
            approvers=spec.approvers,
            quorum=spec.quorum,
            mode=spec.mode,
            timeout_s=spec.timeout_s or svc.settings.default_timeout_s,
            risk=spec.risk,
            session=session.id,
        )

    if spec.mode == "refuse":
        validity = format_duration(svc.settings.validity_s)
        hint = (
            f"approvers: {describe_wait(req)}; an approval is valid for {validity}, for "
            "this exact statement, once"
        )
        if pending:
            return Outcome(
                False,
                req.id,
                f"dbgov: approval #{req.id} is still pending; ask an "
                "approver, then run the statement again",
                hint,
            )
        return Outcome(
            False,
            req.id,
            f"dbgov: approval #{req.id} required; ask an approver, then run the statement again",
            hint,
        )

    left = format_duration(req.expires_at - svc.clock())
    if pending:
        session.notice(
            f"dbgov: waiting for approval #{req.id} (requested earlier) from "
            f"{describe_wait(req)}; up to {left} left"
        )
    else:
        session.notice(
            f"dbgov: approval #{req.id} requested from {describe_wait(req)}; waiting up to {left}",
            hint=f'an approver runs "dbgov approvals approve {req.id}"; cancel (Ctrl-C) to '
            "withdraw the request",
        )

    def progress(current: Request, votes: list[Vote]) -> None:
        ayes = [v.voter for v in votes if v.verdict == "approve"]
        session.notice(
            f"dbgov: approval #{current.id}: approved by {', '.join(ayes)} "
            f"({len(ayes)} of {current.quorum})"
        )

    try:
        final = await svc.wait(req.id, on_vote=progress)
    except asyncio.CancelledError:
        if session.closed and session.close_reason == SHUTDOWN_REASON:
            log.info("session %s: proxy shutting down; approval #%d stays open", session.id, req.id)
        else:
            why = "the client disconnected" if session.closed else "cancelled by the client"
            try:
                svc.withdraw(req.id, identity.user, why)
            except Exception:
                log.exception("session %s: cannot withdraw approval #%d", session.id, req.id)
        raise

    if final.state == APPROVED:
        if svc.consume(final, session.id):
            session.notice(
                f"dbgov: approval #{final.id} approved by "
                f"{_approved_by(svc.votes(final.id))}; running the statement"
            )
            return Outcome(True, final.id)
        final = svc.get(final.id) or final
    return Outcome(False, final.id, ended_message(final, svc.votes(final.id)))
