"""The `dbgov` command. Thin: parse arguments, call services, print results.

Every command takes `--data-dir` (default `./.dbgov`, or `$DBGOV_HOME`).
Exit codes: 0 success, 1 failure the user can fix (bad config, refused),
2 usage errors; `audit verify` documents its own codes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from dbgov.config import ConfigError, config_from_dict, load_config
from dbgov.durations import time_arg
from dbgov.layout import Layout, resolve_data_dir

Handler = Callable[[argparse.Namespace], int]


def _die(message: str, code: int = 1) -> int:
    print(f"dbgov: {message}", file=sys.stderr)
    return code


# ---------------------------------------------------------------------------- up


def cmd_up(args: argparse.Namespace) -> int:
    from dbgov.demo import world
    from dbgov.demo.embedded import EmbeddedError, EmbeddedPostgres, bin_path
    from dbgov.durations import parse_duration
    from dbgov.identity.issuer import LocalIssuer
    from dbgov.proxy.supervisor import Supervisor, SupervisorError

    t0 = time.monotonic()
    layout = Layout(resolve_data_dir(args.data_dir))
    layout.root.mkdir(parents=True, exist_ok=True)
    if args.config:
        return cmd_proxy(args)
    server = EmbeddedPostgres(layout.root, fast=args.fast, max_connections=args.max_connections)
    try:
        info = server.start()
        seeded_in = None if server.is_seeded() else world.seed(server, info)
    except EmbeddedError as exc:
        server.stop()
        return _die(str(exc))
    raw = world.embedded_config(
        layout,
        info,
        listen=args.listen,
        web=args.web_listen,
        workers=args.workers,
        ledger_mode=args.ledger_mode,
    )
    layout.run.mkdir(parents=True, exist_ok=True)
    from dbgov.durable import write_atomic

    write_atomic(layout.effective_config, json.dumps(raw, indent=2).encode())
    try:
        config = config_from_dict(raw, str(layout.effective_config))
    except ConfigError as exc:
        server.stop()
        return _die(str(exc))
    sup = Supervisor(
        config,
        layout.effective_config,
        config.listen.workers,
        state_extra={
            "admin_dsn": info.admin_dsn(),
            "embedded_port": info.port,
            "psql": str(bin_path("psql")),
            "pgbench": str(bin_path("pgbench")),
        },
    )
    try:
        sup.start_sequencer()
        sup.start_workers()
    except SupervisorError as exc:
        sup.stop()
        server.stop()
        return _die(str(exc))
    issuer = LocalIssuer.from_file(
        layout.issuer_key,
        config.identity.local_issuer.issuer,
        config.identity.local_issuer.audience,
    )
    ready_s = time.monotonic() - t0

    def banner() -> None:
        host, _ = config.listen.proxy_addr()
        psql = shutil.which("psql") or str(bin_path("psql"))
        print(
            f"dbgov is up in {ready_s:.1f} s"
            + (f" (demo data loaded in {seeded_in:.1f} s)" if seeded_in else "")
        )
        print(f"  proxy      {host}:{sup.port}   targets: prod (production), staging")
        if sup.web:
            print(f"  dashboard  http://{sup.web}/")
        elif config.listen.web:
            print(f"  dashboard  not running ({config.listen.web} is taken; see above)")
        print(f"  data dir   {layout.root}")
        print("\nConnect as a demo identity (tokens valid 8 h):")
        ttl = parse_duration("8h")
        for user, groups in world.IDENTITIES.items():
            token = issuer.issue(user, groups, ttl)
            print(f"  # {user} ({', '.join(groups)})")
            print(f"  PGPASSWORD='{token}' {psql} \"postgresql://{user}@{host}:{sup.port}/prod\"")
        etl_pw, _ = world.etl_credentials(layout)
        print(
            f"  # etl (service account, SCRAM)\n  PGPASSWORD='{etl_pw}' {psql} "
            f'"postgresql://etl@{host}:{sup.port}/prod"'
        )
        print("\nStop with Ctrl-C.", flush=True)

    import asyncio

    try:
        asyncio.run(sup.serve(on_ready=banner))
    except KeyboardInterrupt:
        pass
    finally:
        sup.stop()
        server.stop()
    return 0


def cmd_proxy(args: argparse.Namespace) -> int:
    from dbgov.proxy.supervisor import Supervisor, SupervisorError

    if not args.config:
        return _die("dbgov proxy needs --config FILE", 2)
    path = Path(args.config)
    try:
        config = load_config(path)
    except ConfigError as exc:
        return _die(str(exc))
    if args.data_dir:
        config = config.model_copy(update={"data_dir": resolve_data_dir(args.data_dir)})
    workers = args.workers if args.workers is not None else config.listen.workers
    sup = Supervisor(config, path.resolve(), workers)
    try:
        sup.start_sequencer()
        sup.start_workers()
    except SupervisorError as exc:
        sup.stop()
        return _die(str(exc))
    import asyncio

    def ready() -> None:
        print(f"dbgov proxy listening on {config.listen.proxy_addr()[0]}:{sup.port}", flush=True)

    try:
        asyncio.run(sup.serve(on_ready=ready))
    except KeyboardInterrupt:
        pass
    finally:
        sup.stop()
    return 0


# ---------------------------------------------------------------------------- tokens


def cmd_token_issue(args: argparse.Namespace) -> int:
    from dbgov.durations import parse_duration
    from dbgov.identity.issuer import LocalIssuer

    layout = Layout(resolve_data_dir(args.data_dir))
    try:
        ttl = parse_duration(args.ttl)
    except ValueError as exc:
        return _die(str(exc), 2)
    issuer = LocalIssuer.from_file(layout.issuer_key, args.issuer, args.audience)
    print(issuer.issue(args.user, args.group or [], ttl))
    return 0


def cmd_service_account_hash(args: argparse.Namespace) -> int:
    """Read a password from stdin, print its SCRAM verifier for the config."""
    import getpass

    from dbgov.identity.scram import make_verifier

    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline()
    password = password.rstrip("\n")
    if not password:
        return _die("empty password", 2)
    print(make_verifier(password, args.iterations))
    return 0


# ---------------------------------------------------------------------------- audit


def _open_store(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from dbgov.ledger.integrate import integrate_if_idle
    from dbgov.store.sqlite import LedgerStore

    layout = Layout(resolve_data_dir(args.data_dir))
    integrate_if_idle(layout)
    return LedgerStore(layout.ledger_db, readonly=True)


def _print_event(row, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    if as_json:
        print(row.body.decode())
        return
    ev = json.loads(row.body)
    bits = [f"#{row.idx}", ev.get("ts", ""), ev.get("type", "")]
    for key in ("user", "target", "session"):
        if ev.get(key):
            bits.append(f"{key}={ev[key]}")
    if ev.get("decision"):
        d = ev["decision"]
        bits.append(f"decision={d.get('verdict')}" + (f"({d['rule']})" if d.get("rule") else ""))
    if ev.get("sql"):
        sql = " ".join(str(ev["sql"]).split())
        bits.append(sql if len(sql) <= 120 else sql[:117] + "...")
    if ev.get("type") == "statement.done":
        bits.append(f"sqlstate={ev.get('sqlstate')} rows={ev.get('rows')}")
    if ev.get("reason") and ev.get("type") != "statement":
        bits.append(f"reason={ev['reason']}")
    print("  ".join(bits))


def cmd_audit_tail(args: argparse.Namespace) -> int:
    store = _open_store(args)
    rows = list(reversed(store.search(limit=args.n, newest_first=True)))
    for r in rows:
        _print_event(r, args.json)
    last = rows[-1].idx if rows else -1
    try:
        while args.follow:
            time.sleep(0.25)
            for r in store.search(after=last, limit=1000):
                _print_event(r, args.json)
                last = r.idx
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    return 0


def cmd_audit_search(args: argparse.Namespace) -> int:
    store = _open_store(args)
    rows = store.search(
        user=args.user,
        target=args.target,
        types=args.type or None,
        since=time_arg(args.since),
        until=time_arg(args.until),
        text=args.text,
        decision=args.decision,
        limit=args.limit,
    )
    for r in rows:
        _print_event(r, args.json)
    return 0


# ---------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir", default=None, help="data directory (default ./.dbgov or $DBGOV_HOME)"
    )
    ap = argparse.ArgumentParser(prog="dbgov", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", parents=[common], help="start the embedded default")
    up.add_argument("--listen", default="127.0.0.1:15432")
    up.add_argument("--web-listen", default="127.0.0.1:8432")
    up.add_argument("--config", default=None, help="run a config file instead of the demo")
    up.add_argument("--workers", type=int, default=0, help="proxy processes (default: cores)")
    up.add_argument("--ledger-mode", choices=["strict", "fsync", "async"], default="strict")
    up.add_argument(
        "--max-connections",
        type=int,
        default=None,
        help="the embedded server's max_connections (default 300)",
    )
    up.add_argument("--fast", action="store_true", help=argparse.SUPPRESS)  # tests: fsync off
    up.set_defaults(func=cmd_up)

    px = sub.add_parser("proxy", parents=[common], help="run in production mode")
    px.add_argument("--config", required=True)
    px.add_argument("--workers", type=int, default=None)
    px.set_defaults(func=cmd_proxy)

    tok = sub.add_parser("token", help="tokens from the local issuer")
    toks = tok.add_subparsers(dest="token_cmd", required=True)
    issue = toks.add_parser("issue", parents=[common], help="print a signed token")
    issue.add_argument("--user", required=True)
    issue.add_argument("--group", action="append")
    issue.add_argument("--ttl", default="8h")
    issue.add_argument("--issuer", default="dbgov-local")
    issue.add_argument("--audience", default="dbgov")
    issue.set_defaults(func=cmd_token_issue)

    sa = sub.add_parser("service-account", help="service account helpers")
    sas = sa.add_subparsers(dest="sa_cmd", required=True)
    sah = sas.add_parser("hash", help="SCRAM verifier of a password read from stdin")
    sah.add_argument("--iterations", type=int, default=4096)
    sah.set_defaults(func=cmd_service_account_hash)

    audit = sub.add_parser("audit", help="read and verify the audit ledger")
    asub = audit.add_subparsers(dest="audit_cmd", required=True)
    tail = asub.add_parser("tail", parents=[common], help="the latest events")
    tail.add_argument("-n", type=int, default=20)
    tail.add_argument("-f", "--follow", action="store_true")
    tail.add_argument("--json", action="store_true")
    tail.set_defaults(func=cmd_audit_tail)
    search = asub.add_parser("search", parents=[common], help="find events")
    search.add_argument("--user")
    search.add_argument("--target")
    search.add_argument("--type", action="append")
    search.add_argument("--decision", choices=["allow", "deny", "approval"])
    search.add_argument("--since", help="ISO time or 15m/2h/1d ago")
    search.add_argument("--until")
    search.add_argument("--text", help="substring of the event")
    search.add_argument("--limit", type=int, default=100)
    search.add_argument("--json", action="store_true")
    search.set_defaults(func=cmd_audit_search)

    from dbgov.approvals.commands import add_access_commands, add_approvals_commands
    from dbgov.ledger.commands import add_audit_commands, add_witness_command
    from dbgov.models.commands import add_models_commands
    from dbgov.policy.commands import add_policy_commands
    from dbgov.report.commands import add_report_commands

    add_audit_commands(asub, common)
    add_witness_command(sub, common)
    add_policy_commands(sub, common)
    add_approvals_commands(sub, common)
    add_access_commands(sub, common)
    add_report_commands(sub, common)
    add_models_commands(sub, common)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=os.environ.get("DBGOV_LOG", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        return _die(str(exc))
    except BrokenPipeError:
        return 0
    return result
