"""CLI glue for the ledger: `dbgov audit prove|verify-receipt|verify|export`, `dbgov witness`.

Thin, like ``cli.py``: parse, call ``receipts``/``verify``/``export``/``bundle``/
``witness``, print. Each handler takes the argparse Namespace and returns the
exit code. Commands that read a data dir first fold leftover journals into the
ledger (``integrate.integrate_if_idle``); ``verify-receipt`` and
``verify --bundle`` need no data dir at all.

Exit codes: 0 success; 1 a failure the user can act on (no such event, no
checkpoint covers it yet, a receipt that does not verify); 2 usage errors
(a bad key or file); ``audit verify`` uses ``verify.ExitCode`` (10 modified,
11 deleted, 12 reordered, 13 truncated, 14 bad checkpoint signature,
15 rollback/fork, 16 store unreadable).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from dbgov.durations import time_arg
from dbgov.layout import Layout, resolve_data_dir
from dbgov.ledger.integrate import integrate_if_idle
from dbgov.ledger.keys import load_verifier
from dbgov.ledger.note import Verifier
from dbgov.store.sqlite import LedgerStore

__all__ = [
    "add_audit_commands",
    "add_witness_command",
    "cmd_audit_export",
    "cmd_audit_prove",
    "cmd_audit_verify",
    "cmd_audit_verify_receipt",
    "cmd_witness",
    "integrate_if_idle",
]


def _die(message: str, code: int = 1) -> int:
    print(f"dbgov: {message}", file=sys.stderr)
    return code


def _layout(args: argparse.Namespace) -> Layout:
    return Layout(resolve_data_dir(args.data_dir))


@contextlib.contextmanager
def _store(layout: Layout) -> Iterator[LedgerStore]:
    integrate_if_idle(layout)
    store = LedgerStore(layout.ledger_db, readonly=True)
    try:
        yield store
    finally:
        store.close()


def _verifier(text: str | None, layout: Layout | None) -> Verifier:
    """``--key`` (a verifier string or a file holding one), else the data dir's ledger.pub."""
    if text is None:
        if layout is None:
            raise ValueError("--key is required: the ledger's verifier key or a file holding it")
        if not layout.ledger_pub.exists():
            raise ValueError(f"no --key given and no {layout.ledger_pub}")
        text = str(layout.ledger_pub)
    try:
        return load_verifier(text)
    except (OSError, ValueError) as exc:
        raise ValueError(f"bad --key: {exc}") from None


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[IO[bytes]]:
    if path is None or path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with open(path, "wb") as f:
        yield f


# ---------------------------------------------------------------------------- prove


def cmd_audit_prove(args: argparse.Namespace) -> int:
    from dbgov.ledger.receipts import NotCoveredError, build_receipt, find_event

    layout = _layout(args)
    if not layout.ledger_db.exists():
        return _die(f"no ledger in {layout.root}")
    key = layout.ledger_pub.read_text().strip() if layout.ledger_pub.exists() else None
    with _store(layout) as store:
        row = find_event(store, args.event)
        if row is None:
            return _die(f"no event {args.event!r} in the ledger (give an index or an event id)")
        try:
            receipt = build_receipt(store, row, key)
        except NotCoveredError as exc:
            return _die(str(exc))
    with _output(args.out) as out:
        out.write((json.dumps(receipt, indent=2, ensure_ascii=False) + "\n").encode())
    if args.out:
        print(f"receipt for event #{row.idx} (checkpoint size {receipt['size']}) in {args.out}")
    return 0


def cmd_audit_verify_receipt(args: argparse.Namespace) -> int:
    from dbgov.ledger.receipts import verify_receipt

    try:
        verifier = _verifier(args.key, None)
        raw = sys.stdin.buffer.read() if args.receipt == "-" else Path(args.receipt).read_bytes()
        receipt = json.loads(raw)
    except (OSError, ValueError) as exc:
        return _die(str(exc), 2)
    if not isinstance(receipt, dict):
        return _die("the receipt is not a JSON object", 2)
    result = verify_receipt(receipt, verifier)
    if args.json:
        print(
            json.dumps(
                {
                    "ok": result.ok,
                    "reason": result.reason,
                    "index": result.index,
                    "size": result.size,
                    "origin": result.origin,
                    "event": result.event_json(),
                },
                indent=2,
                ensure_ascii=False,
            )
        )
    elif result.ok:
        print(f"ok: {result.reason}")
        event = result.event_json()
        if isinstance(event, dict):
            summary = " ".join(
                f"{k}={event[k]}" for k in ("ts", "type", "user", "target", "id") if k in event
            )
            print(f"  {summary}")
    else:
        print(f"dbgov: the receipt does NOT verify: {result.reason}", file=sys.stderr)
    return 0 if result.ok else 1


# ---------------------------------------------------------------------------- verify


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from dbgov.ledger.verify import ExitCode, Report, UsageError, read_trusted_checkpoint

    layout = None if args.bundle else _layout(args)
    try:
        verifier = _verifier(args.key, layout)
        trusted = None
        if args.trusted_checkpoint:
            if args.bundle:
                raise UsageError("--trusted-checkpoint applies to a ledger store, not a bundle")
            note = Path(args.trusted_checkpoint).read_bytes()
            trusted = read_trusted_checkpoint(note, verifier)
        report: Report
        if args.bundle:
            from dbgov.ledger.bundle import verify_bundle

            report = verify_bundle(Path(args.bundle), verifier)
        else:
            from dbgov.ledger.verify import verify_store

            assert layout is not None
            integrate_if_idle(layout)
            report = verify_store(layout.ledger_db, verifier, trusted, workers=args.workers)
    except (OSError, ValueError, UsageError) as exc:
        return _die(str(exc), int(ExitCode.USAGE))
    if args.json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        _print_report(report.to_json(), verifier)
        if args.key is None:
            print(
                "  note: checked with the data dir's own ledger.pub; an auditor should pass "
                "--key with a copy kept elsewhere"
            )
    return int(report.exit_code)


def _print_report(doc: dict[str, Any], verifier: Verifier) -> None:
    what = "bundle" if doc["source"] == "bundle" else "ledger"
    latest = doc["checkpoints"]["latest"]
    rate = f", {doc['events_per_second']:,} events/s" if doc.get("events_per_second") else ""
    if doc["ok"]:
        print(
            f"{what} verified: {doc['events']:,} events, {doc['checkpoints']['verified']} signed "
            f"checkpoint(s) by {verifier.name}"
            + (f", latest at size {latest['size']}" if latest else "")
            + (
                f", consistent with the trusted size {doc['trusted']['size']}"
                if doc["trusted"]
                else ""
            )
            + f" ({doc['seconds']} s{rate})"
        )
    else:
        where = f" at event #{doc['first_bad_index']}" if doc["first_bad_index"] is not None else ""
        print(f"{what} FAILED verification: {doc['result']}{where}: {doc['message']}")
        for finding in doc["findings"][1:]:
            print(f"  also {finding['problem']}: {finding['message']}")
    for warning in doc["warnings"]:
        print(f"  warning: {warning}")


# ---------------------------------------------------------------------------- export


def cmd_audit_export(args: argparse.Namespace) -> int:
    since, until = time_arg(args.since), time_arg(args.until)
    layout = _layout(args)
    if not layout.ledger_db.exists():
        return _die(f"no ledger in {layout.root}")
    if args.format == "bundle":
        from dbgov.ledger.bundle import write_bundle
        from dbgov.ledger.receipts import NotCoveredError

        if not args.out:
            return _die("--format bundle needs --out DIR", 2)
        key = layout.ledger_pub.read_text() if layout.ledger_pub.exists() else None
        with _store(layout) as store:
            try:
                info = write_bundle(store, Path(args.out), since=since, until=until, key=key)
            except (NotCoveredError, LookupError) as exc:
                return _die(str(exc))
        print(
            f"bundle of events [{info.first}, {info.end}) against the checkpoint of size "
            f"{info.size} in {args.out}; check it with: dbgov audit verify --bundle {args.out} "
            "--key <ledger verifier key>"
        )
        return 0
    from dbgov.ledger.export import export

    with _store(layout) as store, _output(args.out) as out:
        count = export(store, args.format, out, since, until)
    if args.out:
        print(f"{count} {args.format} records in {args.out}")
    return 0


# ---------------------------------------------------------------------------- witness


def cmd_witness(args: argparse.Namespace) -> int:
    from dbgov.ledger.witness import Witness, WitnessServer

    if not args.data_dir:
        return _die("dbgov witness needs --data-dir: its own, never the log's", 2)
    host, sep, port = args.listen.rpartition(":")
    if not sep or not port.isdigit():
        return _die(f"--listen {args.listen!r}: want HOST:PORT", 2)
    logs: dict[str, list[Verifier]] = {}
    try:
        for text in args.log_key:
            verifier = load_verifier(text)
            logs.setdefault(args.origin or verifier.name, []).append(verifier)
        witness = Witness(Path(args.data_dir).resolve(), logs, name=args.name)
    except (OSError, ValueError) as exc:
        return _die(str(exc), 2)
    print(f"dbgov witness {witness.verifier}", flush=True)
    print(f"  cosigning for {', '.join(sorted(logs))}", flush=True)
    print(f"  listening on http://{host.strip('[]')}:{port}/add-checkpoint", flush=True)
    WitnessServer(witness, host.strip("[]"), int(port)).run()
    return 0


# ---------------------------------------------------------------------------- parsers


def add_audit_commands(
    audit_sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    common: argparse.ArgumentParser,
) -> None:
    """Add ``prove``, ``verify-receipt``, ``verify`` and ``export`` to ``dbgov audit``."""
    prove = audit_sub.add_parser(
        "prove", parents=[common], help="a self-contained inclusion receipt for one event"
    )
    prove.add_argument("event", metavar="EVENT", help="ledger index or event id")
    prove.add_argument("--out", help="write the receipt here (default: stdout)")
    prove.set_defaults(func=cmd_audit_prove)

    vr = audit_sub.add_parser(
        "verify-receipt", help="check a receipt offline with the ledger key (no data dir)"
    )
    vr.add_argument("receipt", metavar="RECEIPT", help="receipt.json, or - for stdin")
    vr.add_argument("--key", required=True, help="ledger verifier key, or a file holding it")
    vr.add_argument("--json", action="store_true")
    vr.set_defaults(func=cmd_audit_verify_receipt)

    verify = audit_sub.add_parser(
        "verify",
        parents=[common],
        help="recompute and check the whole ledger (or a bundle)",
        description="Exit codes: 0 ok, 10 modified, 11 deleted, 12 reordered, 13 truncated, "
        "14 bad checkpoint signature, 15 rollback or fork, 16 store unreadable, 2 usage.",
    )
    verify.add_argument(
        "--trusted-checkpoint", metavar="FILE", help="a signed checkpoint note kept from earlier"
    )
    verify.add_argument(
        "--key", help="ledger verifier key or file (default: <data-dir>/keys/ledger.pub)"
    )
    verify.add_argument("--bundle", metavar="DIR", help="verify an export bundle instead")
    verify.add_argument("--json", action="store_true", help="print the JSON report")
    verify.add_argument("--workers", type=int, default=None, help=argparse.SUPPRESS)
    verify.set_defaults(func=cmd_audit_verify)

    export = audit_sub.add_parser(
        "export", parents=[common], help="export events (jsonl, OCSF, CEF, verifiable bundle)"
    )
    export.add_argument("--format", choices=["jsonl", "ocsf", "cef", "bundle"], default="jsonl")
    export.add_argument("--since", help="ISO time or 15m/2h/1d ago")
    export.add_argument("--until", help="ISO time or 15m/2h/1d ago (exclusive)")
    export.add_argument("--out", help="output file (default: stdout); a directory for bundle")
    export.set_defaults(func=cmd_audit_export)


def add_witness_command(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    common: argparse.ArgumentParser,
) -> None:
    """Add ``dbgov witness``: a c2sp.org/tlog-witness cosigner, in its own data dir."""
    witness = sub.add_parser(
        "witness", parents=[common], help="run a witness that cosigns consistent checkpoints"
    )
    witness.add_argument("--listen", default="127.0.0.1:8433", help="HOST:PORT")
    witness.add_argument(
        "--log-key",
        action="append",
        required=True,
        metavar="VKEY",
        help="verifier key (or file) of a log to witness; repeatable",
    )
    witness.add_argument("--origin", help="the log's origin, if not its key name")
    witness.add_argument("--name", help="this witness's key name, when creating its key")
    witness.set_defaults(func=cmd_witness)
