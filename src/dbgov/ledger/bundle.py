"""Verifiable export bundles: a slice of the ledger an auditor checks with nothing but a key.

A bundle is a directory the auditor can archive and re-verify years later,
without dbgov's data dir:

- ``events.jsonl``: the events ``[first, end)``, one per line, exactly as the
  ``jsonl`` export writes them (``{"index":N,"event":<canonical body>}``).
- ``checkpoint.note``: a signed checkpoint of size ``N >= end``
  (c2sp.org/tlog-checkpoint), with any witness cosignature lines.
- ``proofs.json``: the compact-range form of proof (our choice over one
  inclusion proof per event, which would grow as ``k log N``): with the events,
  it rebuilds the checkpoint's root (RFC 6962 §2.1) in ``O(k + log N)``:

  ``{"format": "dbgov-bundle-proof/v1", "origin", "size": N, "first", "end",
  "left": [...], "right": [...], "tiles": [...]}`` where ``left`` holds the
  base64 hashes of the perfect subtrees covering ``[0, first)`` (one per set
  bit of ``first``, largest first), ``right`` those of the fewest perfect
  subtrees covering ``[end, N)``, left to right, and ``tiles`` the level-8
  subtree hash of each complete 256-event chunk in ``[first, end)``. The root is
  ``left``, then the events, then ``right``, merged as a compact range
  (transparency-dev/merkle ``compact.Range``) and folded. ``tiles`` are not
  needed for that; they only let a failed bundle point at the chunk that
  changed and tell a reordering from a modification (``localize.py``).
- ``key.pub``: the ledger's verifier key, informational: the auditor MUST
  verify with a key obtained elsewhere (``--key``).

To keep ``tiles`` meaningful, ``first`` is rounded down to a multiple of 256 and
``end`` up to one (or to ``N``): a bundle for ``--since/--until`` may carry up to
255 events on each side just outside the window.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from dbgov.durable import write_atomic
from dbgov.ledger.export import iter_rows, jsonl_line
from dbgov.ledger.localize import CHUNK, Region, find_candidates
from dbgov.ledger.merkle import leaf_hash
from dbgov.ledger.note import Checkpoint, NoteError, Verifier, open_note
from dbgov.ledger.receipts import NotCoveredError, note_with_cosignatures
from dbgov.ledger.tree import (
    TreeReader,
    compact_nodes,
    merge_nodes,
    merge_root,
    perfect_root,
    range_nodes,
)
from dbgov.ledger.verify import Finding, Problem, Report
from dbgov.store.sqlite import LedgerStore, ts_window

__all__ = ["PROOF_FORMAT", "BundleInfo", "verify_bundle", "write_bundle"]

PROOF_FORMAT: Final = "dbgov-bundle-proof/v1"
EVENTS: Final = "events.jsonl"
CHECKPOINT: Final = "checkpoint.note"
PROOFS: Final = "proofs.json"
KEY: Final = "key.pub"
_LINE = re.compile(rb'\{"index":(0|[1-9][0-9]*),"event(_b64)?":(.*)\}\n?', re.DOTALL)


@dataclass(frozen=True, slots=True)
class BundleInfo:
    first: int
    end: int
    size: int


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


def write_bundle(
    store: LedgerStore,
    out_dir: Path,
    *,
    since: str | None = None,
    until: str | None = None,
    key: str | None = None,
) -> BundleInfo:
    """Write a bundle of the events in ``[since, until)`` (all by default) to ``out_dir``.

    Uses the latest signed checkpoint; events after it are left out. Raises
    ``NotCoveredError`` without a checkpoint, ``LookupError`` when the window
    holds no covered event or the store has a gap (run ``dbgov audit verify``).
    """
    latest = store.latest_checkpoint()
    if latest is None or latest[0] == 0:
        raise NotCoveredError("the ledger has no signed checkpoint yet; nothing can be proven")
    size, _root, note, _ts = latest
    first, end = 0, size
    if since or until:
        clauses, window_args = ts_window(since, until)
        where, args = ["idx < ?", *clauses], [str(size), *window_args]
        lo, hi = store.conn.execute(
            f"SELECT min(idx), max(idx) FROM events WHERE {' AND '.join(where)}", args
        ).fetchone()
        if lo is None:
            raise LookupError("no event covered by the latest checkpoint is in that time window")
        first = int(lo) - int(lo) % CHUNK
        end = min(-(-(int(hi) + 1) // CHUNK) * CHUNK, size)
    reader = TreeReader(store)
    proof = {
        "format": PROOF_FORMAT,
        "origin": Checkpoint.from_body(note.partition(b"\n\n")[0] + b"\n").origin,
        "size": size,
        "first": first,
        "end": end,
        "left": [_b64(reader.get_node(lv, i)) for lv, i in compact_nodes(first)],
        "right": [_b64(reader.get_node(lv, i)) for lv, i in range_nodes(end, size)],
        "tiles": [_b64(reader.get_node(8, c)) for c in range(first // CHUNK, end // CHUNK)],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{EVENTS}.{os.getpid()}.tmp"
    expected = first
    with tmp.open("wb") as f:
        for index, body in iter_rows(store, start=first, end=end):
            if index != expected:
                tmp.unlink()
                raise LookupError(f"the ledger has no event #{expected}; run dbgov audit verify")
            f.write(jsonl_line(index, body))
            expected += 1
        f.flush()
        os.fsync(f.fileno())
    if expected != end:
        tmp.unlink()
        raise LookupError(f"the ledger has no event #{expected}; run dbgov audit verify")
    tmp.replace(out_dir / EVENTS)
    write_atomic(out_dir / CHECKPOINT, note_with_cosignatures(store, size, note))
    write_atomic(out_dir / PROOFS, (json.dumps(proof, indent=1) + "\n").encode())
    if key is not None:
        write_atomic(out_dir / KEY, (key.strip() + "\n").encode())
    return BundleInfo(first, end, size)


# --- verification ----------------------------------------------------------------------


class _Malformed(Exception):
    pass


def verify_bundle(bundle: Path, verifier: Verifier) -> Report:
    """Verify a bundle directory with the ledger key ``verifier`` (see the module docstring).

    Exit codes as for the store: a bad checkpoint signature 14, an event
    missing 11 (or 13 at the end), a changed event 10, events swapped 12, an
    unreadable bundle 16.
    """
    started = time.perf_counter()
    report = Report(source="bundle")
    try:
        _verify_bundle(bundle, verifier, report)
    except (OSError, _Malformed) as exc:
        report.findings.append(Finding(Problem.UNREADABLE, None, f"unreadable bundle: {exc}"))
    report.seconds = time.perf_counter() - started
    return report


def _read_proof(path: Path) -> dict[str, Any]:
    try:
        proof = json.loads(path.read_bytes())
        if not isinstance(proof, dict) or proof.get("format") != PROOF_FORMAT:
            raise _Malformed(f"{path.name} is not a {PROOF_FORMAT} document")
        for name in ("size", "first", "end"):
            if type(proof[name]) is not int or proof[name] < 0:
                raise _Malformed(f"{path.name}: {name} must be a non-negative integer")
        for name in ("left", "right", "tiles"):
            proof[name] = [base64.b64decode(h, validate=True) for h in proof[name]]
            if any(len(h) != 32 for h in proof[name]):
                raise _Malformed(f"{path.name}: {name} holds a hash that is not 32 bytes")
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise _Malformed(f"{path.name}: {exc}") from None
    if not proof["first"] <= proof["end"] <= proof["size"]:
        raise _Malformed(f"{path.name}: want first <= end <= size")
    if len(proof["left"]) != len(compact_nodes(proof["first"])) or len(proof["right"]) != len(
        range_nodes(proof["end"], proof["size"])
    ):
        raise _Malformed(f"{path.name}: wrong number of left or right hashes")
    return proof


def _read_events(path: Path, report: Report) -> dict[int, bytes]:
    events: dict[int, bytes] = {}
    previous = -1
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            m = _LINE.fullmatch(line)
            index = previous + 1
            body: bytes | None = None
            if m is not None:
                index = int(m.group(1))
                body = m.group(3)
                try:
                    if m.group(2):
                        body = base64.b64decode(json.loads(body), validate=True)
                    else:
                        json.loads(body)
                except (ValueError, TypeError, binascii.Error):
                    body = None
            if body is None or index in events:
                report.findings.append(
                    Finding(
                        Problem.MODIFIED,
                        index,
                        f"line {number} of {path.name} (event #{index}) was altered",
                        {"line": number, "exact": True},
                    )
                )
                body = b""  # keeps the index taken; the root check fails anyway
            if index < previous:
                report.warnings.append(f"{path.name} is not in index order at line {number}")
            events.setdefault(index, body)
            previous = index
    return events


def _verify_bundle(bundle: Path, verifier: Verifier, report: Report) -> None:
    note = (bundle / CHECKPOINT).read_bytes()
    proof = _read_proof(bundle / PROOFS)
    try:
        checkpoint, _ = open_note(note, [verifier])
    except NoteError as exc:
        report.findings.append(
            Finding(
                Problem.BAD_CHECKPOINT,
                None,
                f"the bundle's checkpoint does not verify with key {verifier.name}: {exc}",
            )
        )
        return
    report.origin = checkpoint.origin
    report.checkpoints = report.checkpoints_verified = 1
    report.latest = (checkpoint.size, checkpoint.root)
    if checkpoint.size != proof["size"] or proof.get("origin") not in (None, checkpoint.origin):
        raise _Malformed(f"{PROOFS} is for another checkpoint (size {proof['size']})")
    first, end = proof["first"], proof["end"]
    events = _read_events(bundle / EVENTS, report)
    report.events = len(events)
    missing = [i for i in range(first, end) if i not in events]
    extra = sorted(i for i in events if not first <= i < end)
    if extra:
        report.findings.append(
            Finding(
                Problem.MODIFIED,
                extra[0],
                f"event #{extra[0]} is outside the bundle's range [{first}, {end})",
                {"exact": True},
            )
        )
    if missing:
        tail = missing == list(range(missing[0], end))
        report.findings.append(
            Finding(
                Problem.TRUNCATED if tail else Problem.DELETED,
                missing[0],
                f"the bundle was truncated: events from #{missing[0]} to #{end - 1} are missing"
                if tail
                else f"event #{missing[0]} is missing from the bundle ({len(missing)} in all)",
                {"missing": len(missing)},
            )
        )
        return
    if any(f.problem is Problem.MODIFIED for f in report.findings):
        return
    leaves = [leaf_hash(events[i]) for i in range(first, end)]
    if _root(proof, leaves) == checkpoint.root:
        return
    report.findings.append(_classify(proof, leaves, checkpoint.root))


def _nodes(proof: dict[str, Any], leaves: list[bytes]) -> Iterator[tuple[int, int, bytes]]:
    first, end, size = proof["first"], proof["end"], proof["size"]
    for (level, index), h in zip(compact_nodes(first), proof["left"], strict=True):
        yield level, index, h
    for k, h in enumerate(leaves):
        yield 0, first + k, h
    for (level, index), h in zip(range_nodes(end, size), proof["right"], strict=True):
        yield level, index, h


def _root(proof: dict[str, Any], leaves: list[bytes]) -> bytes:
    return merge_root(_nodes(proof, leaves))


def _classify(proof: dict[str, Any], leaves: list[bytes], root: bytes) -> Finding:
    first, end, size = proof["first"], proof["end"], proof["size"]
    tiles: list[bytes] = proof["tiles"]
    changed: dict[int, bytes] = {}
    for k, tile in enumerate(tiles):
        chunk = first // CHUNK + k
        rel = chunk * CHUNK - first
        if rel + CHUNK <= len(leaves) and perfect_root(leaves[rel : rel + CHUNK]) != tile:
            changed[chunk] = tile
    tail = None
    begin = end - end % CHUNK
    if end % CHUNK and end == size and begin >= first:
        upper = [h for _, _, h in _upper_nodes(proof, begin)]
        tail = Region(begin, end, tuple(upper), ((size, root),))

    def get_leaves(lo: int, hi: int) -> list[bytes]:
        return leaves[lo - first : hi - first]

    for cand in find_candidates(get_leaves, changed, tail):
        fixed = list(leaves)
        for position, h in cand.overrides.items():
            fixed[position - first] = h
        if _root(proof, fixed) == root:
            positions = sorted(cand.overrides)
            return Finding(
                Problem.REORDERED,
                positions[0],
                f"events #{positions[0]} and #{positions[-1]} of the bundle were swapped"
                if cand.kind == "swap"
                else f"256-event chunks of the bundle were moved, first at #{positions[0]}",
                {"kind": cand.kind, "positions": positions[:20], "exact": True},
            )
    starts = [c * CHUNK for c in changed] + ([tail.begin] if tail else [])
    lo = max(min(starts, default=first), first)
    return Finding(
        Problem.MODIFIED,
        lo,
        f"events of the bundle were modified: the signed root does not match, first change "
        f"at or after #{lo}",
        {"range": [lo, end], "exact": False},
    )


def _upper_nodes(proof: dict[str, Any], begin: int) -> list[tuple[int, int, bytes]]:
    """Compact range of ``[0, begin)`` from ``left`` and the tiles (``begin`` chunk-aligned)."""
    first = proof["first"]
    left = zip(compact_nodes(first), proof["left"], strict=True)
    tiles = [
        (8, first // CHUNK + k, h)
        for k, h in enumerate(proof["tiles"])
        if (first // CHUNK + k + 1) * CHUNK <= begin
    ]
    return merge_nodes([*((lv, i, h) for (lv, i), h in left), *tiles])
