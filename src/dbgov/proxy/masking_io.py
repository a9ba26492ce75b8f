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
from collections.abc import Callable
from typing import Final

from dbgov.gate import ColumnMask, ResultPlan
from dbgov.wire.postgres.errors import RemoteProtocolError
from dbgov.wire.postgres.messages import ErrorResponse, FieldDescription

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_HDR = struct.Struct("!cI")
_pack_i32 = _I32.pack
_pack_hdr = _HDR.pack
_NULL_WORD = b"\xff\xff\xff\xff"
_SMALL: Final = 4096
_WORDS: Final = tuple(_pack_i32(i) for i in range(_SMALL))  # length words, made once

REDACTED = b"[REDACTED]"
# Types whose text and binary forms are the UTF-8 string itself, so the redaction
# marker is a valid value; every other type becomes NULL (maskers.py keeps the same
# list, plus JSON, which the engine's plans handle).
STRING_TYPES = frozenset({25, 1043, 1042, 19})

_Fn = Callable[[bytes], bytes | None]


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


class RowRewriter:
    """Rewrites the DataRows of one result set under one plan.

    `formats` are the result's per-column format codes (0 text, 1 binary); a column
    without one is text. Columns after the last masked one are copied unread: the
    server framed the message, and nothing there is ours to change.
    """

    __slots__ = ("_columns", "_count")

    def __init__(self, plan: ResultPlan, formats: tuple[int, ...]) -> None:
        columns: list[tuple[int, _Fn, bytes | None, bool]] = []
        for col in sorted(plan.columns, key=lambda c: c.index):
            fn = col.binary if col.index < len(formats) and formats[col.index] == 1 else col.text
            # A constant column's value is computed once, here.
            columns.append((col.index, fn, fn(b"") if col.constant else None, col.constant))
        self._columns = tuple(columns)
        self._count = len(formats)

    def __call__(self, row: bytes, start: int, end: int) -> bytes:
        """The DataRow frame at row[start:end] (type byte included), rewritten."""
        if end - start < 7:
            raise RemoteProtocolError("malformed DataRow")
        try:
            n = (row[start + 5] << 8) | row[start + 6]
            if n != self._count and self._count:
                raise RemoteProtocolError("DataRow and RowDescription disagree on the column count")
            pos = start + 7
            last = start + 5
            i = 0
            grown = 0  # bytes the values grew by (negative: shrank)
            parts: list[bytes] = [b""]  # the header goes first, once the length is known
            for index, fn, fixed, constant in self._columns:
                if index >= n:
                    raise RemoteProtocolError("DataRow has fewer columns than its RowDescription")
                while i < index:  # unmasked columns before this one: step over
                    if pos + 4 > end:
                        raise RemoteProtocolError("malformed DataRow")
                    ln = _int32(row, pos)
                    if ln < -1:
                        raise RemoteProtocolError("malformed DataRow")
                    pos += 4 + ln if ln > 0 else 4
                    i += 1
                if pos + 4 > end:
                    raise RemoteProtocolError("malformed DataRow")
                ln = _int32(row, pos)
                i += 1
                value_end = pos + 4 + ln if ln > 0 else pos + 4
                if value_end > end or ln < -1:
                    raise RemoteProtocolError("malformed DataRow")
                if ln == -1 and not constant:
                    pos = value_end  # NULL stays NULL
                    continue
                new = fixed if constant else fn(row[pos + 4 : value_end])
                if last != pos:
                    parts.append(row[last:pos])
                if new is None:
                    parts.append(_NULL_WORD)
                    grown -= value_end - pos - 4
                else:
                    size = len(new)
                    parts.append(_WORDS[size] if size < _SMALL else _pack_i32(size))
                    parts.append(new)
                    grown += size - (value_end - pos - 4)
                pos = last = value_end
            if pos > end:
                raise RemoteProtocolError("malformed DataRow")
            parts.append(row[last:end])
            parts[0] = _pack_hdr(b"D", end - start - 1 + grown)
            return b"".join(parts)
        except IndexError:  # a header past the end of what arrived
            raise RemoteProtocolError("malformed DataRow") from None


def _int32(b: bytes, pos: int) -> int:
    """The signed big-endian int32 at b[pos]. Byte indexing, compiled (dbgov.native),
    costs a fraction of a struct call."""
    v = (b[pos] << 24) | (b[pos + 1] << 16) | (b[pos + 2] << 8) | b[pos + 3]
    return v - 0x100000000 if v & 0x80000000 else v


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
