"""Fold leftover journals into the ledger when no dbgov is running, before a CLI reads it.

After a crash or a stop, journal segments may still hold events the sequencer
never integrated; ``dbgov audit …`` should see them. Only the holder of the
sequencer lock may integrate (``sequencer.py``), so this takes the lock without
waiting and does nothing if a running proxy holds it: that proxy integrates
continuously.

It signs a checkpoint over what it integrated, as the sequencer does at
shutdown, but only with the key the log already signs with: the data dir's
ledger key MUST verify the latest stored checkpoint (or there is none yet).
When the log is signed with another key (``ledger.key_file`` in a config this
command does not read), events are integrated and left uncovered until the proxy
runs again, rather than signed by a key auditors do not trust. The origin is
taken from the latest checkpoint, for the same reason.
"""

from __future__ import annotations

import logging
import os

from dbgov.layout import Layout
from dbgov.ledger.keys import default_origin, load_or_create_signer
from dbgov.ledger.note import Checkpoint, NoteError, Signer, verify_note
from dbgov.ledger.sequencer import Sequencer, SequencerLock
from dbgov.store.sqlite import LedgerStore

__all__ = ["integrate_if_idle"]

log = logging.getLogger(__name__)


def integrate_if_idle(layout: Layout) -> int:
    """Integrate leftover journal events if no sequencer runs; returns how many."""
    if not layout.journal.exists() or not any(layout.journal.glob("*.jsonl")):
        return 0
    lock = SequencerLock(layout.root)
    if not lock.acquire():
        return 0  # the running proxy's sequencer integrates continuously
    try:
        return _integrate(layout)
    finally:
        lock.release()


def _integrate(layout: Layout) -> int:
    origin, latest_note = default_origin(layout.root), None
    if layout.ledger_db.exists():
        store = LedgerStore(layout.ledger_db)
        try:
            latest = store.latest_checkpoint()
        finally:
            store.close()
        if latest is not None:
            latest_note = latest[2]
            origin = Checkpoint.from_body(latest_note.partition(b"\n\n")[0] + b"\n").origin
    may_sign = latest_note is None or layout.ledger_key.exists()
    if may_sign:
        signer = load_or_create_signer(layout.ledger_key, origin)
        if latest_note is not None and not _signs(signer, latest_note):
            may_sign = False
    if not may_sign:
        log.warning(
            "ledger: the data dir's key does not sign this log; integrating leftover events "
            "without signing a checkpoint"
        )
        signer = Signer(origin, os.urandom(32))  # never used: no checkpoint is signed
    seq = Sequencer(layout.root, signer, origin)
    try:
        added = 0
        while n := seq.integrate_once():
            added += n
        if added and may_sign:
            seq.checkpoint()
            seq.store.sync()
        return added
    finally:
        seq.close()


def _signs(signer: Signer, note: bytes) -> bool:
    try:
        verify_note(note, [signer.verifier])
    except NoteError:
        return False
    return True
