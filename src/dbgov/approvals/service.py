"""The approvals service: requests, votes, quorum, expiry, consumption, JIT grants.

Every process that touches approvals builds one `Approvals` over the shared
control store: proxy workers (holds, refuse-mode re-runs, grant look-ups, the
background `run()` loop), the CLI and the web app (votes). The store is the only
shared state, so a vote cast from the CLI reaches a session waiting in a worker
through `wait()`'s polling, and everything survives a proxy restart.

Contracts
---------
Separation of duties: a vote MUST be refused when the voter is the requester,
whatever the voter's groups (dba included), and MUST be refused unless the
voter's *verified token* groups include one of the request's approver groups.
Groups added by just-in-time grants MUST NOT count towards approving (nobody
grants themselves the right to approve). A quorum counts distinct people: one
vote per voter per request. A deny vote decides at once.

Consume once: an approved statement request authorizes exactly one execution:
the same fingerprint, parameters hash (exact text, bind values and search_path),
identity (user and issuer), target and rule, before `valid_until`. `consume()`
MUST return True to at most one caller across all processes (a conditional
update in the store), and a statement MUST NOT run on an approval unless its
caller got True.

Audit: each change is written to the ledger before it is committed to the store
(write-ahead): if the event cannot be written the change is rolled back and the
caller gets `AuditUnavailable`. Events of one request share its id in an
`approval` (statements) or `grant` (access requests) field; `user` is the actor.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from dbgov.approvals import webhook
from dbgov.approvals.jit import AccessRefused, JitPolicy
from dbgov.approvals.model import (
    APPROVED,
    CONSUMED,
    DENIED,
    EXPIRED,
    GRANT,
    PENDING,
    STATEMENT,
    TIMED_OUT,
    WITHDRAWN,
    Grant,
    Request,
    Vote,
    event_prefix,
    format_duration,
)
from dbgov.identity import Identity
from dbgov.ledger import events
from dbgov.store.control import ControlPort, DuplicateVote, GrantRecord, NewRequest, VoteRecord

if TYPE_CHECKING:
    from dbgov.config import Config

log = logging.getLogger(__name__)

POLL_S = 0.2  # how often a waiting session looks at the store
GRANT_CACHE_S = 1.0  # how long a worker reuses one (user, target)'s active grants
SWEEP_S = 1.0  # the background loop's period


class AuditSink(Protocol):
    """Where events go: `proxy.audit.Audit` in workers and in the CLI (over its own
    journal). Returns the error when the event could not be written."""

    def write_ahead(self, type_: str, event_id: str, **fields: Any) -> OSError | None: ...


class ApprovalRefused(Exception):
    """An action the rules do not allow; the message is for the person who tried."""


class AuditUnavailable(Exception):
    """The ledger could not be written, so nothing was changed."""


def iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def token_groups(identity: Identity) -> frozenset[str]:
    """The groups an identity holds by its credentials, without just-in-time grants."""
    return identity.groups - {g for g, _ in identity.grants}


class Approvals:
    def __init__(
        self,
        config: Config,
        store: ControlPort,
        audit: AuditSink,
        *,
        jit: JitPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = config.approvals
        self.store = store
        self.audit = audit
        self.jit = jit or JitPolicy()
        self.clock = clock
        self._grant_cache: dict[tuple[str, str], tuple[float, list[tuple[str, str, float]]]] = {}
        self.generation = 0  # bumped whenever cached grants are dropped (see grants_view)
        self._sender: threading.Thread | None = None

    @classmethod
    def open(cls, config: Config, audit: AuditSink, *, jit: JitPolicy | None = None) -> Approvals:
        """The service over the deployment's SQLite control store."""
        from dbgov.layout import Layout
        from dbgov.store.control import ControlStore

        return cls(config, ControlStore(Layout(config.data_dir).control_db), audit, jit=jit)

    def close(self) -> None:
        self.store.close()

    # -- ledger and webhook ------------------------------------------------------------

    def _emit(self, suffix: str, request: Request, actor: str, **fields: Any) -> None:
        """Write one event write-ahead; raise AuditUnavailable (rolling back) if it fails."""
        prefix = event_prefix(request)
        err = self.audit.write_ahead(
            f"{prefix}.{suffix}",
            f"{prefix}:{request.id}:{secrets.token_hex(4)}",
            **{prefix: str(request.id)},
            user=actor,
            requester=request.requester,
            target=request.target,
            **fields,
        )
        if err is not None:
            raise AuditUnavailable(f"the audit ledger cannot be written ({err.strerror or err})")

    def _notify(
        self, request: Request, event: str, *, actor: str | None = None, reason: str | None = None
    ) -> None:
        if not self.settings.webhook_url:
            return
        payload = webhook.build_payload(
            event, request, self.store.votes(request.id), actor=actor, reason=reason
        )
        self.store.enqueue(request.id, event, payload, at=self.clock())

    def _reload(self, request_id: int) -> Request:
        req = self.store.get_request(request_id)
        if req is None:  # pragma: no cover - requests are never deleted
            raise ApprovalRefused(f"approval #{request_id} does not exist")
        return req

    # -- reading -------------------------------------------------------------------------

    def get(self, request_id: int) -> Request | None:
        return self.store.get_request(request_id)

    def votes(self, request_id: int) -> list[Vote]:
        return self.store.votes(request_id)

    def requests(
        self,
        *,
        states: Sequence[str] | None = (PENDING,),
        kind: str | None = None,
        limit: int = 100,
    ) -> list[Request]:
        return self.store.list_requests(states=states, kind=kind, limit=limit)

    def grant(self, grant_id: int) -> Grant | None:
        return self.store.get_grant(grant_id)

    def grants(
        self, *, user: str | None = None, active: bool = False, limit: int = 100
    ) -> list[Grant]:
        return self.store.list_grants(
            user=user, active_at=self.clock() if active else None, limit=limit
        )

    @staticmethod
    def may_decide(identity: Identity, request: Request) -> bool:
        """Whether `identity` could vote on `request` (ignoring its state)."""
        return identity.user != request.requester and bool(
            token_groups(identity) & set(request.approvers)
        )

    @classmethod
    def visible_to(cls, identity: Identity, request: Request) -> bool:
        """Requests are shown to their requester and to the people who may decide them."""
        return identity.user == request.requester or cls.may_decide(identity, request)

    def effective_state(self, request: Request) -> str:
        """The state as of now, even before the background loop records a deadline."""
        now = self.clock()
        if request.state == PENDING and request.expires_at <= now:
            return TIMED_OUT
        if (
            request.state == APPROVED
            and request.valid_until is not None
            and request.valid_until <= now
        ):
            return EXPIRED
        return request.state

    # -- requesting ------------------------------------------------------------------------

    def request_statement(
        self,
        identity: Identity,
        target: str,
        *,
        sql: str,
        fingerprint: str,
        params_hash: str,
        params: Sequence[str | None] | None,
        tables: Sequence[str],
        rule: str | None,
        reason: str,
        approvers: Sequence[str],
        quorum: int,
        mode: str,
        timeout_s: float,
        risk: str,
        session: str | None = None,
    ) -> Request:
        """Open a request for one statement. `sql` must already be redacted for the audit."""
        if not approvers:
            raise ApprovalRefused("the rule names no approver group; nobody could approve")
        now = self.clock()
        new = NewRequest(
            kind=STATEMENT,
            requester=identity.user,
            requester_issuer=identity.issuer,
            requester_groups=tuple(sorted(token_groups(identity))),
            target=target,
            mode=mode,
            reason=reason,
            risk=risk,
            approvers=tuple(approvers),
            quorum=max(1, quorum),
            created_at=now,
            expires_at=now + timeout_s,
            session=session,
            sql=sql,
            fingerprint=fingerprint,
            params_hash=params_hash,
            params=None if params is None else tuple(params),
            tables=tuple(tables),
            rule=rule,
        )
        return self._open(
            new,
            identity,
            session=session,
            kind=STATEMENT,
            mode=mode,
            sql=events.clip(sql),
            params=list(params) if params is not None else None,
            fingerprint=fingerprint or None,
            params_hash=params_hash,
            tables=list(tables) or None,
            rule=rule,
            risk=risk,
        )

    def request_grant(
        self, identity: Identity, target: str, group: str, duration_s: int, reason: str
    ) -> Request:
        """Ask for `group` on `target` for `duration_s`, as a jit_grants entry allows."""
        if not reason.strip():
            raise ApprovalRefused("say why you need access (--reason)")
        try:
            rule = self.jit.rule_for(identity, group, target, duration_s)
        except AccessRefused as exc:
            raise ApprovalRefused(str(exc)) from None
        now = self.clock()
        new = NewRequest(
            kind=GRANT,
            requester=identity.user,
            requester_issuer=identity.issuer,
            requester_groups=tuple(sorted(token_groups(identity))),
            target=target,
            mode="grant",
            reason=reason,
            risk="high",
            approvers=rule.approvers,
            quorum=rule.quorum,
            created_at=now,
            expires_at=now + self.settings.default_timeout_s,
            rule=f"jit:{group}",
            grant_group=group,
            grant_seconds=duration_s,
        )
        return self._open(new, identity, kind=GRANT, group=group, duration_s=duration_s)

    def _open(self, new: NewRequest, identity: Identity, **fields: Any) -> Request:
        """Store a new request, record `*.requested` on the ledger and notify, atomically
        with respect to the store (the event is written before the commit)."""
        with self.store.transaction():
            req = self.store.create_request(new)
            self._emit(
                "requested",
                req,
                identity.user,
                groups=sorted(identity.groups),
                reason=new.reason,
                approvers=list(new.approvers),
                quorum=req.quorum,
                expires_at=iso(req.expires_at),
                **fields,
            )
            self._notify(req, "requested", actor=identity.user)
        return req

    # -- deciding -----------------------------------------------------------------------------

    def vote(
        self, request_id: int, voter: Identity, *, approve: bool, reason: str | None = None
    ) -> Request:
        """Record `voter`'s vote and apply it; returns the request as it now stands.

        Raises ApprovalRefused when the rules (module docstring) forbid the vote.
        """
        reason = (reason or "").strip() or None
        if not approve and reason is None:
            raise ApprovalRefused("a denial needs a reason (--reason)")
        now = self.clock()
        refusal: str | None = None
        with self.store.transaction():
            req = self.store.get_request(request_id)
            if req is None:
                raise ApprovalRefused(f"approval #{request_id} does not exist")
            label = f"{'access request' if req.kind == GRANT else 'approval'} #{req.id}"
            if req.state == PENDING and req.expires_at <= now:
                self._time_out(req, now)
                refusal = f"{label} timed out undecided; it can no longer be decided"
            elif req.state != PENDING:
                refusal = f"{label} is already {req.state.replace('_', ' ')}"
            elif voter.user == req.requester:
                # Separation of duties: MUST hold for every group, admins included.
                refusal = (
                    f"{voter.user} cannot vote on {label}: nobody approves their own "
                    "request (separation of duties)"
                )
            elif not token_groups(voter) & set(req.approvers):
                refusal = (
                    f"{voter.user} cannot vote on {label}: only members of "
                    f"{', '.join(req.approvers)} may decide it"
                )
            else:
                try:
                    self.store.add_vote(
                        VoteRecord(
                            req.id,
                            voter.user,
                            voter.issuer,
                            tuple(sorted(token_groups(voter))),
                            "approve" if approve else "deny",
                            reason,
                            now,
                        )
                    )
                except DuplicateVote:
                    refusal = f"{voter.user} has already voted on {label}"
                else:
                    self._apply_vote(req, voter, approve, reason, now)
        if refusal is not None:
            raise ApprovalRefused(refusal)
        return self._reload(request_id)

    def _apply_vote(
        self, req: Request, voter: Identity, approve: bool, reason: str | None, now: float
    ) -> None:
        approvals = [v.voter for v in self.store.votes(req.id) if v.verdict == "approve"]
        self._emit(
            "vote",
            req,
            voter.user,
            groups=sorted(token_groups(voter)),
            verdict="approve" if approve else "deny",
            reason=reason,
            approvals=len(approvals),
            quorum=req.quorum,
        )
        if not approve:
            self.store.transition(req.id, (PENDING,), DENIED, at=now, by=voter.user, reason=reason)
            self._emit("denied", req, voter.user, reason=reason, session=req.session)
            self._notify(self._reload(req.id), "denied", actor=voter.user, reason=reason)
            return
        if len(approvals) < req.quorum:
            return
        if req.kind == GRANT:
            assert req.grant_group is not None and req.grant_seconds is not None
            ends = now + req.grant_seconds
            self.store.transition(
                req.id, (PENDING,), APPROVED, at=now, by=voter.user, reason=reason
            )
            self.store.create_grant(
                GrantRecord(req.id, req.requester, req.grant_group, req.target, now, ends, "active")
            )
            self._emit(
                "approved",
                req,
                voter.user,
                approvers=approvals,
                group=req.grant_group,
                starts_at=iso(now),
                ends_at=iso(ends),
            )
        else:
            valid = now + self.settings.validity_s
            self.store.transition(
                req.id,
                (PENDING,),
                APPROVED,
                at=now,
                by=voter.user,
                reason=reason,
                valid_until=valid,
            )
            self._emit(
                "approved",
                req,
                voter.user,
                approvers=approvals,
                session=req.session,
                valid_until=iso(valid),
            )
        self._notify(self._reload(req.id), "approved", actor=voter.user)

    def withdraw(self, request_id: int, actor: str, reason: str) -> bool:
        """pending -> withdrawn (the requester cancelled). False if already decided."""
        now = self.clock()
        with self.store.transaction():
            req = self.store.get_request(request_id)
            if req is None or req.state != PENDING or actor != req.requester:
                return False
            self.store.transition(req.id, (PENDING,), WITHDRAWN, at=now, by=actor, reason=reason)
            self._emit("withdrawn", req, actor, reason=reason, session=req.session)
            self._notify(self._reload(req.id), "withdrawn", actor=actor, reason=reason)
        return True

    def _time_out(self, req: Request, now: float) -> bool:
        if not self.store.transition(req.id, (PENDING,), TIMED_OUT, at=now):
            return False
        self._emit(
            "timed_out",
            req,
            "dbgov",
            session=req.session,
            after_s=round(req.expires_at - req.created_at),
        )
        self._notify(self._reload(req.id), "timed_out")
        return True

    def time_out(self, request_id: int) -> Request:
        """Record that a pending request passed its deadline (no-op otherwise)."""
        now = self.clock()
        with self.store.transaction():
            req = self.store.get_request(request_id)
            if req is not None and req.state == PENDING and req.expires_at <= now:
                self._time_out(req, now)
        return self._reload(request_id)

    # -- using approvals ----------------------------------------------------------------------

    def find(
        self,
        state: str,
        identity: Identity,
        target: str,
        fingerprint: str,
        params_hash: str,
        rule: str | None,
    ) -> list[Request]:
        """Statement requests in `state` for exactly this statement, identity and target."""
        return self.store.find_requests(
            state=state,
            requester=identity.user,
            requester_issuer=identity.issuer,
            target=target,
            fingerprint=fingerprint,
            params_hash=params_hash,
            rule=rule,
        )

    def consume(self, request: Request, session: str | None) -> bool:
        """Use an approved statement request once. True for exactly one caller, ever;
        the statement MUST NOT run on this approval when it returns False."""
        now = self.clock()
        with self.store.transaction():
            if not self.store.consume(request.id, at=now, session=session):
                return False
            self._emit(
                "consumed",
                request,
                request.requester,
                session=session,
                fingerprint=request.fingerprint,
                params_hash=request.params_hash,
            )
        return True

    def consume_match(
        self,
        identity: Identity,
        target: str,
        fingerprint: str,
        params_hash: str,
        rule: str | None,
        session: str | None,
    ) -> Request | None:
        """Consume an approved, unused, still valid request for exactly this statement."""
        for req in self.find(APPROVED, identity, target, fingerprint, params_hash, rule):
            if self.consume(req, session):
                return req
        return None

    async def wait(
        self,
        request_id: int,
        max_wait_s: float | None = None,
        *,
        poll_s: float = POLL_S,
        on_vote: Callable[[Request, list[Vote]], None] | None = None,
    ) -> Request:
        """Wait until the request is decided or its deadline passes (then time it out).

        With `max_wait_s`, give up earlier and return the request still pending. Polls
        the store: votes come from other processes (CLI, web app)."""
        req = self._reload(request_id)
        deadline = (
            req.expires_at if max_wait_s is None else min(req.expires_at, self.clock() + max_wait_s)
        )
        seen = -1
        while True:
            req = self._reload(request_id)
            if req.state != PENDING:
                return req
            if on_vote is not None:
                votes = self.store.votes(request_id)
                if len(votes) != seen:
                    if seen >= 0:
                        on_vote(req, votes)
                    seen = len(votes)
            now = self.clock()
            if now >= req.expires_at:
                return self.time_out(request_id)
            if now >= deadline:
                return req
            await asyncio.sleep(min(poll_s, deadline - now))

    # -- just-in-time grants -------------------------------------------------------------------

    def active_grants(self, user: str, target: str) -> list[tuple[str, str, float]]:
        """(group, grant id, ends_at) of the grants `user` holds on `target` right now."""
        return [
            (g.group, str(g.id), g.ends_at)
            for g in self.store.active_grants(user, target, at=self.clock())
        ]

    def identity_with_grants(self, identity: Identity, target: str) -> Identity:
        """`identity` plus the groups its active grants add on `target`.

        Call it for every statement with the session's *base* identity: look-ups are
        cached for GRANT_CACHE_S, but a grant past its end is dropped at every call, so
        a window that closes applies from the next statement on, in open sessions too.
        A store failure yields the base identity: fewer rights, never more.
        """
        return self.grants_view(identity, target)[0]

    def grants_view(self, identity: Identity, target: str) -> tuple[Identity, float]:
        """`identity_with_grants`, and the clock time until which that answer stands:
        the cache entry's end or the next grant's end, whichever comes first. A caller
        may reuse the answer until then while `generation` is unchanged (the proxy
        does, per session, so a statement costs no look-up)."""
        key = (identity.user, target)
        now = self.clock()
        cached = self._grant_cache.get(key)
        # (A clock stepped backwards also refreshes: never trust a cache from the future.)
        if cached is None or not 0 <= now - cached[0] <= GRANT_CACHE_S:
            try:
                grants = self.active_grants(identity.user, target)
            except Exception:
                log.exception("grant look-up failed; using %s's own groups", identity.user)
                grants = []
            if len(self._grant_cache) > 10_000:
                self._grant_cache.clear()
            self._grant_cache[key] = (now, grants)
            until = now + GRANT_CACHE_S
        else:
            grants = cached[1]
            until = cached[0] + GRANT_CACHE_S
        out = identity
        for group, grant_id, ends_at in grants:
            if ends_at > now:
                until = min(until, ends_at)
                if group not in out.groups:
                    out = out.with_grant(group, grant_id)
        return out, until

    # -- background work (proxy workers) -------------------------------------------------------

    def sweep(self) -> int:
        """Record deadlines that passed: undecided requests time out, unused approvals
        expire, grant windows end. Safe to run in every worker at once: each change
        is recorded by whichever process makes it. Returns how many changed."""
        now = self.clock()
        late, lapsed = self.store.due(at=now)
        changed = 0
        for req in late:
            with self.store.transaction():
                changed += self._time_out(req, now)
        for req in lapsed:
            with self.store.transaction():
                if self.store.transition(req.id, (APPROVED,), EXPIRED, at=now):
                    self._emit(
                        "expired",
                        req,
                        "dbgov",
                        session=req.session,
                        valid_until=iso(req.valid_until or now),
                    )
                    changed += 1
        for grant in self.store.ended_grants(at=now):
            with self.store.transaction():
                if self.store.end_grant(grant.id):
                    req = self._reload(grant.id)
                    self.store.transition(req.id, (APPROVED,), EXPIRED, at=now)
                    self._emit(
                        "expired", req, "dbgov", group=grant.group, ends_at=iso(grant.ends_at)
                    )
                    changed += 1
        if changed:
            self._grant_cache.clear()
            self.generation += 1
        return changed

    def deliver(self) -> bool:
        """Start sending queued webhook notifications in a daemon thread, unless a
        send is under way. Returns whether a thread was started."""
        url = self.settings.webhook_url
        if not url or (self._sender is not None and self._sender.is_alive()):
            return False
        timeout = self.settings.webhook_timeout_s
        retries = self.settings.webhook_retries
        # A claim older than the longest possible send belongs to a sender that died.
        longest = timeout * (retries + 1) + webhook.MAX_BACKOFF_S * retries + 30
        now = self.clock()
        batch = self.store.claim_notifications(at=now, stale_before=now - longest)
        if not batch:
            return False

        def send() -> None:
            for n in batch:
                result = webhook.post(url, n.payload, timeout_s=timeout, retries=retries)
                if not result.ok:
                    log.warning(
                        "webhook for request #%d (%s) failed after %d attempt(s): %s",
                        n.request_id,
                        n.event,
                        result.attempts,
                        result.error,
                    )
                try:
                    self.store.finish_notification(
                        n.id, sent=result.ok, attempts=result.attempts, error=result.error
                    )
                except Exception:
                    log.exception("cannot record webhook delivery")

        self._sender = threading.Thread(target=send, name="dbgov-webhook", daemon=True)
        self._sender.start()
        return True

    async def run(self, interval_s: float = SWEEP_S) -> None:
        """The worker's background loop: sweep deadlines, send webhooks. Never raises
        (but stops when cancelled)."""
        while True:
            try:
                self.sweep()
            except Exception:
                log.exception("approvals sweep failed")
            try:
                self.deliver()
            except Exception:
                log.exception("webhook delivery failed")
            await asyncio.sleep(interval_s)


def describe_wait(request: Request) -> str:
    """ "group dba" / "groups dba, security (2 approvals)": who a request waits for."""
    groups = ", ".join(request.approvers)
    noun = "group" if len(request.approvers) == 1 else "groups"
    need = f" ({request.quorum} approvals)" if request.quorum > 1 else ""
    return f"{noun} {groups}{need}"


def ended_message(request: Request, votes: Sequence[Vote] = ()) -> str:
    """The sentence for a request that ended without an approval to use."""
    label = f"approval #{request.id}"
    if request.state == DENIED:
        who = request.decided_by or next((v.voter for v in votes if v.verdict == "deny"), "?")
        why = f': "{request.decision_reason}"' if request.decision_reason else ""
        return f"dbgov: {label} denied by {who}{why}"
    if request.state == TIMED_OUT:
        return (
            f"dbgov: {label} timed out after "
            f"{format_duration(request.expires_at - request.created_at)}"
        )
    if request.state == WITHDRAWN:
        return f"dbgov: {label} was withdrawn"
    if request.state == EXPIRED:
        return f"dbgov: {label} expired before it was used"
    if request.state == CONSUMED:
        return f"dbgov: {label} was already used"
    return f"dbgov: {label} is {request.state}"
