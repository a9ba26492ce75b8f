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
from dbgov.wire.postgres.messages import ErrorResponse, FieldDescription

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_pack_i32 = _I32.pack
_NULL_WORD = b"\xff\xff\xff\xff"
_SMALL: Final = 4096
_WORDS: Final = tuple(_pack_i32(i) for i in range(_SMALL))  # length words, made once

REDACTED = b"[REDACTED]"
# Types whose text and binary forms are the UTF-8 string itself, so the redaction
# marker is a valid value; every other type becomes NULL (maskers.py keeps the same
# list, plus JSON, which the engine's plans handle).
STRING_TYPES = frozenset({25, 1043, 1042, 19})


def datarow_values(body: bytes | bytearray | memoryview, offset: int = 0) -> list[bytes | None]:
    """Decode DataRow column values (body starts at `offset`)."""
    view = memoryview(body)
    n = _I16.unpack_from(view, offset)[0]
    pos = offset + 2
    end = len(view)
    out: list[bytes | None] = []
    for _ in range(n):
        if pos + 4 > end:
            raise RemoteProtocolError("malformed DataRow")
        ln = _I32.unpack_from(view, pos)[0]
        pos += 4
        if ln == -1:
            out.append(None)
            continue
        if ln < 0 or pos + ln > end:
            raise RemoteProtocolError("malformed DataRow")
        out.append(bytes(view[pos : pos + ln]))
        pos += ln
    if pos != end:
        raise RemoteProtocolError("malformed DataRow: trailing bytes")
    return out


class _Column:
    """One masked column of a result set, as the rewriter reads it."""

    __slots__ = ("constant", "fixed", "index", "memo")

    def __init__(self, index: int, memo: Memo, fixed: bytes | None, constant: bool) -> None:
        self.index = index
        self.memo = memo  # the column's masker for its format, remembered
        self.fixed = fixed  # a constant column's value, computed once
        self.constant = constant


class RowRewriter:
    """Rewrites the DataRows of one result set under one plan.

    `formats` are the result's per-column format codes (0 text, 1 binary); a column
    without one is text. Columns after the last masked one are copied unread: the
    server framed the message, and nothing there is ours to change.
    """

    __slots__ = ("_columns", "_count")

    def __init__(self, plan: ResultPlan, formats: tuple[int, ...]) -> None:
        columns: list[_Column] = []
        for col in sorted(plan.columns, key=lambda c: c.index):
            fn = col.binary if col.index < len(formats) and formats[col.index] == 1 else col.text
            memo = fn if isinstance(fn, Memo) else Memo(fn)
            fixed = fn(b"") if col.constant else None
            columns.append(_Column(col.index, memo, fixed, col.constant))
        self._columns = columns
        self._count = len(formats)

    def __call__(self, row: bytes, start: int, end: int) -> bytes:
        """The DataRow frame at row[start:end] (type byte included), rewritten."""
        out: list[bytes] = []
        self.write(row, start, end, out)
        return b"".join(out)

    def write(self, row: bytes, start: int, end: int, out: list[bytes]) -> None:
        """Append the DataRow frame at row[start:end], rewritten, to `out` as pieces:
        the pumps join a whole chunk's output once, so a row costs no join of its own
        and its unchanged spans are slices, not copies into a row buffer."""
        if end - start < 7 or start < 0 or end > len(row):
            raise RemoteProtocolError("malformed DataRow")
        n = (row[start + 5] << 8) | row[start + 6]
        if n != self._count and self._count:
            raise RemoteProtocolError("DataRow and RowDescription disagree on the column count")
        at = len(out)
        out.append(b"D")
        out.append(b"")  # the length word, once the values are known
        pos = start + 7
        last = start + 5
        i = 0
        grown = 0  # bytes the values grew by (negative: shrank)
        for col in self._columns:
            index = col.index
            if index >= n:
                raise RemoteProtocolError("DataRow has fewer columns than its RowDescription")
            while i < index:  # unmasked columns before this one: step over
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
            if pos + 4 > end:
                raise RemoteProtocolError("malformed DataRow")
            ln = (row[pos] << 24) | (row[pos + 1] << 16) | (row[pos + 2] << 8) | row[pos + 3]
            i += 1
            null = ln == 0xFFFFFFFF
            if ln >= 0x80000000 and not null:
                raise RemoteProtocolError("malformed DataRow")
            value_end = pos + 4 if null else pos + 4 + ln
            if value_end > end:
                raise RemoteProtocolError("malformed DataRow")
            if null and not col.constant:
                pos = value_end  # NULL stays NULL
                continue
            new = col.fixed if col.constant else col.memo.get(row[pos + 4 : value_end])
            if last != pos:
                out.append(row[last:pos])
            if new is None:
                out.append(_NULL_WORD)
                grown -= value_end - pos - 4
            else:
                size = len(new)
                out.append(_WORDS[size] if size < _SMALL else _pack_i32(size))
                out.append(new)
                grown += size - (value_end - pos - 4)
            pos = last = value_end
        if pos > end:
            raise RemoteProtocolError("malformed DataRow")
        if last != end:
            out.append(row[last:end])
        length = end - start - 1 + grown
        out[at + 1] = _WORDS[length] if length < _SMALL else _pack_i32(length)


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
