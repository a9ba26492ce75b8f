"""The decision core: one `decide()` for every statement, pure and cached.

The proxy asks the gate at two points of a session (DESIGN.md, "The data path"):

    statement in  -> gate.decide(analysis, ctx)           -> Decision
    result out    -> gate.result_plan(stmt, fields, ctx)  -> masking plan, or a denial

The gate composes `sql/` (analysis), `policy/` (rules and guardrails),
`masking/` (plans) and `approvals/` (what a hold needs). It never touches a
socket; the proxy enforces what it returns (Starlette's match/handle split).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from dbgov.identity import Identity
from dbgov.sql.analyze import analyze_cached
from dbgov.sql.model import Analysis, Statement

if TYPE_CHECKING:
    from dbgov.sql.catalog import Catalog
    from dbgov.wire.postgres.messages import FieldDescription


class Verdict(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    APPROVAL = "approval"  # hold (or refuse) until approvers decide


@dataclass(frozen=True, slots=True)
class ApprovalSpec:
    approvers: tuple[str, ...]  # groups
    quorum: int = 1
    mode: str = "hold"  # "hold" | "refuse"
    timeout_s: int = 600
    risk: str = "medium"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    rule: str | None = None
    reason: str = ""
    hint: str | None = None
    statement_index: int = 0  # which statement of a multi-statement query decided
    approval: ApprovalSpec | None = None
    sqlstate: str = "42501"
    # Grants (JIT) whose extra rights this decision relied on: (group, grant id).
    grants_used: tuple[tuple[str, str], ...] = ()
    # True when results may carry masked columns for this identity and target.
    masking: bool = False
    # A denial that comes from an approval (denied, timed out, withdrawn): its reason
    # is the approval's own sentence, and its ledger form links the request.
    from_approval: bool = False
    approval_id: int | None = None

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOW

    def message(self) -> str:
        if self.from_approval:
            return f"dbgov: {self.reason}"
        if self.rule:
            return f'dbgov: denied by rule "{self.rule}": {self.reason}'
        return f"dbgov: denied: {self.reason}"

    def as_event(self) -> dict[str, Any]:
        # (Enum's .value runs Python code; allow and deny are the hot path's verdicts.)
        v = self.verdict
        text = "allow" if v is Verdict.ALLOW else "deny" if v is Verdict.DENY else v.value
        out: dict[str, Any] = {"verdict": text}
        if self.rule:
            out["rule"] = self.rule
        if self.reason:
            out["reason"] = self.reason
        if self.grants_used:
            out["grants"] = [g for _, g in self.grants_used]
        if self.approval_id is not None:
            out["approval"] = str(self.approval_id)
        return out


ALLOW = Decision(Verdict.ALLOW)


@dataclass(frozen=True, slots=True)
class SessionContext:
    """What the gate may know about the session a statement comes from."""

    identity: Identity
    target: str
    target_env: str
    search_path: tuple[str, ...] = ("public",)
    session_id: str = ""
    in_transaction: bool = False
    # The session's TimeZone (ParameterStatus): masks that truncate timestamptz
    # values do it in the zone the client sees them in.
    time_zone: str | None = None


@dataclass(frozen=True, slots=True)
class ColumnMask:
    """How one output column is rewritten: `masker` text/binary callables."""

    index: int
    column: str  # what the audit calls it: "public.customers.email" or "expr(...)"
    mask: str  # mask kind, for the audit
    text: Any  # Callable[[bytes], bytes | None]
    binary: Any  # Callable[[bytes], bytes | None]
    # Every value, NULL included, becomes `text(b"")` / `binary(b"")`: for outputs
    # computed from masked columns, whose NULL-ness would otherwise answer a
    # question about the value (`substring(ssn from '^9')`).
    constant: bool = False


@dataclass(frozen=True, slots=True)
class ResultPlan:
    """Masks to apply to one result set's rows; empty means pass rows through."""

    columns: tuple[ColumnMask, ...] = field(default=())

    def __bool__(self) -> bool:
        return bool(self.columns)


class Policy(Protocol):
    def decide(self, analysis: Analysis, ctx: SessionContext) -> Decision: ...

    def may_connect(self, ctx: SessionContext) -> Decision: ...


class Masking(Protocol):
    def active(self, ctx: SessionContext) -> bool: ...

    def known_sources(self) -> frozenset[str]: ...

    def check(
        self, analysis: Analysis, ctx: SessionContext, catalog: Catalog | None
    ) -> Decision | None: ...

    def unordered(
        self, analysis: Analysis, ctx: SessionContext, catalog: Catalog | None
    ) -> frozenset[int]: ...

    def plan(
        self,
        stmt: Statement,
        fields: tuple[FieldDescription, ...],
        ctx: SessionContext,
        catalog: Catalog | None,
    ) -> ResultPlan | Decision: ...


class Gate:
    """Composes analysis, policy and masking; with no policy, everything is allowed."""

    def __init__(self, policy: Policy | None = None, masking: Masking | None = None) -> None:
        self.policy = policy
        self.masking = masking

    def analyze(self, sql: str) -> Analysis:
        return analyze_cached(sql)

    def may_connect(self, ctx: SessionContext) -> Decision:
        return ALLOW if self.policy is None else self.policy.may_connect(ctx)

    def decide(
        self, analysis: Analysis, ctx: SessionContext, catalog: Catalog | None = None
    ) -> Decision:
        if self.policy is None:
            return ALLOW
        decision = self.policy.decide(analysis, ctx)
        if decision.verdict is Verdict.DENY or self.masking is None:
            return decision
        # Masking refuses what it cannot make safe (inference, unknown origin, ...).
        refusal = self.masking.check(analysis, ctx, catalog)
        return decision if refusal is None else refusal

    def unordered(
        self, analysis: Analysis, ctx: SessionContext, catalog: Catalog | None = None
    ) -> frozenset[int]:
        """The statements whose rows must be sent in random order (masking's
        `unordered`): their server order would follow masked values."""
        if self.masking is None:
            return frozenset()
        return self.masking.unordered(analysis, ctx, catalog)

    def masking_active(self, ctx: SessionContext) -> bool:
        return self.masking is not None and self.masking.active(ctx)

    def result_plan(
        self,
        stmt: Statement,
        fields: tuple[FieldDescription, ...],
        ctx: SessionContext,
        catalog: Catalog | None,
    ) -> ResultPlan | Decision:
        if self.masking is None:
            return ResultPlan()
        return self.masking.plan(stmt, fields, ctx, catalog)
