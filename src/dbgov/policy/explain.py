"""Explaining decisions without a database: `dbgov policy explain` and the web UI.

For each statement of a query: the verdict, the rule that made it, the reason and
hint the user would see, and the trail that led there (guardrails considered,
the rule that matched, which grant covered each need). The decision is the
engine's own (`PolicyEngine.trace`), so explain cannot drift from enforcement.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dbgov.gate import ApprovalSpec, SessionContext, Verdict
from dbgov.identity.model import Identity
from dbgov.policy.engine import PolicyEngine
from dbgov.sql.analyze import analyze, split_statements


@dataclass(frozen=True, slots=True)
class ExplainLine:
    index: int  # 0-based, as Decision.statement_index
    sql: str
    kind: str
    kinds: tuple[str, ...]
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    verdict: Verdict
    rule: str | None
    reason: str
    hint: str | None
    approval: ApprovalSpec | None
    steps: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly, for the web API."""
        approval = None
        if self.approval is not None:
            a = self.approval
            approval = {
                "approvers": list(a.approvers),
                "quorum": a.quorum,
                "mode": a.mode,
                "timeout_s": a.timeout_s,
                "risk": a.risk,
            }
        return {
            "index": self.index,
            "sql": self.sql,
            "kind": self.kind,
            "kinds": list(self.kinds),
            "reads": list(self.reads),
            "writes": list(self.writes),
            "verdict": self.verdict.value,
            "rule": self.rule,
            "reason": self.reason,
            "hint": self.hint,
            "approval": approval,
            "steps": list(self.steps),
        }


def explain(
    engine: PolicyEngine,
    sql: str,
    user: str,
    groups: Iterable[str],
    target: str,
    target_env: str,
    search_path: tuple[str, ...] = ("public",),
) -> list[ExplainLine]:
    """One line per statement (one line for a query that does not parse)."""
    ctx = SessionContext(
        Identity(user, frozenset(groups), "explain", "explain"), target, target_env, search_path
    )
    connect = engine.may_connect(ctx)
    if not connect.allowed:
        # The session would end at startup (FATAL): no statement is ever decided.
        return [
            ExplainLine(
                0,
                sql.strip(),
                "connect",
                (),
                (),
                (),
                connect.verdict,
                connect.rule,
                connect.reason,
                connect.hint,
                None,
                (f"connect to {target}: no grant covers it for these groups",),
            )
        ]
    analysis = analyze(sql)
    decision, traces = engine.trace(analysis, ctx)
    if analysis.error is not None:
        return [
            ExplainLine(
                0,
                sql.strip(),
                "?",
                (),
                (),
                (),
                decision.verdict,
                decision.rule,
                decision.reason,
                decision.hint,
                None,
                ("the query does not parse: fail closed",),
            )
        ]
    texts = split_statements(sql)
    if len(texts) != len(traces):  # pragma: no cover - the splitter and parser agree
        texts = [""] * len(traces)
    lines = []
    for trace, text in zip(traces, texts, strict=True):
        d = trace.decision
        view = trace.view
        lines.append(
            ExplainLine(
                index=trace.index,
                sql=text,
                kind=trace.statement.kind,
                kinds=tuple(sorted(trace.statement.kinds)),
                reads=view.read_names() if view else (),
                writes=view.write_names() if view else (),
                verdict=d.verdict,
                rule=d.rule,
                reason=d.reason,
                hint=d.hint,
                approval=d.approval,
                steps=tuple(trace.steps),
            )
        )
    return lines


def overall(lines: list[ExplainLine]) -> ExplainLine | None:
    """The line that decides the whole query: the first denial, else the first hold."""
    for verdict in (Verdict.DENY, Verdict.APPROVAL):
        for line in lines:
            if line.verdict is verdict:
                return line
    return None


def render(lines: list[ExplainLine]) -> str:
    out: list[str] = []
    for line in lines:
        head = line.verdict.value.upper()
        if line.rule:
            head += f' by rule "{line.rule}"'
        out.append(f"[{line.index + 1}] {line.sql}")
        out.append(f"    {head}")
        if line.reason:
            out.append(f"    why: {line.reason}")
        if line.hint:
            out.append(f"    hint: {line.hint}")
        if line.approval is not None:
            a = line.approval
            out.append(
                f"    approval: {a.quorum} of {', '.join(a.approvers)}, {a.mode}, "
                f"timeout {a.timeout_s} s, risk {a.risk}"
            )
        kinds = ", ".join(line.kinds) or line.kind
        out.append(
            f"    statement: {kinds}"
            + (f"; reads {', '.join(line.reads)}" if line.reads else "")
            + (f"; writes {', '.join(line.writes)}" if line.writes else "")
        )
        for step in line.steps:
            out.append(f"      - {step}")
    decisive = overall(lines)
    if len(lines) > 1:
        if decisive is None:
            out.append("query: ALLOW (every statement is allowed)")
        else:
            verb = "nothing runs" if decisive.verdict is Verdict.DENY else "the query waits"
            out.append(
                f"query: {decisive.verdict.value.upper()} by statement {decisive.index + 1}; {verb}"
            )
    return "\n".join(out)
