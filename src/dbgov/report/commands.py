"""`dbgov report soc2`: SOC 2 evidence from the ledger, as one HTML file.

    dbgov report soc2 --from 2026-01-01 --to 2026-03-31 --out report.html

Wiring (cli.py): `add_report_commands(sub, common)` after the other groups.
Exit codes: 0 written (the report says itself whether the ledger verified),
1 the ledger could not be read, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

from dbgov.layout import Layout, resolve_data_dir
from dbgov.web.redact import MaskedColumn


def cmd_report_soc2(args: argparse.Namespace) -> int:
    from dbgov.config import ConfigError, load_config
    from dbgov.report.soc2 import build_report, parse_day_or_time, render_html
    from dbgov.store.sqlite import LedgerStore
    from dbgov.web.redact import Redactor
    from dbgov.web.verification import load_ledger_verifier

    try:
        since = parse_day_or_time(args.date_from)
        until = parse_day_or_time(args.date_to, end=True)
    except ValueError as exc:
        print(f"dbgov: {exc}", file=sys.stderr)
        return 2
    layout = Layout(resolve_data_dir(args.data_dir))
    config_path = Path(args.config) if args.config else layout.effective_config
    columns: Mapping[str, MaskedColumn] | None = None
    admin = frozenset({"dba"})
    try:
        config = load_config(config_path) if config_path.exists() else None
    except ConfigError as exc:
        print(f"dbgov: {exc}", file=sys.stderr)
        return 1
    key = layout.ledger_key
    if config is not None:
        key = config.ledger.key_file or key
        if config.policy is None:
            columns = {}
        else:
            try:
                from dbgov.policy import load_policy_file

                engine = load_policy_file(config.policy, config)
                columns = engine.masking_config.columns
                admin = frozenset(engine.admin_groups) or admin
            except Exception as exc:  # unreadable policy: redact every statement
                print(
                    f"dbgov: warning: policy not loaded, all literals redacted: {exc}",
                    file=sys.stderr,
                )
    verifier = load_ledger_verifier(Path(args.key) if args.key else key.with_suffix(".pub"))
    if not layout.ledger_db.exists():
        print(f"dbgov: no ledger at {layout.ledger_db}", file=sys.stderr)
        return 1
    store = LedgerStore(layout.ledger_db, readonly=True)
    try:
        report = build_report(
            store,
            since=since,
            until=until,
            verifier=verifier,
            redactor=Redactor.for_groups(frozenset({"auditors"}), columns),
            admin_groups=admin,
        )
    finally:
        store.close()
    html = render_html(report, args.base_url.rstrip("/") if args.base_url else None)
    if args.out == "-":
        sys.stdout.write(html)
    else:
        Path(args.out).write_text(html)
        ok = "verified" if report.verification.get("ok") else "NOT verified"
        print(
            f"wrote {args.out}: SOC 2 evidence for {report.since or 'the start'} to "
            f"{report.until or 'now'}, ledger {ok}",
            file=sys.stderr,
        )
    return 0


def add_report_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add `report soc2` to the `dbgov` parser (`sub` from `add_subparsers`)."""
    report = sub.add_parser("report", help="evidence reports from the ledger")
    rsub = report.add_subparsers(dest="report_cmd", required=True)
    soc2 = rsub.add_parser("soc2", parents=[common], help="SOC 2 evidence as one HTML file")
    soc2.add_argument("--from", dest="date_from", help="YYYY-MM-DD or ISO time (inclusive)")
    soc2.add_argument("--to", dest="date_to", help="YYYY-MM-DD (inclusive) or ISO time")
    soc2.add_argument("--out", default="soc2-report.html", help="file to write, or - for stdout")
    soc2.add_argument("--config", help="config file (default: the running dbgov's)")
    soc2.add_argument("--key", help="ledger public key (default: keys/ledger.pub)")
    soc2.add_argument("--base-url", help="dashboard URL, to link every event to its page")
    soc2.set_defaults(func=cmd_report_soc2)
