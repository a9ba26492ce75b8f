"""Masked values remembered per masker, so a repeated value costs a dict lookup.

Scans of the same rows, joins and repeated queries see the same values again, and a
lookup costs a fraction of an HMAC or a PII scan. A `Memo` is a native class when
compiled (dbgov.native): the row rewriter calls `field` directly, with no Python
call in between. Bounded in entries and value size; emptied when full, which keeps the
common case (a hit) a single lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from dbgov.wire.postgres.messages import NULL_FIELD, datarow_field

ENTRIES: Final = 1 << 15
MAX_VALUE: Final = 2048


class Memo:
    """`fn`, remembered: `memo.get(value) == fn(value)`.

    What is remembered is the result as a DataRow field (`datarow_field`), the form
    the row rewriter appends as one piece; `get` unwraps it for everyone else.
    """

    __slots__ = ("_cache", "_entries", "fn")

    def __init__(self, fn: Callable[[bytes], bytes | None], entries: int = ENTRIES) -> None:
        self.fn = fn
        self._cache: dict[bytes, bytes] = {}
        self._entries = entries

    def field(self, value: bytes) -> bytes:
        """`datarow_field(fn(value))`."""
        cache = self._cache
        try:
            return cache[value]
        except KeyError:
            pass
        out = datarow_field(self.fn(value))
        if len(value) <= MAX_VALUE:
            if len(cache) >= self._entries:
                cache.clear()
            cache[value] = out
        return out

    def get(self, value: bytes) -> bytes | None:
        out = self.field(value)
        return None if out == NULL_FIELD else out[4:]

    def __call__(self, value: bytes) -> bytes | None:
        return self.get(value)
