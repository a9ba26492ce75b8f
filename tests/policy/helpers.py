"""Helpers for policy tests: contexts, and deciding SQL as a user would observe it."""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from dbgov.demo.world import TARGETS
from dbgov.gate import Decision, SessionContext
from dbgov.identity.model import Identity
from dbgov.policy import PolicyEngine
from dbgov.policy.commands import add_policy_commands
from dbgov.sql import analyze

ENVS = dict(TARGETS)


def context(
    user: str,
    groups: Iterable[str],
    target: str = "prod",
    *,
    env: str | None = None,
    search_path: tuple[str, ...] = ("public",),
    grants: tuple[tuple[str, str], ...] = (),
    in_transaction: bool = False,
) -> SessionContext:
    ident = Identity(user, frozenset(groups), "token", "test", grants=grants)
    return SessionContext(
        ident, target, env or ENVS.get(target, "production"), search_path, "s1", in_transaction
    )


def observe(engine: PolicyEngine, ctx: SessionContext, sql: str) -> Decision:
    """What a user observes: the connect refusal first, then the statement's decision."""
    connect = engine.may_connect(ctx)
    if not connect.allowed:
        return connect
    return engine.decide(analyze(sql), ctx)


def run_cli(argv: list[str]) -> int:
    """`dbgov policy ...` as cli.py wires it: the commands on a parser with --data-dir."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir")
    ap = argparse.ArgumentParser(prog="dbgov")
    sub = ap.add_subparsers(dest="command", required=True)
    add_policy_commands(sub, common)
    args = ap.parse_args(argv)
    code: int = args.func(args)
    return code
