"""Applying masking plans to wire messages: DataRow rewriting and error scrubbing.

Only result sets whose plan masks something come here; every other DataRow is
forwarded as bytes by the pump. The plan itself (which column, which mask) is
decided by the gate; this module only turns values into masked values in the
format the client asked for (text or binary).
"""

from __future__ import annotations

import re
import struct

from dbgov.gate import ColumnMask, ResultPlan
from dbgov.wire.postgres.errors import RemoteProtocolError
from dbgov.wire.postgres.messages import ErrorResponse, FieldDescription

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_HDR = struct.Struct("!cI")

REDACTED = b"[REDACTED]"
# Types whose text form can hold the redaction marker; others become NULL.
STRING_TYPES = frozenset({25, 1043, 1042, 19, 18, 114, 3802, 142})


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


def rewrite_datarow(buf: bytearray, start: int, end: int, plan: ResultPlan,
                    formats: tuple[int, ...]) -> bytes:
    values = datarow_values(memoryview(buf)[start:end], 5)
    for col in plan.columns:
        i = col.index
        if i >= len(values):
            raise RemoteProtocolError("DataRow has fewer columns than its RowDescription")
        v = values[i]
        if v is None:
            continue
        binary = i < len(formats) and formats[i] == 1
        values[i] = col.binary(v) if binary else col.text(v)
    parts = [_I16.pack(len(values))]
    for v in values:
        parts.append(b"\xff\xff\xff\xff" if v is None else _I32.pack(len(v)) + v)
    body = b"".join(parts)
    return _HDR.pack(b"D", len(body) + 4) + body


def _redact(_: bytes) -> bytes | None:
    return REDACTED


def _null(_: bytes) -> bytes | None:
    return None


def mask_all(fields: tuple[FieldDescription, ...], why: str) -> ResultPlan:
    """Fail closed at result time: every column redacted (strings) or NULL."""
    cols = []
    for i, f in enumerate(fields):
        fn = _redact if f.type_oid in STRING_TYPES and f.format == 0 else _null
        cols.append(ColumnMask(i, f"{f.name} ({why})", "redact", fn, _null))
    return ResultPlan(tuple(cols))


# Messages of these classes may quote the offending value: data exceptions (22),
# integrity violations (23), and 42804/42883 type errors quote only types (kept).
_VALUE_CLASSES = ("22", "23")
_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'|\([^)]*\)=\([^)]*\)")


def sanitize_error(err: ErrorResponse) -> ErrorResponse | None:
    """For sessions that see masked data: drop DETAIL/CONTEXT/internal query and quoted
    values from error messages that could echo a masked value. Returns None when the
    error needs no change."""
    code = err.sqlstate or ""
    risky = code.startswith(_VALUE_CLASSES)
    fields = []
    changed = False
    for c, v in err.fields:
        if c in ("D", "W", "q", "p"):
            changed = True
            continue
        if c == "M" and risky:
            scrubbed = _QUOTED.sub("…", v)
            if scrubbed != v:
                changed = True
                v = scrubbed + " (dbgov: value removed)"
        fields.append((c, v))
    return ErrorResponse(tuple(fields)) if changed else None
