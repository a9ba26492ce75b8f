"""The row rewriter and error scrubber every masked result goes through, table-tested.

The end-to-end suites (test_e2e_bypass, test_e2e_views) drive them through the real
proxy; here their edges are pinned without a network: NULLs, constants, formats,
malformed DataRows (which must fail, never pass a value through), and which error
fields and messages are scrubbed. Rows are built and read with the wire codec's own
DataRow, an implementation independent of the rewriter's offset arithmetic.
"""

from __future__ import annotations

import pytest

from dbgov.gate import ColumnMask, ResultPlan
from dbgov.proxy.masking_io import RowRewriter, sanitize_error
from dbgov.wire.postgres.errors import RemoteProtocolError
from dbgov.wire.postgres.messages import DataRow, ErrorResponse


def upper(value: bytes) -> bytes:
    return value.upper()


def tagged(value: bytes) -> bytes:
    return b"bin:" + value


def to_null(value: bytes) -> None:
    return None


def const(value: bytes) -> bytes:
    return b"[REDACTED]"


PLAN = ResultPlan(
    (
        ColumnMask(1, "a", "pseudonym", upper, tagged),
        ColumnMask(3, "b", "redact", const, const, constant=True),
        ColumnMask(4, "c", "null", to_null, to_null),
    )
)


def rewrite(values: tuple[bytes | None, ...], formats: tuple[int, ...]) -> tuple[bytes | None, ...]:
    frame = DataRow(values).encode()
    buf = b"junk" + frame + b"more"
    out = RowRewriter(PLAN, formats)(buf, 4, 4 + len(frame))
    assert out[:1] == b"D" and int.from_bytes(out[1:5], "big") == len(out) - 1
    return DataRow.decode(out[5:]).values


@pytest.mark.parametrize(
    ("values", "formats", "expected"),
    [
        # text format: column 1 through its text function, 3 constant, 4 NULLed
        (
            (b"1", b"ann", b"x", b"secret", b"y", b"z"),
            (0,) * 6,
            (b"1", b"ANN", b"x", b"[REDACTED]", None, b"z"),
        ),
        # binary format for column 1 only
        (
            (b"1", b"ann", b"x", b"secret", b"y", b"z"),
            (0, 1, 0, 0, 0, 0),
            (b"1", b"bin:ann", b"x", b"[REDACTED]", None, b"z"),
        ),
        # NULL stays NULL where the mask is the column's own; a constant replaces it
        (
            (None, None, None, None, None, None),
            (0,) * 6,
            (None, None, None, b"[REDACTED]", None, None),
        ),
        # empty strings are values, not NULLs
        ((b"", b"", b"", b"", b"", b""), (0,) * 6, (b"", b"", b"", b"[REDACTED]", None, b"")),
        # long values before and after masked ones are copied as they are
        (
            (b"x" * 70000, b"ann", b"y" * 300, b"s", b"t", b"z" * 5000),
            (0,) * 6,
            (b"x" * 70000, b"ANN", b"y" * 300, b"[REDACTED]", None, b"z" * 5000),
        ),
    ],
)
def test_rewrite(
    values: tuple[bytes | None, ...], formats: tuple[int, ...], expected: tuple[bytes | None, ...]
) -> None:
    assert rewrite(values, formats) == expected


def test_repeated_rows_come_from_the_row_memo_unchanged() -> None:
    """A row whose masked span was seen before is rewritten from the row memo: the same
    result as column by column, with the columns outside the span its own, and no
    sharing between result sets whose formats differ."""
    calls: list[bytes] = []

    def counted(value: bytes) -> bytes:
        calls.append(value)
        return value.upper()

    plan = ResultPlan((ColumnMask(1, "a", "pseudonym", counted, tagged),))
    rows = [(b"1", b"ann", b"x"), (b"2", b"ann", b"y"), (b"1", b"ann", b"x")]
    text = RowRewriter(plan, (0, 0, 0))
    for values in rows:
        frame = DataRow(values).encode()
        assert DataRow.decode(text(frame, 0, len(frame))[5:]).values == (
            values[0],
            b"ANN",
            values[2],
        )
    assert calls == [b"ann"]  # once: the span (column 1 only) repeats
    binary = RowRewriter(plan, (0, 1, 0))  # another layout: the binary function
    frame = DataRow(rows[0]).encode()
    assert DataRow.decode(binary(frame, 0, len(frame))[5:]).values == (b"1", b"bin:ann", b"x")


def _frame(body: bytes) -> bytes:
    return b"D" + (len(body) + 4).to_bytes(4, "big") + body


@pytest.mark.parametrize(
    "body",
    [
        b"\x00",  # no whole column count
        b"\x00\x06",  # six columns announced, none present
        b"\x00\x06\x00\x00\x00\x01a\x00\x00",  # a length word cut short
        b"\x00\x06\x00\x00\x00\x01a\x00\x00\x00\x09abc",  # a value past the end
        b"\x00\x06\x00\x00\x00\x01a\xff\xff\xff\xfe",  # a negative length other than -1
        b"\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x01b",  # fewer columns than described
    ],
)
@pytest.mark.parametrize("after", [b"", _frame(b"\x00\x06" + b"\x00\x00\x00\x04abcd" * 6)])
def test_malformed_rows_fail(body: bytes, after: bytes) -> None:
    # `after`: the receive buffer usually holds the next row too; a short row must not
    # borrow its bytes.
    frame = _frame(body)
    with pytest.raises(RemoteProtocolError):
        RowRewriter(PLAN, (0,) * 6)(frame + after, 0, len(frame))


@pytest.mark.parametrize(
    ("code", "message", "scrubbed"),
    [
        (
            "22P02",
            'invalid input syntax for type integer: "ann@example.org"',
            "invalid input syntax for type integer: … (dbgov: value removed)",
        ),
        (
            "22P02",
            'invalid input syntax for type json: "a"b"c" here',
            "invalid input syntax for type json: … here (dbgov: value removed)",
        ),
        (
            "23505",
            'duplicate key value violates unique constraint "k"',
            "duplicate key value violates unique constraint … (dbgov: value removed)",
        ),
        (
            "22021",
            'invalid byte sequence for encoding "UTF8": 0x00',
            "invalid byte sequence for encoding …: … (dbgov: value removed)",
        ),
        ("00000", "value 'secret' seen", "value … seen (dbgov: value removed)"),
        ("42P01", 'relation "nope" does not exist', None),  # identifiers only: kept
    ],
)
def test_error_messages(code: str, message: str, scrubbed: str | None) -> None:
    err = ErrorResponse.build("ERROR", code, message)
    out = sanitize_error(err)
    if scrubbed is None:
        assert out is None
    else:
        assert out is not None and out.message == scrubbed


def test_value_bearing_fields_are_dropped_whatever_the_class() -> None:
    err = ErrorResponse(
        (
            ("S", "ERROR"),
            ("C", "42501"),
            ("M", "permission denied"),
            ("D", "Failing row contains (1, ann@example.org)."),
            ("W", "SQL statement ..."),
            ("q", "SELECT 'x'"),
            ("p", "3"),
            ("H", "a hint"),
        )
    )
    out = sanitize_error(err)
    assert out is not None
    assert [c for c, _ in out.fields] == ["S", "C", "M", "H"]
