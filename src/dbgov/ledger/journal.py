"""The write-ahead journal: where an event becomes durable before its statement runs.

Each proxy process appends canonical-JSON events, one per line, to its own
segment files under `<data_dir>/ledger/journal/`. The sequencer (`sequencer.py`,
one per deployment) reads every segment, assigns contiguous ledger indices in
one total order and integrates them into the Merkle log. Keeping the hot path an
`os.write()` to a private file means sessions never wait on a lock shared with
other processes.

Durability modes (contract, see DESIGN.md "Write-ahead audit"):
- strict: an event MUST have been written to the operating system (survives a
  kill -9 of any dbgov process) before `when_durable` callbacks run; fdatasync
  follows within `fsync_interval_ms`.
- fsync: an event MUST also be fdatasync'ed (survives power loss) before its
  callbacks run; appends from all sessions share each fsync (group commit).
- async: events are buffered and written every `WRITE_INTERVAL_S`, and fdatasync'ed
  within `fsync_interval_ms`; callbacks run at once. A kill -9 can lose the last
  10 ms of events, a power loss the last interval: documented risk.

Events nothing waits on (completions, closes) are written within `WRITE_INTERVAL_S`
in every mode. A writer may also `defer()` building such events to the next tick,
so that encoding them never stands between a response and the next request. The
fdatasync cadence is separate and longer by default (100 ms): a sync every 10 ms
cost a busy proxy worker 5-10% of its CPU (bench, issue 8), and only power loss,
never a dbgov crash, can take what is written and not yet synced.

A failed write (disk full, I/O error, file size limit) MUST NOT be acknowledged:
callbacks get the error, the partial tail is truncated away, and the next append
retries, so the proxy recovers by itself when the disk does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

SEGMENT_BYTES = 64 * 1024 * 1024
WRITE_INTERVAL_S = 0.01  # how long an event nothing waits on may stay in memory
Callback = Callable[[OSError | None], None]


def journal_dir(data_dir: Path) -> Path:
    return data_dir / "ledger" / "journal"


class Journal:
    """Append-only segment files of one writer process. Not thread-safe: one loop
    calls it (strict and async modes fdatasync on a thread of their own)."""

    def __init__(
        self, directory: Path, writer: str, mode: str = "strict", fsync_interval_ms: int = 100
    ) -> None:
        if mode not in ("strict", "fsync", "async"):
            raise ValueError(f"unknown ledger mode {mode!r}")
        self.directory = directory
        self.writer = writer
        self.mode = mode
        self.interval = fsync_interval_ms / 1000.0
        directory.mkdir(parents=True, exist_ok=True)
        self._seq = 0
        self._fd = -1
        self._offset = 0
        self._pending: list[bytes] = []
        self._deferred: list[Callable[[], None]] = []  # builders run before each tick writes
        self._waiters: list[Callback] = []
        self._syncing = False
        self._flush_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._tick_soon = False  # the armed tick comes within WRITE_INTERVAL_S
        self.failed: OSError | None = None
        self.appended = 0
        # strict and async modes: fdatasync runs on a thread of our own, woken by the
        # timer. (An executor round trip per tick cost the loop more than the write.)
        # The lock keeps a segment's fd open while that thread syncs it.
        self._fd_lock = threading.Lock()
        self._written = 0  # successful writes so far (loop thread)
        self._synced = 0  # writes covered by the last fdatasync: dirty while they differ
        self._sync_due = 0.0  # monotonic: no background fdatasync starts before this
        self._sync_wake = threading.Event()
        self._sync_thread: threading.Thread | None = None
        self._closing = False
        self._open_segment()

    # -- segments --------------------------------------------------------------

    def _segment_path(self, seq: int) -> Path:
        return self.directory / f"{self.writer}.{seq:08d}.jsonl"

    def _open_segment(self) -> None:
        while self._segment_path(self._seq).exists():
            self._seq += 1
        path = self._segment_path(self._seq)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._offset = 0

    def _rotate(self) -> None:
        with self._fd_lock:
            with contextlib.suppress(OSError):
                os.fdatasync(self._fd)
            os.close(self._fd)
            self._seq += 1
            self._open_segment()

    # -- appending ---------------------------------------------------------------

    def append(self, record: bytes) -> None:
        """Queue one canonical-JSON event (without newline)."""
        self._pending.append(record)
        self.appended += 1
        self._arm_timer()

    def defer(self, build: Callable[[], None]) -> None:
        """Run `build()`, which appends records, before the next tick writes: within
        WRITE_INTERVAL_S, or sooner when its writer calls it itself."""
        self._deferred.append(build)
        self._arm_timer()

    def _run_deferred(self) -> None:
        deferred, self._deferred = self._deferred, []
        for build in deferred:
            try:
                build()
            except Exception:  # a bug in one writer's events must not cost the others'
                log.exception("deferred ledger events could not be built")

    def when_durable(self, callback: Callback) -> None:
        """Run `callback(None)` once everything appended so far is durable per the mode,
        or `callback(error)` if it could not be written."""
        if self.mode == "async" and self.failed is None:
            callback(None)
            return
        self._waiters.append(callback)
        if not self._flush_scheduled:
            # Strict mode writes once the loop has served every connection that was
            # ready: the statements one loop iteration forwards share one write().
            self._flush_scheduled = True
            flush = self._write_pending if self.mode == "strict" else self._flush_fsync
            asyncio.get_running_loop().call_soon(flush)

    def write_now(self) -> OSError | None:
        """Strict mode: write everything pending now; the error if it failed."""
        err = self._write(self._pending)
        if err is None:
            self._pending = []
            self._arm_timer()
        return err

    def _write_pending(self) -> None:
        self._flush_scheduled = False
        waiters, self._waiters = self._waiters, []
        err = self.write_now()
        for cb in waiters:
            cb(err)

    def _write(self, records: list[bytes]) -> OSError | None:
        if not records:
            return self.failed
        data = b"\n".join(records) + b"\n"
        try:
            if self._offset + len(data) > SEGMENT_BYTES and self._offset > 0:
                self._rotate()
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as exc:
            # Never leave a torn record: cut the file back to the last whole line.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._offset)
            if self.failed is None:
                log.error("ledger journal write failed: %s", exc)
            self.failed = exc
            return exc
        self._offset += len(data)
        self._written += 1
        if self.failed is not None:
            log.warning("ledger journal writable again")
        self.failed = None
        return None

    # -- fsync mode: group commit --------------------------------------------------

    def _flush_fsync(self) -> None:
        self._flush_scheduled = False
        if self._syncing:
            return  # the running sync will pick up what arrived meanwhile
        waiters, self._waiters = self._waiters, []
        err = self._write(self._pending)
        if err is not None:
            for cb in waiters:
                cb(err)
            return
        self._pending = []
        self._syncing = True
        written = self._written  # nothing is written while a group-commit sync runs
        fut = asyncio.get_running_loop().run_in_executor(None, os.fdatasync, self._fd)

        def done(f: asyncio.Future[None]) -> None:
            self._syncing = False
            exc = f.exception()
            error = exc if isinstance(exc, OSError) else None
            if exc is not None and error is None:
                error = OSError(str(exc))
            if error is None:
                self._synced = written
            else:
                self.failed = error
            for cb in waiters:
                cb(error)
            self._resume_waiters()

        fut.add_done_callback(done)

    # -- timers: strict's bounded fsync, async's buffered writes -----------------------

    def _arm_timer(self) -> None:
        """Tick within WRITE_INTERVAL_S while records are pending, else when the next
        background fdatasync is due (an armed tick that comes later is moved). Runs on
        every append: the common cases return before asking the loop anything."""
        timer = self._timer
        due = bool(self._pending or self._deferred)
        if timer is not None and (self._tick_soon or not due):
            return  # armed ticks are never later than the sync is due
        loop = asyncio.get_running_loop()
        if timer is not None:
            timer.cancel()
        self._tick_soon = due
        if self._tick_soon:
            self._timer = loop.call_later(WRITE_INTERVAL_S, self._tick)
        else:
            at = max(loop.time() + WRITE_INTERVAL_S, self._sync_due)
            self._timer = loop.call_at(at, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._deferred:
            self._run_deferred()
        if self._pending and not self._syncing and self._write(self._pending) is None:
            self._pending = []
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._written != self._synced and not self._syncing and now >= self._sync_due:
            self._sync_due = now + self.interval
            if self.mode == "fsync":
                self._syncing = True
                written = self._written
                fut = loop.run_in_executor(None, os.fdatasync, self._fd)

                def done(f: asyncio.Future[None]) -> None:
                    self._syncing = False
                    if f.exception() is None:
                        self._synced = written
                    self._resume_waiters()

                fut.add_done_callback(done)
            else:
                if self._sync_thread is None:
                    self._sync_thread = threading.Thread(
                        target=self._sync_loop, name=f"journal-sync-{self.writer}", daemon=True
                    )
                    self._sync_thread.start()
                self._sync_wake.set()
        if self._pending or self._deferred or self._written != self._synced:
            self._arm_timer()

    def _sync_loop(self) -> None:
        """The sync thread: fdatasync what the loop has written, once per wake-up."""
        while True:
            self._sync_wake.wait()
            self._sync_wake.clear()
            if self._closing or not self._sync_once():
                return

    def _sync_once(self) -> bool:
        """One fdatasync from the sync thread; False once the journal is closed."""
        with self._fd_lock:
            if self._fd < 0:
                return False
            written = self._written
            try:
                os.fdatasync(self._fd)
            except OSError as exc:  # the next tick retries; a write failure shows first
                log.warning("ledger journal fdatasync failed: %s", exc)
                return True
        self._synced = written
        return True

    def _resume_waiters(self) -> None:
        """A sync finished: group-commit whatever queued up behind it (fsync mode)."""
        if self._waiters and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_fsync)

    def flush_sync(self) -> None:
        """Write and fsync everything now (shutdown, tests). Raises on failure."""
        self._run_deferred()
        err = self._write(self._pending)
        if err is not None:
            raise err
        self._pending = []
        with self._fd_lock:
            written = self._written
            os.fdatasync(self._fd)
        self._synced = written
        for cb in self._waiters:
            cb(None)
        self._waiters = []

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sync_thread is not None:
            self._closing = True
            self._sync_wake.set()
            self._sync_thread.join()
            self._sync_thread = None
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                self.flush_sync()
            with self._fd_lock:
                os.close(self._fd)
                self._fd = -1
        # Mark the last segment finished so the sequencer may delete it once integrated.
        with contextlib.suppress(OSError):
            (self.directory / f"{self.writer}.closed").write_text(str(time.time()))
