"""Audit events: what each one says, and how it is encoded for the ledger.

An event is a flat-ish JSON object encoded with RFC 8785 (JCS) canonical JSON;
those exact bytes are the Merkle leaf (`leaf = SHA-256(0x00 || bytes)`), so any
verifier can re-encode nothing and trust nothing but the bytes.

Common fields: `v` (schema version), `type`, `id` (unique; `<session>:<n>` for
session events), `ts` (UTC, microseconds, ISO 8601), and where they apply
`session`, `user`, `groups`, `target`. Types:

- connection.open   identity, client address, TLS, auth method, client application_name,
                    the worker (slot and pid) that holds the session
- auth.failed       user, reason code, message, client address, requested target
- statement         sql, params, kinds, tables, fingerprint, decision, rule, approval/grant refs
- statement.done    ref (the statement's id), rows, command tags, sqlstate, duration, masked columns
- connection.close  bytes in/out, duration, reason
- proxy.worker_exit a worker died (slot, pid, how): its sessions ended without a close
- approval.*, grant.*, model.retrain, checkpoint … added by their owners.

Secrets never enter an event in clear: tokens and passwords are never passed
here, and callers redact literals of password-bearing statements and secret
bind parameters before building events (see `redact.py`).
"""

from __future__ import annotations

import secrets
import struct
import time
import uuid
from typing import Any

import orjson

from dbgov.ledger.canonical import canonical_json

SCHEMA_VERSION = 1
MAX_TEXT = 64 * 1024  # longer SQL texts are cut, with their full hash kept


class _Second:
    """The last whole second formatted, reused within it."""

    __slots__ = ("sec", "text")

    def __init__(self) -> None:
        self.sec = -1
        self.text = ""


_second = _Second()


def utc_now_iso() -> str:
    """UTC now with microseconds, e.g. 2026-11-27T09:14:18.279185Z (hot path: the
    date part is formatted once per second, the microseconds without a format spec)."""
    return utc_iso(time.time())


def utc_iso(t: float) -> str:
    """`utc_now_iso()` for the time.time() value `t`."""
    sec = int(t)
    last = _second
    if sec != last.sec:
        last.sec = sec
        last.text = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec))
    micros = min(999_999, int((t - sec) * 1_000_000))
    return last.text + str(1_000_000 + micros)[1:] + "Z"


def new_session_id() -> str:
    return secrets.token_hex(6)


_ORJSON_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER


def encode(event: dict[str, Any]) -> bytes:
    """RFC 8785 bytes of an event, fast.

    Contract: events have ASCII keys and hold no floats below the top level
    (durations are integer microseconds). On that domain orjson with sorted keys and
    strict (53-bit) integers writes exactly the JCS bytes: same key order, string
    escapes and integers (tests/ledger/test_events.py checks it against
    `canonical_json`). A top-level float takes the reference encoder.
    """
    for value in event.values():
        if type(value) is float:
            return canonical_json(event)
    try:
        return orjson.dumps(event, option=_ORJSON_OPTS)
    except orjson.JSONEncodeError:
        return canonical_json(event)  # raises the precise error


def base(type_: str, event_id: str, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "type": type_,
        "id": event_id,
        "ts": utc_now_iso(),
    }
    for k, v in fields.items():
        if v is not None:
            event[k] = v
    return event


def clip(text: str) -> str:
    if len(text) <= MAX_TEXT:
        return text
    import hashlib

    digest = hashlib.sha256(text.encode()).hexdigest()
    return f"{text[:MAX_TEXT]}… [cut; {len(text)} chars, sha256 {digest}]"


_BINARY_DECODERS: dict[int, Any] = {
    16: lambda v: "true" if v == b"\x01" else "false",  # bool
    20: lambda v: str(struct.unpack("!q", v)[0]),  # int8
    21: lambda v: str(struct.unpack("!h", v)[0]),  # int2
    23: lambda v: str(struct.unpack("!i", v)[0]),  # int4
    26: lambda v: str(struct.unpack("!I", v)[0]),  # oid
    700: lambda v: repr(struct.unpack("!f", v)[0]),  # float4
    701: lambda v: repr(struct.unpack("!d", v)[0]),  # float8
    25: lambda v: v.decode(),  # text
    1043: lambda v: v.decode(),  # varchar
    1042: lambda v: v.decode(),  # bpchar
    19: lambda v: v.decode(),  # name
    2950: lambda v: str(uuid.UUID(bytes=v)),  # uuid
    114: lambda v: v.decode(),  # json
    3802: lambda v: v[1:].decode(),  # jsonb: version byte, then text
}


def param_repr(value: bytes | None, fmt: int, type_oid: int = 0) -> str | None:
    """Bind parameters as text for the audit: text format as is, common binary types
    decoded, anything else as hex."""
    if value is None:
        return None
    if fmt == 0:
        try:
            return clip(value.decode())
        except UnicodeDecodeError:
            pass
    else:
        decoder = _BINARY_DECODERS.get(type_oid)
        if decoder is not None:
            try:
                return clip(str(decoder(value)))
            except (struct.error, ValueError, UnicodeDecodeError):
                pass
    return "\\x" + value[:1024].hex()
