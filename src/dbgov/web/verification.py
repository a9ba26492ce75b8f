"""Proofs and verification the dashboard and the SOC 2 report show.

Two questions, answered from the store alone and the ledger's public key:

- Is this event in the log? `event_proof` rebuilds the event's leaf hash from
  its canonical body, builds the inclusion proof to the first signed checkpoint
  covering it (`ledger.tree.TreeReader`), checks the proof against that
  checkpoint's root and the checkpoint's signature.
- Is the whole log intact? `verify_ledger` runs `ledger/verify.py`, the same
  verification as `dbgov audit verify`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dbgov.ledger.merkle import ProofError, leaf_hash, verify_inclusion
from dbgov.ledger.note import NoteError, Verifier, open_note
from dbgov.ledger.tree import TreeReader
from dbgov.ledger.verify import verify_store
from dbgov.store.sqlite import EventRow, LedgerStore


def load_ledger_verifier(pub_path: Path) -> Verifier | None:
    """The checkpoint verifier key written next to the signing key, if readable."""
    try:
        return Verifier.from_string(pub_path.read_text().strip())
    except (OSError, ValueError):
        return None


def check_note(note: bytes, size: int, root: bytes, verifier: Verifier | None) -> str | None:
    """None when `note` is a checkpoint for (size, root) signed by `verifier`; else why not."""
    if verifier is None:
        return "the ledger's public key (ledger.pub) is not readable"
    try:
        cp, _ = open_note(note, [verifier])
    except NoteError as exc:
        return f"checkpoint signature: {exc}"
    if cp.size != size or cp.root != root:
        return "signed checkpoint does not match the stored size and root"
    return None


def event_proof(store: LedgerStore, row: EventRow, verifier: Verifier | None) -> dict[str, Any]:
    """Inclusion proof of one event against the first checkpoint that covers it."""
    out: dict[str, Any] = {
        "index": row.idx,
        "leaf": row.leaf.hex(),
        "leaf_matches_body": leaf_hash(row.body) == row.leaf,
    }
    cp = store.checkpoint_covering(row.idx)
    if cp is None:
        out.update(status="pending", problem="no signed checkpoint covers this event yet")
        return out
    size, root, note, ts = cp
    out["checkpoint"] = {
        "size": size,
        "root": root.hex(),
        "ts": ts,
        "note": note.decode(errors="replace"),
    }
    problems = []
    if not out["leaf_matches_body"]:
        problems.append("the stored leaf hash does not match the event's body")
    try:
        proof = TreeReader(store).inclusion_proof(row.idx, size)
        out["proof"] = [h.hex() for h in proof]
        verify_inclusion(leaf_hash(row.body), row.idx, size, proof, root)
    except (ProofError, LookupError, ValueError) as exc:
        problems.append(f"inclusion proof: {exc}")
    note_problem = check_note(note, size, root, verifier)
    if note_problem:
        problems.append(note_problem)
    out["status"] = "verified" if not problems else "failed"
    out["problems"] = problems
    return out


def verify_ledger(store: LedgerStore, verifier: Verifier | None) -> dict[str, Any]:
    """Full verification (`ledger/verify.py`, what `dbgov audit verify` runs), as JSON.

    Adds the latest signed checkpoint note, the evidence an auditor keeps.
    """
    if verifier is None:
        return {
            "ok": False,
            "result": "no-key",
            "events": store.size(),
            "message": "the ledger's public key (ledger.pub) is not readable",
            "findings": [],
        }
    report = verify_store(store.path, verifier).to_json()
    latest = store.latest_checkpoint()
    report["checkpoint_note"] = None if latest is None else latest[2].decode(errors="replace")
    report["verified_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return report
