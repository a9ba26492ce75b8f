"""Applying masking plans to wire messages: DataRow rewriting and error scrubbing.

Only result sets whose plan masks something come here; every other DataRow is
forwarded as bytes by the pump. The plan itself (which column, which mask) is
decided by the gate; this module only turns values into masked values in the
format the client asked for (text or binary).

Speed. A masked result set is rewritten row by row in Python, so the per-row
work is kept to what masking needs: `RowRewriter` is built once per result set
(column functions already picked for each column's format), walks the length
words only up to the last masked column, copies the unmasked spans between masked
values as they are, and decodes nothing it does not mask.
"""

from __future__ import annotations

import re
import struct
from typing import Final

from dbgov.gate import ColumnMask, ResultPlan
from dbgov.masking.memo import Memo
from dbgov.wire.postgres.errors import RemoteProtocolError
from dbgov.wire.postgres.framing import FrameBuffer
from dbgov.wire.postgres.messages import ErrorResponse, FieldDescription, datarow_field

_I32 = struct.Struct("!i")
_pack_i32 = _I32.pack
_SMALL: Final = 4096
_WORDS: Final = tuple(_pack_i32(i) for i in range(_SMALL))  # length words, made once

REDACTED = b"[REDACTED]"
# Types whose text and binary forms are the UTF-8 string itself, so the redaction
# marker is a valid value; every other type becomes NULL (maskers.py keeps the same
# list, plus JSON, which the engine's plans handle).
STRING_TYPES = frozenset({25, 1043, 1042, 19})


class _Column:
    """One masked column of a result set, as the rewriter reads it."""

    __slots__ = ("constant", "fixed", "index", "memo")

    def __init__(self, index: int, memo: Memo, fixed: bytes, constant: bool) -> None:
        self.index = index
        self.memo = memo  # the column's masker for its format, remembered
        self.fixed = fixed  # a constant column's field (length word and value), made once
        self.constant = constant


# Rows whose masked span (from the first masked column's length word to the end of
# the last masked column) repeats get their rewritten span from one dict lookup,
# where the columns would take one memo lookup each: dashboards and analyses read
# the same rows again. Only spans up to ROW_SPAN_MAX bytes (column masks, not whole
# texts), at most ROW_ENTRIES rows in all, emptied when full.
ROW_SPAN_MAX: Final = 512
ROW_ENTRIES: Final = 1 << 15
ROW_LAYOUTS: Final = 256


class _RowMemos:
    """Rewritten spans, per layout: which columns are masked, relative to the first
    one, with which memo or constant. A layout's memos are the engine's own, so a
    policy or catalog change (new memos) starts a new layout."""

    __slots__ = ("_entries", "_layouts")

    def __init__(self) -> None:
        self._layouts: dict[tuple[object, ...], dict[bytes, bytes]] = {}
        self._entries = 0

    def layout(self, key: tuple[object, ...]) -> dict[bytes, bytes]:
        rows = self._layouts.get(key)
        if rows is None:
            if len(self._layouts) >= ROW_LAYOUTS:
                self.clear()
            rows = self._layouts[key] = {}
        return rows

    def remember(self, rows: dict[bytes, bytes], key: bytes, value: bytes) -> None:
        if self._entries >= ROW_ENTRIES or len(rows) >= ROW_ENTRIES:
            self.clear()
            rows.clear()  # in case the layout was dropped while its rewriter lives
        rows[key] = value
        self._entries += 1

    def clear(self) -> None:
        for rows in self._layouts.values():
            rows.clear()
        self._layouts.clear()
        self._entries = 0


_ROWS = _RowMemos()


class RowRewriter:
    """Rewrites the DataRows of one result set under one plan.

    `formats` are the result's per-column format codes (0 text, 1 binary); a column
    without one is text. Columns after the last masked one are copied unread: the
    server framed the message, and nothing there is ours to change.
    """

    __slots__ = ("_columns", "_count", "_first", "_last", "_rows")

    def __init__(self, plan: ResultPlan, formats: tuple[int, ...]) -> None:
        columns: list[_Column] = []
        for col in sorted(plan.columns, key=lambda c: c.index):
            fn = col.binary if col.index < len(formats) and formats[col.index] == 1 else col.text
            memo = fn if isinstance(fn, Memo) else Memo(fn)
            fixed = datarow_field(fn(b"")) if col.constant else b""
            columns.append(_Column(col.index, memo, fixed, col.constant))
        self._columns = columns
        self._count = len(formats)
        self._first = columns[0].index if columns else 0
        self._last = columns[-1].index if columns else -1
        self._rows = _ROWS.layout(
            tuple((c.index - self._first, c.memo, c.fixed, c.constant) for c in columns)
        )

    def __call__(self, row: bytes, start: int, end: int) -> bytes:
        """The DataRow frame at row[start:end] (type byte included), rewritten."""
        out: list[bytes] = []
        self.write(row, start, end, out)
        return b"".join(out)

    def write_run(self, frames: FrameBuffer, out: list[bytes]) -> None:
        """Rewrite the DataRow `frames` returned last and the DataRows right after
        it, up to the first frame of another type or the end of what arrived: one
        call per run of rows rather than a trip through the pump per row."""
        buf = frames.buf
        self.write(buf, frames.start, frames.end, out)
        while frames.advance_if(0x44):
            self.write(buf, frames.start, frames.end, out)

    def write(self, row: bytes, start: int, end: int, out: list[bytes]) -> None:
        """Append the DataRow frame at row[start:end], rewritten, to `out` as pieces:
        the pumps join a whole chunk's output once, so a row costs no join of its own
        and its unchanged parts are slices, not copies into a row buffer.

        Every length word up to the end of the last masked column is checked against
        the frame's end here, first; `_rewrite` then reads only within that span.
        """
        if end - start < 7 or start < 0 or end > len(row):
            raise RemoteProtocolError("malformed DataRow")
        n = (row[start + 5] << 8) | row[start + 6]
        if n != self._count and self._count:
            raise RemoteProtocolError("DataRow and RowDescription disagree on the column count")
        if self._last >= n:
            raise RemoteProtocolError("DataRow has fewer columns than its RowDescription")
        first = self._first
        pos = span = start + 7
        i = 0
        while i <= self._last:
            if i == first:
                span = pos
            if pos + 4 > end:
                raise RemoteProtocolError("malformed DataRow")
            # The length word, inline: a call per word costs more than the read.
            ln = (row[pos] << 24) | (row[pos + 1] << 16) | (row[pos + 2] << 8) | row[pos + 3]
            if ln >= 0x80000000:  # negative: NULL (-1) or malformed
                if ln != 0xFFFFFFFF:
                    raise RemoteProtocolError("malformed DataRow")
                ln = 0
            pos += 4 + ln
            i += 1
        if pos > end:
            raise RemoteProtocolError("malformed DataRow")
        at = len(out)
        out.append(b"D")
        out.append(b"")  # the length word, once the values are known
        out.append(row[start + 5 : span])  # the column count, columns before the span
        size = pos - span
        if size <= ROW_SPAN_MAX:
            key = row[span:pos]
            new = self._rows.get(key)
            if new is None:
                parts: list[bytes] = []
                self._rewrite(key, 0, size, parts)
                new = b"".join(parts)
                _ROWS.remember(self._rows, key, new)
            out.append(new)
            grown = len(new) - size
        else:
            grown = self._rewrite(row, span, pos, out)
        if pos != end:
            out.append(row[pos:end])
        length = end - start - 1 + grown
        out[at + 1] = _WORDS[length] if length < _SMALL else _pack_i32(length)

    def _rewrite(self, buf: bytes, pos: int, stop: int, out: list[bytes]) -> int:
        """Append the masked span buf[pos:stop] (checked by `write`), column by column,
        to `out`; returns how many bytes it grew by (negative: shrank)."""
        last = pos
        i = self._first
        grown = 0
        for col in self._columns:
            while i < col.index:  # unmasked columns between masked ones: step over
                ln = (buf[pos] << 24) | (buf[pos + 1] << 16) | (buf[pos + 2] << 8) | buf[pos + 3]
                pos += 4 if ln == 0xFFFFFFFF else 4 + ln
                i += 1
            ln = (buf[pos] << 24) | (buf[pos + 1] << 16) | (buf[pos + 2] << 8) | buf[pos + 3]
            i += 1
            null = ln == 0xFFFFFFFF
            value_end = pos + 4 if null else pos + 4 + ln
            if null and not col.constant:
                pos = value_end  # NULL stays NULL
                continue
            # The new field (length word included), one piece: from the memo, or
            # the constant's.
            new = col.fixed if col.constant else col.memo.field(buf[pos + 4 : value_end])
            if last != pos:
                out.append(buf[last:pos])
            out.append(new)
            grown += len(new) - (value_end - pos)
            pos = last = value_end
        if last != stop:
            out.append(buf[last:stop])
        return grown


def _redact(_: bytes) -> bytes | None:
    return REDACTED


def _null(_: bytes) -> bytes | None:
    return None


def mask_all(fields: tuple[FieldDescription, ...], why: str) -> ResultPlan:
    """Fail closed at result time: every column, NULLs included, redacted (strings)
    or NULL."""
    cols = []
    for i, f in enumerate(fields):
        fn = _redact if f.type_oid in STRING_TYPES else _null
        cols.append(ColumnMask(i, f"{f.name} ({why})", "redact", fn, fn, constant=True))
    return ResultPlan(tuple(cols))


# Classes whose messages quote only identifiers and syntax from the client's own
# statement: connection (08), feature (0A), transaction state (25), statement and
# cursor names (26, 34), authorization (28), catalog and schema names (3D, 3F),
# serialization (40), syntax and access (42), resources (53), operator (57).
# Messages of every other class may quote a value (22 data, 23 integrity, XX ...).
_IDENTIFIER_CLASSES = frozenset(
    {"08", "0A", "25", "26", "28", "34", "3D", "3F", "40", "42", "53", "57"}
)
# Greedy from the first quote to the last, so a value holding a quote goes whole;
# "Key (a)=(b)" pairs; bytes quoted as hex (0x00 in invalid byte sequences).
_QUOTED = re.compile(r"\"(?s:.*)\"|'(?s:.*)'|\([^)]*\)=\((?s:.*)\)|0x[0-9a-fA-F]+")
# Fields that can echo a value whatever the class: DETAIL, CONTEXT (WHERE),
# internal query and its position.
_DROPPED = frozenset({"D", "W", "q", "p"})


def sanitize_error(err: ErrorResponse) -> ErrorResponse | None:
    """For sessions that see masked data: drop DETAIL/CONTEXT/internal query, and
    quoted values from messages that could echo a masked value ("Failing row
    contains ...", "Key (email)=(...)", failed casts). Returns None when the error
    needs no change. Notices go through the same scrub."""
    code = err.sqlstate or ""
    risky = code[:2] not in _IDENTIFIER_CLASSES
    fields = []
    changed = False
    for c, v in err.fields:
        if c in _DROPPED:
            changed = True
            continue
        if c == "M" and risky:
            scrubbed = _QUOTED.sub("…", v)
            if scrubbed != v:
                changed = True
                v = scrubbed + " (dbgov: value removed)"
        fields.append((c, v))
    return ErrorResponse(tuple(fields)) if changed else None
