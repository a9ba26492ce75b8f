"""listen.max_pending_logins_per_source: connections that have not logged in yet are
capped per client address, so that one source cannot fill a worker's client slots.

A source that opens connections and never logs in (a flood, a slowloris) held every
one of a worker's 5,000 client slots until the timeouts dropped them, and everyone's
login got FATAL 53300 meanwhile. With the cap, that source's next connection is
turned away while other addresses, and its own logged-in sessions, are served.
Against the embedded PostgreSQL; 127.0.0.2 is a second source on the loopback.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import Dbgov, start_beside, stop_dbgov
from pgwire import RawClient, error_of

CAP = 3


@pytest.fixture(scope="module")
def capped(dbgov: Dbgov, tmp_root: Path):
    d = start_beside(
        dbgov, tmp_root / "pending-logins", listen={"max_pending_logins_per_source": CAP}
    )
    yield d
    stop_dbgov(d)


def _from(d: Dbgov, source: str) -> RawClient:
    return RawClient(d.host, d.port, source=source)


def _logs_in(d: Dbgov, source: str = "127.0.0.1") -> tuple[RawClient, str | None]:
    c = _from(d, source)
    msgs = c.startup("carol", "staging", d.token("carol"))
    err = error_of(msgs)
    return c, None if err is None else f"{err.sqlstate} {err.message}"


def _silent(d: Dbgov, n: int) -> list[RawClient]:
    """Connections that send nothing: negotiating until the proxy's timeout."""
    held = [_from(d, "127.0.0.1") for _ in range(n)]
    time.sleep(0.3)  # accepted (the kernel's backlog does not count)
    return held


def test_a_source_past_its_pending_logins_is_turned_away_and_others_are_not(capped):
    silent = _silent(capped, CAP)
    try:
        c, err = _logs_in(capped)
        c.close()
        assert err is not None and err.startswith("53300 ") and "still logging in" in err
        other, err = _logs_in(capped, "127.0.0.2")
        assert err is None
        other.close()
    finally:
        for s in silent:
            s.close()


def test_a_pending_login_frees_its_place_when_it_ends_or_logs_in(capped):
    silent = _silent(capped, CAP)
    silent.pop().close()
    try:
        deadline = time.monotonic() + 10
        while True:  # the proxy sees the close on its next read
            c, err = _logs_in(capped)
            if err is None or time.monotonic() > deadline:
                break
            c.close()
            time.sleep(0.1)
        assert err is None
        c.close()
        # Logged-in sessions do not count: CAP of them, and CAP - 1 silent ones still
        # leave room for one more login.
        sessions = []
        for _ in range(CAP):
            s, err = _logs_in(capped)
            assert err is None
            sessions.append(s)
        c, err = _logs_in(capped)
        assert err is None
        c.close()
        for s in sessions:
            s.close()
    finally:
        for s in silent:
            s.close()
