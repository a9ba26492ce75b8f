"""`dbgov approvals list|show|approve|deny` and `dbgov access request|list`.

Every command authenticates the person at the keyboard with a dbgov token
(`--token` or `DBGOV_TOKEN`), verified against the issuers of the deployment's
effective config (`<data_dir>/run/config.json`, written by `dbgov up`, or
`--config F`): approver membership comes from that verified token, never from a
flag. Changes are written to the ledger through this process's own journal,
which the running sequencer integrates (or the next `dbgov audit` run folds in).

Exit codes: 0 done, 1 refused or failed (message on stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dbgov.approvals.jit import JitError, JitPolicy, load_jit_file
from dbgov.approvals.model import GRANT, PENDING, STATEMENT, Request, format_duration
from dbgov.approvals.service import (
    ApprovalRefused,
    Approvals,
    AuditSink,
    AuditUnavailable,
    describe_wait,
)
from dbgov.config import Config, ConfigError, config_from_dict, load_config
from dbgov.identity import AuthError, Identity
from dbgov.layout import Layout, resolve_data_dir


class CommandError(Exception):
    """A problem to report on stderr with exit code 1."""


# ---------------------------------------------------------------------------- plumbing


def _config(args: argparse.Namespace) -> Config:
    if args.config:
        config = load_config(Path(args.config))
        if args.data_dir:
            config = config.model_copy(update={"data_dir": resolve_data_dir(args.data_dir)})
        return config
    layout = Layout(resolve_data_dir(args.data_dir))
    path = layout.effective_config
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise CommandError(
            f"no dbgov config at {path}: start dbgov (dbgov up) with this data "
            "dir, or pass --config FILE"
        ) from None
    except (OSError, ValueError) as exc:
        raise CommandError(f"{path}: cannot read: {exc}") from None
    return config_from_dict(raw, str(path))


async def _authenticate(args: argparse.Namespace, config: Config) -> Identity:
    import jwt

    from dbgov.proxy.worker import build_verifier

    token = args.token or os.environ.get("DBGOV_TOKEN")
    if not token:
        raise CommandError(
            "a dbgov token is required: pass --token or set DBGOV_TOKEN "
            "(dbgov token issue --user U --group G)"
        )
    try:
        user = jwt.decode(token, options={"verify_signature": False}).get("sub")
    except jwt.PyJWTError:
        raise CommandError("token refused: it is not a well-formed JWT") from None
    if not isinstance(user, str) or not user:
        raise CommandError("token refused: it names no user (sub)")
    try:
        return await build_verifier(config).verify(token, user)
    except AuthError as exc:
        raise CommandError(exc.message) from None


def _jit(config: Config) -> JitPolicy:
    # Until the policy loader hands over `jit_grants`, read it from the policy file.
    if config.policy is None:
        return JitPolicy()
    try:
        return load_jit_file(config.policy)
    except JitError as exc:
        raise CommandError(str(exc)) from None


@contextmanager
def _service(config: Config, *, writes: bool) -> Iterator[Approvals]:
    """The approvals service; with `writes`, over a CLI journal flushed before exit."""
    from dbgov.ledger.journal import Journal
    from dbgov.proxy.audit import Audit

    layout = Layout(config.data_dir)
    journal = Journal(layout.journal, f"{os.getpid()}-cli", "strict") if writes else None
    audit: AuditSink = Audit(journal) if journal is not None else _ReadOnlyAudit()
    svc = Approvals.open(config, audit, jit=_jit(config) if writes else None)
    try:
        yield svc
    finally:
        svc.close()
        if journal is not None:
            journal.flush_sync()
            journal.close()


class _ReadOnlyAudit:
    """Reading commands write nothing; any attempt is a bug, refused loudly."""

    def write_ahead(self, type_: str, event_id: str, **fields: Any) -> OSError | None:
        raise AuditUnavailable(f"read-only command tried to write {type_}")


def _run(
    args: argparse.Namespace, action: Callable[[Approvals, Identity], int], *, writes: bool
) -> int:
    async def main() -> int:
        config = _config(args)
        identity = await _authenticate(args, config)
        with _service(config, writes=writes) as svc:
            return action(svc, identity)

    try:
        return asyncio.run(main())
    except (CommandError, ApprovalRefused, AuditUnavailable, ConfigError) as exc:
        print(f"dbgov: {exc}", file=sys.stderr)
        return 1


# ---------------------------------------------------------------------------- formatting


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(ts: float) -> str:
    delta = time.time() - ts
    return f"in {format_duration(-delta)}" if delta < 0 else f"{format_duration(delta)} ago"


def _label(req: Request) -> str:
    return f"{'access request' if req.kind == GRANT else 'approval'} #{req.id}"


def _subject(req: Request) -> str:
    if req.kind == GRANT:
        return (
            f"group {req.grant_group} for {format_duration(req.grant_seconds or 0)}: {req.reason}"
        )
    sql = " ".join((req.sql or "").split())
    return sql if len(sql) <= 80 else sql[:77] + "..."


def _as_json(svc: Approvals, req: Request) -> dict[str, Any]:
    out = asdict(req)
    out["state"] = svc.effective_state(req)
    out["votes"] = [asdict(v) for v in svc.votes(req.id)]
    return out


# ---------------------------------------------------------------------------- approvals


def cmd_list(args: argparse.Namespace) -> int:
    def action(svc: Approvals, me: Identity) -> int:
        states = None if args.all else (PENDING,)
        rows = [
            r
            for r in svc.requests(states=states, limit=args.limit)
            if svc.visible_to(me, r) and (args.all or svc.effective_state(r) == PENDING)
        ]
        if args.json:
            print(json.dumps([_as_json(svc, r) for r in rows], indent=2))
            return 0
        if not rows:
            print(
                "no pending requests you made or may decide"
                if not args.all
                else "no requests you made or may decide"
            )
            return 0
        for r in rows:
            ayes = sum(v.verdict == "approve" for v in svc.votes(r.id))
            print(
                f"#{r.id:<5} {svc.effective_state(r):<10} {r.kind:<9} {r.requester:<10} "
                f"{r.target:<8} risk {r.risk:<8} {ayes}/{r.quorum} of {','.join(r.approvers):<8}"
                f" {_ago(r.created_at):<10} {_subject(r)}"
            )
        return 0

    return _run(args, action, writes=False)


def cmd_show(args: argparse.Namespace) -> int:
    def action(svc: Approvals, me: Identity) -> int:
        r = svc.get(args.id)
        if r is None or not svc.visible_to(me, r):
            raise CommandError(f"request #{args.id} does not exist or is not visible to {me.user}")
        if args.json:
            print(json.dumps(_as_json(svc, r), indent=2))
            return 0
        lines = [
            f"{_label(r)}: {svc.effective_state(r)}",
            f"  requester   {r.requester} ({', '.join(r.requester_groups) or 'no groups'})",
            f"  target      {r.target}",
        ]
        if r.kind == STATEMENT:
            lines += [
                f"  rule        {r.rule}",
                f"  why         {r.reason}",
                f"  mode        {r.mode}",
                f"  tables      {', '.join(r.tables) or '-'}",
                f"  fingerprint {r.fingerprint}",
            ]
        else:
            lines += [
                f"  group       {r.grant_group} for {format_duration(r.grant_seconds or 0)}",
                f"  why         {r.reason}",
            ]
        lines += [
            f"  risk        {r.risk}",
            f"  approvers   {describe_wait(r)}",
            f"  requested   {_when(r.created_at)}",
            f"  deadline    {_when(r.expires_at)}",
        ]
        if r.decided_at is not None:
            lines.append(
                f"  decided     {_when(r.decided_at)}"
                + (f" by {r.decided_by}" if r.decided_by else "")
            )
        if r.valid_until is not None:
            lines.append(f"  valid until {_when(r.valid_until)}")
        if r.consumed_at is not None:
            lines.append(f"  used        {_when(r.consumed_at)} in session {r.consumed_session}")
        for v in svc.votes(r.id):
            lines.append(
                f"  vote        {v.verdict} by {v.voter} at {_when(v.at)}"
                + (f': "{v.reason}"' if v.reason else "")
            )
        if r.sql:
            lines += ["", r.sql]
        if r.params:
            lines.append(f"  parameters  {json.dumps(list(r.params))}")
        print("\n".join(lines))
        return 0

    return _run(args, action, writes=False)


def _vote(args: argparse.Namespace, approve: bool) -> int:
    def action(svc: Approvals, me: Identity) -> int:
        r = svc.vote(args.id, me, approve=approve, reason=args.reason)
        ayes = sum(v.verdict == "approve" for v in svc.votes(r.id))
        if r.state == PENDING:
            print(f"{_label(r)}: vote recorded ({ayes} of {r.quorum} approvals)")
        elif r.kind == GRANT and r.state == "approved":
            g = svc.grant(r.id)
            until = _when(g.ends_at) if g else "?"
            print(
                f"{_label(r)}: approved; {r.requester} has group {r.grant_group} on "
                f"{r.target} until {until} (grant {r.id})"
            )
        else:
            print(f"{_label(r)}: {r.state.replace('_', ' ')} by {me.user}")
        return 0

    return _run(args, action, writes=True)


def cmd_approve(args: argparse.Namespace) -> int:
    return _vote(args, True)


def cmd_deny(args: argparse.Namespace) -> int:
    return _vote(args, False)


# ---------------------------------------------------------------------------- access


def cmd_access_request(args: argparse.Namespace) -> int:
    from dbgov.durations import parse_duration

    try:
        seconds = parse_duration(args.duration)
    except ValueError as exc:
        print(f"dbgov: --for: {exc}", file=sys.stderr)
        return 2

    def action(svc: Approvals, me: Identity) -> int:
        r = svc.request_grant(me, args.target, args.group, seconds, args.reason)
        print(
            f"access request #{r.id}: group {args.group} on {args.target} for "
            f"{format_duration(seconds)}; waiting for {describe_wait(r)} "
            f"(until {_when(r.expires_at)})"
        )
        return 0

    return _run(args, action, writes=True)


def cmd_access_list(args: argparse.Namespace) -> int:
    def action(svc: Approvals, me: Identity) -> int:
        now = time.time()
        grants = svc.grants(user=me.user, active=not args.all)
        asked = [
            r
            for r in svc.requests(states=None if args.all else (PENDING,), kind=GRANT)
            if r.requester == me.user
        ]
        if args.json:
            print(
                json.dumps(
                    {
                        "grants": [asdict(g) for g in grants],
                        "requests": [_as_json(svc, r) for r in asked],
                    },
                    indent=2,
                )
            )
            return 0
        if not grants and not asked:
            print(f"{me.user} has no active grants and no pending access requests")
        for g in grants:
            status = "active" if g.state == "active" and g.ends_at > now else "ended"
            print(
                f"grant #{g.id:<5} {status:<7} group {g.group} on {g.target} until "
                f"{_when(g.ends_at)} ({_ago(g.ends_at)})"
            )
        for r in asked:
            print(f"request #{r.id:<3} {svc.effective_state(r):<9} {_subject(r)}")
        return 0

    return _run(args, action, writes=False)


# ---------------------------------------------------------------------------- parsers


def _auth_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--token", default=None, help="your dbgov token (default: $DBGOV_TOKEN)")
    p.add_argument(
        "--config",
        default=None,
        help="config file (default: the running dbgov's <data-dir>/run/config.json)",
    )
    return p


def add_approvals_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """`dbgov approvals ...`; `sub` is the top-level parser's add_subparsers()."""
    auth = _auth_parent()
    ap = sub.add_parser("approvals", help="list and decide approval requests")
    asub = ap.add_subparsers(dest="approvals_cmd", required=True)
    ls = asub.add_parser(
        "list", parents=[common, auth], help="pending requests you made or may decide"
    )
    ls.add_argument("--all", action="store_true", help="include decided requests")
    ls.add_argument("--limit", type=int, default=100)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
    show = asub.add_parser("show", parents=[common, auth], help="one request and its votes")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)
    approve = asub.add_parser("approve", parents=[common, auth], help="approve a request")
    approve.add_argument("id", type=int)
    approve.add_argument("--reason", default=None)
    approve.set_defaults(func=cmd_approve)
    deny = asub.add_parser("deny", parents=[common, auth], help="deny a request")
    deny.add_argument("id", type=int)
    deny.add_argument("--reason", required=True)
    deny.set_defaults(func=cmd_deny)


def add_access_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """`dbgov access ...`: just-in-time grants."""
    auth = _auth_parent()
    ac = sub.add_parser("access", help="just-in-time access grants")
    asub = ac.add_subparsers(dest="access_cmd", required=True)
    req = asub.add_parser(
        "request", parents=[common, auth], help="ask for an extra group on a target for a while"
    )
    req.add_argument("--target", required=True)
    req.add_argument("--group", required=True)
    req.add_argument("--for", dest="duration", required=True, help="e.g. 30m, 1h, 4h")
    req.add_argument("--reason", required=True)
    req.set_defaults(func=cmd_access_request)
    ls = asub.add_parser("list", parents=[common, auth], help="your grants and access requests")
    ls.add_argument("--all", action="store_true", help="include ended grants and old requests")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_access_list)
