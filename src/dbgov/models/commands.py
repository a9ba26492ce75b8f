"""`dbgov models list|retrain|report`: the model registry from the command line.

    dbgov models list [--json]
    dbgov models retrain churn-v2 --version 7 [--note TEXT] [--fingerprint] [--json]
    dbgov models report churn-v2 [--from 6 --to 7] [--format html|json] [--out FILE]
                                 [--large-rows N] [--bundle DIR]

`retrain` authenticates the person at the keyboard with a dbgov token (`--token`
or `DBGOV_TOKEN`), verified against the deployment's issuers exactly as
`dbgov approvals` does (its helpers are reused): only the model's owners and the
policy's admin groups may mark. The marker goes through this process's own
journal, which the running sequencer integrates (or this command, when no
dbgov runs).

`list` and `report` read the ledger like `dbgov audit` and `dbgov report soc2`
(no token: whoever can read the data dir can read the ledger); statement texts
are shown as an auditor sees them on the dashboard (literals touching masked
tables hidden), while `--bundle` carries the exact signed events.

Exit codes: 0 done, 1 refused or failed (message on stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from dbgov.layout import Layout, resolve_data_dir

__all__ = ["add_models_commands"]


class _Failed(Exception):
    """Report on stderr and exit 1."""


def _policy(args: argparse.Namespace, *, required: bool) -> tuple[Any, Any]:
    """(config, policy engine) of the deployment; (None, None) when optional and absent."""
    from dbgov.approvals.commands import CommandError, _config
    from dbgov.config import ConfigError

    try:
        config = _config(args)
    except (CommandError, ConfigError) as exc:
        if required:
            raise _Failed(str(exc)) from None
        return None, None
    if config.policy is None:
        if required:
            raise _Failed("this deployment has no policy file, so no models are declared")
        return config, None
    from dbgov.policy import PolicyError, load_policy_file

    try:
        return config, load_policy_file(config.policy, config)
    except PolicyError as exc:
        if required:
            raise _Failed(str(exc)) from None
        print(f"dbgov: warning: policy not loaded: {exc}", file=sys.stderr)
        return config, None


def _run(fn: Any, args: argparse.Namespace) -> int:
    from dbgov.approvals.commands import CommandError
    from dbgov.config import ConfigError
    from dbgov.ledger.receipts import NotCoveredError
    from dbgov.models.fingerprint import FingerprintError
    from dbgov.models.markers import RetrainRefused
    from dbgov.models.report import ReportError

    try:
        result: int = fn(args)
    except (
        _Failed,
        CommandError,
        ConfigError,
        RetrainRefused,
        FingerprintError,
        ReportError,
        NotCoveredError,
        LookupError,
    ) as exc:
        print(f"dbgov: {exc}", file=sys.stderr)
        return 1
    return result


# ---------------------------------------------------------------------------- list


def _list(args: argparse.Namespace) -> int:
    from dbgov.ledger.integrate import integrate_if_idle
    from dbgov.models.markers import markers
    from dbgov.store.sqlite import LedgerStore

    _, engine = _policy(args, required=True)
    layout = Layout(resolve_data_dir(args.data_dir))
    integrate_if_idle(layout)
    store = LedgerStore(layout.ledger_db, readonly=True)
    try:
        out = []
        for model in engine.models:
            marks = markers(store, model.name)
            out.append({**model.as_json(), "retrains": [m.as_json() for m in marks[-5:]]})
    finally:
        store.close()
    if args.json:
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    if not out:
        print("no models are declared in the policy (models:)")
    for m in out:
        inputs = ", ".join(
            i["table"] + (f"({', '.join(i['columns'])})" if "columns" in i else "")
            for i in m["inputs"]
        )
        last = m["retrains"][-1] if m["retrains"] else None
        print(f"{m['name']:<16} on {','.join(m['targets']):<10} owners {','.join(m['owners'])}")
        print(f"  inputs  {inputs}")
        print(
            "  last retrain "
            + (
                f"version {last['version']} at {last['ts'][:19]} by "
                f"{last['user']} (seal {last['seal']})"
                if last
                else "none"
            )
        )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    return _run(_list, args)


# ---------------------------------------------------------------------------- retrain


def _retrain(args: argparse.Namespace) -> int:
    from dbgov.approvals.commands import _authenticate
    from dbgov.models.markers import mark_retrain

    config, engine = _policy(args, required=True)
    model = engine.models.get(args.model)
    if model is None:
        names = ", ".join(m.name for m in engine.models) or "none"
        raise _Failed(f"no model {args.model!r} is declared in the policy (declared: {names})")

    async def main() -> Any:
        identity = await _authenticate(args, config)
        return await mark_retrain(
            config,
            model,
            identity,
            version=args.version,
            note=args.note,
            fingerprint=args.fingerprint,
            admin_groups=engine.admin_groups,
            via="cli",
        )

    marker = asyncio.run(main())
    if args.json:
        print(json.dumps(marker.as_json(), indent=2, ensure_ascii=False))
        return 0
    print(
        f"{model.name} version {marker.version} marked by {marker.user}: ledger event "
        f"#{marker.index}, sealing the {marker.seal} events before it"
    )
    if marker.digest:
        print(f"  input digest {marker.digest}")
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    return _run(_retrain, args)


# ---------------------------------------------------------------------------- report


def _wait_covered(layout: Layout, index: int, timeout_s: float) -> None:
    """Wait for a signed checkpoint covering `index` (the sequencer signs every few s)."""
    from dbgov.ledger.integrate import integrate_if_idle
    from dbgov.store.sqlite import LedgerStore

    deadline = time.monotonic() + timeout_s
    while True:
        integrate_if_idle(layout)
        store = LedgerStore(layout.ledger_db, readonly=True)
        try:
            latest = store.latest_checkpoint()
        finally:
            store.close()
        if latest is not None and latest[0] > index:
            return
        if time.monotonic() > deadline:
            return  # write_evidence says what is missing
        time.sleep(0.2)


def _report(args: argparse.Namespace) -> int:
    from dbgov.ledger.integrate import integrate_if_idle
    from dbgov.models.report import build_report, render_html, write_evidence
    from dbgov.store.sqlite import LedgerStore
    from dbgov.web.redact import Redactor
    from dbgov.web.services import redact_tree

    if args.large_rows is not None and args.large_rows < 1:
        print("dbgov: --large-rows must be at least 1", file=sys.stderr)
        return 2
    config, engine = _policy(args, required=False)
    layout = Layout(resolve_data_dir(args.data_dir))
    if not layout.ledger_db.exists():
        raise _Failed(f"no ledger at {layout.ledger_db}")
    integrate_if_idle(layout)
    declared = engine.models.get(args.model) if engine is not None else None
    store = LedgerStore(layout.ledger_db, readonly=True)
    try:
        report = build_report(
            store,
            args.model,
            from_version=args.from_version,
            to_version=args.to,
            large_rows=args.large_rows,
            declared=declared,
        )
    finally:
        store.close()
    columns = engine.masking_config.columns if engine is not None else None
    if config is not None and config.policy is None:
        columns = {}
    redactor = Redactor.for_groups(frozenset({"auditors"}), columns)
    doc = redact_tree(redactor, report.as_json())
    if args.bundle:
        key_path = (config.ledger.key_file if config is not None else None) or layout.ledger_key
        pub = key_path.with_suffix(".pub")
        key = pub.read_text().strip() if pub.exists() else None
        interval = config.ledger.checkpoint_interval_s if config is not None else 10.0
        _wait_covered(layout, report.evidence[-1], max(30.0, 3 * interval))
        store = LedgerStore(layout.ledger_db, readonly=True)
        try:
            info = write_evidence(store, report, Path(args.bundle), key=key, doc=doc)
        finally:
            store.close()
        print(
            f"evidence: bundle of events [{info['first']}, {info['end']}) against the "
            f"checkpoint of size {info['size']} and {info['receipts']} receipts in "
            f"{args.bundle}; check it with: dbgov audit verify --bundle {args.bundle} "
            "--key <ledger key>",
            file=sys.stderr,
        )
    text = (
        json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
        if args.format == "json"
        else render_html(doc, args.base_url.rstrip("/") if args.base_url else None)
    )
    if args.out in (None, "-"):
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)
        summary = doc["summary"]
        frm = doc["from"]["version"] if doc["from"] else "the start"
        print(
            f"wrote {args.out}: {args.model} {frm} -> {doc['to']['version']}, "
            f"{summary['changes']} change(s), flags {summary['flags'] or 'none'}",
            file=sys.stderr,
        )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    return _run(_report, args)


# ---------------------------------------------------------------------------- parser


def add_models_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """`dbgov models ...`; `sub` is the top-level parser's add_subparsers()."""
    from dbgov.approvals.commands import _auth_parent

    auth = _auth_parent()
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "--config",
        default=None,
        help="config file (default: the running dbgov's <data-dir>/run/config.json)",
    )
    mp = sub.add_parser("models", help="model registry: retrain markers and input reports")
    msub = mp.add_subparsers(dest="models_cmd", required=True)

    ls = msub.add_parser(
        "list", parents=[common, config], help="declared models and their latest retrains"
    )
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)

    rt = msub.add_parser(
        "retrain",
        parents=[common, auth],
        help="mark a retrain: seal the ledger for a model version",
    )
    rt.add_argument("model")
    rt.add_argument("--version", required=True, help="the model version trained, e.g. 7")
    rt.add_argument("--note", default=None, help="free text stored with the marker")
    rt.add_argument(
        "--fingerprint",
        action="store_true",
        help="store an order-independent digest of the input rows",
    )
    rt.add_argument("--json", action="store_true", help="print the marker as JSON")
    rt.set_defaults(func=cmd_retrain)

    rp = msub.add_parser(
        "report", parents=[common, config], help="changes to a model's inputs between two retrains"
    )
    rp.add_argument("model")
    rp.add_argument(
        "--from",
        dest="from_version",
        metavar="VERSION",
        help="earlier version (default: the retrain before --to)",
    )
    rp.add_argument("--to", metavar="VERSION", help="later version (default: the latest)")
    rp.add_argument("--format", choices=["html", "json"], default="html")
    rp.add_argument("--out", default=None, help="file to write (default: stdout)")
    rp.add_argument(
        "--large-rows",
        type=int,
        default=None,
        help="flag changes of at least this many rows (default: the model's large_rows, else 1000)",
    )
    rp.add_argument(
        "--bundle", metavar="DIR", help="also write the evidence: a verifiable bundle and receipts"
    )
    rp.add_argument("--base-url", help="dashboard URL, to link every event to its page")
    rp.set_defaults(func=cmd_report)
