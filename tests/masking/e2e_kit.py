"""Shared helpers of the end-to-end masking tests: what must never reach a masked
client, and how to collect every byte a client received.

The forbidden set is read from the database itself (as the table owner, bypassing
dbgov) plus the PII the demo generator pasted into prompts, so the tests compare
against the raw data, not against what the masking code thinks it masked. Each
value also counts in a few trivial rewordings (lower case, reversed, hex, digits
only) so that `upper(email)` or `reverse(ssn)` cannot slip through a byte compare.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import psycopg

from dbgov.demo.dataset import pii_samples

MIN_LEN = 6  # shorter raw values are substrings of too many harmless outputs
_PREFIX = MIN_LEN
_NON_DIGITS = re.compile(r"\D")


@dataclass
class Forbidden:
    """Raw values indexed by their first few characters, so that scanning a
    megabyte of received data is one dict lookup per position."""

    _index: dict[str, list[str]] = field(default_factory=dict)
    count: int = 0

    def add(self, value: str, *, variants: bool = True) -> None:
        forms = {value}
        if variants:
            forms.add(value[::-1])
            forms.add(value.encode().hex())
            digits = _NON_DIGITS.sub("", value)
            if len(digits) >= 10:  # phones and card numbers; 9-digit SSNs collide with floats
                forms.add(digits)
        for form in forms:
            form = form.lower()
            if len(form) < MIN_LEN:
                continue
            bucket = self._index.setdefault(form[:_PREFIX], [])
            if form not in bucket:
                bucket.append(form)
                self.count += 1

    def find(self, data: bytes | str) -> list[str]:
        """Every forbidden value that occurs in `data`, case-insensitively."""
        text = (
            data.decode("utf-8", "surrogateescape") if isinstance(data, bytes | bytearray) else data
        ).lower()
        grams = {text[i : i + _PREFIX] for i in range(len(text) - _PREFIX + 1)}
        return [v for g in grams & self._index.keys() for v in self._index[g] if v in text]


@dataclass(frozen=True)
class RawData:
    """What the tests compare against: the masked columns as stored."""

    forbidden: Forbidden  # every raw value, customer names in prompt texts included
    customers: list[tuple[Any, ...]]  # (id, full_name, email, phone, ssn, country, created_at)


def load_raw(dbgov: Any) -> RawData:
    customers = dbgov.app(
        "SELECT id, full_name, email, phone, ssn, country, created_at FROM customers ORDER BY id"
    )
    samples = pii_samples()
    forbidden = Forbidden()
    for row in customers:
        for value in row[1:5]:
            if value is not None:
                forbidden.add(value)
    for kind in ("emails", "phones", "ssns", "cards", "names"):
        for value in samples[kind]:
            forbidden.add(value)
    return RawData(forbidden, customers)


def error_text(exc: BaseException) -> str:
    """Every field of a server error a client can read. (Not str(exc): libpq adds
    the client's own query text to it, "LINE 1: ...", which the server never sent.)"""
    parts = []
    diag = getattr(exc, "diag", None)
    if diag is None or diag.message_primary is None:
        parts.append(str(exc))
    else:
        for name in (
            "message_primary",
            "message_detail",
            "message_hint",
            "context",
            "internal_query",
            "statement_position",
            "schema_name",
            "table_name",
            "column_name",
            "datatype_name",
            "constraint_name",
        ):
            value = getattr(diag, name, None)
            if value:
                parts.append(str(value))
    for name in ("detail", "hint", "context", "internal_query", "message"):
        value = getattr(exc, name, None)  # asyncpg's exception attributes
        if isinstance(value, str):
            parts.append(value)
    return "\n".join(parts)


def pgresult_bytes(cur: psycopg.Cursor[Any]) -> bytes:
    """The raw values of the cursor's current result, as they came off the wire."""
    res = cur.pgresult
    if res is None:
        return b""
    out = []
    for r in range(res.ntuples):
        for c in range(res.nfields):
            v = res.get_value(r, c)
            if v is not None:
                out.append(bytes(v))
    return b"\x00".join(out)
