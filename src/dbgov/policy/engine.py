"""The policy engine: one decision per query, before it reaches the database.

Theory of operation. `decide(analysis, ctx)` decides each statement of the query
and returns the first one that is not allowed (a denial beats an approval; the
decision names the statement in `statement_index`), so if one statement of a
multi-statement Query is refused, none runs. A SET search_path inside the query
changes how the statements after it resolve table names (resolve.py); a change
the proxy cannot follow (set_config) fails closed for later unqualified names.
For one statement, in order:

1. Fail closed. A query that does not parse, or a statement the analyzer could
   not fully see through, is denied (rule "fail-closed").
2. Guardrails (guardrails.py), with the policy's overrides per group, target and
   env. A guardrail denial ends the decision; a guardrail approval is remembered
   and wins over anything that would merely allow.
3. Rules, in file order; the first whose `match` (every key ANDed, each list "any
   of") and `when` hold decides. deny ends the decision. allow and
   require_approval cover the needs inside the rule's own scope (its kinds and
   tables); whatever else the statement needs still goes to the grants, so a rule
   for `UPDATE feature_store` does not let a CTE in the same statement delete
   from another table. `match.models` selects statements that change a declared
   model's inputs (dbgov.models.registry); it is not a scope: a rule with
   `models` and no `tables` covers no need, so it adds a hold or a denial to
   what the grants allow and never widens them.
4. Grants: every (kind, table) the statement needs must be covered by a grant of
   one of the identity's groups on this target, else it is denied
   ("not-granted", naming what is missing).

What a statement needs: each kind in `Statement.kinds` on the tables it acts on
(READ kinds on the tables read, the others on the tables written), `select` on
every table read, and `update` on them too for SELECT ... FOR UPDATE/SHARE.
Session and transaction housekeeping (SET of ordinary settings, SHOW,
BEGIN/COMMIT, DISCARD, DEALLOCATE, CLOSE, FETCH of an own cursor, LISTEN, EXECUTE
of a statement PREPARE already decided) needs nothing, nor do reads of pg_catalog
and information_schema (psql's \\d and every driver's introspection need them;
the secret ones are the catalog_secrets guardrail's), nor a SELECT that reads no
table (`SELECT 1`, `SELECT version()`: health checks and drivers). Functions that
change or read data named by a string (nextval, setval, large objects) need
`update` / `select` from some grant on the target.

Decisions are cached per (analysis object, groups, JIT grants, target, env,
search_path[, user][, in_transaction]): the user is only part of the key when a
rule or condition looks at it, and a decision that evaluated a condition reading
`time` is not cached at all. The entry keeps the Analysis alive, so its id()
cannot be reused while the entry exists. Measured with timeit on the development
machine (2 vCPU shared with other jobs, CPython 3.11, demo policy, `SELECT
abalance FROM pgbench_accounts WHERE aid = 12345`):
    hit, same SessionContext object:           ~0.45-0.8 us (a bare dict.get: ~0.03-0.07 us)
    hit, new SessionContext with known facts:  ~+0.8 us (one tuple hash to find its token)
    miss (full decision):                      ~40 us; a two-table join ~50 us
(`contextlib.suppress` on the hit path alone cost ~1.4 us: it is plain try/except.)
"""

from __future__ import annotations

import fnmatch
import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dbgov.gate import ALLOW, ApprovalSpec, Decision, SessionContext, Verdict
from dbgov.models.registry import ModelRegistry
from dbgov.policy.context import CelCondition, build_context
from dbgov.policy.guardrails import BY_NAME, GUARDRAILS, PRODUCTION_ENVS, Guardrail
from dbgov.policy.model import Approval, ColumnMask, Masking, PolicyFile, Rule
from dbgov.policy.resolve import (
    DEFAULT_SEARCH_PATH,
    SECRET_RELATIONS,
    SYSTEM_SCHEMAS,
    StatementView,
    parse_search_path,
)
from dbgov.sql.analyze import TOO_LONG
from dbgov.sql.kinds import CATEGORY_OF_KIND
from dbgov.sql.model import Analysis, Category, Statement

CACHE_SIZE = 20_000
_MAX_TOKENS = 4096  # distinct live session contexts / session facts remembered

# Kinds every connected identity may run: session and transaction housekeeping.
# PREPARE and DECLARE count here because the query inside them is in `kinds` and
# decided like any other; EXECUTE because the proxy decides the prepared
# statement it runs (proxy/session.py); plain EXPLAIN because its tables are reads.
FREE_KINDS = frozenset(
    {
        "begin",
        "commit",
        "rollback",
        "rollback_to",
        "savepoint",
        "release",
        "set",
        "reset",
        "show",
        "discard",
        "deallocate",
        "close",
        "fetch",
        "move",
        "listen",
        "unlisten",
        "notify",
        "execute",
        "prepare",
        "declare",
        "set_constraints",
        "explain",
    }
)
# Functions that change or read data named by an argument rather than by a FROM
# item (sequences, large objects): they need a write or read right of their own,
# and a SELECT calling them is not a free table-less SELECT.
_WRITE_FUNCTIONS = frozenset(
    {
        "nextval",
        "setval",
        "lowrite",
        "lo_create",
        "lo_creat",
        "lo_unlink",
        "lo_put",
        "lo_from_bytea",
        "lo_truncate",
        "lo_truncate64",
    }
)
_READ_FUNCTIONS = frozenset({"currval", "lastval", "loread", "lo_get", "lo_open"})

FAIL_CLOSED = "fail-closed"
NOT_GRANTED = "not-granted"
NO_ACCESS = "no-access"


@dataclass(frozen=True, slots=True, order=True)
class Need:
    """One right a statement needs: a kind (with its category) on a table, or on none."""

    right: str
    category: Category = field(compare=False)
    table: str | None

    def __str__(self) -> str:
        return f"{self.right} on {self.table}" if self.table else self.right


def _glob_any(name: str, patterns: Iterable[str]) -> bool:
    return any(p == "*" or fnmatch.fnmatchcase(name, p) for p in patterns)


def approval_spec(a: Approval, risk: str | None = None) -> ApprovalSpec:
    return ApprovalSpec(a.approvers, a.quorum, a.mode, a.timeout, risk or a.risk)


# ---------------------------------------------------------------------------
# Compiled policy pieces


@dataclass(frozen=True, slots=True)
class _Grant:
    id: str
    groups: frozenset[str]
    targets: frozenset[str]  # empty = any
    envs: frozenset[str]  # empty = any
    rights: frozenset[str]  # kinds and category names; "*" = everything
    tables: tuple[str, ...]

    def applies(self, target: str, env: str) -> bool:
        return (not self.targets or target in self.targets) and (not self.envs or env in self.envs)

    def covers(self, need: Need) -> bool:
        if not (
            "*" in self.rights or need.right in self.rights or need.category.value in self.rights
        ):
            return False
        return need.table is None or _glob_any(need.table, self.tables)


@dataclass(frozen=True, slots=True)
class _Rule:
    index: int
    rule: Rule
    groups: frozenset[str]
    users: frozenset[str]
    targets: frozenset[str]
    envs: frozenset[str]
    kinds: frozenset[str]
    models: frozenset[str] = frozenset()  # match.models ("*": any declared model)

    @property
    def name(self) -> str:
        return self.rule.name

    def models_match(self, affected: frozenset[str]) -> bool:
        """The `models` part of `match`, given the models the statement changes."""
        return bool(affected) and ("*" in self.models or bool(self.models & affected))

    def scope_matches(self, ctx: SessionContext) -> bool:
        """The identity and target part of `match` (the statement part is `matches`)."""
        if self.groups and not self.groups & ctx.identity.groups:
            return False
        if self.users and ctx.identity.user not in self.users:
            return False
        if self.targets and ctx.target not in self.targets:
            return False
        return not self.envs or ctx.target_env in self.envs

    def matches(self, view: StatementView, ctx: SessionContext) -> bool:
        if not self.scope_matches(ctx):
            return False
        stmt = view.stmt
        m = self.rule.match
        # Categories come from the statement itself too: SET ROLE is kind "set" but
        # category privilege.
        if self.kinds and not (
            any(k in self.kinds for k in stmt.kinds)
            or any(c.value in self.kinds for c in stmt.categories)
        ):
            return False
        if m.tables and not any(_glob_any(t, m.tables) for t in view.table_names()):
            return False
        return not m.functions or any(_glob_any(f, m.functions) for f in stmt.functions)

    def covers(self, need: Need) -> bool:
        """Whether an allow/require_approval rule speaks for this need itself."""
        if self.kinds and need.right not in self.kinds and need.category.value not in self.kinds:
            return False
        tables = self.rule.match.tables
        if self.models and not tables:
            return False  # `models` selects statements; it never grants (module docstring)
        return not tables or (need.table is not None and _glob_any(need.table, tables))


@dataclass(frozen=True, slots=True)
class _Setting:
    """What one guardrail does for one (groups, target, env)."""

    action: str  # "deny" | "require_approval" | "off"
    approval: ApprovalSpec | None
    message: str | None
    functions: tuple[str, ...]
    why: str  # where the setting comes from, for explain


@dataclass(frozen=True, slots=True)
class MaskingConfig:
    """The policy's masking section, for the masking engine (masking/)."""

    on_unknown_origin: str
    inference_guards: frozenset[str]
    columns: Mapping[str, ColumnMask]  # "schema.table.column" -> mask and exempt groups

    @classmethod
    def of(cls, m: Masking) -> MaskingConfig:
        return cls(m.on_unknown_origin, frozenset(m.inference_guards), dict(m.columns))

    def masked_for(self, groups: frozenset[str]) -> bool:
        """True when some column is masked for an identity with these groups."""
        return any(not groups & set(c.exempt) for c in self.columns.values())


# ---------------------------------------------------------------------------
# Results


@dataclass(slots=True)
class StatementTrace:
    """How one statement was decided, step by step (for explain)."""

    index: int
    statement: Statement
    view: StatementView | None
    decision: Decision = ALLOW
    needs: tuple[Need, ...] = ()
    steps: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Run:
    """Per-decision scratch: whether the decision may be cached, and the trace."""

    tracing: bool
    volatile: bool = False
    traces: list[StatementTrace] = field(default_factory=list)

    def step(self, trace: StatementTrace | None, text: str) -> None:
        if trace is not None:
            trace.steps.append(text)


def _deny(rule: str, reason: str, hint: str | None, index: int) -> Decision:
    return Decision(Verdict.DENY, rule, reason, hint, statement_index=index)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _approval_hint(spec: ApprovalSpec) -> str:
    who = f"{_plural(spec.quorum, 'approver')} from {', '.join(spec.approvers)}"
    if spec.mode == "hold":
        verb = "approves" if spec.quorum == 1 else "approve"
        return f"the statement waits until {who} {verb} it (timeout {spec.timeout_s} s)"
    return f"ask {who} to approve it, then run it again"


class PolicyEngine:
    """gate.Policy over a parsed policy file. Pure and cached; no I/O."""

    def __init__(
        self,
        policy: PolicyFile,
        source: str = "<policy>",
        *,
        clock: Callable[[], datetime] | None = None,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self.policy = policy
        self.source = source
        self.admin_groups = frozenset(policy.admin_groups)
        self.masking_config = MaskingConfig.of(policy.masking)
        self.secret_params_tables = policy.audit.secret_params_tables
        self.models = ModelRegistry.of(policy)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._grants = tuple(
            _Grant(
                g.name or f"grants[{i}]",
                frozenset(g.groups),
                frozenset() if "*" in g.targets else frozenset(g.targets),
                frozenset(g.envs),
                frozenset(g.allow),
                g.tables,
            )
            for i, g in enumerate(policy.grants)
        )
        self._rules = tuple(
            _Rule(
                i,
                r,
                frozenset(r.match.groups),
                frozenset(r.match.users),
                frozenset() if "*" in r.match.targets else frozenset(r.match.targets),
                frozenset(r.match.envs),
                frozenset(r.match.kinds),
                frozenset(r.match.models),
            )
            for i, r in enumerate(policy.rules)
        )
        conditions = [r.when for r in policy.rules if r.when is not None]
        # Only what some rule looks at goes into the cache key.
        self._key_user = any(r.match.users for r in policy.rules) or any(
            c.uses_user for c in conditions
        )
        self._key_session = any(c.uses_session for c in conditions)
        # (id(analysis), session token) -> (analysis, decision); see `decide`.
        self._cache: OrderedDict[tuple[int, int], tuple[Analysis, Decision]] = OrderedDict()
        self._cache_size = cache_size
        # id(ctx) -> (ctx, token), and the session facts a token stands for.
        self._ctx_tokens: dict[int, tuple[SessionContext, int]] = {}
        self._tokens: dict[tuple[Any, ...], int] = {}
        self._settings: dict[tuple[str, frozenset[str], str, str], _Setting] = {}
        self._counter = itertools.count(1)
        self.hits = 0
        self.misses = 0

    # -- gate.Policy ---------------------------------------------------------------

    def decide(self, analysis: Analysis, ctx: SessionContext) -> Decision:
        # The hot path: two dictionary lookups keyed by small ints. A SessionContext
        # object stays the same between statements of a session (the proxy replaces
        # it when search_path or the transaction state changes), so its id() maps to
        # a token standing for the session facts that decisions depend on; equal
        # facts share a token, so sessions of the same groups share decisions. Both
        # tables keep the object whose id() they use, so an id cannot be reused
        # while its entry exists. No lock: every step is one atomic dict operation
        # under the GIL, and a racing eviction only costs a recomputation.
        hit = self._ctx_tokens.get(id(ctx))
        token = hit[1] if hit is not None and hit[0] is ctx else self._token(ctx)
        key = (id(analysis), token)
        entry = self._cache.get(key)
        if entry is not None and entry[0] is analysis:
            # try/except, not contextlib.suppress: that costs more than the rest of
            # the hit path together.
            try:
                self._cache.move_to_end(key)
            except KeyError:  # evicted by another thread meanwhile
                pass
            self.hits += 1
            return entry[1]
        self.misses += 1
        run = _Run(tracing=False)
        decision = self._decide(analysis, ctx, run)
        if not run.volatile:  # a condition read the clock: the next call may differ
            self._cache[key] = (analysis, decision)
            if len(self._cache) > self._cache_size:
                try:
                    self._cache.popitem(last=False)
                except KeyError:  # emptied by another thread meanwhile
                    pass
        return decision

    def _token(self, ctx: SessionContext) -> int:
        ident = ctx.identity
        facts = (
            ident.groups,
            ident.grants,
            ctx.target,
            ctx.target_env,
            ctx.search_path,
            ident.user if self._key_user else None,
            ctx.in_transaction if self._key_session else None,
        )
        token = self._tokens.get(facts)
        if token is None:
            if len(self._tokens) >= _MAX_TOKENS:
                # Fresh tokens are never reused, so entries under the old ones simply
                # age out of the LRU.
                self._tokens.clear()
            token = self._tokens[facts] = next(self._counter)
        if len(self._ctx_tokens) >= _MAX_TOKENS:
            self._ctx_tokens.clear()
        self._ctx_tokens[id(ctx)] = (ctx, token)
        return token

    def may_connect(self, ctx: SessionContext) -> Decision:
        if self._applicable(ctx):
            return ALLOW
        groups = ", ".join(sorted(ctx.identity.groups)) or "none"
        return Decision(
            Verdict.DENY,
            NO_ACCESS,
            f"{ctx.identity.user} has no database access on {ctx.target}",
            hint=f"no grant in the policy covers target {ctx.target} for your groups "
            f"({groups}); ask an administrator for access",
        )

    def decide_function_call(self, ctx: SessionContext) -> Decision:
        """The fast-path FunctionCall message: the function_call guardrail alone decides."""
        g = BY_NAME["function_call"]
        setting = self._setting(g, ctx)
        if setting.action == "off":
            return ALLOW
        reason = setting.message or (
            "the fast-path FunctionCall protocol calls functions by OID, out of the proxy's sight"
        )
        if setting.action == "deny":
            return _deny(g.name, reason, g.hint, 0)
        assert setting.approval is not None  # _compute_setting: approval has approvers
        return Decision(
            Verdict.APPROVAL,
            g.name,
            reason,
            _approval_hint(setting.approval),
            approval=setting.approval,
        )

    # -- explain ----------------------------------------------------------------------

    def trace(
        self, analysis: Analysis, ctx: SessionContext
    ) -> tuple[Decision, list[StatementTrace]]:
        """The decision and how each statement was decided; never cached."""
        run = _Run(tracing=True)
        decision = self._decide(analysis, ctx, run)
        return decision, run.traces

    def cache_clear(self) -> None:
        self._cache.clear()
        self._ctx_tokens.clear()
        self.hits = self.misses = 0

    # -- the decision -------------------------------------------------------------------

    def _decide(self, analysis: Analysis, ctx: SessionContext, run: _Run) -> Decision:
        if analysis.error is not None:
            return _deny(
                FAIL_CLOSED,
                f"the query could not be analyzed: {analysis.error}",
                "split the statement, or load bulk data with COPY ... FROM STDIN"
                if analysis.error.startswith(TOO_LONG)
                else "dbgov refuses SQL it cannot parse; check the syntax",
                0,
            )
        denied: Decision | None = None
        held: Decision | None = None
        used: dict[tuple[str, str], None] = {}
        masking = False
        paths: tuple[tuple[str, ...], ...] = (ctx.search_path,)
        path_lost = False
        for i, stmt in enumerate(analysis.statements):
            trace = StatementTrace(i, stmt, None) if run.tracing else None
            if path_lost and _has_unqualified(stmt):
                decision = _deny(
                    FAIL_CLOSED,
                    "an earlier statement of this query changed search_path in a way the "
                    "proxy cannot follow, so it cannot tell which tables this one names",
                    "qualify the table names (schema.table), or send the statements separately",
                    i,
                )
            else:
                decision = self._statement(i, stmt, ctx, paths, run, trace)
            # Later statements of the same query run under the new path (or the old
            # one, if a ROLLBACK undoes it): resolve them under both.
            new_path, lost = _path_change(stmt)
            path_lost = path_lost or lost
            if new_path is not None and new_path not in paths:
                paths = (*paths, new_path)
            if trace is not None:
                trace.decision = decision
                run.traces.append(trace)
            used.update(dict.fromkeys(decision.grants_used))
            masking = masking or decision.masking
            if decision.verdict is Verdict.DENY:
                denied = denied or decision
                if not run.tracing:
                    break
            elif decision.verdict is Verdict.APPROVAL and held is None:
                held = decision
        if denied is not None:
            return denied
        if held is not None:
            return Decision(
                held.verdict,
                held.rule,
                held.reason,
                held.hint,
                held.statement_index,
                held.approval,
                held.sqlstate,
                tuple(used),
                masking,
            )
        if used or masking:
            return Decision(Verdict.ALLOW, grants_used=tuple(used), masking=masking)
        return ALLOW

    def _statement(
        self,
        index: int,
        stmt: Statement,
        ctx: SessionContext,
        paths: tuple[tuple[str, ...], ...],
        run: _Run,
        trace: StatementTrace | None,
    ) -> Decision:
        if not stmt.fully_analyzed:
            return _deny(
                FAIL_CLOSED,
                f"the proxy cannot fully analyze this statement "
                f"({stmt.unanalyzed_reason or 'unknown construct'})",
                "dbgov refuses what it cannot see through; rewrite it with plain SQL statements",
                index,
            )
        view = StatementView.of(stmt, paths)
        if trace is not None:
            trace.view = view

        # 2. guardrails
        held: Decision | None = None
        production = ctx.target_env in PRODUCTION_ENVS
        for g in GUARDRAILS:
            if g.production_only and not production:
                continue
            setting = self._setting(g, ctx)
            reason = g.check(view, setting.functions)
            if reason is None:
                continue
            if setting.action == "off":
                run.step(trace, f"guardrail {g.name}: {reason}; off ({setting.why})")
                continue
            reason = setting.message or reason
            if setting.action == "deny":
                run.step(trace, f"guardrail {g.name}: deny ({setting.why})")
                return _deny(g.name, reason, g.hint, index)
            run.step(trace, f"guardrail {g.name}: requires approval ({setting.why})")
            if held is None:
                assert setting.approval is not None
                held = Decision(
                    Verdict.APPROVAL,
                    g.name,
                    reason,
                    _approval_hint(setting.approval),
                    index,
                    setting.approval,
                )
        if trace is not None and not trace.steps:
            run.step(trace, "guardrails: none apply")

        # 3. rules
        matched: _Rule | None = None
        context: dict[str, Any] | None = None
        affected: frozenset[str] | None = None  # models the statement changes, when asked
        for rule in self._rules:
            if not rule.matches(view, ctx):
                continue
            if rule.models:
                if affected is None:
                    affected = frozenset(self.models.affected(view, ctx.target))
                if not rule.models_match(affected):
                    run.step(
                        trace,
                        f"rule {rule.name}: matches, but changes no input of "
                        f"{', '.join(sorted(rule.models))}",
                    )
                    continue
            cond: CelCondition | None = rule.rule.when
            if cond is not None:
                run.volatile = run.volatile or cond.uses_time
                if context is None:
                    if affected is None:
                        affected = frozenset(self.models.affected(view, ctx.target))
                    context = self._context(view, ctx, affected)
                try:
                    holds = cond.evaluate(context)
                except ValueError as exc:
                    run.step(trace, f"rule {rule.name}: condition failed: {exc}")
                    return _deny(
                        rule.name,
                        f"the rule's condition could not be evaluated ({exc})",
                        "this is a policy error; tell an administrator",
                        index,
                    )
                if not holds:
                    run.step(trace, f"rule {rule.name}: matches, but `when` is false")
                    continue
            matched = rule
            break
        rule_used: tuple[tuple[str, str], ...] = ()
        if matched is not None:
            r = matched.rule
            run.step(trace, f"rule {r.name} (rules[{matched.index}]) matches: {r.action}")
            if r.action == "deny":
                return _deny(
                    r.name, r.message or f"{_what(view)} is denied by policy", r.hint, index
                )
            rule_used = self._jit_used(matched.groups, ctx)
        elif trace is not None:
            run.step(trace, "rules: none match")

        # 4. grants
        needs = self._needs(view)
        if trace is not None:
            trace.needs = tuple(needs)
        residual = [n for n in needs if matched is None or not matched.covers(n)]
        if matched is not None and trace is not None:
            for n in needs:
                if n not in residual:
                    run.step(trace, f"{n}: covered by rule {matched.name}")
        missing, used = self._check_grants(residual, ctx, run, trace)
        if missing:
            return self._not_granted(missing, ctx, index)
        used = tuple(dict.fromkeys((*rule_used, *used)))
        masking = self.masking_config.masked_for(ctx.identity.groups) and (
            bool(stmt.reads) or stmt.returns_rows
        )
        if held is not None:
            return Decision(
                held.verdict,
                held.rule,
                held.reason,
                held.hint,
                index,
                held.approval,
                grants_used=used,
                masking=masking,
            )
        if matched is not None and matched.rule.action == "require_approval":
            r = matched.rule
            assert r.approval is not None  # model validation
            spec = approval_spec(r.approval)
            return Decision(
                Verdict.APPROVAL,
                r.name,
                r.message or f"{_what(view)} needs approval",
                r.hint or _approval_hint(spec),
                index,
                spec,
                grants_used=used,
                masking=masking,
            )
        return Decision(
            Verdict.ALLOW,
            matched.name if matched else None,
            grants_used=used,
            masking=masking,
            statement_index=index,
        )

    # -- pieces ---------------------------------------------------------------------------

    def _setting(self, g: Guardrail, ctx: SessionContext) -> _Setting:
        key = (g.name, ctx.identity.groups, ctx.target, ctx.target_env)
        setting = self._settings.get(key)
        if setting is None:
            if len(self._settings) >= _MAX_TOKENS * len(GUARDRAILS):
                self._settings.clear()
            setting = self._settings[key] = self._compute_setting(g, ctx)
        return setting

    def _compute_setting(self, g: Guardrail, ctx: SessionContext) -> _Setting:
        groups = ctx.identity.groups
        default_approval = (
            ApprovalSpec(tuple(sorted(self.admin_groups)), 1, "hold", 600, g.risk)
            if self.admin_groups
            else None
        )
        for i, ov in enumerate(self.policy.guardrails):
            if ov.guardrail != g.name:
                continue
            if ov.groups and not groups & set(ov.groups):
                continue
            if ov.targets and "*" not in ov.targets and ctx.target not in ov.targets:
                continue
            if ov.envs and ctx.target_env not in ov.envs:
                continue
            spec = approval_spec(ov.approval) if ov.approval else default_approval
            if ov.action == "require_approval" and spec is None:
                # load.py refuses this; an engine built directly must still not hold
                # a statement that nobody can approve.
                return _Setting(
                    "deny", None, ov.message, ov.functions, f"guardrails[{i}], no approvers"
                )
            return _Setting(ov.action, spec, ov.message, ov.functions, f"guardrails[{i}]")
        exempt = groups & self.admin_groups
        if g.admin_exempt and exempt:
            return _Setting("off", None, None, (), f"admin group {', '.join(sorted(exempt))}")
        if g.default == "require_approval" and default_approval is None:
            # Nobody could approve: a hold would never end.
            return _Setting("deny", None, None, (), "built-in; no admin_groups to approve")
        return _Setting(g.default, default_approval, None, (), "built-in")

    def _context(
        self, view: StatementView, ctx: SessionContext, affected: frozenset[str]
    ) -> dict[str, Any]:
        stmt = view.stmt
        return build_context(
            kind=stmt.kind,
            kinds=stmt.kinds,
            reads=view.read_names(),
            writes=view.write_names(),
            functions=stmt.functions,
            has_where=not stmt.unfiltered_writes,
            flags=stmt.flags,
            target=ctx.target,
            env=ctx.target_env,
            user=ctx.identity.user,
            groups=ctx.identity.groups,
            now=self._clock(),
            in_transaction=ctx.in_transaction,
            models=affected,
            tags=self.models.tags_of(view.table_names()),
        )

    def _needs(self, view: StatementView) -> list[Need]:
        stmt = view.stmt
        reads, writes = view.read_names(), view.write_names()
        privileged_set = stmt.kind in ("set", "reset") and stmt.category is Category.PRIVILEGE
        out: dict[Need, None] = {}
        for kind in sorted(stmt.kinds):
            category = CATEGORY_OF_KIND.get(kind, Category.UTILITY)
            if kind in ("set", "reset") and privileged_set:
                category = Category.PRIVILEGE
            elif kind in FREE_KINDS:
                continue
            tables: tuple[str | None, ...]
            if category is Category.READ:
                if reads:
                    tables = reads
                elif kind == "select":
                    continue  # SELECT 1, SELECT now(): reads no table
                else:
                    tables = (None,)
            else:
                tables = writes or (reads if category is Category.UTILITY else ()) or (None,)
            for t in tables:
                out[Need(kind, category, t)] = None
        for t in reads:
            out[Need("select", Category.READ, t)] = None
            # SELECT ... FOR UPDATE/SHARE locks rows against writers; PostgreSQL
            # asks for UPDATE privilege too. The analyzer does not say which tables
            # are locked, so every table read needs it (strict with FOR ... OF).
            if "row_lock" in stmt.flags:
                out[Need("update", Category.WRITE, t)] = None
        # Sequences and large objects, named by a string: not bound to a table grant,
        # so any grant with the right on this target covers them.
        if stmt.functions & _WRITE_FUNCTIONS:
            out[Need("update", Category.WRITE, None)] = None
        if stmt.functions & _READ_FUNCTIONS:
            out[Need("select", Category.READ, None)] = None
        return [n for n in out if not _free_catalog_read(n)]

    def _applicable(self, ctx: SessionContext) -> list[_Grant]:
        return [
            g
            for g in self._grants
            if g.groups & ctx.identity.groups and g.applies(ctx.target, ctx.target_env)
        ]

    def _jit_used(self, groups: frozenset[str], ctx: SessionContext) -> tuple[tuple[str, str], ...]:
        """The JIT grants a match relied on: when no base group of the identity matched."""
        if not ctx.identity.grants or not groups:
            return ()
        jit = {g for g, _ in ctx.identity.grants}
        base = ctx.identity.groups - jit
        if groups & base:
            return ()
        return tuple((g, gid) for g, gid in ctx.identity.grants if g in groups)

    def _check_grants(
        self,
        needs: list[Need],
        ctx: SessionContext,
        run: _Run,
        trace: StatementTrace | None,
    ) -> tuple[list[Need], tuple[tuple[str, str], ...]]:
        if not needs:
            return [], ()
        applicable = self._applicable(ctx)
        jit = {g for g, _ in ctx.identity.grants}
        base = ctx.identity.groups - jit
        # Grants reachable through the identity's own groups first: a JIT grant is
        # only reported when it was needed.
        ordered = sorted(applicable, key=lambda g: not (g.groups & base))
        missing: list[Need] = []
        used: dict[tuple[str, str], None] = {}
        for need in needs:
            grant = next((g for g in ordered if g.covers(need)), None)
            if grant is None:
                missing.append(need)
                run.step(trace, f"{need}: no grant")
                continue
            run.step(trace, f"{need}: granted by {grant.id}")
            if not grant.groups & base:
                used.update(dict.fromkeys(self._jit_used(grant.groups, ctx)))
        return missing, tuple(used)

    def _not_granted(self, missing: list[Need], ctx: SessionContext, index: int) -> Decision:
        shown = ", ".join(str(n) for n in missing[:4])
        more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        groups = ", ".join(sorted(ctx.identity.groups)) or "none"
        return _deny(
            NOT_GRANTED,
            f"{ctx.identity.user} has no grant for {shown}{more} on {ctx.target}",
            f"no grant for your groups ({groups}) covers this; ask an administrator to "
            "extend the policy, or request just-in-time access",
            index,
        )


def _path_change(stmt: Statement) -> tuple[tuple[str, ...] | None, bool]:
    """(the search_path a statement sets, whether it sets one the proxy cannot know)."""
    if stmt.set_param is not None:
        name, value = stmt.set_param
        if name == "search_path":
            path = parse_search_path(value)
            return path, path is None
        if name == "all":
            return DEFAULT_SEARCH_PATH, False
    if stmt.kind == "discard" and "reset_role" in stmt.flags:  # DISCARD ALL
        return DEFAULT_SEARCH_PATH, False
    if "set_config_search_path" in stmt.flags:
        return None, True
    return None, False


def _has_unqualified(stmt: Statement) -> bool:
    return any(r.schema is None for r in (*stmt.reads, *stmt.writes))


def _free_catalog_read(need: Need) -> bool:
    if need.category is not Category.READ or need.table is None:
        return False
    schema = need.table.partition(".")[0]
    return schema in SYSTEM_SCHEMAS and need.table not in SECRET_RELATIONS


def _what(view: StatementView) -> str:
    kinds = ", ".join(k.upper().replace("_", " ") for k in sorted(view.stmt.kinds))
    tables = ", ".join(view.table_names())
    return f"{kinds} on {tables}" if tables else kinds
