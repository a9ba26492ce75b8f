"""Loading a policy file, with errors that name the file, the rule and the field.

    policy.yaml: rules[2] "bob-updates": when: CEL syntax error: ...
    policy.yaml: grants[0] "analysts-read": targets: unknown target 'prd' (known: prod, staging)

Everything that can be checked before the first statement is checked here:
the shape (model.py), CEL conditions (compiled and tried on a sample context),
globs, duplicate rule names, approvals nobody could give, and — when the proxy
config is known — that every target and env named exists. Problems are
reported together, one per line (shape errors first; the checks across items
run once the shape is right), so an operator fixes a file in few passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from dbgov.policy.engine import PolicyEngine
from dbgov.policy.model import PolicyError, PolicyFile

if TYPE_CHECKING:
    from dbgov.config import Config

__all__ = ["PolicyError", "load_policy_file", "load_policy_text", "parse_policy"]

_LISTS = ("rules", "grants", "guardrails")


def load_policy_file(
    path: Path, config: Config | None = None, *, targets: Mapping[str, str] | None = None
) -> PolicyEngine:
    """Load and check a policy file; targets (name -> env) come from `config` if given."""
    source = str(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise PolicyError(f"{source}: cannot read: {exc.strerror or exc}") from None
    if config is not None and targets is None:
        targets = {t.name: t.env for t in config.targets}
    return load_policy_text(text, source, targets=targets)


def load_policy_text(
    text: str, source: str = "<policy>", *, targets: Mapping[str, str] | None = None
) -> PolicyEngine:
    return PolicyEngine(parse_policy(text, source, targets=targets), source)


def parse_policy(
    text: str, source: str = "<policy>", *, targets: Mapping[str, str] | None = None
) -> PolicyFile:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or exc
        raise PolicyError(f"{source}: not valid YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise PolicyError(
            f"{source}: (top level): expected a mapping (version, grants, rules, "
            "guardrails, masking, ...)"
        )
    try:
        policy = PolicyFile.model_validate(raw)
    except ValidationError as exc:
        raise PolicyError(_format_errors(source, raw, exc)) from None
    problems = _semantic_problems(policy, targets)
    if problems:
        raise PolicyError("\n".join(f"{source}: {p}" for p in problems))
    return policy


# ---------------------------------------------------------------------------
# Error messages


def _item_label(raw: Mapping[str, Any], section: str, index: int) -> str:
    """`rules[2] "bob-updates"`: the index always, the name when the item has one."""
    label = f"{section}[{index}]"
    items = raw.get(section)
    if isinstance(items, list) and 0 <= index < len(items) and isinstance(items[index], dict):
        key = "guardrail" if section == "guardrails" else "name"
        name = items[index].get(key)
        if isinstance(name, str) and name:
            label += f' "{name}"'
    return label


def _path(parts: tuple[int | str, ...]) -> str:
    out = ""
    for part in parts:
        # Indexes, and keys with dots (a column such as public.customers.email).
        if isinstance(part, int) or (out and "." in part):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _message(err: Mapping[str, Any]) -> str:
    """Pydantic's wording, rephrased where it speaks Python ("Tuple should have...")."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required"
    if kind == "too_short":
        return "must not be empty"
    if kind == "literal_error":
        return f"must be {ctx.get('expected')}, got {err.get('input')!r}"
    return str(err["msg"]).removeprefix("Value error, ")


def _format_errors(source: str, raw: Mapping[str, Any], exc: ValidationError) -> str:
    lines: list[str] = []
    for err in exc.errors():
        loc = tuple(
            p
            for p in err["loc"]
            if not (isinstance(p, str) and (p.startswith("function-") or "[" in p))
        )
        msg = _message(err)
        if len(loc) >= 2 and loc[0] in _LISTS and isinstance(loc[1], int):
            head = _item_label(raw, str(loc[0]), loc[1])
            rest = _path(loc[2:])
        else:
            head, rest = _path(loc) or "(top level)", ""
        lines.append(f"{source}: {head}: {rest}: {msg}" if rest else f"{source}: {head}: {msg}")
    return "\n".join(dict.fromkeys(lines))


# ---------------------------------------------------------------------------
# Checks across items, and against the proxy's targets


def _semantic_problems(policy: PolicyFile, targets: Mapping[str, str] | None) -> list[str]:
    problems: list[str] = []
    seen: dict[str, int] = {}
    for i, rule in enumerate(policy.rules):
        if rule.name in seen:
            problems.append(
                f'rules[{i}] "{rule.name}": name: duplicate rule name (also '
                f"rules[{seen[rule.name]}])"
            )
        else:
            seen[rule.name] = i
    reserved = {"fail-closed", "not-granted", "no-access"}
    for i, rule in enumerate(policy.rules):
        if rule.name in reserved:
            problems.append(
                f'rules[{i}] "{rule.name}": name: reserved for the engine\'s own decisions'
            )
    grant_names: dict[str, int] = {}
    for i, g in enumerate(policy.grants):
        if g.name is None:
            continue
        if g.name in grant_names:
            problems.append(
                f'grants[{i}] "{g.name}": name: duplicate grant name (also '
                f"grants[{grant_names[g.name]}])"
            )
        else:
            grant_names[g.name] = i
    for i, ov in enumerate(policy.guardrails):
        if ov.action == "require_approval" and ov.approval is None and not policy.admin_groups:
            problems.append(
                f'guardrails[{i}] "{ov.guardrail}": approval.approvers: '
                "require_approval needs approvers (there are no admin_groups to "
                "default to)"
            )
    declared = sorted(policy.models)
    for i, rule in enumerate(policy.rules):
        for name in rule.match.models:
            if name != "*" and name not in policy.models:
                problems.append(
                    f'rules[{i}] "{rule.name}": match.models: unknown model {name!r} '
                    f"(declared: {', '.join(declared) or 'none'})"
                )
    if policy.jit_grants:
        from dbgov.approvals.jit import JitError, parse_jit_grants

        try:
            parse_jit_grants(policy.jit_grants, "jit_grants")
        except JitError as exc:
            problems.extend(line.removeprefix("jit_grants: ") for line in str(exc).splitlines())
    if targets is not None:
        problems.extend(_target_problems(policy, targets))
    return problems


def _target_problems(policy: PolicyFile, targets: Mapping[str, str]) -> list[str]:
    names = set(targets)
    envs = set(targets.values())
    out: list[str] = []

    def check(label: str, field: str, values: tuple[str, ...], known: set[str], what: str) -> None:
        for v in values:
            if v != "*" and v not in known:
                out.append(
                    f"{label}: {field}: unknown {what} {v!r} (known: {', '.join(sorted(known))})"
                )

    for i, g in enumerate(policy.grants):
        label = f'grants[{i}] "{g.name}"' if g.name else f"grants[{i}]"
        check(label, "targets", g.targets, names, "target")
        check(label, "envs", g.envs, envs, "env")
    for i, r in enumerate(policy.rules):
        label = f'rules[{i}] "{r.name}"'
        check(label, "match.targets", r.match.targets, names, "target")
        check(label, "match.envs", r.match.envs, envs, "env")
    for i, ov in enumerate(policy.guardrails):
        label = f'guardrails[{i}] "{ov.guardrail}"'
        check(label, "targets", ov.targets, names, "target")
        check(label, "envs", ov.envs, envs, "env")
    for name, model in policy.models.items():
        check(f"models.{name}", "targets", model.targets, names, "target")
    return out
