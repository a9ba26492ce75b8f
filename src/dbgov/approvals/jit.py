"""Just-in-time grants: who may ask for which extra group, where, for how long.

The policy file's `jit_grants` section (handed over raw by the policy loader, or
read here from a YAML file while the loader does not know the key yet):

    jit_grants:
      - group: writers          # the group the grant adds to the identity
        targets: [prod]         # where it applies ("*" = every target)
        requesters: [ml-engineers]  # who may ask (token groups, any of)
        approvers: [dba]        # who decides (token groups, any of)
        quorum: 1               # distinct approvers needed
        max_duration: 4h        # longest window one request may ask for

A request is checked against these entries when it is made and falls under the
first entry, in file order, whose group, target, requesters and max_duration fit
(so "up to 1h with one approver, up to 8h with two" is two entries). Its approvers
and quorum are copied into the request then: a later policy change never changes
who may decide a request already open. What the extra group allows is the
policy's business: a grant only adds the group, and the engine reports which
grants a decision relied on (`Decision.grants_used`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dbgov.durations import parse_duration
from dbgov.identity import Identity


class JitError(Exception):
    """A bad jit_grants section, phrased as `source: jit_grants[0].key: why`."""


class AccessRefused(Exception):
    """A grant request that no jit_grants entry allows; the message says why."""


class JitGrantRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    group: str = Field(min_length=1)
    targets: tuple[str, ...] = ("*",)
    requesters: tuple[str, ...] = Field(min_length=1)
    approvers: tuple[str, ...] = Field(min_length=1)
    quorum: int = Field(default=1, ge=1, le=20)
    max_duration: int = 4 * 3600

    @field_validator("max_duration", mode="before")
    @classmethod
    def _duration(cls, v: object) -> int:
        return parse_duration(v)

    def applies(self, group: str, target: str) -> bool:
        return self.group == group and ("*" in self.targets or target in self.targets)


class JitPolicy:
    """The checked jit_grants entries; `rule_for` picks the one a request falls under."""

    def __init__(self, rules: Sequence[JitGrantRule] = ()) -> None:
        self.rules = tuple(rules)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def rule_for(
        self, identity: Identity, group: str, target: str, duration_s: int
    ) -> JitGrantRule:
        """The entry allowing `identity` to ask for `group` on `target` for that long.

        Requester membership is judged on the token's groups only: a grant MUST NOT
        let its holder ask for further grants.
        """
        groups = identity.groups - {g for g, _ in identity.grants}
        if group in groups:
            raise AccessRefused(f"{identity.user} is already in group {group}")
        candidates = [r for r in self.rules if r.applies(group, target)]
        if not candidates:
            raise AccessRefused(f"no jit_grants entry offers group {group} on target {target}")
        allowed = [r for r in candidates if groups & set(r.requesters)]
        if not allowed:
            who = ", ".join(sorted({g for r in candidates for g in r.requesters}))
            raise AccessRefused(
                f"group {group} on {target} may only be requested by members of {who}"
            )
        fitting = [r for r in allowed if duration_s <= r.max_duration]
        if not fitting:
            longest = max(r.max_duration for r in allowed)
            raise AccessRefused(
                f"group {group} on {target} may be granted for at most {_fmt(longest)}"
            )
        return fitting[0]


def _fmt(seconds: int) -> str:
    from dbgov.approvals.model import format_duration

    return format_duration(seconds)


def _loc(loc: tuple[int | str, ...]) -> str:
    out = "jit_grants"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def parse_jit_grants(raw: object, source: str = "<policy>") -> JitPolicy:
    """Validate the raw `jit_grants` list; every problem is reported, one per line."""
    if raw is None:
        return JitPolicy()
    if not isinstance(raw, list):
        raise JitError(f"{source}: jit_grants: expected a list of entries")
    rules: list[JitGrantRule] = []
    problems: list[str] = []
    for i, entry in enumerate(raw):
        try:
            rules.append(JitGrantRule.model_validate(entry))
        except ValidationError as exc:
            for err in exc.errors():
                msg = str(err["msg"]).removeprefix("Value error, ")
                problems.append(f"{source}: {_loc((i, *err['loc']))}: {msg}")
    if problems:
        raise JitError("\n".join(problems))
    return JitPolicy(rules)


def load_jit_file(path: Path) -> JitPolicy:
    """The `jit_grants` section of a policy file (or a file holding just the list)."""
    source = str(path)
    try:
        raw: Any = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise JitError(f"{source}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise JitError(f"{source}: not valid YAML: {exc}") from None
    if isinstance(raw, dict):
        raw = raw.get("jit_grants")
    return parse_jit_grants(raw, source)
