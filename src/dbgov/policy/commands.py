"""`dbgov policy check` and `dbgov policy explain`: the policy without a database.

    dbgov policy check [FILE] [--config F]
    dbgov policy explain --user U [--group G]... --target T [--env E]
                         [--policy FILE] [--config F] [--search-path a,b] [--json] "SQL"

Which policy: FILE / --policy, else the one --config names, else the demo
policy. Targets named in the policy are checked against --config's targets, or
the demo's (prod, staging) for the demo policy. Exit codes: check 0 valid, 1
invalid; explain 0 whatever the verdict (it reports, it does not enforce), 1 when
the policy is invalid, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# The handlers import the engine (pydantic, CEL, pglast) when they run, so that
# building the CLI parser stays cheap for every other command.


def add_policy_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    pol = sub.add_parser("policy", help="check a policy file, explain decisions")
    psub = pol.add_subparsers(dest="policy_cmd", required=True)

    check = psub.add_parser("check", parents=[common], help="validate a policy file")
    check.add_argument("file", nargs="?", help="policy file (default: --config's, or the demo's)")
    check.add_argument("--config", help="proxy config: its policy and targets")
    check.set_defaults(func=cmd_policy_check)

    ex = psub.add_parser(
        "explain", parents=[common], help="show how the policy decides SQL, without a database"
    )
    ex.add_argument("sql", help="one or more SQL statements")
    ex.add_argument("--user", required=True)
    ex.add_argument("--group", action="append", default=[], help="repeat for several groups")
    ex.add_argument("--target", required=True)
    ex.add_argument("--env", help="target env (default: from --config or the demo)")
    ex.add_argument("--policy", help="policy file (default: --config's, or the demo's)")
    ex.add_argument("--config", help="proxy config: its policy and targets")
    ex.add_argument("--search-path", default="public", help="comma-separated (default public)")
    ex.add_argument("--json", action="store_true", help="one JSON object per statement")
    ex.set_defaults(func=cmd_policy_explain)


class _Usage(Exception):
    pass


def _select(file: str | None, config_path: str | None) -> tuple[Path, dict[str, str] | None]:
    """The policy file and the targets (name -> env) to check it against."""
    if config_path:
        from dbgov.config import load_config

        config = load_config(Path(config_path))  # ConfigError is the CLI's to report
        targets = {t.name: t.env for t in config.targets}
        if file:
            return Path(file), targets
        if config.policy is None:
            raise _Usage(f"{config_path}: the config names no policy file")
        return config.policy, targets
    from dbgov.demo import world

    if file:
        path = Path(file)
        demo = path.resolve() == world.demo_policy_path().resolve()
        return path, (dict(world.TARGETS) if demo else None)
    return world.demo_policy_path(), dict(world.TARGETS)


def _load(file: str | None, config: str | None) -> tuple[Path, dict[str, str] | None, Any] | int:
    """The policy engine with where it came from, or the exit code of the failure."""
    from dbgov.policy.load import PolicyError, load_policy_file

    try:
        path, targets = _select(file, config)
        return path, targets, load_policy_file(path, targets=targets)
    except _Usage as exc:
        print(f"dbgov: {exc}", file=sys.stderr)
        return 2
    except PolicyError as exc:
        print(str(exc), file=sys.stderr)
        return 1


def cmd_policy_check(args: argparse.Namespace) -> int:
    loaded = _load(args.file, args.config)
    if isinstance(loaded, int):
        return loaded
    path, targets, engine = loaded
    p = engine.policy
    print(
        f"{path}: OK ({len(p.grants)} grants, {len(p.rules)} rules, "
        f"{len(p.guardrails)} guardrail overrides, {len(p.masking.columns)} masked columns)"
        + ("" if targets is not None else "; targets not checked (no --config)")
    )
    return 0


def cmd_policy_explain(args: argparse.Namespace) -> int:
    from dbgov.policy.explain import explain, render

    loaded = _load(args.policy, args.config)
    if isinstance(loaded, int):
        return loaded
    path, targets, engine = loaded
    env = args.env
    if env is None:
        if targets is not None and args.target not in targets:
            print(
                f"dbgov: unknown target {args.target!r} (known: {', '.join(sorted(targets))})",
                file=sys.stderr,
            )
            return 2
        # Without a known env, assume production: the strictest guardrails apply.
        env = targets[args.target] if targets is not None else "production"
    search_path = tuple(s.strip() for s in args.search_path.split(",") if s.strip())
    lines = explain(
        engine, args.sql, args.user, tuple(args.group), args.target, env, search_path or ("public",)
    )
    if args.json:
        for line in lines:
            print(json.dumps(line.as_dict()))
    else:
        print(
            f"policy {path}; {args.user} ({', '.join(args.group) or 'no groups'}) on "
            f"{args.target} ({env})"
        )
        print(render(lines))
    return 0
