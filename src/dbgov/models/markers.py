"""Retrain markers: a model version sealed at a point of the ledger.

    dbgov models retrain churn-v2 --version 7 [--note ...] [--fingerprint]
    POST /api/models/churn-v2/retrain {"version": "7", ...}   (bearer token)

Both call `mark_retrain`, which writes one `model.retrain` event:

    model, version, note   what is marked, as given
    user, groups           who marked it (verified token; groups without JIT grants)
    via                    "cli" or "api"
    seal                   the ledger size sealed: every event with a smaller index
                           happened before the marker
    owners, targets, inputs  the model's declaration at that moment (a later policy
                           edit does not rewrite history)
    fingerprint            optional digest of the input rows (`fingerprint.py`)

Theory of operation: the seal
-----------------------------
Ledger indices are assigned by the sequencer, which integrates every process's
journal in passes; within a pass, events are ordered by writer, not by time.
So the marker's own index does not by itself prove that an event with a smaller
index happened earlier. Instead the marker records `seal`: the ledger size
after everything the journals held when marking began has been integrated (the
sequencer's committed offsets reach every segment's size at that moment, or the
segment is gone). Every event written before marking began therefore has an
index below `seal`; events written concurrently may fall on either side, and a
report assigns them by index, consistently.

Order of work: (1) the fingerprint snapshot, (2) the seal, (3) the marker. Every
change visible in the snapshot had its statement event written before the
statement ran (write-ahead), so it lies below the seal: a digest never includes
a change the report attributes to the next version.

Only the model's owners and the policy's admin groups may mark, by the groups
of a verified token.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from dbgov.config import Config
from dbgov.identity import Identity
from dbgov.layout import Layout
from dbgov.ledger.integrate import integrate_if_idle
from dbgov.ledger.lag import integrated_offsets
from dbgov.models.registry import Model
from dbgov.store.sqlite import EventRow, LedgerStore

__all__ = [
    "RETRAIN",
    "Marker",
    "RetrainRefused",
    "find_marker",
    "mark_retrain",
    "markers",
    "wait_integrated",
    "wait_sealed",
]

RETRAIN: Final = "model.retrain"
SEAL_TIMEOUT_S: Final = 30.0
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+@\-]{0,63}$")
MAX_NOTE: Final = 2000


class RetrainRefused(Exception):
    """The marker was not written; the message says why, for the person who asked."""


@dataclass(frozen=True, slots=True)
class Marker:
    """A `model.retrain` event as read back from the ledger."""

    index: int
    id: str
    ts: str
    model: str
    version: str
    seal: int
    user: str
    event: dict[str, Any]

    @property
    def fingerprint(self) -> dict[str, Any] | None:
        fp = self.event.get("fingerprint")
        return fp if isinstance(fp, dict) else None

    @property
    def digest(self) -> str | None:
        fp = self.fingerprint
        return str(fp["digest"]) if fp and "digest" in fp else None

    def as_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "id": self.id,
            "ts": self.ts,
            "model": self.model,
            "version": self.version,
            "seal": self.seal,
            "user": self.user,
            "groups": self.event.get("groups", []),
            "note": self.event.get("note"),
            "via": self.event.get("via"),
            "owners": self.event.get("owners", []),
            "inputs": self.event.get("inputs", []),
            "fingerprint": self.fingerprint,
        }


def _marker(row: EventRow) -> Marker | None:
    try:
        ev = json.loads(row.body)
        return Marker(
            row.idx,
            row.id,
            row.ts,
            str(ev["model"]),
            str(ev["version"]),
            int(ev["seal"]),
            str(ev.get("user", "")),
            ev,
        )
    except (ValueError, KeyError, TypeError):
        return None  # not ours to interpret; `dbgov audit verify` judges the bytes


def markers(store: LedgerStore, model: str | None = None) -> list[Marker]:
    """Retrain markers in ledger order, of one model or of all."""
    sql = (
        "SELECT idx, id, type, ts, session, user, target, ref, decision, body, leaf "
        "FROM events WHERE type = ?"
    )
    args: list[Any] = [RETRAIN]
    if model is not None:
        sql += " AND json_extract(CAST(body AS TEXT), '$.model') = ?"
        args.append(model)
    rows = store.conn.execute(sql + " ORDER BY idx", args).fetchall()
    out = []
    for r in rows:
        m = _marker(
            EventRow(
                int(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], bytes(r[9]), bytes(r[10])
            )
        )
        if m is not None:
            out.append(m)
    return out


def find_marker(found: Iterable[Marker], version: str) -> Marker | None:
    """The latest marker of `version` (a version marked twice counts from its last mark)."""
    match = None
    for m in found:
        if m.version == version:
            match = m
    return match


def _complete_bytes(path: os.DirEntry[str]) -> int:
    """Bytes of whole records in a segment now: up to its last newline. The sequencer
    never consumes a torn tail (a writer killed mid-record), so neither do we wait on it."""
    size = path.stat().st_size
    with open(path.path, "rb") as f:
        end = size
        while end > 0:
            start = max(0, end - 65536)
            f.seek(start)
            chunk = f.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                return start + cut + 1
            end = start
    return 0


def _journal_sizes(layout: Layout) -> dict[str, int]:
    sizes: dict[str, int] = {}
    try:
        with os.scandir(layout.journal) as it:
            for entry in it:
                if entry.name.endswith(".jsonl"):
                    try:
                        sizes[entry.name] = _complete_bytes(entry)
                    except FileNotFoundError:
                        continue
    except FileNotFoundError:
        pass
    return sizes


def _sealed_size(layout: Layout, sizes: Mapping[str, int]) -> int | None:
    """The ledger size if every segment has been integrated up to `sizes`, else None."""
    integrate_if_idle(layout)  # no proxy running: fold the journals in ourselves
    if not layout.ledger_db.exists():
        return 0 if not sizes else None
    store = LedgerStore(layout.ledger_db, readonly=True)
    try:
        offsets = integrated_offsets(store)
        for name, size in sizes.items():
            if offsets.get(name, 0) < size and (layout.journal / name).exists():
                return None
        return store.size()
    finally:
        store.close()


async def wait_sealed(layout: Layout, timeout_s: float = SEAL_TIMEOUT_S) -> int:
    """Wait until everything journalled so far is in the ledger; return the ledger size."""
    sizes = _journal_sizes(layout)
    deadline = time.monotonic() + timeout_s
    while True:
        size = await asyncio.to_thread(_sealed_size, layout, sizes)
        if size is not None:
            return size
        if time.monotonic() > deadline:
            raise RetrainRefused(
                f"the ledger did not integrate the journals within {timeout_s:.0f} s; "
                "is the dbgov sequencer running and healthy? (dbgov audit verify)"
            )
        await asyncio.sleep(0.05)


def _find(layout: Layout, event_id: str) -> EventRow | None:
    integrate_if_idle(layout)
    if not layout.ledger_db.exists():
        return None
    store = LedgerStore(layout.ledger_db, readonly=True)
    try:
        return store.event_by_id(event_id)
    finally:
        store.close()


async def wait_integrated(
    layout: Layout, event_id: str, timeout_s: float = SEAL_TIMEOUT_S
) -> EventRow:
    """The event once the sequencer has given it an index."""
    deadline = time.monotonic() + timeout_s
    while True:
        row = await asyncio.to_thread(_find, layout, event_id)
        if row is not None:
            return row
        if time.monotonic() > deadline:
            raise RetrainRefused(
                f"event {event_id} is durable in the journal but was not integrated within "
                f"{timeout_s:.0f} s; it will be once the sequencer runs"
            )
        await asyncio.sleep(0.05)


def _existing(layout: Layout, model: str, version: str) -> Marker | None:
    integrate_if_idle(layout)
    if not layout.ledger_db.exists():
        return None
    store = LedgerStore(layout.ledger_db, readonly=True)
    try:
        return find_marker(markers(store, model), version)
    finally:
        store.close()


async def mark_retrain(
    config: Config,
    model: Model,
    identity: Identity,
    *,
    version: str,
    note: str | None = None,
    fingerprint: bool = False,
    admin_groups: Iterable[str] = (),
    via: str = "cli",
) -> Marker:
    """Write a `model.retrain` marker and return it as integrated into the ledger.

    Raises `RetrainRefused` (not an owner, bad or already marked version, ledger not
    writable) and `fingerprint.FingerprintError`. MUST run on an event loop: the
    journal arms its timers there.
    """
    from dbgov.ledger.journal import Journal
    from dbgov.proxy.audit import Audit

    groups = identity.groups - {g for g, _ in identity.grants}
    if not model.may_mark(groups, admin_groups):
        allowed = sorted(model.owners | set(admin_groups))
        raise RetrainRefused(
            f"{identity.user} may not mark retrains of {model.name}: only "
            f"members of {', '.join(allowed)} may"
        )
    if not _VERSION.match(version):
        raise RetrainRefused(
            f"bad version {version!r}: 1-64 letters, digits and . _ : + @ -, "
            "starting with a letter or digit"
        )
    note = (note or "").strip() or None
    if note is not None and len(note) > MAX_NOTE:
        raise RetrainRefused(f"the note is longer than {MAX_NOTE} characters")
    layout = Layout(config.data_dir)
    earlier = await asyncio.to_thread(_existing, layout, model.name, version)
    if earlier is not None:
        raise RetrainRefused(
            f"{model.name} version {version} is already marked (ledger event "
            f"#{earlier.index}, {earlier.ts}); use a new version"
        )
    fp = None
    if fingerprint:
        from dbgov.models.fingerprint import fingerprint as compute

        fp = await compute(config, model)
    seal = await wait_sealed(layout)
    event_id = f"model:{model.name}:{version}:{secrets.token_hex(4)}"
    # A journal of its own, under a unique writer name: closing it marks the writer
    # finished (journal.py), which must never apply to a journal still in use.
    journal = Journal(
        layout.journal,
        f"{os.getpid()}-models-{secrets.token_hex(3)}",
        config.ledger.mode,
        config.ledger.fsync_interval_ms,
    )
    try:
        err = Audit(journal).write_ahead(
            RETRAIN,
            event_id,
            user=identity.user,
            groups=sorted(groups),
            issuer=identity.issuer or None,
            model=model.name,
            version=version,
            note=note,
            via=via,
            seal=seal,
            owners=sorted(model.owners),
            targets=sorted(model.targets) or ["*"],
            inputs=[i.as_json() for i in model.inputs],
            fingerprint=fp,
        )
        if err is None:
            journal.flush_sync()
    except OSError as exc:
        err = exc
    finally:
        journal.close()
    if err is not None:
        raise RetrainRefused(
            f"the audit ledger cannot be written ({err.strerror or err}); nothing was marked"
        )
    row = await wait_integrated(layout, event_id)
    found = _marker(row)
    if found is None:  # pragma: no cover - we just wrote it
        raise RetrainRefused(f"event {event_id} was integrated unreadable")
    return found
