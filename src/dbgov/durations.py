"""Durations as people write them in configs, policies and flags: 90s, 30m, 8h, 2d."""

from __future__ import annotations

import datetime
import re

_DURATION = re.compile(r"^(\d+)\s*([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> int:
    """Positive whole seconds from 3600, "90s", "30m", "8h" or "2d"; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"bad duration {value!r}")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and (m := _DURATION.match(value.strip())):
        seconds = int(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"bad duration {value!r}: use seconds or e.g. 90s, 30m, 8h, 2d")
    if seconds <= 0:
        raise ValueError(f"bad duration {value!r}: must be positive")
    return seconds


def time_arg(text: str | None) -> str | None:
    """A `--since/--until` value as the ledger's ISO timestamps: ISO passes through,
    a duration ("15m", "2h", "1d") means that long ago."""
    if not text:
        return None
    try:
        seconds = parse_duration(text)
    except ValueError:
        return text
    t = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
