"""Receipts: one event, proven to be in the signed ledger, checkable offline with one key.

An auditor (or the person the event concerns) should not need dbgov, the data
dir or network access to check that an event is part of the log: a receipt
carries the event's exact bytes, its index, the smallest signed checkpoint that
covers it, and the RFC 6962 audit path from the leaf to that checkpoint's root
(RFC 9162 §2.1.3). Checking it is: verify the checkpoint note with a ledger key
obtained out of band (c2sp.org/signed-note; witness cosignature lines on the
note are carried along and ignored unless the checker trusts those keys), hash
the event bytes as a leaf (``SHA-256(0x00 || bytes)``, RFC 6962 §2.1), and
recompute the root from the audit path.

Format ``dbgov-receipt/v1`` (a JSON object):

- ``format``: ``"dbgov-receipt/v1"``
- ``origin``: the log origin (MUST equal the checkpoint's first line)
- ``index``: the event's ledger index; ``size``: the checkpoint's tree size
- ``event``: the canonical event bytes as a string (exactly the leaf data,
  UTF-8); ``event_b64`` instead when the stored bytes are not UTF-8
- ``leaf``: base64 leaf hash (informational; always recomputed)
- ``checkpoint``: the signed checkpoint note text, with any witness cosignatures
- ``proof``: base64 hashes of the audit path, leaf upwards
- ``key``: the ledger's verifier key string. Informational only: a verifier
  MUST NOT trust it, since whoever forges a receipt can put their own key here.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from dbgov.ledger.merkle import ProofError, leaf_hash, verify_inclusion
from dbgov.ledger.note import Checkpoint, NoteError, Verifier, open_note
from dbgov.ledger.tree import TreeReader
from dbgov.store.sqlite import EventRow, LedgerStore

__all__ = [
    "FORMAT",
    "NotCoveredError",
    "ReceiptResult",
    "build_receipt",
    "find_event",
    "note_with_cosignatures",
    "verify_receipt",
]

FORMAT: Final = "dbgov-receipt/v1"


class NotCoveredError(Exception):
    """No signed checkpoint covers the event yet; the CLI MUST NOT sign one to make a receipt."""


@dataclass(frozen=True, slots=True)
class ReceiptResult:
    """Outcome of ``verify_receipt``: ``ok`` with the proven event, or the reason it failed."""

    ok: bool
    reason: str
    index: int | None = None
    size: int | None = None
    origin: str | None = None
    event: bytes | None = None

    def event_json(self) -> Any:
        """The proven event decoded, or None when it is not JSON."""
        if self.event is None:
            return None
        try:
            return json.loads(self.event)
        except ValueError:
            return None


def find_event(store: LedgerStore, ref: str) -> EventRow | None:
    """An event by ledger index (all digits) or by event id."""
    if ref.isdigit():
        return store.event(int(ref))
    return store.event_by_id(ref)


def note_with_cosignatures(store: LedgerStore, size: int, note: bytes) -> bytes:
    """The checkpoint note with the witness cosignature lines stored for it appended."""
    lines = store.cosignatures(size)
    return note + b"".join(lines)


def build_receipt(store: LedgerStore, row: EventRow, key: str | None = None) -> dict[str, Any]:
    """The receipt for ``row`` against the smallest checkpoint covering it.

    Raises ``NotCoveredError`` when no checkpoint covers the event yet.
    """
    covering = store.checkpoint_covering(row.idx)
    if covering is None:
        latest = store.latest_checkpoint()
        raise NotCoveredError(
            f"event #{row.idx} is not covered by a signed checkpoint yet (the latest covers "
            f"{latest[0] if latest else 0} events); the sequencer signs one every "
            "checkpoint_every events or checkpoint_interval_s seconds"
        )
    size, _root, note, _ts = covering
    text, _, _ = note.partition(b"\n\n")
    origin = Checkpoint.from_body(text + b"\n").origin
    proof = TreeReader(store).inclusion_proof(row.idx, size)
    receipt: dict[str, Any] = {"format": FORMAT, "origin": origin, "index": row.idx, "size": size}
    try:
        receipt["event"] = row.body.decode("utf-8")
    except UnicodeDecodeError:
        receipt["event_b64"] = base64.b64encode(row.body).decode()
    receipt["leaf"] = base64.b64encode(leaf_hash(row.body)).decode()
    receipt["checkpoint"] = note_with_cosignatures(store, size, note).decode()
    receipt["proof"] = [base64.b64encode(h).decode() for h in proof]
    if key is not None:
        receipt["key"] = key
    return receipt


def verify_receipt(receipt: Mapping[str, Any], verifier: Verifier) -> ReceiptResult:
    """Check ``receipt`` with the ledger key ``verifier``, never with the key it carries.

    The event is proven when the checkpoint note verifies with ``verifier``, its
    origin and size match the receipt, and the leaf hash of the event bytes is
    at ``index`` in the tree whose root the checkpoint signs.
    """
    try:
        return _verify(receipt, verifier)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        return ReceiptResult(False, f"malformed receipt: {exc}")


def _verify(receipt: Mapping[str, Any], verifier: Verifier) -> ReceiptResult:
    if receipt.get("format") != FORMAT:
        return ReceiptResult(False, f"not a {FORMAT} receipt (format {receipt.get('format')!r})")
    index, size, origin = receipt["index"], receipt["size"], receipt["origin"]
    if type(index) is not int or type(size) is not int or not isinstance(origin, str):
        return ReceiptResult(False, "malformed receipt: index and size must be integers")
    if "event" in receipt:
        if not isinstance(receipt["event"], str):
            return ReceiptResult(False, "malformed receipt: event must be a string")
        event = receipt["event"].encode("utf-8")
    else:
        event = base64.b64decode(receipt["event_b64"], validate=True)
    note = receipt["checkpoint"]
    if not isinstance(note, str) or not isinstance(receipt["proof"], list):
        return ReceiptResult(False, "malformed receipt: checkpoint and proof")
    proof = [base64.b64decode(h, validate=True) for h in receipt["proof"]]
    try:
        checkpoint, _ = open_note(note.encode("utf-8"), [verifier])
    except NoteError as exc:
        return ReceiptResult(
            False, f"the checkpoint does not verify with key {verifier.name}: {exc}"
        )
    if checkpoint.origin != origin:
        return ReceiptResult(
            False, f"the checkpoint is for log {checkpoint.origin!r}, the receipt says {origin!r}"
        )
    if checkpoint.size != size:
        return ReceiptResult(
            False, f"the checkpoint covers {checkpoint.size} events, the receipt says {size}"
        )
    try:
        verify_inclusion(leaf_hash(event), index, size, proof, checkpoint.root)
    except ProofError as exc:
        return ReceiptResult(False, f"event #{index} is not in the signed log: {exc}", index, size)
    return ReceiptResult(
        True,
        f"event #{index} is in log {origin} as signed at size {size}",
        index,
        size,
        origin,
        event,
    )
