"""RFC 8785 canonical JSON: the RFC's own examples, its number table, and the fast path."""

from __future__ import annotations

import enum
import json
import math
import struct
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbgov.ledger.canonical import MAX_SAFE_INTEGER, canonical_json
from dbgov.ledger.canonical import _encode_full as full_encoder

# RFC 8785 §3.2.2, the input exactly as printed (JSON text), and its §3.2.3 output.
RFC_3_2_2_INPUT = r"""{
  "numbers": [333333333.33333329, 1E30, 4.50,
              2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}"""
RFC_3_2_2_OUTPUT = (
    '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
    '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
)

# RFC 8785 §3.2.3 sorting example.
RFC_3_2_3_INPUT = r"""{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}"""
RFC_3_2_3_OUTPUT = (
    '{"\\r":"Carriage Return","1":"One","\u0080":"Control",'
    '"\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign",'
    '"\U0001f600":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}'
)

# RFC 8785 Appendix B: IEEE 754 bit patterns and their canonical serialization.
APPENDIX_B = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]
APPENDIX_B_INVALID = ["7fffffffffffffff", "7ff0000000000000"]  # NaN, Infinity


def double(bits: str) -> float:
    value: float = struct.unpack(">d", bytes.fromhex(bits))[0]
    return value


def test_rfc_3_2_2_example() -> None:
    assert canonical_json(json.loads(RFC_3_2_2_INPUT)) == RFC_3_2_2_OUTPUT.encode()


def test_rfc_3_2_3_sorting_example() -> None:
    assert canonical_json(json.loads(RFC_3_2_3_INPUT)) == RFC_3_2_3_OUTPUT.encode()


@pytest.mark.parametrize(("bits", "text"), APPENDIX_B)
def test_rfc_appendix_b_numbers(bits: str, text: str) -> None:
    value = double(bits)
    assert canonical_json(value) == text.encode()
    assert canonical_json({"n": [value]}) == b'{"n":[' + text.encode() + b"]}"
    assert float(text) == value  # the text reads back as the same double


@pytest.mark.parametrize("bits", APPENDIX_B_INVALID)
def test_rfc_appendix_b_invalid_numbers(bits: str) -> None:
    with pytest.raises(ValueError, match="not a JSON number"):
        canonical_json({"n": double(bits)})


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused(value: float) -> None:
    with pytest.raises(ValueError, match="not a JSON number"):
        canonical_json([value])


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (5.0, "5"),
        (-0.0, "0"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (1e-6, "0.000001"),
        (1e-7, "1e-7"),
        (123e-20, "1.23e-18"),
        (0.1, "0.1"),
        (100.5, "100.5"),
        (2.5e-5, "0.000025"),
    ],
)
def test_ecmascript_number_layout(value: float, text: str) -> None:
    assert canonical_json(value) == text.encode()


@pytest.mark.parametrize(
    ("char", "escaped"),
    [
        ("\b", "\\b"),
        ("\t", "\\t"),
        ("\n", "\\n"),
        ("\f", "\\f"),
        ("\r", "\\r"),
        ('"', '\\"'),
        ("\\", "\\\\"),
        *[(chr(c), f"\\u{c:04x}") for c in [0, 1, 7, 0x0B, 0x0E, 0x1A, 0x1F]],
        *[(c, c) for c in ["/", "\x7f", "\x80", "\u2028", "\u2029", "é", "€", "\U0001f600"]],
    ],
)
def test_string_escapes_are_exactly_the_required_ones(char: str, escaped: str) -> None:
    want = f'"a{escaped}z"'.encode()
    assert canonical_json(f"a{char}z") == want  # top-level string: full path
    assert canonical_json({"k": f"a{char}z"}) == b'{"k":' + want + b"}"  # fast path
    assert canonical_json({"k": f"a{char}z", "f": 1.5}) == b'{"f":1.5,"k":' + want + b"}"


def test_all_control_characters() -> None:
    controls = "".join(chr(c) for c in range(0x20))
    want = json.dumps(controls)  # ASCII-only here, so json's escaping is the reference
    assert want.count("\\u") == 27
    assert canonical_json(controls) == want.encode()


def test_non_bmp_keys_sort_by_utf16_code_units() -> None:
    # U+1F600 is D83D DE00 in UTF-16: before U+E000 and U+FB33, though its code point is larger.
    value = {"\ufb33": 1, "\U0001f600": 2, "\ue000": 3, "z": 4}
    want = '{"z":4,"\U0001f600":2,"\ue000":3,"\ufb33":1}'.encode()
    assert canonical_json(value) == want
    assert canonical_json({"outer": [value]}) == b'{"outer":[' + want + b"]}"


def test_nested_structures_and_insertion_order() -> None:
    a = {"b": [1, {"y": None, "x": True}], "a": {"d": "e", "c": ()}}
    b = {"a": {"c": [], "d": "e"}, "b": [1, {"x": True, "y": None}]}
    want = b'{"a":{"c":[],"d":"e"},"b":[1,{"x":true,"y":null}]}'
    assert canonical_json(a) == canonical_json(b) == want


def test_integer_range() -> None:
    assert canonical_json(MAX_SAFE_INTEGER) == b"9007199254740992"
    assert canonical_json({"i": -MAX_SAFE_INTEGER}) == b'{"i":-9007199254740992}'
    for bad in [MAX_SAFE_INTEGER + 1, -MAX_SAFE_INTEGER - 1, 10**30]:
        for value in (bad, {"i": bad}, [bad], {"i": bad, "f": 0.5}, {"i": [bad]}):
            with pytest.raises(ValueError, match=r"beyond ±2\*\*53"):
                canonical_json(value)


class Colour(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize(
    "value",
    [
        {1: "x"},
        {True: "x"},
        {None: "x"},
        {("a",): "x"},
        {"ok": {2: "x"}},
        {"f": 1.5, "nested": {3: "x"}},
    ],
)
def test_non_string_keys_are_refused(value: Any) -> None:
    with pytest.raises(TypeError, match="not a str"):
        canonical_json(value)


@pytest.mark.parametrize(
    "value",
    [b"bytes", {"s": {1, 2}}, Decimal("1.5"), object(), [Colour.RED], {"e": Colour.RED}],
)
def test_unknown_types_are_refused(value: Any) -> None:
    with pytest.raises(TypeError, match="not a JSON value"):
        canonical_json(value)


@pytest.mark.parametrize("value", ["\ud800", {"k": "a\udfff"}, {"\udc00": 1}, ["x", "\ud83d"]])
def test_lone_surrogates_are_refused(value: Any) -> None:
    with pytest.raises(ValueError, match="lone surrogate"):
        canonical_json(value)


def test_cycles_are_refused() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(ValueError, match="circular"):
        canonical_json(cyclic)


# --- the fast path is an optimization only: it must agree with the full encoder ---

keys = st.text(st.characters(codec="utf-8"), max_size=6)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec="utf-8"), max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=6),
    max_leaves=20,
)


@settings(max_examples=400)
@given(json_values)
def test_fast_path_agrees_with_full_encoder(value: Any) -> None:
    encoded = canonical_json(value)
    assert encoded == full_encoder(value).encode()
    assert as_doubles(json.loads(encoded)) == as_doubles(value)  # JSON for the same value


def as_doubles(value: Any) -> Any:
    """Numbers as a JSON reader with IEEE 754 doubles sees them (1e20 reads back as an int)."""
    if isinstance(value, dict):
        return {k: as_doubles(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_doubles(v) for v in value]
    if type(value) in (int, float):
        return float(value)
    return value


@settings(max_examples=100)
@given(st.dictionaries(keys, scalars, max_size=8))
def test_members_are_in_utf16_order(value: dict[str, Any]) -> None:
    decoded = json.loads(canonical_json(value))
    names = list(decoded)
    assert names == sorted(value, key=lambda k: k.encode("utf-16-be"))
