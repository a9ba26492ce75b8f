"""A worker at its client cap sheds its oldest connection that has not logged in.

The per-source cap (test_pending_logins.py) stops one address; connections from many
addresses that never log in could still hold every slot until the timeouts, and
everyone's login got FATAL 53300 meanwhile. A full worker now drops the oldest of
them to admit the new connection; logged-in sessions are never dropped. Against the
embedded PostgreSQL; 127.0.0.x are distinct sources on the loopback.
"""

from __future__ import annotations

import time

import pytest

from conftest import Dbgov, start_beside, stop_dbgov
from dbgov.wire.postgres.messages import PROTOCOL_3_0, StartupMessage
from pgwire import RawClient, error_of

SLOTS = 4


@pytest.fixture
def full(dbgov: Dbgov, tmp_root):
    d = start_beside(
        dbgov, tmp_root / f"shed-{time.monotonic_ns()}", listen={"max_clients_per_worker": SLOTS}
    )
    yield d
    stop_dbgov(d)


def _from(d: Dbgov, source: str) -> RawClient:
    return RawClient(d.host, d.port, source=source)


def _login(d: Dbgov, source: str) -> tuple[RawClient, str | None]:
    c = _from(d, source)
    err = error_of(c.startup("carol", "staging", d.token("carol")))
    return c, None if err is None else f"{err.sqlstate} {err.message}"


def _answers(c: RawClient) -> bool:
    return any(m.type == b"D" for m in c.query("SELECT 1"))


def _shed_error(c: RawClient) -> str | None:
    err = error_of(c.until_closed())
    return None if err is None else f"{err.sqlstate} {err.message}"


def test_a_full_worker_sheds_the_oldest_login_in_progress_and_never_a_session(full):
    session, err = _login(full, "127.0.0.1")
    assert err is None
    silent = _from(full, "127.0.0.2")  # sends nothing: negotiating
    time.sleep(0.2)
    asking = _from(full, "127.0.0.3")  # sent its startup packet; never answers the password
    asking.send(StartupMessage(PROTOCOL_3_0, {"user": "carol", "database": "staging"}).encode())
    assert asking.recv_msg().type == b"R"
    late = _from(full, "127.0.0.4")
    time.sleep(0.3)  # all accepted: the worker holds SLOTS connections
    opened = [session, silent, asking, late]
    try:
        first, err = _login(full, "127.0.0.5")
        assert err is None, "admitted in place of the oldest login in progress"
        opened.append(first)
        assert _shed_error(silent) == (
            "53300 dbgov: this proxy worker is full; connections that had not logged in "
            "were dropped, oldest first"
        )
        second, err = _login(full, "127.0.0.6")
        assert err is None
        opened.append(second)
        shed = _shed_error(asking)
        assert shed is not None and shed.startswith("53300 "), shed
        third, err = _login(full, "127.0.0.7")
        assert err is None
        opened.append(third)
        assert _shed_error(late) is not None
        # SLOTS logged-in sessions now: nothing may be shed, the next client is refused.
        refused, err = _login(full, "127.0.0.8")
        refused.close()
        assert err is not None and "too many client connections" in err
        for c in (session, first, second, third):
            assert _answers(c), "no logged-in session was dropped"
        # No ledger event per dropped connection (a flood would write the ledger at its
        # own rate); the worker's log says how many. The first report comes at once.
        assert "worker full: shed 1 connection(s) that had not logged in" in full.log()
        opened_events = full.wait_events(lambda e: True, count=4, types=["connection.open"])
        assert len(opened_events) == 4  # integrated: what came before them is too
        assert not full.events(types=["auth.failed"])
    finally:
        for c in opened:
            c.close()
