"""The maskers' memo: what it returns is what the masker returns, as a value and
as the DataRow field the row rewriter appends, NULL and empty values included."""

from __future__ import annotations

from dbgov.masking.memo import Memo
from dbgov.wire.postgres.messages import NULL_FIELD
from dbgov.wire.postgres.messages import datarow_field as field


def test_memo_returns_the_maskers_result_once_computed() -> None:
    calls: list[bytes] = []

    def masker(value: bytes) -> bytes | None:
        calls.append(value)
        return None if value == b"gone" else value.upper()

    memo = Memo(masker, entries=2)
    assert memo.get(b"ann") == b"ANN" and memo(b"ann") == b"ANN"
    assert memo.field(b"ann") == b"\x00\x00\x00\x03ANN"
    assert calls == [b"ann"]  # remembered
    assert memo.get(b"gone") is None and memo.field(b"gone") == NULL_FIELD
    assert memo.get(b"") == b"" and memo.field(b"") == b"\x00\x00\x00\x00"
    # full (two entries): emptied, then filled again; results never change
    assert memo.get(b"ann") == b"ANN" and calls.count(b"ann") == 2
    big = b"x" * 5000  # too big to remember: computed every time
    assert memo.get(big) == big.upper() and memo.get(big) == big.upper()
    assert calls.count(big) == 2


def test_field_framing() -> None:
    assert field(None) == b"\xff\xff\xff\xff"
    assert field(b"ab") == b"\x00\x00\x00\x02ab"
    assert field(b"z" * 70000)[:4] == (70000).to_bytes(4, "big")
