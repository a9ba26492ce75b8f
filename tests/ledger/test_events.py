"""The hot-path event encoder writes exactly the RFC 8785 bytes of the reference."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dbgov.ledger.canonical import canonical_json
from dbgov.ledger.events import encode, param_repr, utc_now_iso

_keys = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
_leaves = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=40)
_nested = st.recursive(
    _leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=20,
)
# Floats are allowed at the top level only (the encoder's contract).
_values = _nested | st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=10))
def test_encode_matches_the_reference_encoder(event: dict) -> None:
    assert encode(event) == canonical_json(event)


def test_statement_event_shape() -> None:
    ev = {
        "v": 1,
        "type": "statement",
        "id": "s:1",
        "ts": utc_now_iso(),
        "user": "bob",
        "sql": "SELECT 'é\u2028\x1f' /* t.x */",
        "kinds": ["select"],
        "rows": [1, None],
        "decision": {"verdict": "allow"},
    }
    assert encode(ev) == canonical_json(ev)


def test_timestamps_are_utc_with_microseconds() -> None:
    ts = utc_now_iso()
    assert len(ts) == 27 and ts.endswith("Z") and ts[10] == "T"


def test_timestamps_match_the_clock_across_milliseconds_and_seconds(monkeypatch) -> None:
    import time
    from datetime import datetime

    # Instants that cross a millisecond, a second and a day, each read twice: the text
    # names the instant to the microsecond (truncated, as far as a float tells).
    for t in (
        1_795_000_000.000999,
        1_795_000_000.001,
        1_795_000_000.999999,
        1_795_046_399.9995,
        1_795_046_399.9999999,
        1_795_046_400.0,
        1_795_046_400.000001,
        1_795_046_400.000001,
    ):
        monkeypatch.setattr(time, "time", lambda t=t: t)
        ts = utc_now_iso()
        assert len(ts) == 27 and ts.endswith("Z")
        at = datetime.fromisoformat(ts[:-1] + "+00:00").timestamp()
        assert 0 <= t - at < 2e-6, (t, ts)


def test_binary_params_are_decoded_for_the_audit() -> None:
    assert param_repr(b"\x00\x05", 1, 21) == "5"
    assert param_repr(b"\x00\x00\x00\x00\x00\x00\x00\x07", 1, 20) == "7"
    assert param_repr(b"abc", 0) == "abc"
    assert param_repr(b"\xff", 1, 0) == "\\xff"
    assert param_repr(None, 0) is None
