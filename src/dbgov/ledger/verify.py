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

Speed. Rows are streamed in batches of 65,536 by primary-key range (body and
leaf only, when ``count(*)`` shows no gap), over an mmap'ed connection; leaves
are hashed with one list comprehension per batch and compared as lists; the tree
is built per aligned 256-leaf chunk, level by level, and only chunk roots enter a
``CompactRange``; roots at checkpoint sizes come from that range plus the
partial chunk. From 400,000 events the range is split among forked worker
processes (one per CPU, at most 4) that return only chunk roots. Measured
(tests/ledger/test_verify_speed.py, 2-vCPU dev VM shared with other jobs,
1,000,000 synthetic events of 251 bytes, a checkpoint every 20,000): 3.5 s
(286,000 events/s) in one process, 2.9 s (347,000 events/s) with two. The target
is 200,000 events/s.
"""

from __future__ import annotations

import base64
import hashlib
import multiprocessing
import os
import sqlite3
import threading
import time
from collections.abc import Collection
from concurrent.futures import ProcessPoolExecutor
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
PARALLEL_FROM: Final = 400_000
_ROWS_SQL: Final = "SELECT body, leaf FROM events WHERE idx >= ? AND idx < ? ORDER BY idx"
_ROWS_IDX_SQL: Final = "SELECT idx, body, leaf FROM events WHERE idx >= ? AND idx < ? ORDER BY idx"
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


@dataclass
class _Part:
    """What one worker found in ``[begin, end)``; chunk-aligned, so parts concatenate."""

    begin: int
    end: int
    rows: int = 0
    first_gap: int | None = None
    tree_end: int = 0
    modified: list[int] = field(default_factory=list)
    modified_count: int = 0
    chunk_roots: list[bytes] = field(default_factory=list)
    partials: dict[int, list[bytes]] = field(default_factory=dict)  # size -> tail nodes
    changed_chunks: dict[int, bytes] = field(default_factory=dict)


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


def _connect_ro(db_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10.0)
    conn.execute("PRAGMA mmap_size = 1073741824")  # no page copies: reads about 2x faster
    return conn


def _scan_part(
    db_path: Path,
    begin: int,
    end: int,
    wanted: list[int],
    contiguous: bool,
    check_tiles: bool,
    overrides: dict[int, bytes] | None,
) -> _Part:
    """Rehash ``[begin, end)``: leaf checks, level-8 chunk roots, partial nodes at ``wanted``."""
    part = _Part(begin, end, tree_end=begin)
    conn = _connect_ro(db_path)
    try:
        _scan_rows(conn, part, wanted, contiguous, check_tiles, overrides)
    finally:
        conn.close()
    return part


def _scan_rows(
    conn: sqlite3.Connection,
    part: _Part,
    wanted: list[int],
    contiguous: bool,
    check_tiles: bool,
    overrides: dict[int, bytes] | None,
) -> None:
    sha256 = hashlib.sha256
    want = [s for s in wanted if part.begin < s <= part.end and s % CHUNK]
    wi = 0
    pos = part.begin
    while pos < part.end:
        hi = min(pos + BATCH, part.end)
        indices: list[int] | None = None
        if contiguous:
            rows = conn.execute(_ROWS_SQL, (pos, hi)).fetchall()
        else:
            with_idx = conn.execute(_ROWS_IDX_SQL, (pos, hi)).fetchall()
            indices = [int(r[0]) for r in with_idx]
            rows = [(r[1], r[2]) for r in with_idx]
        part.rows += len(rows)
        good = len(rows)
        if indices is not None and good != hi - pos:
            good = next((k for k, i in enumerate(indices) if i != pos + k), len(rows))
            if part.first_gap is None:
                part.first_gap = pos + good
        try:
            computed = [sha256(b"\x00" + body).digest() for body, _ in rows]
        except TypeError:  # a body rewritten as TEXT or a number
            computed = [sha256(b"\x00" + _as_bytes(body)).digest() for body, _ in rows]
        if computed != [leaf for _, leaf in rows]:
            for k, (_, leaf) in enumerate(rows):
                if computed[k] != leaf:
                    part.modified_count += 1
                    if len(part.modified) < _MAX_LISTED:
                        part.modified.append(pos + k if indices is None else indices[k])
        if part.first_gap is not None and part.tree_end < pos:
            pos = hi
            continue  # past a gap: keep checking leaves, the tree is meaningless now
        leaves = computed if good == len(rows) else computed[:good]
        if overrides:
            for p, h in overrides.items():
                if pos <= p < pos + len(leaves):
                    leaves[p - pos] = h
        tiles8 = _tiles(conn, 8, pos // CHUNK, (pos + len(leaves)) // CHUNK) if check_tiles else {}
        for c0 in range(0, len(leaves), CHUNK):
            chunk = leaves[c0 : c0 + CHUNK]
            base = pos + c0
            while wi < len(want) and want[wi] - base <= len(chunk):
                part.partials[want[wi]] = _partial_nodes(chunk[: want[wi] - base])
                wi += 1
            if len(chunk) == CHUNK:
                root = _chunk_root(chunk)
                tile = tiles8.get(base // CHUNK)
                if tile is not None and tile != root:
                    part.changed_chunks[base // CHUNK] = tile
                part.chunk_roots.append(root)
        part.tree_end = pos + len(leaves)
        if good != hi - pos:
            part.tree_end = pos + good
            if part.first_gap is None:
                part.first_gap = pos + good
        pos = hi


def _scan(
    db_path: Path,
    conn: sqlite3.Connection,
    size: int,
    sizes: Collection[int],
    *,
    contiguous: bool,
    check_tiles: bool = True,
    overrides: dict[int, bytes] | None = None,
    workers: int = 1,
) -> _Scan:
    """One pass over ``[0, size)``: leaf checks, tree, roots at ``sizes``, tile checks.

    ``contiguous`` says the caller counted one row per index in ``[0, size)``,
    so indices need not be read; otherwise they are, and the first gap found.
    With ``workers > 1`` the range is split among that many processes; only
    chunk roots and partial nodes come back, and the tree is finished here.
    """
    wanted = sorted({s for s in sizes if 0 < s <= size})
    per = -(-size // max(workers, 1) // BATCH) * BATCH or BATCH
    bounds = [(lo, min(lo + per, size)) for lo in range(0, size, per)]
    args = (wanted, contiguous, check_tiles, overrides)
    if len(bounds) > 1:
        # fork: no re-import of __main__, workers start in milliseconds. Only from a
        # single-threaded process (the CLI); _workers() falls back to 1 otherwise.
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=len(bounds), mp_context=ctx) as pool:
            parts = list(pool.map(_scan_part_args, [(db_path, lo, hi, *args) for lo, hi in bounds]))
    else:
        parts = []
        for lo, hi in bounds:
            part = _Part(lo, hi, tree_end=lo)
            _scan_rows(conn, part, *args)
            parts.append(part)
    return _combine(conn, size, sizes, wanted, parts, check_tiles)


def _scan_part_args(
    args: tuple[Path, int, int, list[int], bool, bool, dict[int, bytes] | None],
) -> _Part:
    return _scan_part(*args)


def _combine(
    conn: sqlite3.Connection,
    size: int,
    sizes: Collection[int],
    wanted: list[int],
    parts: list[_Part],
    check_tiles: bool,
) -> _Scan:
    res = _Scan(size=size)
    if 0 in sizes:
        res.roots[0] = EMPTY_ROOT
    higher: dict[tuple[int, int], bytes] = {}
    if check_tiles:
        for level, idx, h in conn.execute("SELECT level, idx, hash FROM tiles WHERE level > 8"):
            higher[(int(level), int(idx))] = bytes(h)

    def visit(level: int, index: int, h: bytes) -> None:
        tile = higher.get((level + 8, index))
        if tile is not None and tile != h:
            res.bad_upper_tiles.append((level + 8, index))

    upper = CompactRange()  # over level-8 chunk roots: its level k is the tree's k + 8
    partials: dict[int, list[bytes]] = {}
    wi = 0

    def emit() -> None:
        # Roots at the wanted sizes whose chunks below are exactly those appended so far.
        nonlocal wi
        while wi < len(wanted) and wanted[wi] // CHUNK == upper.size:
            s = wanted[wi]
            if s % CHUNK and s not in partials:
                return  # beyond the tree (a gap stopped it)
            res.roots[s] = fold_nodes([*upper.hashes, *partials.get(s, [])])
            wi += 1

    tree_on = True
    for part in parts:
        res.rows += part.rows
        res.modified_count += part.modified_count
        res.modified.extend(part.modified[: _MAX_LISTED - len(res.modified)])
        if res.first_gap is None:
            res.first_gap = part.first_gap
        res.changed_chunks.update(part.changed_chunks)
        if not tree_on:
            continue
        partials.update(part.partials)
        for root in part.chunk_roots:
            emit()
            upper.append(root, visit)
        emit()
        res.tree_size = part.tree_end
        tree_on = part.tree_end == part.end
    return res


def _tiles(conn: sqlite3.Connection, level: int, start: int, end: int) -> dict[int, bytes]:
    rows = conn.execute(
        "SELECT idx, hash FROM tiles WHERE level = ? AND idx >= ? AND idx < ?", (level, start, end)
    ).fetchall()
    return {int(r[0]): bytes(r[1]) for r in rows}


# --- the store -------------------------------------------------------------------------


def verify_store(
    db_path: Path,
    verifier: Verifier,
    trusted: Checkpoint | None = None,
    *,
    workers: int | None = None,
) -> Report:
    """Verify the ledger store at ``db_path``; never raises for tampering, only reports it.

    ``verifier`` is the ledger key the auditor trusts; it MUST come from the
    auditor, not from the store. Raises ``UsageError`` when ``trusted`` is for
    another log. ``workers`` processes share the rehashing (default: one per
    CPU, up to 4, for logs of 400,000 events or more).
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
        _verify_store(db_path, store, verifier, trusted, report, workers)
    except sqlite3.Error as exc:
        report.findings = [
            Finding(Problem.UNREADABLE, None, f"cannot read the ledger store {db_path}: {exc}")
        ]
    finally:
        store.close()
    report.seconds = time.perf_counter() - started
    return report


def _workers(size: int, workers: int | None) -> int:
    if threading.active_count() > 1 or "fork" not in multiprocessing.get_all_start_methods():
        return 1  # forking a threaded process can deadlock the child
    if workers is not None:
        return max(1, workers)
    return min(os.cpu_count() or 1, 4) if size >= PARALLEL_FROM else 1


def _verify_store(
    db_path: Path,
    store: LedgerStore,
    verifier: Verifier,
    trusted: Checkpoint | None,
    report: Report,
    workers: int | None,
) -> None:
    conn = store.conn
    conn.execute("PRAGMA mmap_size = 1073741824")  # no page copies: reads about 2x faster
    lo, hi, count = conn.execute("SELECT min(idx), max(idx), count(*) FROM events").fetchone()
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
    scan = _scan(
        db_path,
        conn,
        size,
        sizes,
        contiguous=count == size and (lo or 0) == 0,
        workers=_workers(size, workers),
    )

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
    if latest is None and size:
        report.warnings.append("no signed checkpoint: nothing in this ledger is authenticated")
    elif latest is not None and latest[0] < size:
        report.warnings.append(
            f"events from #{latest[0]} on are not covered by a signed checkpoint yet"
        )
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
    finding = _classify(db_path, store, scan, valid, mismatches) if mismatches else None
    if finding is not None:
        report.findings.append(finding)
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
    db_path: Path,
    store: LedgerStore,
    scan: _Scan,
    valid: list[tuple[int, bytes]],
    mismatches: list[tuple[int, bytes]],
) -> Finding | None:
    """A signed root differs: modified (with a range) or reordered (with the proof of order).

    None when a deleted or modified row found earlier already explains it.
    """
    s, _root = mismatches[0]
    good = [size for size, root in valid if size < s and scan.roots.get(size) == root]
    p = max(good, default=0)
    details: dict[str, Any] = {"checkpoint_size": s, "good_until": p}
    if any(i is not None and i < s for i in (*scan.modified[:1], scan.first_gap)):
        return None  # already reported, at its exact index
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
        if _confirm(db_path, conn, scan, valid, sizes, cand):
            return _reordered(cand, details)
    starts = [c * CHUNK for c in changed] + ([tail.begin] if tail else [])
    lo = max(min((b for b in starts if b < s), default=p), p)
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
    db_path: Path,
    conn: sqlite3.Connection,
    scan: _Scan,
    valid: list[tuple[int, bytes]],
    sizes: set[int],
    cand: Candidate,
) -> bool:
    again = _scan(
        db_path,
        conn,
        scan.size,
        sizes,
        contiguous=False,
        check_tiles=False,
        overrides=cand.overrides,
        workers=_workers(scan.size, None),
    )
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
