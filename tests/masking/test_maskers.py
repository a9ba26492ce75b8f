"""Value maskers: every mask kind, in text and binary format, on the types it meets.

Binary values are made and read back with psycopg's own binary dumpers and loaders
(no connection needed), so the wire formats are checked against an independent
implementation rather than against our own struct calls. Pseudonyms are checked
against the standard library's hmac. Maskers never see SQL NULL (the row rewriter
passes NULL through), so no case here feeds one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import random
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from psycopg.adapt import PyFormat, Transformer
from psycopg.pq import Format
from psycopg.types.json import Jsonb
from psycopg.types.numeric import Float4, Float8, Int2, Int4, Int8

from dbgov.masking.maskers import Mask, Masker, MaskKind, MaskSpecError, validate

KEY = b"prod-target-key-0123456789abcdef"
OTHER_KEY = b"staging-target-key-0123456789abc"

TEXT, VARCHAR, BPCHAR, NAME, JSON, JSONB = 25, 1043, 1042, 19, 114, 3802
INT2, INT4, INT8, NUMERIC, FLOAT4, FLOAT8 = 21, 23, 20, 1700, 700, 701
DATE, TIMESTAMP, TIMESTAMPTZ = 1082, 1114, 1184
TEXT_ARRAY, CITEXT = 1009, 16_385  # citext's OID depends on the database: unknown here
STRINGS = (TEXT, VARCHAR, BPCHAR, NAME)

_TX = Transformer()


def dump(obj: Any) -> tuple[int, bytes]:
    """(type OID, binary wire value) as psycopg sends it."""
    dumper = _TX.get_dumper(obj, PyFormat.BINARY)
    return dumper.oid, bytes(dumper.dump(obj) or b"")


def load(oid: int, data: bytes | None, fmt: Format = Format.BINARY) -> Any:
    return None if data is None else _TX.get_loader(oid, fmt).load(data)


def masker(spec: dict[str, Any], oid: int, key: bytes = KEY) -> Masker:
    return Masker(validate(spec), oid, key)


def hmac_hex(data: bytes, key: bytes = KEY) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


# ---------------------------------------------------------------------------
# Masks that produce text, on string types: text format == binary format.

STRING_CASES: list[tuple[dict[str, Any], bytes, bytes]] = [
    ({"kind": "redact"}, b"Jane Doe", b"[REDACTED]"),
    ({"kind": "redact", "value": "<hidden>"}, b"x", b"<hidden>"),
    ({"kind": "redact", "value": "—"}, b"", "—".encode()),
    ({"kind": "partial", "keep_last": 4}, b"+1 415-555-0199", b"***********0199"),
    ({"kind": "partial", "keep_first": 2}, b"secret", b"se****"),
    ({"kind": "partial", "keep_first": 1, "keep_last": 1}, b"alice", b"a***e"),
    ({"kind": "partial", "keep_last": 4, "fill": "#"}, b"123-45-6789", b"#######6789"),
    ({"kind": "partial", "keep_last": 2, "fill": "•"}, b"abcd", "••cd".encode()),
    ({"kind": "partial", "keep_first": 1}, "Émile".encode(), "É****".encode()),
    ({"kind": "partial", "keep_last": 2}, "日本語テキスト".encode(), "*****スト".encode()),
    ({"kind": "partial", "keep_last": 4}, b"0199", b"****"),  # no longer than kept
    ({"kind": "partial", "keep_last": 4}, b"abc", b"***"),
    ({"kind": "partial", "keep_first": 2, "keep_last": 2}, b"abcd", b"****"),
    ({"kind": "partial", "keep_first": 2, "keep_last": 2}, b"abcde", b"ab*de"),
    ({"kind": "partial", "keep_last": 4}, b"", b""),
    ({"kind": "partial"}, b"everything", b"**********"),
    ({"kind": "email"}, b"jane.doe@example.com", b"****@example.com"),
    ({"kind": "email", "keep": "first"}, b"jane.doe@example.com", b"j***@example.com"),
    ({"kind": "email", "keep": "first"}, "élodie@exemple.fr".encode(), "é***@exemple.fr".encode()),
    ({"kind": "email", "keep": "first"}, b"a@b.co", b"a***@b.co"),
    ({"kind": "email"}, b'"odd@local"@example.com', b"****@example.com"),
    ({"kind": "email"}, b"not an address", b"****"),
    ({"kind": "email"}, b"@example.com", b"****"),
    ({"kind": "email"}, b"jane@", b"****"),
    ({"kind": "email"}, b"", b"****"),
    ({"kind": "pseudonym"}, b"Jane Doe", hmac_hex(b"Jane Doe")[:16].encode()),
    (
        {"kind": "pseudonym", "prefix": "user_", "length": 10},
        b"jane@example.com",
        b"user_" + hmac_hex(b"jane@example.com")[:10].encode(),
    ),
    ({"kind": "pseudonym", "length": 64}, b"", hmac_hex(b"").encode()),
    ({"kind": "hash"}, b"Jane Doe", hashlib.sha256(b"Jane Doe").hexdigest().encode()),
    ({"kind": "pii_text"}, b"mail jane@example.com now", b"mail [EMAIL] now"),
    ({"kind": "pii_text"}, b"no personal data here", b"no personal data here"),
    (
        {"kind": "pii_text", "types": ["phone"]},
        b"jane@example.com 415-555-0199",
        b"jane@example.com [PHONE]",
    ),
    (
        {"kind": "pii_text", "replace": "pseudonym", "length": 8},
        "Zoë: 123-45-6789 ✓".encode(),
        f"Zoë: [SSN:{hmac_hex(b'123-45-6789')[:8]}] ✓".encode(),
    ),
]


@pytest.mark.parametrize("oid", STRINGS)
@pytest.mark.parametrize(("spec", "value", "expected"), STRING_CASES)
def test_text_masks_on_string_types(
    spec: dict[str, Any], value: bytes, expected: bytes, oid: int
) -> None:
    m = masker(spec, oid)
    assert m.text(value) == expected
    # textsend/varcharsend/bpcharsend/namesend: the binary value is the text bytes.
    assert m.binary(value) == expected
    assert not m.always_null


def test_binary_string_values_match_psycopg() -> None:
    oid, wire = dump("Jürgen Müller")
    assert oid == TEXT
    out = masker({"kind": "partial", "keep_first": 1}, oid).binary(wire)
    assert load(oid, out) == "J" + "*" * 12


def test_bpchar_ignores_pad_spaces_like_postgresql() -> None:
    # 'ab  '::char(4) = 'ab'::text in PostgreSQL; a join across them must still match.
    padded = masker({"kind": "pseudonym"}, BPCHAR).text(b"ab  ")
    assert padded == masker({"kind": "pseudonym"}, TEXT).text(b"ab")
    assert masker({"kind": "partial", "keep_last": 1}, BPCHAR).text(b"abc   ") == b"**c"
    assert masker({"kind": "redact"}, BPCHAR).text(b"ab  ") == b"[REDACTED]"


def test_pii_text_returns_the_same_bytes_when_nothing_is_found() -> None:
    value = b"just a question about invoices from 2024"
    assert masker({"kind": "pii_text"}, TEXT).text(value) is value


def test_pii_text_keeps_bytes_of_other_encodings() -> None:
    # A LATIN1 client: 0xE9 is not UTF-8; it passes through, the phone is masked.
    value = b"caf\xe9, call 415-555-0199 \xff"
    expected = b"caf\xe9, call [PHONE] \xff"
    assert masker({"kind": "pii_text"}, TEXT).text(value) == expected


def test_pii_pseudonym_links_to_the_column_pseudonym() -> None:
    email = b"jane@example.com"
    column = masker({"kind": "pseudonym"}, TEXT).text(email)
    in_text = masker({"kind": "pii_text", "replace": "pseudonym"}, TEXT).text(b"from " + email)
    assert column is not None
    assert in_text == b"from [EMAIL:" + column + b"]"


# ---------------------------------------------------------------------------
# Pseudonyms: deterministic per key, different across keys, standard HMAC.


def test_pseudonym_is_deterministic_and_keyed_per_target() -> None:
    prod = masker({"kind": "pseudonym", "prefix": "user_"}, TEXT)
    prod_again = masker({"kind": "pseudonym", "prefix": "user_"}, VARCHAR)
    staging = masker({"kind": "pseudonym", "prefix": "user_"}, TEXT, OTHER_KEY)
    values = [f"customer-{i}@example.com".encode() for i in range(500)]
    tokens = [prod.text(v) for v in values]
    assert tokens == [prod_again.text(v) for v in values]
    assert len(set(tokens)) == len(values)
    assert all(a != b for a, b in zip(tokens, (staging.text(v) for v in values), strict=True))
    assert tokens[0] == b"user_" + hmac_hex(values[0])[:16].encode()
    assert staging.text(values[0]) == b"user_" + hmac_hex(values[0], OTHER_KEY)[:16].encode()


@pytest.mark.parametrize("key_length", [16, 32, 63, 64, 65, 100])
def test_pseudonym_matches_hmac_for_any_key_length(key_length: int) -> None:
    key = bytes(range(key_length))
    m = masker({"kind": "pseudonym", "length": 64}, TEXT, key)
    for value in (b"", b"a", b"x" * 1000, "Zoë".encode()):
        assert m.text(value) == hmac_hex(value, key).encode()


def test_pseudonym_refuses_a_short_key() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        masker({"kind": "pseudonym"}, TEXT, b"short")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        masker({"kind": "pii_text", "replace": "pseudonym"}, TEXT, b"")


def test_hash_is_the_same_across_targets() -> None:
    a = masker({"kind": "hash"}, TEXT).text(b"123-45-6789")
    assert a == masker({"kind": "hash"}, TEXT, OTHER_KEY).text(b"123-45-6789")


# ---------------------------------------------------------------------------
# json and jsonb: redact, pseudonym and hash become a JSON string literal.

JSON_DOC = b'{"a": 1, "b": [true, null]}'


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"kind": "redact"}, "[REDACTED]"),
        ({"kind": "redact", "value": 'say "hi"\n'}, 'say "hi"\n'),
        ({"kind": "pseudonym"}, hmac_hex(JSON_DOC)[:16]),
        ({"kind": "pseudonym", "prefix": 'u"\\_'}, 'u"\\_' + hmac_hex(JSON_DOC)[:16]),
        ({"kind": "hash"}, hashlib.sha256(JSON_DOC).hexdigest()),
    ],
)
def test_json_masks_stay_valid_json(spec: dict[str, Any], expected: str) -> None:
    for oid in (JSON, JSONB):
        m = masker(spec, oid)
        assert json.loads(m.text(JSON_DOC) or b"") == expected
        assert load(oid, m.text(JSON_DOC), Format.TEXT) == expected
    assert json.loads(masker(spec, JSON).binary(JSON_DOC) or b"") == expected
    oid, wire = dump(Jsonb({"a": 1, "b": [True, None]}))
    assert oid == JSONB
    assert wire[:1] == b"\x01"
    assert load(JSONB, masker(spec, JSONB).binary(wire)) == expected


def test_jsonb_text_and_binary_pseudonyms_agree() -> None:
    m = masker({"kind": "pseudonym"}, JSONB)
    assert m.binary(b"\x01" + JSON_DOC) == b"\x01" + (m.text(JSON_DOC) or b"")


@pytest.mark.parametrize("kind", ["partial", "email", "pii_text", "bucket"])
def test_json_masks_that_cannot_keep_json_give_null(kind: str) -> None:
    spec: dict[str, Any] = {"kind": kind, "width": 10} if kind == "bucket" else {"kind": kind}
    for oid in (JSON, JSONB):
        m = masker(spec, oid)
        assert m.always_null
        assert m.text(JSON_DOC) is None
        assert m.binary(b"\x01" + JSON_DOC) is None


def test_jsonb_binary_of_an_unknown_version_is_null() -> None:
    assert masker({"kind": "redact"}, JSONB).binary(b"\x02" + JSON_DOC) is None


# ---------------------------------------------------------------------------
# Types a text mask cannot keep: NULL ("redact where the type is not a string").

NON_STRING_VALUES: list[tuple[int, bytes, bytes]] = [
    (INT4, b"42", dump(Int4(42))[1]),
    (INT8, b"42", dump(Int8(42))[1]),
    (FLOAT8, b"4.2", dump(Float8(4.2))[1]),
    (NUMERIC, b"4.2", dump(Decimal("4.2"))[1]),
    (DATE, b"2024-05-17", dump(dt.date(2024, 5, 17))[1]),
    (TIMESTAMP, b"2024-05-17 13:45:12", dump(dt.datetime(2024, 5, 17, 13, 45, 12))[1]),
    (TEXT_ARRAY, b"{a,b}", b"\x00\x00\x00\x01"),
    (CITEXT, b"Jane", b"Jane"),
]


@pytest.mark.parametrize("kind", ["redact", "partial", "email", "pseudonym", "hash", "pii_text"])
@pytest.mark.parametrize(("oid", "text_value", "binary_value"), NON_STRING_VALUES)
def test_text_masks_on_other_types_give_null(
    kind: str, oid: int, text_value: bytes, binary_value: bytes
) -> None:
    m = masker({"kind": kind}, oid)
    assert m.always_null
    assert m.text(text_value) is None
    assert m.binary(binary_value) is None


@pytest.mark.parametrize("oid", [*STRINGS, JSONB, INT4, DATE, CITEXT])
def test_null_mask_gives_null_everywhere(oid: int) -> None:
    m = masker({"kind": "null"}, oid)
    assert m.always_null
    assert m.text(b"x") is None
    assert m.binary(b"\x01x") is None


# ---------------------------------------------------------------------------
# bucket on numbers


@pytest.mark.parametrize(
    ("oid", "width", "value", "expected"),
    [
        (INT4, 10, b"37", b"30"),
        (INT4, 10, b"30", b"30"),
        (INT4, 10, b"0", b"0"),
        (INT4, 10, b"-3", b"-10"),
        (INT4, 1000, b"2147483647", b"2147483000"),
        (INT4, 10, b"-2147483648", None),  # the floor, -2147483650, does not fit
        (INT2, 100, b"-32768", None),
        (INT2, 7, b"100", b"98"),
        (INT8, 10, b"9223372036854775807", b"9223372036854775800"),
        (INT4, 2.5, b"7", b"5"),
        (INT4, 10, b"forty", None),
        (NUMERIC, 10, b"37.25", b"30.00"),
        (NUMERIC, 10, b"-37.25", b"-40.00"),
        (NUMERIC, "0.5", b"37.25", b"37.00"),
        (NUMERIC, 0.1, b"0.37", b"0.30"),
        (NUMERIC, 10, b"-0.5", b"-10.0"),
        (NUMERIC, 10, b"5", b"0"),
        (NUMERIC, 1, b"123456789012345678901234567890.5", b"123456789012345678901234567890.0"),
        (NUMERIC, 10, b"NaN", b"NaN"),
        (NUMERIC, 10, b"Infinity", b"Infinity"),
        (NUMERIC, 10, b"-Infinity", b"-Infinity"),
        (FLOAT8, 0.1, b"0.37", b"0.3"),
        (FLOAT8, 0.1, b"0.3", b"0.3"),
        (FLOAT8, 10, b"37.5", b"30"),
        (FLOAT8, 10, b"-0.05", b"-10"),
        (FLOAT8, 10, b"1e+100", b"1e+100"),
        (FLOAT8, 0.001, b"1.5e-05", b"0"),
        (FLOAT8, 10, b"NaN", b"NaN"),
        (FLOAT8, 10, b"-Infinity", b"-Infinity"),
        (FLOAT4, 0.5, b"3.14159", b"3"),
    ],
)
def test_bucket_numbers_text(oid: int, width: Any, value: bytes, expected: bytes | None) -> None:
    out = masker({"kind": "bucket", "width": width}, oid).text(value)
    assert out == expected
    if out is not None:  # and psycopg reads it as the type
        load(oid, out, Format.TEXT)


@pytest.mark.parametrize(
    ("obj", "width", "expected"),
    [
        (Int2(37), 10, 30),
        (Int2(-32768), 10, None),
        (Int4(37), 10, 30),
        (Int4(-1), 10, -10),
        (Int4(2_000_000_001), 1_000_000, 2_000_000_000),
        (Int8(2**62 + 5), 10, 2**62 - 4),
        (Int8(-(2**63)), 10, None),
        (Float8(0.37), 0.1, 0.3),
        (Float8(37.5), 10, 30.0),
        (Float8(-37.5), 10, -40.0),
        (Float8(1e300), 1e299, 1e300),
        (Float4(0.3), 0.1, Float4(0.3)),  # float4 0.3 is 0.30000001: bucketed as 0.3
        (Float4(37.5), 10, 30.0),
    ],
)
def test_bucket_numbers_binary(obj: Any, width: Any, expected: Any) -> None:
    oid, wire = dump(obj)
    out = masker({"kind": "bucket", "width": width}, oid).binary(wire)
    if expected is None:
        assert out is None
    else:
        assert load(oid, out) == pytest.approx(expected, rel=1e-7)
        assert len(out or b"") == len(wire)


@pytest.mark.parametrize("special", [float("nan"), float("inf"), float("-inf")])
def test_bucket_float_binary_keeps_non_finite(special: float) -> None:
    for obj in (Float8(special), Float4(special)):
        oid, wire = dump(obj)
        assert masker({"kind": "bucket", "width": 10}, oid).binary(wire) == wire


def test_bucket_numeric_binary_is_null() -> None:
    # numeric's binary format is not rewritten (documented): fail closed.
    oid, wire = dump(Decimal("37.25"))
    assert oid == NUMERIC
    m = masker({"kind": "bucket", "width": 10}, NUMERIC)
    assert m.binary(wire) is None
    assert not m.always_null


@pytest.mark.parametrize(("oid", "size"), [(INT2, 2), (INT4, 4), (INT8, 8), (FLOAT8, 8)])
def test_bucket_binary_of_the_wrong_size_is_null(oid: int, size: int) -> None:
    assert masker({"kind": "bucket", "width": 10}, oid).binary(b"\x00" * (size - 1)) is None


# ---------------------------------------------------------------------------
# bucket on dates and timestamps


@pytest.mark.parametrize(
    ("oid", "granularity", "value", "expected"),
    [
        (DATE, "month", b"2024-05-17", b"2024-05-01"),
        (DATE, "year", b"2024-05-17", b"2024-01-01"),
        (DATE, "day", b"2024-05-17", b"2024-05-17"),
        (DATE, "month", b"0044-03-15 BC", b"0044-03-01 BC"),
        (DATE, "year", b"12345-06-07", b"12345-01-01"),
        (DATE, "month", b"infinity", b"infinity"),
        (DATE, "month", b"-infinity", b"-infinity"),
        (DATE, "month", b"05/17/2024", None),  # DateStyle SQL, not ISO: fail closed
        (DATE, "month", b"17.05.2024", None),
        (TIMESTAMP, "day", b"2024-05-17 13:45:12.123456", b"2024-05-17 00:00:00"),
        (TIMESTAMP, "month", b"2024-05-17 13:45:12", b"2024-05-01 00:00:00"),
        (TIMESTAMP, "year", b"2024-05-17 13:45:12.5", b"2024-01-01 00:00:00"),
        (TIMESTAMP, "month", b"0044-03-15 12:00:00 BC", b"0044-03-01 00:00:00 BC"),
        (TIMESTAMP, "year", b"infinity", b"infinity"),
        (TIMESTAMPTZ, "month", b"2024-05-17 13:45:12.123+02", b"2024-05-01 00:00:00+02"),
        (TIMESTAMPTZ, "day", b"2024-05-17 13:45:12+05:30", b"2024-05-17 00:00:00+05:30"),
        (TIMESTAMPTZ, "year", b"1900-05-17 13:45:12+00:09:21", b"1900-01-01 00:00:00+00:09:21"),
        (TIMESTAMPTZ, "month", b"Fri May 17 13:45:12 2024 PDT", None),  # DateStyle Postgres
    ],
)
def test_bucket_dates_text(
    oid: int, granularity: str, value: bytes, expected: bytes | None
) -> None:
    assert masker({"kind": "bucket", "granularity": granularity}, oid).text(value) == expected


def _truncated(d: dt.date, granularity: str) -> dt.date:
    if granularity == "year":
        return d.replace(month=1, day=1)
    return d.replace(day=1) if granularity == "month" else d


SAMPLE_DATES = [
    dt.date(1, 1, 1),
    dt.date(1, 12, 31),
    dt.date(1582, 10, 15),
    dt.date(1900, 2, 28),
    dt.date(1999, 12, 31),
    dt.date(2000, 1, 1),
    dt.date(2000, 2, 29),
    dt.date(2024, 2, 29),
    dt.date(2024, 3, 1),
    dt.date(2100, 3, 1),
    dt.date(9999, 12, 31),
]


@pytest.mark.parametrize("granularity", ["day", "month", "year"])
def test_bucket_date_binary_matches_the_calendar(granularity: str) -> None:
    rng = random.Random(granularity)
    dates = SAMPLE_DATES + [dt.date.fromordinal(rng.randrange(1, 3_652_059)) for _ in range(2000)]
    m = masker({"kind": "bucket", "granularity": granularity}, DATE)
    for d in dates:
        oid, wire = dump(d)
        assert oid == DATE
        assert load(DATE, m.binary(wire)) == _truncated(d, granularity), d


@pytest.mark.parametrize("granularity", ["day", "month", "year"])
def test_bucket_timestamp_binary_matches_the_calendar(granularity: str) -> None:
    rng = random.Random(granularity)
    naive = [
        dt.datetime.combine(d, dt.time(rng.randrange(24), rng.randrange(60), 7, 123456))
        for d in SAMPLE_DATES
        + [dt.date.fromordinal(rng.randrange(1, 3_652_059)) for _ in range(1000)]
    ]
    for oid, values in (
        (TIMESTAMP, naive),
        (TIMESTAMPTZ, [t.replace(tzinfo=dt.UTC) for t in naive]),
    ):
        m = masker({"kind": "bucket", "granularity": granularity}, oid)
        for t in values:
            dumped_oid, wire = dump(t)
            assert dumped_oid == oid
            got = load(oid, m.binary(wire))
            want = dt.datetime.combine(_truncated(t.date(), granularity), dt.time(), t.tzinfo)
            assert got == want, t


def test_bucket_timestamptz_binary_truncates_in_utc() -> None:
    berlin = dt.timezone(dt.timedelta(hours=2))
    _, wire = dump(dt.datetime(2024, 6, 1, 0, 30, tzinfo=berlin))  # 2024-05-31 22:30 UTC
    got = load(
        TIMESTAMPTZ, masker({"kind": "bucket", "granularity": "month"}, TIMESTAMPTZ).binary(wire)
    )
    assert got == dt.datetime(2024, 5, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("zone", "granularity", "value", "expected"),
    [
        # The bucket starts at local midnight with the zone's offset then, not the value's.
        ("Europe/Berlin", "year", b"2024-07-15 13:00:00+02", b"2024-01-01 00:00:00+01"),
        ("Europe/Berlin", "month", b"2024-03-31 12:34:56.789+02", b"2024-03-01 00:00:00+01"),
        ("America/New_York", "day", b"2024-11-03 13:00:00-05", b"2024-11-03 00:00:00-04"),
        ("Asia/Kolkata", "month", b"2024-03-31 16:04:56+05:30", b"2024-03-01 00:00:00+05:30"),
        (
            "Europe/Amsterdam",
            "year",
            b"1900-05-17 13:45:12+00:19:32",
            b"1900-01-01 00:00:00+00:19:32",
        ),
        # Without a zone Python knows, the value's own offset is kept.
        (None, "year", b"2024-07-15 13:00:00+02", b"2024-01-01 00:00:00+02"),
        ("<+03>-03", "year", b"2024-07-15 14:00:00+03", b"2024-01-01 00:00:00+03"),
        (
            "Europe/Berlin",
            "month",
            b"0044-03-15 12:00:00+00:53:28 BC",
            b"0044-03-01 00:00:00+00:53:28 BC",
        ),
    ],
)
def test_bucket_timestamptz_text_in_the_session_zone(
    zone: str | None, granularity: str, value: bytes, expected: bytes
) -> None:
    m = Masker(
        validate({"kind": "bucket", "granularity": granularity}), TIMESTAMPTZ, KEY, time_zone=zone
    )
    assert m.text(value) == expected


def _pg_text(instant: dt.datetime, zone: ZoneInfo) -> bytes:
    """timestamptz_out in `zone`, written independently of the masker."""
    local = instant.astimezone(zone)
    offset = int((local.utcoffset() or dt.timedelta()).total_seconds())
    sign, offset = ("-", -offset) if offset < 0 else ("+", offset)
    hours, minutes = divmod(offset // 60, 60)
    suffix = f"{sign}{hours:02d}" + (f":{minutes:02d}" if minutes else "")
    return (local.strftime("%Y-%m-%d %H:%M:%S") + suffix).encode()


@pytest.mark.parametrize(
    "zone_name", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
)
@pytest.mark.parametrize("granularity", ["day", "month", "year"])
def test_bucket_timestamptz_text_and_binary_agree_in_the_session_zone(
    zone_name: str, granularity: str
) -> None:
    zone = ZoneInfo(zone_name)
    m = Masker(
        validate({"kind": "bucket", "granularity": granularity}),
        TIMESTAMPTZ,
        KEY,
        time_zone=zone_name,
    )
    rng = random.Random(zone_name + granularity)
    start = dt.datetime(1990, 1, 1, tzinfo=dt.UTC)
    for _ in range(300):
        instant = start + dt.timedelta(seconds=rng.randrange(60 * 365 * 86400))
        local = instant.astimezone(zone)
        want = dt.datetime.combine(_truncated(local.date(), granularity), dt.time(), zone)
        from_text = load(TIMESTAMPTZ, m.text(_pg_text(instant, zone)), Format.TEXT)
        from_binary = load(TIMESTAMPTZ, m.binary(dump(instant)[1]))
        assert from_text == want, instant
        assert from_binary == want, instant


def _days(value: int) -> bytes:
    return value.to_bytes(4, "big", signed=True)


_EPOCH = dt.date(2000, 1, 1)
_CYCLE = 146_097  # days in 400 Gregorian years: the calendar repeats after them


def _reference_truncate(days: int, granularity: str) -> int:
    """Truncate days-since-2000 with Python's calendar, shifted by whole 400-year
    cycles into its range (years 1-9999), for dates PostgreSQL has and Python not."""
    shift = -((days - 1_000_000) // _CYCLE) * _CYCLE  # lands in years ~4740-5140
    d = _EPOCH + dt.timedelta(days=days + shift)
    return (_truncated(d, granularity) - _EPOCH).days - shift


@pytest.mark.parametrize("granularity", ["day", "month", "year"])
def test_bucket_date_binary_over_postgresqls_whole_range(granularity: str) -> None:
    # PostgreSQL dates run from 4714-11-24 BC to 5874897-12-31 (days since 2000).
    first, last = -2_451_545, 2_145_031_949
    rng = random.Random(granularity)
    samples = [
        first,
        last,
        -730_120,
        -730_119,
        -1,
        0,
        *(rng.randint(first, last) for _ in range(3000)),
    ]
    m = masker({"kind": "bucket", "granularity": granularity}, DATE)
    for days in samples:
        expected = _reference_truncate(days, granularity)
        assert m.binary(_days(days)) == _days(expected), days


@pytest.mark.parametrize(
    ("granularity", "days", "expected"),
    [
        # 0001-01-01 is day -730119; 1 BC (astronomical year 0) is a leap year.
        ("month", -730_120, -730_150),  # 0001-12-31 BC -> 0001-12-01 BC
        ("year", -730_120, -730_485),  # 0001-12-31 BC -> 0001-01-01 BC
        ("month", 0x7FFFFFFF, 0x7FFFFFFF),  # infinity
        ("year", -0x80000000, -0x80000000),  # -infinity
    ],
)
def test_bucket_date_binary_bc_and_infinity(granularity: str, days: int, expected: int) -> None:
    m = masker({"kind": "bucket", "granularity": granularity}, DATE)
    assert m.binary(_days(days)) == _days(expected)


def test_bucket_timestamp_binary_infinities_and_bad_sizes() -> None:
    m = masker({"kind": "bucket", "granularity": "month"}, TIMESTAMP)
    for special in (2**63 - 1, -(2**63)):
        wire = special.to_bytes(8, "big", signed=True)
        assert m.binary(wire) == wire
    assert m.binary(b"\x00" * 7) is None
    assert masker({"kind": "bucket", "granularity": "month"}, DATE).binary(b"\x00" * 3) is None


@pytest.mark.parametrize(
    ("spec", "oid"),
    [
        ({"kind": "bucket", "width": 10}, DATE),  # no granularity for a date
        ({"kind": "bucket", "granularity": "month"}, INT4),  # no width for a number
        ({"kind": "bucket", "width": 10}, TEXT),
        ({"kind": "bucket", "granularity": "day"}, VARCHAR),
        ({"kind": "bucket", "width": 10, "granularity": "day"}, CITEXT),
    ],
)
def test_bucket_that_cannot_keep_the_type_gives_null(spec: dict[str, Any], oid: int) -> None:
    m = masker(spec, oid)
    assert m.always_null
    assert m.text(b"37") is None


def test_bucket_with_both_options_serves_numbers_and_dates() -> None:
    spec = {"kind": "bucket", "width": 10, "granularity": "year"}
    assert masker(spec, INT4).text(b"37") == b"30"
    assert masker(spec, DATE).text(b"2024-05-17") == b"2024-01-01"


# ---------------------------------------------------------------------------
# validate


def test_validate_parses_every_option() -> None:
    assert validate({"kind": "redact", "value": "x"}) == Mask(MaskKind.REDACT, value="x")
    assert validate({"kind": "partial", "keep_first": 1, "keep_last": 4, "fill": "#"}) == Mask(
        MaskKind.PARTIAL, keep_first=1, keep_last=4, fill="#"
    )
    assert validate({"kind": "email", "keep": "first"}).keep == "first"
    assert validate({"kind": "pseudonym", "prefix": "u_", "length": 12}) == Mask(
        MaskKind.PSEUDONYM, prefix="u_", length=12
    )
    assert validate({"kind": "hash", "algorithm": "sha256"}).algorithm == "sha256"
    assert validate({"kind": "bucket", "width": 0.1}).width == Decimal("0.1")
    assert validate({"kind": "bucket", "width": "2.5"}).width == Decimal("2.5")
    assert validate({"kind": "bucket", "granularity": "year"}).granularity == "year"
    pii = validate({"kind": "pii_text", "replace": "pseudonym", "types": ["email", "ssn"]})
    assert pii.types == frozenset({"email", "ssn"})
    assert pii.replace == "pseudonym"
    assert validate({"kind": "null"}) == Mask(MaskKind.NULL)


@pytest.mark.parametrize(
    ("spec", "field", "reason"),
    [
        ({}, "kind", "must be one of"),
        ({"kind": "scramble"}, "kind", "must be one of"),
        ({"kind": 3}, "kind", "must be one of"),
        ({"kind": "redact", "value": 5}, "value", "must be a string"),
        ({"kind": "redact", "keep_last": 4}, "keep_last", "not an option of redact"),
        ({"kind": "null", "value": "x"}, "value", "not an option of null"),
        ({"kind": "partial", "keep_last": -1}, "keep_last", ">= 0"),
        ({"kind": "partial", "keep_first": "2"}, "keep_first", "must be an integer"),
        ({"kind": "partial", "keep_first": True}, "keep_first", "must be an integer"),
        ({"kind": "partial", "fill": "**"}, "fill", "exactly one character"),
        ({"kind": "partial", "fill": ""}, "fill", "exactly one character"),
        ({"kind": "partial", "keeplast": 4}, "keeplast", "not an option of partial"),
        ({"kind": "email", "keep": "local"}, "keep", "domain, first"),
        ({"kind": "pseudonym", "length": 4}, "length", "between 8 and 64"),
        ({"kind": "pseudonym", "length": 65}, "length", "between 8 and 64"),
        ({"kind": "pseudonym", "prefix": "x" * 65}, "prefix", "at most 64"),
        ({"kind": "pseudonym", "prefix": "a\nb"}, "prefix", "printable"),
        ({"kind": "hash", "algorithm": "md5"}, "algorithm", "only sha256"),
        ({"kind": "bucket"}, "width", "needs width"),
        ({"kind": "bucket", "width": 0}, "width", "positive"),
        ({"kind": "bucket", "width": -5}, "width", "positive"),
        ({"kind": "bucket", "width": float("inf")}, "width", "positive"),
        ({"kind": "bucket", "width": "ten"}, "width", "must be a number"),
        ({"kind": "bucket", "width": True}, "width", "must be a number"),
        ({"kind": "bucket", "granularity": "week"}, "granularity", "day, month, year"),
        ({"kind": "bucket", "granularity": 1}, "granularity", "must be a string"),
        ({"kind": "pii_text", "replace": "hash"}, "replace", "label, pseudonym"),
        ({"kind": "pii_text", "types": ["email", "passport"]}, "types", "subset"),
        ({"kind": "pii_text", "types": []}, "types", "non-empty"),
        ({"kind": "pii_text", "types": "email"}, "types", "list of PII types"),
    ],
)
def test_validate_errors_name_the_field(spec: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(MaskSpecError) as caught:
        validate(spec)
    assert caught.value.field == field
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"mask {field}: ")


def test_validate_rejects_a_non_mapping() -> None:
    with pytest.raises(MaskSpecError) as caught:
        validate("redact")  # type: ignore[arg-type]
    assert caught.value.field == "kind"


def test_direct_construction_checks_the_same_ranges() -> None:
    with pytest.raises(MaskSpecError, match="length"):
        Mask(MaskKind.PSEUDONYM, length=2)
    with pytest.raises(MaskSpecError, match="kind"):
        Mask("scramble")  # type: ignore[arg-type]
    assert Mask("null").kind is MaskKind.NULL  # type: ignore[arg-type]
