"""``dbgov audit verify``: recompute the whole ledger and say exactly what is wrong with it.

An auditor MUST NOT trust the store's own bookkeeping: a leaf column, a tile or a
checkpoint row can be rewritten as easily as an event. Only the event bodies and
the checkpoint *signatures* carry weight. Verification therefore rehashes every
body (``leaf = SHA-256(0x00 || body)``, RFC 6962 §2.1), rebuilds the Merkle tree
over them in index order, checks every stored checkpoint note with the ledger key
(c2sp.org/signed-note, c2sp.org/tlog-checkpoint) and compares each signed root
with the recomputed root at that size. Given a trusted checkpoint from earlier
(one the auditor kept), it also proves that today's log extends it (RFC 9162
§2.1.4, as a witness would, c2sp.org/tlog-witness).

Attacks told apart, with their exit codes (``ExitCode``) and the first bad index
in the JSON report:

- modified (10): a body no longer hashes to its stored leaf; or leaf and body
  were rewritten together, so a signed root stops matching (the index is then
  the start of the smallest range known to hold the change, ``exact: false``).
- deleted (11): a gap in the indices.
- reordered (12): signed roots stop matching, and ``localize.py`` exhibits the
  original order (a transposition or moved tiles) that makes every signed root
  match again: the same events, in another order.
- truncated (13): the latest signed checkpoint covers more events than stored.
- bad checkpoint (14): a checkpoint note does not verify with the ledger key, or
  its row disagrees with its note. Such a checkpoint is then not used.
- rollback or fork (15): against ``--trusted-checkpoint``, the log is shorter
  than the trusted size, its root at that size differs, or the consistency
  proof from there to the latest checkpoint fails.
- store unreadable (16); usage errors (2), e.g. a trusted checkpoint that does
  not verify.

When several apply, a bad checkpoint signature wins (every other check rests on
the checkpoints), then the finding with the smallest index, then deleted >
modified > reordered > truncated; rollback is reported when nothing else is.

Speed. Rows are streamed in batches of 65,536 by primary-key range; leaves are
hashed with one list comprehension per batch and compared as lists; the tree is
built per aligned 256-leaf chunk level by level, and only the chunk roots enter
a ``CompactRange``. Roots at checkpoint sizes come from that range plus the
partial chunk. Measured on the 2-vCPU dev VM with 1,000,000 synthetic events of
about 330 bytes and a checkpoint every 1,000 events (tests/ledger/
test_verify_speed.py): see the figures in the reply to the issue and the test
output; the target is at least 200,000 events/s.
"""

from __future__ import annotations

import base64
import hashlib
import sqlite3
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Any, Final

from dbgov.ledger.localize import CHUNK, Candidate, Region, find_candidates
from dbgov.ledger.merkle import EMPTY_ROOT, CompactRange, ProofError, verify_consistency
from dbgov.ledger.note import Checkpoint, NoteError, Verifier, open_note
from dbgov.ledger.tree import TreeReader, compact_nodes, fold_nodes, perfect_root
from dbgov.store.sqlite import LedgerStore

__all__ = [
    "ExitCode",
    "Finding",
    "Problem",
    "Report",
    "UsageError",
    "read_trusted_checkpoint",
    "verify_store",
]

BATCH: Final = 256 * CHUNK
_ROWS_SQL: Final = "SELECT idx, body, leaf FROM events WHERE idx >= ? AND idx < ? ORDER BY idx"
_MAX_LISTED: Final = 20


class ExitCode(IntEnum):
    """Exit codes of ``dbgov audit verify`` (also for ``--bundle``)."""

    OK = 0
    USAGE = 2
    MODIFIED = 10
    DELETED = 11
    REORDERED = 12
    TRUNCATED = 13
    BAD_SIGNATURE = 14
    ROLLBACK = 15
    UNREADABLE = 16


class Problem(StrEnum):
    MODIFIED = "modified"
    DELETED = "deleted"
    REORDERED = "reordered"
    TRUNCATED = "truncated"
    BAD_CHECKPOINT = "bad_checkpoint"
    ROLLBACK = "rollback"
    UNREADABLE = "unreadable"


_EXIT: Final = {
    Problem.MODIFIED: ExitCode.MODIFIED,
    Problem.DELETED: ExitCode.DELETED,
    Problem.REORDERED: ExitCode.REORDERED,
    Problem.TRUNCATED: ExitCode.TRUNCATED,
    Problem.BAD_CHECKPOINT: ExitCode.BAD_SIGNATURE,
    Problem.ROLLBACK: ExitCode.ROLLBACK,
    Problem.UNREADABLE: ExitCode.UNREADABLE,
}
_INDEXED_ORDER: Final = (Problem.DELETED, Problem.MODIFIED, Problem.REORDERED, Problem.TRUNCATED)


class UsageError(Exception):
    """Bad input from the caller (a key or trusted checkpoint that cannot be used): exit 2."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong; ``index`` is the first ledger index concerned, when there is one."""

    problem: Problem
    index: int | None
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "problem": str(self.problem),
            "index": self.index,
            "message": self.message,
            **self.details,
        }


@dataclass
class Report:
    """What verification found; ``exit_code`` and ``to_json()`` are the CLI's output."""

    source: str
    events: int = 0
    checkpoints: int = 0
    checkpoints_verified: int = 0
    origin: str | None = None
    latest: tuple[int, bytes] | None = None
    trusted: tuple[int, bytes] | None = None
    findings: list[Finding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def primary(self) -> Finding | None:
        """The finding that decides the exit code (see the module docstring)."""
        if not self.findings:
            return None
        for problem in (Problem.UNREADABLE, Problem.BAD_CHECKPOINT):
            first = [f for f in self.findings if f.problem is problem]
            if first:
                return first[0]
        indexed = [f for f in self.findings if f.problem in _INDEXED_ORDER]
        if indexed:
            return min(
                indexed,
                key=lambda f: (
                    f.index if f.index is not None else 1 << 62,
                    _INDEXED_ORDER.index(f.problem),
                ),
            )
        return self.findings[0]

    @property
    def exit_code(self) -> ExitCode:
        primary = self.primary
        return ExitCode.OK if primary is None else _EXIT[primary.problem]

    @property
    def ok(self) -> bool:
        return self.primary is None

    def to_json(self) -> dict[str, Any]:
        primary = self.primary
        return {
            "ok": primary is None,
            "exit_code": int(self.exit_code),
            "result": "ok" if primary is None else str(primary.problem),
            "first_bad_index": None if primary is None else primary.index,
            "message": "verified" if primary is None else primary.message,
            "source": self.source,
            "origin": self.origin,
            "events": self.events,
            "checkpoints": {
                "total": self.checkpoints,
                "verified": self.checkpoints_verified,
                "latest": _size_root(self.latest),
            },
            "trusted": _size_root(self.trusted),
            "findings": [f.to_json() for f in self.findings],
            "warnings": self.warnings,
            "seconds": round(self.seconds, 3),
            "events_per_second": int(self.events / self.seconds) if self.seconds > 0 else None,
        }


def _size_root(value: tuple[int, bytes] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {"size": value[0], "root": base64.b64encode(value[1]).decode()}


def read_trusted_checkpoint(note: bytes, verifier: Verifier) -> Checkpoint:
    """Parse and verify a checkpoint the auditor kept; ``UsageError`` if it does not verify."""
    try:
        checkpoint, _ = open_note(note, [verifier])
    except NoteError as exc:
        raise UsageError(f"trusted checkpoint does not verify with the ledger key: {exc}") from None
    return checkpoint


# --- the streaming pass ---------------------------------------------------------------


@dataclass
class _Scan:
    size: int = 0  # max(idx) + 1
    rows: int = 0
    first_gap: int | None = None
    tree_size: int = 0  # leaves fed to the tree: up to the first gap
    modified: list[int] = field(default_factory=list)
    modified_count: int = 0
    roots: dict[int, bytes] = field(default_factory=dict)
    changed_chunks: dict[int, bytes] = field(default_factory=dict)  # chunk -> its tile
    bad_upper_tiles: list[tuple[int, int]] = field(default_factory=list)


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogatepass")


def _chunk_root(leaves: list[bytes]) -> bytes:
    sha256 = hashlib.sha256
    level = leaves
    while len(level) > 1:
        level = [
            sha256(b"\x01" + a + b).digest() for a, b in zip(level[::2], level[1::2], strict=True)
        ]
    return level[0]


def _partial_nodes(leaves: list[bytes]) -> list[bytes]:
    """Compact range hashes of a chunk-aligned run of fewer than 256 leaves."""
    out, pos = [], 0
    for level in range(7, -1, -1):
        if len(leaves) >> level & 1:
            out.append(perfect_root(leaves[pos : pos + (1 << level)]))
            pos += 1 << level
    return out


def _scan(
    conn: sqlite3.Connection,
    size: int,
    sizes: Collection[int],
    *,
    check_tiles: bool = True,
    overrides: dict[int, bytes] | None = None,
) -> _Scan:
    """One pass over ``[0, size)``: leaf checks, tree, roots at ``sizes``, tile checks."""
    res = _Scan(size=size)
    wanted = sorted({s for s in sizes if 0 < s <= size})
    if 0 in sizes:
        res.roots[0] = EMPTY_ROOT
    si = 0
    upper = CompactRange()
    higher: dict[tuple[int, int], bytes] = {}
    if check_tiles:
        for level, idx, h in conn.execute("SELECT level, idx, hash FROM tiles WHERE level > 8"):
            higher[(int(level), int(idx))] = bytes(h)

    def visit(level: int, index: int, h: bytes) -> None:
        tile = higher.get((level + 8, index))
        if tile is not None and tile != h:
            res.bad_upper_tiles.append((level + 8, index))

    sha256 = hashlib.sha256
    tree_on = True
    pos = 0
    while pos < size:
        hi = min(pos + BATCH, size)
        rows = conn.execute(_ROWS_SQL, (pos, hi)).fetchall()
        res.rows += len(rows)
        good = len(rows)
        if good != hi - pos:
            good = next((k for k, r in enumerate(rows) if r[0] != pos + k), len(rows))
            if res.first_gap is None:
                res.first_gap = pos + good
        try:
            computed = [sha256(b"\x00" + r[1]).digest() for r in rows]
        except TypeError:
            computed = [sha256(b"\x00" + _as_bytes(r[1])).digest() for r in rows]
        if computed != [r[2] for r in rows]:
            for k, r in enumerate(rows):
                if computed[k] != r[2]:
                    res.modified_count += 1
                    if len(res.modified) < _MAX_LISTED:
                        res.modified.append(int(r[0]))
        if not tree_on:
            pos = hi
            continue
        leaves = computed if good == len(rows) else computed[:good]
        if overrides:
            for p, h in overrides.items():
                if pos <= p < pos + len(leaves):
                    leaves[p - pos] = h
        tiles8 = _tiles(conn, 8, pos // CHUNK, (pos + len(leaves)) // CHUNK) if check_tiles else {}
        for c0 in range(0, len(leaves), CHUNK):
            chunk = leaves[c0 : c0 + CHUNK]
            base = pos + c0
            end = base + len(chunk)
            while si < len(wanted) and wanted[si] <= end and wanted[si] - base < CHUNK:
                s = wanted[si]
                res.roots[s] = fold_nodes([*upper.hashes, *_partial_nodes(chunk[: s - base])])
                si += 1
            if len(chunk) == CHUNK:
                root = _chunk_root(chunk)
                tile = tiles8.get(base // CHUNK)
                if tile is not None and tile != root:
                    res.changed_chunks[base // CHUNK] = tile
                upper.append(root, visit)
                if si < len(wanted) and wanted[si] == end:
                    res.roots[end] = upper.root()
                    si += 1
        res.tree_size = pos + len(leaves)
        if good != len(rows) or len(rows) != hi - pos:
            tree_on = False
        pos = hi
    return res


def _tiles(conn: sqlite3.Connection, level: int, start: int, end: int) -> dict[int, bytes]:
    rows = conn.execute(
        "SELECT idx, hash FROM tiles WHERE level = ? AND idx >= ? AND idx < ?", (level, start, end)
    ).fetchall()
    return {int(r[0]): bytes(r[1]) for r in rows}


# --- the store -------------------------------------------------------------------------


def verify_store(db_path: Path, verifier: Verifier, trusted: Checkpoint | None = None) -> Report:
    """Verify the ledger store at ``db_path``; never raises for tampering, only reports it.

    ``verifier`` is the ledger key the auditor trusts; it MUST come from the
    auditor, not from the store. Raises ``UsageError`` when ``trusted`` is for
    another log.
    """
    started = time.perf_counter()
    report = Report(source="store")
    if not db_path.exists():
        report.findings.append(Finding(Problem.UNREADABLE, None, f"no ledger store at {db_path}"))
        return report
    try:
        store = LedgerStore(db_path, readonly=True)
    except sqlite3.Error as exc:
        report.findings.append(
            Finding(Problem.UNREADABLE, None, f"cannot open the ledger store {db_path}: {exc}")
        )
        return report
    try:
        _verify_store(store, verifier, trusted, report)
    except sqlite3.Error as exc:
        report.findings = [
            Finding(Problem.UNREADABLE, None, f"cannot read the ledger store {db_path}: {exc}")
        ]
    finally:
        store.close()
    report.seconds = time.perf_counter() - started
    return report


def _verify_store(
    store: LedgerStore, verifier: Verifier, trusted: Checkpoint | None, report: Report
) -> None:
    conn = store.conn
    lo, hi = conn.execute("SELECT min(idx), max(idx) FROM events").fetchone()
    size = 0 if hi is None else int(hi) + 1
    if lo is not None and int(lo) < 0:
        report.warnings.append(f"{-int(lo)} or more rows have negative indices; they are ignored")
    report.events = size

    valid = _check_checkpoints(store.checkpoints(), verifier, report)
    if trusted is not None:
        if report.origin is not None and trusted.origin != report.origin:
            raise UsageError(
                f"the trusted checkpoint is for log {trusted.origin!r}, "
                f"this ledger signs as {report.origin!r}"
            )
        report.trusted = (trusted.size, trusted.root)
    sizes = {s for s, _ in valid} | ({trusted.size} if trusted is not None else set())
    scan = _scan(conn, size, sizes)

    if scan.first_gap is not None:
        missing = size - scan.rows
        report.findings.append(
            Finding(
                Problem.DELETED,
                scan.first_gap,
                f"event #{scan.first_gap} is missing: {missing} of {size} indices have no row",
                {"missing": missing},
            )
        )
    if scan.modified:
        first = scan.modified[0]
        report.findings.append(
            Finding(
                Problem.MODIFIED,
                first,
                f"event #{first} was modified: its body no longer hashes to its leaf"
                + (f" ({scan.modified_count} events in all)" if scan.modified_count > 1 else ""),
                {"indices": scan.modified, "count": scan.modified_count, "exact": True},
            )
        )
    latest = max(valid) if valid else None
    report.latest = latest
    if latest is not None and latest[0] > size:
        report.findings.append(
            Finding(
                Problem.TRUNCATED,
                size,
                f"the ledger was truncated: the latest checkpoint covers {latest[0]} events, "
                f"the store holds {size}",
                {"checkpoint_size": latest[0]},
            )
        )
    mismatches = [
        (s, root) for s, root in valid if s <= scan.tree_size and scan.roots.get(s) != root
    ]
    if mismatches:
        report.findings.append(_classify(store, scan, valid, mismatches))
    if scan.bad_upper_tiles or (scan.changed_chunks and not mismatches):
        report.warnings.append(
            "stored tiles disagree with the events: proofs served from this store will not "
            "verify, though every signed root matches"
        )
    if trusted is not None:
        _check_trusted(store, scan, trusted, latest, report)


def _check_checkpoints(
    rows: list[tuple[int, bytes, bytes, str]], verifier: Verifier, report: Report
) -> list[tuple[int, bytes]]:
    valid = []
    report.checkpoints = len(rows)
    for size, root, note, _ts in rows:
        try:
            checkpoint, _ = open_note(note, [verifier])
        except NoteError as exc:
            report.findings.append(
                Finding(
                    Problem.BAD_CHECKPOINT,
                    size,
                    f"the checkpoint at size {size} does not verify with the ledger key "
                    f"{verifier.name}: {exc}",
                    {"checkpoint_size": size},
                )
            )
            continue
        if checkpoint.size != size or checkpoint.root != root:
            report.findings.append(
                Finding(
                    Problem.BAD_CHECKPOINT,
                    size,
                    f"the checkpoint row at size {size} disagrees with its signed note "
                    f"(size {checkpoint.size})",
                    {"checkpoint_size": size},
                )
            )
            continue
        if report.origin is None:
            report.origin = checkpoint.origin
        elif checkpoint.origin != report.origin:
            report.findings.append(
                Finding(
                    Problem.BAD_CHECKPOINT,
                    size,
                    f"the checkpoint at size {size} is for log {checkpoint.origin!r}, "
                    f"not {report.origin!r}",
                    {"checkpoint_size": size},
                )
            )
            continue
        valid.append((checkpoint.size, checkpoint.root))
    report.checkpoints_verified = len(valid)
    return valid


def _classify(
    store: LedgerStore,
    scan: _Scan,
    valid: list[tuple[int, bytes]],
    mismatches: list[tuple[int, bytes]],
) -> Finding:
    """A signed root differs: modified (with a range) or reordered (with the proof of order)."""
    s, _root = mismatches[0]
    good = [size for size, root in valid if size < s and scan.roots.get(size) == root]
    p = max(good, default=0)
    details: dict[str, Any] = {"checkpoint_size": s, "good_until": p}
    explained = [i for i in (*scan.modified[:1], scan.first_gap) if i is not None and i < s]
    if explained:
        return Finding(
            Problem.MODIFIED,
            min(explained),
            f"the signed root at size {s} does not match the events (see the findings above)",
            {**details, "exact": True},
        )
    changed = {c: t for c, t in scan.changed_chunks.items() if (c + 1) * CHUNK > p}
    tail = _tail_region(store, scan, valid, p)
    conn = store.conn

    def get_leaves(begin: int, end: int) -> list[bytes]:
        rows = conn.execute(
            "SELECT body FROM events WHERE idx >= ? AND idx < ? ORDER BY idx", (begin, end)
        ).fetchall()
        return [hashlib.sha256(b"\x00" + _as_bytes(r[0])).digest() for r in rows]

    sizes = {size for size, _ in valid}
    for cand in find_candidates(get_leaves, changed, tail):
        if _confirm(conn, scan, valid, sizes, cand):
            return _reordered(cand, details)
    lo = min([c * CHUNK for c in changed] + ([tail.begin] if tail else []), default=p)
    lo = max(lo, p)
    return Finding(
        Problem.MODIFIED,
        lo,
        f"events in [{lo}, {s}) were modified: the signed root at size {s} no longer matches, "
        "and no reordering of the same events explains it",
        {**details, "range": [lo, s], "exact": False},
    )


def _tail_region(
    store: LedgerStore, scan: _Scan, valid: list[tuple[int, bytes]], p: int
) -> Region | None:
    size = scan.tree_size
    begin = size - size % CHUNK
    if size % CHUNK == 0 or begin + CHUNK <= p:
        return None
    reader = TreeReader(store)
    try:
        upper = tuple(reader.get_node(level, i) for level, i in compact_nodes(begin))
    except LookupError:
        return None
    checks = tuple((s, r) for s, r in valid if begin < s <= size)
    return Region(begin, size, upper, checks)


def _confirm(
    conn: sqlite3.Connection,
    scan: _Scan,
    valid: list[tuple[int, bytes]],
    sizes: set[int],
    cand: Candidate,
) -> bool:
    again = _scan(conn, scan.size, sizes, check_tiles=False, overrides=cand.overrides)
    return all(again.roots.get(s) == r for s, r in valid if s <= scan.tree_size)


def _reordered(cand: Candidate, details: dict[str, Any]) -> Finding:
    positions = sorted(cand.overrides)
    if cand.kind == "swap":
        i, j = positions
        message = (
            f"events #{i} and #{j} were swapped: with them back in place every signed root "
            "matches again"
        )
    else:
        message = (
            f"whole 256-event tiles were moved, first at event #{positions[0]}: "
            "put back, every signed root matches again"
        )
    return Finding(
        Problem.REORDERED,
        positions[0],
        message,
        {**details, "kind": cand.kind, "positions": positions[:_MAX_LISTED], "exact": True},
    )


def _check_trusted(
    store: LedgerStore,
    scan: _Scan,
    trusted: Checkpoint,
    latest: tuple[int, bytes] | None,
    report: Report,
) -> None:
    t, root = trusted.size, trusted.root
    if t > scan.size:
        report.findings.append(
            Finding(
                Problem.ROLLBACK,
                scan.size,
                f"rolled back: the trusted checkpoint covers {t} events, this ledger has "
                f"{scan.size}",
                {"trusted_size": t},
            )
        )
        return
    if t <= scan.tree_size and scan.roots.get(t) != root:
        report.findings.append(
            Finding(
                Problem.ROLLBACK,
                None,
                f"forked: this ledger's root at the trusted size {t} differs from the trusted "
                "checkpoint's",
                {"trusted_size": t},
            )
        )
        return
    if latest is None or latest[0] < t:
        report.warnings.append(
            f"no signed checkpoint at or after the trusted size {t}; "
            "the events up to it match the trusted root"
        )
        return
    try:
        proof = TreeReader(store).consistency_proof(t, latest[0])
        verify_consistency(t, latest[0], root, latest[1], proof)
    except ProofError as exc:
        report.findings.append(
            Finding(
                Problem.ROLLBACK,
                None,
                f"the consistency proof from the trusted size {t} to {latest[0]} fails: {exc}",
                {"trusted_size": t},
            )
        )
    except LookupError as exc:
        report.warnings.append(f"cannot build a consistency proof from size {t}: {exc}")
