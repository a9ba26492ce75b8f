"""The sequencer: one total order for every proxy process's events.

Theory of operation
-------------------
Proxy processes append events to their own journal segments (`journal.py`).
Exactly one sequencer per data dir (an exclusive `flock` on
`ledger/sequencer.lock`) reads the segments, assigns the next contiguous ledger
indices, computes leaf hashes, extends the Merkle compact range, and commits the
rows, the new compact range, tile hashes and the journal offsets it consumed in
ONE store transaction. A crash anywhere re-reads from the committed offsets, so
no event is integrated twice or lost. Integration is a function of the store
(Tessera's `Integrate`); the store only persists.

Checkpoints are signed every `checkpoint_every` events or `checkpoint_interval_s`
seconds, whichever comes first, and at shutdown.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import heapq
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson

from dbgov.ledger.events import utc_now_iso
from dbgov.ledger.journal import journal_dir
from dbgov.ledger.lag import OFFSET_PREFIX
from dbgov.ledger.merkle import CompactRange
from dbgov.ledger.note import Checkpoint, Signer, sign_note
from dbgov.store.sqlite import LedgerStore, insert_events

log = logging.getLogger(__name__)

TILE_LEVELS = (8, 16, 24, 32)  # perfect subtree hashes kept for fast proofs
_COMPACT_KEY = "tree:compact"
MAX_BATCH = 20_000
MAX_READ = 64 * 1024 * 1024  # journal bytes read per segment and pass


def ledger_db_path(data_dir: Path) -> Path:
    return data_dir / "ledger" / "ledger.db"


@dataclass
class _Segment:
    name: str
    path: Path
    writer: str
    seq: int


def _in_time_order(
    by_writer: dict[str, list[tuple[Any, ...]]], first: int
) -> list[tuple[Any, ...]]:
    """One pass's rows with their ledger indices from `first`: each writer's rows in
    journal order, writers interleaved by event time. (In writer-name order, an
    approval consumed by a proxy could precede its approval by the CLI in the log.)
    A merge never reorders one writer's rows, even if its clock stepped back."""
    lists = list(by_writer.values())
    if not lists:
        return []
    merged = lists[0] if len(lists) == 1 else heapq.merge(*lists, key=itemgetter(2))  # ts
    return [(first + i, *r) for i, r in enumerate(merged)]


def _pause(added: int, streaming: bool, poll_s: float, idle_poll_s: float) -> float:
    """How long the sequencer waits after a pass that integrated `added` events.

    Integrate in batches: a pause lets events accumulate, so that a pass's fixed cost
    (directory scan, one transaction whose dirty 16 KiB pages are each written to the
    WAL) is shared by many events. The first events after a quiet spell (a statement
    typed by hand, a test) are taken after `poll_s`; once passes keep finding events,
    a stream is flowing and the pass waits `idle_poll_s`, no longer than an idle
    sequencer takes to see an event: at 2,600 pgbench transactions a second, 20 ms
    passes (about 100 events each) cost the sequencer 56 µs a transaction. A backlog
    (a full pass) keeps the short pause. A pass that found nothing waits
    `idle_poll_s`, so an idle deployment costs next to nothing.
    """
    if not added:
        return idle_poll_s
    if streaming and added < MAX_BATCH:
        return idle_poll_s
    return poll_s


def _writer_alive(writer: str) -> bool:
    pid_text = writer.split("-", 1)[0]
    if not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SequencerLock:
    """Exclusive right to integrate a data dir's journals."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "ledger" / "sequencer.lock"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = -1

    def acquire(self, blocking: bool = False) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Sequencer:
    def __init__(
        self,
        data_dir: Path,
        signer: Signer,
        origin: str,
        *,
        checkpoint_every: int = 1000,
        checkpoint_interval_s: float = 10.0,
        on_checkpoint: Callable[[bytes], None] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.jdir = journal_dir(data_dir)
        self.jdir.mkdir(parents=True, exist_ok=True)
        self.store = LedgerStore(ledger_db_path(data_dir))
        self.signer = signer
        self.origin = origin
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval_s = checkpoint_interval_s
        self.on_checkpoint = on_checkpoint
        raw = self.store.meta_get(_COMPACT_KEY)
        self.tree = CompactRange.from_bytes(raw) if raw else CompactRange()
        if self.tree.size != self.store.size():
            self.tree = self._rebuild_tree()
        latest = self.store.latest_checkpoint()
        self.checkpointed = latest[0] if latest else 0
        self._last_checkpoint_at = time.monotonic()
        self._stop = threading.Event()
        self.lag = 0  # bytes in journals not yet integrated, after the last pass

    def _rebuild_tree(self) -> CompactRange:
        log.warning("ledger: compact range out of step with the store; rebuilding from leaves")
        tree = CompactRange()
        for _, _, leaf in self.store.iter_bodies():
            tree.append(leaf)
        return tree

    # -- integration -------------------------------------------------------------------

    def _segments(self) -> list[_Segment]:
        out = []
        for name in os.listdir(self.jdir):  # (pathlib's glob cost an idle pass ~0.3 ms)
            if not name.endswith(".jsonl"):
                continue
            writer, _, seq = name[: -len(".jsonl")].rpartition(".")
            if seq.isdigit():
                out.append(_Segment(name, self.jdir / name, writer, int(seq)))
        out.sort(key=lambda s: (s.writer, s.seq))
        return out

    def integrate_once(self) -> int:
        """Integrate whatever the journals hold now. Returns the number of events added."""
        segments = self._segments()
        # Not lag.integrated_offsets, which skips a value it cannot read: here that would
        # re-integrate the segment from its start, so a bad offset fails the pass instead.
        offsets = {
            k[len(OFFSET_PREFIX) :]: int(v) for k, v in self.store.meta_items(OFFSET_PREFIX).items()
        }
        by_writer: dict[str, list[tuple[Any, ...]]] = {}
        n_rows = 0
        new_offsets: dict[str, bytes] = {}
        finished: list[_Segment] = []
        lag = 0
        latest_seq: dict[str, int] = {}
        for seg in segments:
            latest_seq[seg.writer] = max(latest_seq.get(seg.writer, -1), seg.seq)
        for seg in segments:
            start = offsets.get(seg.name, 0)
            try:
                fd = os.open(seg.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                size = os.fstat(fd).st_size
                # Read only what is there: a read(64 MiB) allocates 64 MiB on every
                # pass, which was most of an idle sequencer's CPU.
                want = min(size - start, MAX_READ) if n_rows < MAX_BATCH else 0
                data = os.pread(fd, want, start) if want > 0 else b""
            finally:
                os.close(fd)
            end = data.rfind(b"\n") + 1
            lines = data[:end].split(b"\n")[:-1] if end else []
            read_all = want == size - start  # what is left after `end` has no newline
            if n_rows + len(lines) > MAX_BATCH:
                lines = lines[: MAX_BATCH - n_rows]
                end = sum(len(x) + 1 for x in lines)
                read_all = False
            if lines:
                writer_rows = by_writer.setdefault(seg.writer, [])
                for line in lines:
                    writer_rows.append(self._row(line))
                n_rows += len(lines)
            consumed = start + end
            if end:
                new_offsets[OFFSET_PREFIX + seg.name] = str(consumed).encode()
            done_writing = seg.seq < latest_seq[seg.writer] or (
                (self.jdir / f"{seg.writer}.closed").exists() or not _writer_alive(seg.writer)
            )
            if done_writing and (consumed >= size or read_all):
                if size > consumed:  # its writer died mid-record: that record never was
                    log.warning("ledger: %s ends with a torn record; ignored", seg.name)
                finished.append(seg)
            else:
                lag += size - consumed
        self.lag = lag
        rows = _in_time_order(by_writer, self.tree.size)
        if rows:
            tiles: list[tuple[int, int, bytes]] = []

            def visit(level: int, index: int, h: bytes) -> None:
                if level in TILE_LEVELS:
                    tiles.append((level, index, h))

            tree = CompactRange.from_bytes(self.tree.to_bytes())
            for r in rows:
                tree.append(r[-1], visit)
            new_offsets[_COMPACT_KEY] = tree.to_bytes()
            self.store.conn.execute("BEGIN IMMEDIATE")
            try:
                if self.store.size() != self.tree.size:
                    raise RuntimeError("ledger store changed under the sequencer")
                insert_events(self.store.conn, rows)
                self.store.meta_set(new_offsets)
                self.store.put_tiles(tiles)
                self.store.conn.execute("COMMIT")
            except BaseException:
                self.store.conn.execute("ROLLBACK")
                raise
            self.tree = tree
        if finished:
            self.store.sync()  # the store must be durable before its journal goes
        for seg in finished:
            with contextlib.suppress(FileNotFoundError):
                seg.path.unlink()
        if finished:
            self.store.conn.executemany(
                "DELETE FROM meta WHERE key = ?", [(OFFSET_PREFIX + s.name,) for s in finished]
            )
            live_writers = {s.writer for s in self._segments()}
            for marker in self.jdir.glob("*.closed"):
                if marker.stem not in live_writers:
                    with contextlib.suppress(FileNotFoundError):
                        marker.unlink()
        return len(rows)

    @staticmethod
    def _row(line: bytes) -> tuple[Any, ...]:
        """The events table's row for a journal line, without its index:
        (id, type, ts, session, user, target, ref, verdict, body, leaf)."""
        leaf = hashlib.sha256(b"\x00" + line).digest()
        try:
            parsed = orjson.loads(line)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            # Still integrated (the bytes are the record); flagged for the auditor.
            return (
                f"corrupt:{leaf.hex()[:16]}",
                "corrupt",
                utc_now_iso(),
                None,
                None,
                None,
                None,
                None,
                line,
                leaf,
            )
        ev: dict[str, Any] = parsed
        decision = ev.get("decision")
        return (
            str(ev.get("id", "")),
            str(ev.get("type", "")),
            str(ev.get("ts", "")),
            ev.get("session"),
            ev.get("user"),
            ev.get("target"),
            ev.get("ref"),
            decision.get("verdict") if isinstance(decision, dict) else None,
            line,
            leaf,
        )

    # -- checkpoints -------------------------------------------------------------------

    def checkpoint(self, force: bool = False) -> bytes | None:
        size = self.tree.size
        if size == self.checkpointed and not (
            force and size == 0 and not self.store.latest_checkpoint()
        ):
            return None
        root = self.tree.root()
        note = sign_note(Checkpoint(self.origin, size, root).body(), self.signer)
        self.store.put_checkpoint(size, root, note, utc_now_iso())
        self.checkpointed = size
        self._last_checkpoint_at = time.monotonic()
        if self.on_checkpoint is not None:
            try:
                self.on_checkpoint(note)
            except Exception:  # a witness being down must not stop the log
                log.exception("checkpoint hook failed")
        return note

    def maybe_checkpoint(self) -> None:
        pending = self.tree.size - self.checkpointed
        if pending <= 0:
            return
        if (
            pending >= self.checkpoint_every
            or time.monotonic() - self._last_checkpoint_at >= self.checkpoint_interval_s
        ):
            self.checkpoint()

    # -- the thread ----------------------------------------------------------------------

    def run(self, poll_s: float = 0.02, idle_poll_s: float = 0.1) -> None:
        # Integration can wait; statements cannot. Under CPU contention the proxy
        # workers go first (Linux niceness is per thread): durability is already
        # the journal's, and the backlog shows as ledger lag until load drops.
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        streaming = False
        while not self._stop.is_set():
            added = 0
            try:
                added = self.integrate_once()
                self.maybe_checkpoint()
            except Exception:
                log.exception("ledger sequencer pass failed; retrying")
                self._stop.wait(0.5)
            self._stop.wait(_pause(added, streaming, poll_s, idle_poll_s))
            streaming = added > 0
        self.drain()

    def drain(self) -> None:
        """Integrate everything left and sign a final checkpoint (shutdown)."""
        while self.integrate_once():
            pass
        self.checkpoint()
        self.store.sync()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.store.close()
