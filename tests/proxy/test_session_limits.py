"""listen.max_sessions_per_user: one identity's sessions are capped across workers.

Against the embedded PostgreSQL, with two workers sharing the port: the cap counts
sessions wherever the kernel puts them, the login past it gets FATAL 53300 and an
auth.failed event and opens no server backend, other identities are not affected,
and a session that ends (cleanly or with its worker killed) frees its place.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psycopg
import pytest

from conftest import Dbgov, start_beside, stop_dbgov
from dbgov.proxy.cancel import worker_of
from dbgov.proxy.session_limits import SessionLimitError, SessionLimits
from pgwire import RawClient, error_of

LIMIT = 3


@pytest.fixture(scope="module")
def capped(dbgov: Dbgov, tmp_root: Path):
    d = start_beside(dbgov, tmp_root / "capped", workers=2, listen={"max_sessions_per_user": LIMIT})
    yield d
    stop_dbgov(d)


def _login(d: Dbgov, user: str = "carol", wait_s: float = 10.0) -> RawClient:
    """A session for `user`; retried while the cap refuses it for up to `wait_s` (a
    session just closed frees its place once its worker has seen the close)."""
    deadline = time.monotonic() + wait_s
    while True:
        c = RawClient(d.host, d.port)
        try:
            msgs = c.startup(user, "staging", d.token(user))
        except ConnectionError as exc:  # a listener of a worker just killed
            msgs, why = [], repr(exc)
        else:
            if msgs and msgs[-1].type == b"Z":
                return c
            why = str(error_of(msgs))
        c.close()
        if time.monotonic() > deadline:
            raise AssertionError(f"no session for {user}: {why}")
        time.sleep(0.1)


def _refused(d: Dbgov, user: str = "carol") -> tuple[str, str, str]:
    """SQLSTATE, message and severity of a login that the cap refuses."""
    c = RawClient(d.host, d.port)
    try:
        err = error_of(c.startup(user, "staging", d.token(user)))
    finally:
        c.close()
    assert err is not None, f"{user} logged in past the cap"
    return err.sqlstate, err.message, err.severity


def _worker(c: RawClient) -> int:
    assert c.key is not None
    return worker_of(c.key.pid)


def _on_both_workers(d: Dbgov) -> list[RawClient]:
    """LIMIT sessions of carol that the kernel spread over both workers, so that each
    worker holds fewer than LIMIT: only a count across workers refuses the next."""
    held = [_login(d) for _ in range(LIMIT)]
    for _ in range(50):
        if len({_worker(c) for c in held}) == 2:
            return held
        held.pop().close()
        held.append(_login(d))
    raise AssertionError("the kernel kept every session on one worker")


def _backends(main: Dbgov, user: str) -> int:
    """Server backends of `user`'s sessions (dbgov names them dbgov/<user>/<session>)."""
    with psycopg.connect(str(main.state["admin_dsn"])) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s",
            (f"dbgov/{user}/%",),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_the_cap_counts_across_workers_and_frees_on_close(dbgov: Dbgov, capped: Dbgov) -> None:
    held = _on_both_workers(capped)
    before = _backends(dbgov, "carol")

    assert _refused(capped) == (
        "53300",
        f"dbgov: too many sessions for carol (limit {LIMIT})",
        "FATAL",
    )
    assert _backends(dbgov, "carol") == before, "a refused login opens no server backend"
    (ev,) = capped.wait_events(
        lambda e: e.get("reason") == "session_limit", types=["auth.failed"], timeout=15
    )
    assert (ev["user"], ev["target"]) == ("carol", "staging")

    other = _login(capped, "erin", wait_s=0)  # another identity has a cap of its own
    other.close()

    held.pop().close()  # a session that ends frees its place
    held.append(_login(capped))
    assert _refused(capped)[0] == "53300"
    for c in held:
        c.close()


def test_a_killed_workers_sessions_free_their_places(capped: Dbgov) -> None:
    held = _on_both_workers(capped)
    assert _refused(capped)[0] == "53300"
    victim = _worker(held[0])
    lost = [c for c in held if _worker(c) == victim]
    os.kill(capped.worker_pids()[victim], signal.SIGKILL)

    # Once the supervisor has seen the death, the dead worker's sessions do not count.
    opened = [_login(capped, wait_s=30) for _ in lost]
    assert _refused(capped)[0] == "53300"
    for c in opened + [c for c in held if c not in lost]:
        c.close()


def test_rows_of_a_dead_process_do_not_count(tmp_path: Path) -> None:
    # A worker that died before the supervisor noticed: the admission at the cap checks.
    path = tmp_path / "sessions.db"
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    gone = SessionLimits(path, 2, pid=dead)
    assert gone.admit("a", "alice") is None and gone.admit("b", "alice") is None
    live = SessionLimits(path, 2)
    assert live.admit("c", "alice") is None  # a and b belonged to a dead process
    assert live.admit("d", "alice") is None
    assert live.admit("e", "alice") == 2
    live.release("c")
    assert live.admit("e", "alice") is None
    gone.close()
    live.close()


def test_a_broken_table_refuses_the_login(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    path.write_bytes(b"not a database" * 100)
    limits = SessionLimits(path, 5)
    with pytest.raises(SessionLimitError):
        limits.admit("a", "alice")
