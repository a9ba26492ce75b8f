"""Cancel keys: the client gets dbgov's key, never the upstream's.

Each session gets a proxy-issued (pid, secret) pair. The pid carries the owning
worker in its top bits, so a CancelRequest that lands on any worker (the kernel
spreads SO_REUSEPORT connections) can be routed to the worker that holds the
session, which forwards the upstream's own key to the database at once.
Secrets are compared in constant time; a wrong key is dropped silently, as
PostgreSQL does.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

WORKER_BITS = 6  # up to 64 workers
_PID_BITS = 31 - WORKER_BITS


def worker_of(pid: int) -> int:
    return (pid >> _PID_BITS) & ((1 << WORKER_BITS) - 1)


@dataclass
class _Entry:
    key: bytes
    cancel: Callable[[], None]


class CancelRegistry:
    def __init__(self, worker_id: int) -> None:
        if not 0 <= worker_id < (1 << WORKER_BITS):
            raise ValueError("worker id out of range")
        self.worker_id = worker_id
        self._entries: dict[int, _Entry] = {}

    def issue(self, key_len: int, cancel: Callable[[], None]) -> tuple[int, bytes]:
        while True:
            pid = (self.worker_id << _PID_BITS) | secrets.randbits(_PID_BITS)
            if pid and pid not in self._entries:
                break
        key = secrets.token_bytes(key_len)
        self._entries[pid] = _Entry(key, cancel)
        return pid, key

    def release(self, pid: int) -> None:
        self._entries.pop(pid, None)

    def cancel(self, pid: int, key: bytes) -> bool:
        entry = self._entries.get(pid)
        if entry is None or not hmac.compare_digest(entry.key, key):
            return False
        entry.cancel()
        return True

    def __len__(self) -> int:
        return len(self._entries)
