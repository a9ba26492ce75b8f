"""The policy file: what an operator may write, as frozen pydantic models.

A policy is data (YAML), never SQL. Unknown keys are errors, so a typo in a
security setting cannot silently weaken it. Every key:

    version: 1                      # the only version so far
    admin_groups: [dba]             # exempt from the privilege_escalation, procedural
                                    # and catalog_secrets guardrails; default approvers
                                    # of guardrails that require approval

    grants:                         # the allow-list, like SQL GRANT; nothing else runs
      - name: analysts-read         # optional id, shown in explain and denials
        groups: [analysts]          # identity groups (any of), required
        targets: ["*"]              # target names or "*" (default "*")
        envs: [production]          # optional: only targets of these envs
        allow: [read]               # categories (read, write, ddl, privilege, procedural,
                                    # session, transaction, utility), statement kinds
                                    # (select, insert, update, delete, merge, copy_from,
                                    # create_index, drop, ...), or "*" for all
        tables: ["public.*"]        # fnmatch globs on schema.table (default ["*"])

    rules:                          # ordered exceptions; the first match decides
      - name: feature-edits-need-dba    # unique, required
        description: "..."          # optional, for people
        match:                      # every key ANDed; each list means "any of"; omitted = any
          groups: [ml-engineers]
          users: [bob]
          targets: [prod]
          envs: [production]
          kinds: [update, delete]   # statement kinds or categories, against Statement.kinds
          tables: [public.feature_store]  # globs; matches if ANY table touched matches
          functions: ["dblink*"]    # globs on lower-case function names
          models: [churn-v2]        # declared models whose inputs the statement changes
                                    # (see `models:`); "*" for any model. A rule matched
                                    # through `models` never widens rights by itself: with
                                    # no `tables`, every need still goes to the grants
        when: "stmt.has_where"      # optional CEL over the context in policy/context.py
        action: require_approval    # allow | deny | require_approval
        message: "..."              # the reason shown (deny) or given to approvers
        hint: "..."                 # optional: what the user can do instead
        approval:                   # required with require_approval, refused otherwise
          approvers: [dba]          # groups whose members may approve
          quorum: 1                 # distinct approvers needed
          mode: hold                # hold (the statement waits) | refuse (ask, then rerun)
          timeout: 10m              # 90s, 10m, 1h, 1d or seconds
          risk: medium              # low | medium | high | critical, for the approvers

    guardrails:                     # built-ins are ON unless changed here
      - guardrail: drop_on_production   # one of GUARDRAIL_NAMES
        groups: [dba]               # optional scope: groups (any of), targets, envs
        targets: [prod]
        envs: [production]
        action: require_approval    # deny | require_approval | off
        message: "..."              # optional: replaces the built-in reason
        approval: {approvers: [dba]}    # with require_approval (default: admin_groups)
        functions: [my_risky_fn]    # dangerous_functions only: names added to the floor

    masking:                        # read by the masking engine
      on_unknown_origin: deny       # deny | mask: a column whose origin cannot be traced
      inference_guards: [analysts]  # groups whose queries get inference guards
      columns:
        public.customers.email: {mask: pseudonym, exempt: [dba]}
        public.customers.phone: {mask: partial, keep_last: 4, exempt: [dba]}
        # mask: redact | null | partial | email | pseudonym | hash | bucket | pii_text,
        # plus that mask's options (see dbgov.masking.maskers); exempt: groups that
        # see the value unmasked.

    models:                         # model registry (dbgov.models): which tables feed which model
      churn-v2:                     # model name (letters, digits, - _ . : @)
        description: "..."          # optional, for people
        owners: [ml-engineers]      # groups that own it: they (and admin_groups) mark retrains
        targets: [prod]             # where its inputs live: target names or "*" (required)
        inputs:                     # exact schema.table names, no globs (required)
          - public.feature_store    # the whole row feeds the model
          - table: public.customers # only these columns feed it: an UPDATE setting none
            columns: [country, created_at]  # of them does not change the model's inputs
        large_rows: 1000            # optional: reports flag changes of this many rows

    table_tags:                     # labels rules (stmt.tags) and reports use; every model
      public.prompts: [prompt_store, pii]   # input also carries model_input. One of
                                    # model_input, inference_log, prompt_store, pii.

How they combine is the engine's business (policy/engine.py): fail closed, then
guardrails, then the first matching rule, then grants.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dbgov.durations import parse_duration
from dbgov.policy.context import CelCondition, compile_condition
from dbgov.sql.kinds import CATEGORY_OF_KIND
from dbgov.sql.model import Category


class PolicyError(Exception):
    """A policy problem, phrased for the operator: file, rule and field, then why."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# The built-in guardrails a policy may change (policy/guardrails.py defines them).
GuardrailName = Literal[
    "privilege_escalation",
    "server_files",
    "dangerous_functions",
    "procedural",
    "unsafe_settings",
    "catalog_secrets",
    "unfiltered_write",
    "drop_cascade",
    "drop_on_production",
    "truncate_on_production",
    "ddl_on_production",
    "function_call",
]

CATEGORIES = frozenset(c.value for c in Category)
KINDS = frozenset(CATEGORY_OF_KIND) - {"other"}
MASK_KINDS = ("redact", "null", "partial", "email", "pseudonym", "hash", "bucket", "pii_text")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@\-]*$")


def _check_glob(pattern: str, *, qualified: bool) -> str:
    """A glob must be able to match something the analyzer produces."""
    if not pattern or pattern != pattern.strip() or any(c.isspace() for c in pattern):
        raise ValueError(f"bad glob {pattern!r}: empty or contains whitespace")
    if pattern.count("[") != pattern.count("]"):
        raise ValueError(f"bad glob {pattern!r}: unbalanced [ ]")
    if qualified and pattern != "*":
        schema, dot, table = pattern.partition(".")
        if not dot or not schema or not table or "." in table:
            raise ValueError(
                f"bad glob {pattern!r}: tables are schema.table (e.g. public.customers, "
                "public.*, *.audit_log) or *"
            )
    if not qualified and pattern != pattern.lower():
        # Function names are compared lower-case (the analyzer folds them).
        raise ValueError(f"bad glob {pattern!r}: function names are lower-case")
    return pattern


def _check_rights(values: tuple[str, ...], *, allow_star: bool) -> tuple[str, ...]:
    for v in values:
        if v == "*" and allow_star:
            continue
        if v not in CATEGORIES and v not in KINDS:
            raise ValueError(
                f"unknown statement class {v!r}: use a category "
                f"({', '.join(sorted(CATEGORIES))}) or a statement kind (e.g. select, "
                "insert, update, delete, merge, create_index, drop, truncate)"
            )
    return values


class Approval(_Model):
    approvers: tuple[str, ...] = Field(min_length=1)
    quorum: int = Field(default=1, ge=1, le=20)
    mode: Literal["hold", "refuse"] = "hold"
    timeout: int = 600  # seconds; YAML may say "10m"
    risk: Literal["low", "medium", "high", "critical"] = "medium"

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, v: object) -> int:
        return parse_duration(v)


class Grant(_Model):
    name: str | None = Field(default=None, pattern=_NAME.pattern)
    groups: tuple[str, ...] = Field(min_length=1)
    targets: tuple[str, ...] = ("*",)
    envs: tuple[str, ...] = ()
    allow: tuple[str, ...] = Field(min_length=1)
    tables: tuple[str, ...] = ("*",)

    @field_validator("allow")
    @classmethod
    def _allow(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _check_rights(v, allow_star=True)

    @field_validator("tables")
    @classmethod
    def _tables(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_glob(p, qualified=True) for p in v)


class Match(_Model):
    groups: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    envs: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    functions: tuple[str, ...] = ()
    models: tuple[str, ...] = ()  # declared model names, or "*"; checked in load.py

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _check_rights(v, allow_star=False)

    @field_validator("models")
    @classmethod
    def _models(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            if name != "*" and not _NAME.match(name):
                raise ValueError(f"bad model name {name!r}")
        return v

    @field_validator("tables")
    @classmethod
    def _tables(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_glob(p, qualified=True) for p in v)

    @field_validator("functions")
    @classmethod
    def _functions(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_glob(p, qualified=False) for p in v)


class Rule(_Model):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    # A JSON-ish name so it reads well in `denied by rule "<name>"`.
    name: str = Field(pattern=_NAME.pattern)
    description: str = ""
    match: Match = Match()
    when: CelCondition | None = None
    action: Literal["allow", "deny", "require_approval"]
    message: str | None = None
    hint: str | None = None
    approval: Approval | None = None

    @field_validator("when", mode="before")
    @classmethod
    def _when(cls, v: object) -> CelCondition | None:
        if v is None or isinstance(v, CelCondition):
            return v
        if not isinstance(v, str) or not v.strip():
            raise ValueError("must be a CEL expression (a non-empty string)")
        return compile_condition(v)

    @model_validator(mode="after")
    def _approval(self) -> Rule:
        if self.action == "require_approval" and self.approval is None:
            raise ValueError(
                "approval.approvers: require_approval needs an approval block with approvers"
            )
        if self.action != "require_approval" and self.approval is not None:
            raise ValueError(
                f"approval: only require_approval takes approval (action is {self.action})"
            )
        return self


class GuardrailOverride(_Model):
    guardrail: GuardrailName
    groups: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    envs: tuple[str, ...] = ()
    action: Literal["deny", "require_approval", "off"]
    message: str | None = None
    approval: Approval | None = None
    functions: tuple[str, ...] = ()

    @field_validator("functions")
    @classmethod
    def _functions(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_glob(p, qualified=False) for p in v)

    @model_validator(mode="after")
    def _checks(self) -> GuardrailOverride:
        if self.functions and self.guardrail != "dangerous_functions":
            raise ValueError("functions: only the dangerous_functions guardrail takes functions")
        if self.approval is not None and self.action != "require_approval":
            raise ValueError(
                f"approval: only require_approval takes approval (action is {self.action})"
            )
        return self


class ColumnMask(_Model):
    """One masked column. `spec` holds the mask and its options as the maskers take them."""

    mask: str
    exempt: tuple[str, ...] = ()
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _split(cls, raw: object) -> object:
        # Options sit next to `mask` in the file ({mask: partial, keep_last: 4}).
        if not isinstance(raw, Mapping):
            return raw
        known = {"mask", "exempt"}
        out: dict[str, Any] = {k: v for k, v in raw.items() if k in known}
        out["options"] = {k: v for k, v in raw.items() if k not in known}
        return out

    @model_validator(mode="after")
    def _validate_mask(self) -> ColumnMask:
        spec = self.spec()
        try:
            from dbgov.masking.maskers import MaskSpecError, validate
        except ImportError:  # the masking engine is optional for policy checks
            if self.mask not in MASK_KINDS:
                raise ValueError(f"mask: must be one of {', '.join(MASK_KINDS)}") from None
            return self
        try:
            validate(spec)
        except MaskSpecError as exc:
            name = "mask" if exc.field == "kind" else exc.field
            raise ValueError(f"{name}: {exc.reason}") from None
        return self

    def spec(self) -> dict[str, Any]:
        """The mask as `dbgov.masking.maskers.validate` takes it."""
        return {"kind": self.mask, **self.options}


class Masking(_Model):
    on_unknown_origin: Literal["deny", "mask"] = "deny"
    inference_guards: tuple[str, ...] = ()
    columns: dict[str, ColumnMask] = Field(default_factory=dict)

    @field_validator("columns")
    @classmethod
    def _column_names(cls, v: dict[str, ColumnMask]) -> dict[str, ColumnMask]:
        for name in v:
            parts = name.split(".")
            if len(parts) != 3 or not all(parts):
                raise ValueError(f"column {name!r}: write schema.table.column")
        return v


# --- the model registry (dbgov.models owns what it means) ---------------------------

TABLE_TAGS = ("model_input", "inference_log", "prompt_store", "pii")
TableTag = Literal["model_input", "inference_log", "prompt_store", "pii"]
_QUALIFIED = re.compile(r"^[^.\s*?\[\]()]+\.[^.\s*?\[\]()]+$")
# "public.customers(country, created_at)": the short form of a column-narrowed input.
_SHORT_INPUT = re.compile(r"^\s*([^\s(]+)\s*\(([^)]*)\)\s*$")


def _check_table(name: str) -> str:
    """Model inputs and tags name real tables: exact schema.table, no globs."""
    if not _QUALIFIED.match(name):
        raise ValueError(
            f"bad table {name!r}: write the exact schema.table (e.g. public.customers); "
            "globs are not allowed here"
        )
    return name


class ModelInput(_Model):
    """One table feeding a model; `columns` narrows it (empty: the whole row)."""

    table: str
    columns: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _short(cls, raw: object) -> object:
        # `- public.feature_store` and `- public.customers(country, created_at)`.
        if not isinstance(raw, str):
            return raw
        m = _SHORT_INPUT.match(raw)
        if m is None:
            return {"table": raw.strip()}
        cols = tuple(c.strip() for c in m.group(2).split(","))
        return {"table": m.group(1), "columns": cols}

    @field_validator("table")
    @classmethod
    def _table(cls, v: str) -> str:
        return _check_table(v)

    @field_validator("columns")
    @classmethod
    def _columns(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for c in v:
            if not c or c != c.strip() or any(ch.isspace() for ch in c):
                raise ValueError(f"bad column {c!r}: a column name as PostgreSQL stores it")
        if len(set(v)) != len(v):
            raise ValueError("a column is listed twice")
        return v


class ModelSpec(_Model):
    """A model declared in the registry: its inputs, owners and targets."""

    description: str = ""
    owners: tuple[str, ...] = Field(min_length=1)
    targets: tuple[str, ...] = Field(min_length=1)
    inputs: tuple[ModelInput, ...] = Field(min_length=1)
    large_rows: int | None = Field(default=None, ge=1)

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, v: tuple[ModelInput, ...]) -> tuple[ModelInput, ...]:
        seen = [i.table for i in v]
        dupes = sorted({t for t in seen if seen.count(t) > 1})
        if dupes:
            raise ValueError(f"table {dupes[0]!r} is listed twice; merge its columns")
        return v


class Audit(_Model):
    """What the ledger keeps of statements. Bind parameters of statements that touch
    `secret_params_tables` (schema.table globs) are recorded as keyed hashes, so
    equal values still correlate but the values themselves never enter the ledger."""

    secret_params_tables: tuple[str, ...] = ()


class PolicyFile(_Model):
    version: Literal[1] = 1
    admin_groups: tuple[str, ...] = ()
    grants: tuple[Grant, ...] = ()
    rules: tuple[Rule, ...] = ()
    guardrails: tuple[GuardrailOverride, ...] = ()
    audit: Audit = Audit()
    masking: Masking = Masking()
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    table_tags: dict[str, tuple[TableTag, ...]] = Field(default_factory=dict)
    # Just-in-time grant rules; validated by dbgov.approvals.jit, which owns their meaning.
    jit_grants: list[Any] = Field(default_factory=list)

    @field_validator("models")
    @classmethod
    def _model_names(cls, v: dict[str, ModelSpec]) -> dict[str, ModelSpec]:
        for name in v:
            if not _NAME.match(name):
                raise ValueError(f"bad model name {name!r}: letters, digits and - _ . : @")
        return v

    @field_validator("table_tags")
    @classmethod
    def _tag_tables(cls, v: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for name in v:
            _check_table(name)
        return v
