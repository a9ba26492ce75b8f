"""Byte-level protocol behaviour through the real proxy (issue: proxy core, item 4).

Each test sends raw frames and asserts the frames that come back, against the
embedded PostgreSQL behind `dbgov up`. carol (dba) is used where policy should
not matter.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
import uuid

import pytest

from conftest import start_beside, stop_dbgov
from dbgov.ledger.events import utc_now_iso
from dbgov.wire.postgres.messages import (
    CANCEL_REQUEST_CODE,
    PROTOCOL_3_0,
    PROTOCOL_3_2,
    Bind,
    CancelRequest,
    Close,
    CommandComplete,
    CopyFail,
    Describe,
    ErrorResponse,
    Execute,
    Flush,
    GSSENCRequest,
    NegotiateProtocolVersion,
    Parse,
    PasswordMessage,
    Query,
    RowDescription,
    SSLRequest,
    StartupMessage,
    Sync,
    Terminate,
    frame,
)
from pgwire import RawClient, error_of, insecure_context, rows_of, types_of

pytestmark = pytest.mark.usefixtures("dbgov")


def login(dbgov, user="carol", target="prod", tls=False, **params) -> RawClient:
    c = RawClient(dbgov.host, dbgov.port)
    if tls:
        assert c.starttls() == b"S"
    msgs = c.startup(user, target, dbgov.token(user), **params)
    assert msgs[-1].type == b"Z", [(m.type, m.decode()) for m in msgs]
    return c


def q(c: RawClient, sql: str):
    c.send(Query(sql).encode())
    return c.until_ready()


# ---------------------------------------------------------------- startup and TLS


def test_sslrequest_terminates_tls(dbgov):
    c = login(dbgov, tls=True)
    assert isinstance(c.sock, ssl.SSLSocket)
    assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
    assert rows_of(q(c, "SELECT 1"))[0] == (b"1",)
    c.close()
    opens = dbgov.wait_events(lambda e: e.get("tls"), types=["connection.open"], user="carol")
    assert opens, "connection.open should record the TLS version"


def test_gssencrequest_is_answered_n_then_startup_proceeds(dbgov):
    c = RawClient(dbgov.host, dbgov.port)
    c.send(GSSENCRequest().encode())
    assert c.recv_byte() == b"N"
    msgs = c.startup("carol", "prod", dbgov.token("carol"))
    assert msgs[-1].type == b"Z"
    c.close()


def test_plaintext_after_sslrequest_drops_connection(dbgov):
    s = socket.create_connection((dbgov.host, dbgov.port), 5)
    # SSLRequest with a startup packet glued behind it, before any TLS handshake.
    s.sendall(SSLRequest().encode() + StartupMessage(PROTOCOL_3_0, {"user": "carol"}).encode())
    s.settimeout(5)
    data = b""
    try:
        while chunk := s.recv(100):
            data += chunk
    except ConnectionResetError:
        pass
    assert data == b"", f"the proxy must not answer, got {data!r}"
    s.close()


def test_direct_ssl_with_alpn(dbgov):
    raw = socket.create_connection((dbgov.host, dbgov.port), 5)
    tls = insecure_context(alpn=["postgresql"]).wrap_socket(raw, server_hostname="localhost")
    assert tls.selected_alpn_protocol() == "postgresql"
    c = RawClient.__new__(RawClient)
    c.sock, c.buf, c.key, c.params = tls, b"", None, {}
    msgs = c.startup("carol", "prod", dbgov.token("carol"))
    assert msgs[-1].type == b"Z"
    assert rows_of(q(c, "SELECT 'direct'"))[0] == (b"direct",)
    c.close()


def test_direct_ssl_without_alpn_is_refused(dbgov):
    raw = socket.create_connection((dbgov.host, dbgov.port), 5)
    tls = insecure_context().wrap_socket(raw, server_hostname="localhost")
    tls.settimeout(5)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        tls.sendall(StartupMessage(PROTOCOL_3_0, {"user": "carol", "database": "prod"}).encode())
        assert tls.recv(100) == b""
        raise ConnectionError("closed")


def test_protocol_3_2_gets_long_cancel_key(dbgov):
    c = RawClient(dbgov.host, dbgov.port)
    msgs = c.startup("carol", "prod", dbgov.token("carol"), protocol=PROTOCOL_3_2)
    assert msgs[-1].type == b"Z"
    assert b"v" not in types_of(msgs)  # 3.2 is supported fully: no negotiation
    assert c.key is not None and len(c.key.key) == 32
    c.close()


def test_newer_minor_and_unknown_options_are_negotiated_down(dbgov):
    c = RawClient(dbgov.host, dbgov.port)
    msgs = c.startup(
        "carol", "prod", dbgov.token("carol"), protocol=(3 << 16) | 9, **{"_pq_.future_thing": "on"}
    )
    assert msgs[0].type == b"v"
    npv = NegotiateProtocolVersion.decode(msgs[0].body)
    assert npv.newest_minor == 2
    assert npv.unrecognized == ("_pq_.future_thing",)
    assert msgs[-1].type == b"Z"
    c.close()


def test_protocol_2_is_rejected(dbgov):
    c = RawClient(dbgov.host, dbgov.port)
    c.send(StartupMessage(2 << 16, {"user": "carol"}).encode())
    err = error_of(c.until_closed())
    assert err is not None and err.severity == "FATAL" and err.sqlstate == "0A000"


def test_queries_pipelined_behind_the_login_all_run_in_order(dbgov):
    """A client may send its statements without waiting for AuthenticationOk: 8 MB of
    them, in one write with the startup and the password, all run, in order. The
    proxy holds at most about a megabyte of them while the login runs, then reads on
    (adding up such a burst copied it once per read: 60 MB got a worker killed)."""
    c = RawClient(dbgov.host, dbgov.port, timeout=60)
    try:
        queries = [Query(f"SELECT {i} /*" + "x" * 65000 + "*/").encode() for i in range(128)]
        login_msgs = StartupMessage(PROTOCOL_3_0, {"user": "carol", "database": "prod"}).encode()
        sender = threading.Thread(
            target=c.send,
            args=(login_msgs + PasswordMessage(dbgov.token("carol")).encode() + b"".join(queries),),
        )
        sender.start()
        msgs = c.until_ready()
        assert error_of(msgs) is None and msgs[0].type == b"R"
        assert [rows_of(c.until_ready()) for _ in queries] == [
            [(str(i).encode(),)] for i in range(len(queries))
        ]
        sender.join()
    finally:
        c.close()


def _auth_failures(dbgov, client: str, since: str) -> list[dict]:
    """auth.failed events of the connection from `client` opened at `since`: the same
    client port may have served another test's connection earlier in the run."""
    return dbgov.wait_events(
        lambda e: e.get("client") == client and e["ts"] >= since, types=["auth.failed"]
    )


@pytest.mark.parametrize(
    "payload",
    [
        b"\x00\x00\x00\x04",  # length below the minimum
        b"\x7f\xff\xff\xff" + b"\x00" * 8,  # absurd length
        struct.pack("!II", 12, PROTOCOL_3_0) + b"user",  # unterminated parameter
        struct.pack("!II", 9, PROTOCOL_3_0) + b"\x00",  # no user at all
    ],
)
def test_malformed_startup_gets_fatal_and_close(dbgov, payload):
    since = utc_now_iso()
    c = RawClient(dbgov.host, dbgov.port)
    client = "{}:{}".format(*c.sock.getsockname()[:2])
    c.send(payload)
    msgs = c.until_closed()
    err = error_of(msgs)
    assert err is not None and err.severity == "FATAL", msgs
    assert err.message.startswith("dbgov:")
    failed = _auth_failures(dbgov, client, since)
    assert [(e["reason"], e["message"]) for e in failed] == [
        ("protocol_violation", err.message.removeprefix("dbgov: "))
    ]


def test_a_malformed_password_message_is_audited_with_the_user_it_named(dbgov):
    since = utc_now_iso()
    c = RawClient(dbgov.host, dbgov.port)
    client = "{}:{}".format(*c.sock.getsockname()[:2])
    c.send(StartupMessage(PROTOCOL_3_0, {"user": "bob", "database": "prod"}).encode())
    assert c.recv_msg().type == b"R"  # AuthenticationCleartextPassword
    c.send(b"p\x00\x00\x00\x08abcd")  # no terminating NUL
    err = error_of(c.until_closed())
    assert err is not None and err.sqlstate == "08P01"
    failed = _auth_failures(dbgov, client, since)
    assert [(e["user"], e["target"], e["reason"]) for e in failed] == [
        ("bob", "prod", "protocol_violation")
    ]


def test_malformed_message_after_login_is_fatal_not_a_crash(dbgov):
    c = login(dbgov)
    c.send(b"Q\x00\x00\x00\x02")  # length 2 < 4
    err = error_of(c.until_closed())
    assert err is not None and err.sqlstate == "08P01"
    # the worker survives: a new session works
    c2 = login(dbgov)
    assert rows_of(q(c2, "SELECT 42"))[0] == (b"42",)
    c2.close()


@pytest.mark.parametrize("protocol", ["simple", "extended without Sync"])
def test_what_precedes_a_malformed_message_runs_and_its_outcome_is_in_the_ledger(dbgov, protocol):
    """PostgreSQL reads messages one at a time: a statement sent in the same packet as
    a malformed message runs before the FATAL. Through dbgov too, and the ledger has
    its outcome before the session's close (a pipeline without Sync is flushed)."""
    _precedes_bad_message(dbgov, protocol)


@pytest.fixture(scope="module")
def fsync_mode(dbgov, tmp_root):
    d = start_beside(dbgov, tmp_root / "protocol-fsync", ledger={"mode": "fsync"})
    yield d
    stop_dbgov(d)


@pytest.mark.parametrize("protocol", ["simple", "extended without Sync"])
def test_what_precedes_a_malformed_message_runs_while_its_event_is_synced(fsync_mode, protocol):
    """fsync mode holds each statement until its event is on disk (strict mode does when
    other sessions are busy): the statement still runs before the FATAL. It used to be
    dropped with the session, its event written and no outcome ever."""
    _precedes_bad_message(fsync_mode, protocol)


def _precedes_bad_message(dbgov, protocol: str) -> None:
    c = login(dbgov)
    marker = f"before-bad-{uuid.uuid4().hex[:8]}"
    sql = f"SELECT '{marker}'"
    if protocol == "simple":
        good = Query(sql).encode()
    else:
        good = Parse("", sql).encode() + Bind("", "", (), (), ()).encode() + Execute("", 0).encode()
    c.send(good + b"B\x00\x00\x00\x05\x00")  # a Bind cut short
    err = error_of(c.until_closed())
    assert err is not None and err.sqlstate == "08P01"
    ran = dbgov.wait_events(lambda e: True, types=["statement"], text=marker)
    assert [e["sql"] for e in ran] == [sql]
    done = dbgov.wait_events(lambda e: e.get("ref") == ran[0]["id"], types=["statement.done"])
    assert [(e["sqlstate"], e.get("tags")) for e in done] == [("00000", ["SELECT 1"])]
    closed = dbgov.wait_events(
        lambda e: e["session"] == ran[0]["session"], types=["connection.close"]
    )
    assert [e["reason"].split(":")[0] for e in closed] == ["protocol violation"]


def test_unknown_message_type_is_a_protocol_violation(dbgov):
    c = login(dbgov)
    c.send(frame(b"?", b"hello"))
    err = error_of(c.until_closed())
    assert err is not None and err.sqlstate == "08P01"


# ---------------------------------------------------------------- cancel, disconnect, terminate


def _backend_running(dbgov, marker: str) -> bool:
    rows = dbgov.admin(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()",
        (f"%{marker}%",),
    )
    return rows[0][0] > 0


def test_cancel_request_reaches_the_upstream(dbgov):
    c = login(dbgov)
    assert c.key is not None
    c.send(Query("SELECT pg_sleep(30) /* cancel-me */").encode())
    time.sleep(0.5)
    t0 = time.monotonic()
    s = socket.create_connection((dbgov.host, dbgov.port), 5)
    s.sendall(CancelRequest(c.key.pid, c.key.key).encode())
    s.close()
    msgs = c.until_ready()
    assert time.monotonic() - t0 < 5
    err = error_of(msgs)
    assert err is not None and err.sqlstate == "57014"
    assert rows_of(q(c, "SELECT 1")) == [(b"1",)]  # the session stays usable
    c.close()


def test_cancel_with_wrong_key_does_nothing(dbgov):
    c = login(dbgov)
    assert c.key is not None
    c.send(Query("SELECT pg_sleep(1.5)").encode())
    s = socket.create_connection((dbgov.host, dbgov.port), 5)
    s.sendall(struct.pack("!IIII", 16, CANCEL_REQUEST_CODE, c.key.pid, 12345))
    s.close()
    msgs = c.until_ready()
    assert error_of(msgs) is None
    c.close()


def test_client_disconnect_mid_query_cancels_upstream(dbgov):
    c = login(dbgov)
    c.send(Query("SELECT pg_sleep(60) /* orphan-check */").encode())
    time.sleep(0.5)
    assert _backend_running(dbgov, "orphan-check")
    c.sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _backend_running(dbgov, "orphan-check"):
        time.sleep(0.1)
    assert not _backend_running(dbgov, "orphan-check")


def test_terminate_closes_cleanly(dbgov):
    c = login(dbgov)
    rows = q(c, "SELECT pg_backend_pid()")
    pid = int(rows_of(rows)[0][0])
    c.send(Terminate().encode())
    assert c.until_closed() == []
    # The upstream is reset and kept for the identity's next session (proxy/reuse.py).
    dbgov.wait_backend_kept(pid, "prod")
    closes = dbgov.wait_events(
        lambda e: e.get("reason") == "client terminated", types=["connection.close"]
    )
    assert closes and closes[-1]["bytes_in"] > 0 and closes[-1]["bytes_out"] > 0


# ---------------------------------------------------------------- simple protocol


def test_simple_query_with_several_statements(dbgov):
    c = login(dbgov)
    msgs = q(c, "SELECT 1; SELECT 'two', 2; SHOW search_path")
    tags = [CommandComplete.decode(m.body).tag for m in msgs if m.type == b"C"]
    assert tags == ["SELECT 1", "SELECT 1", "SHOW"]
    assert rows_of(msgs)[:2] == [(b"1",), (b"two", b"2")]
    assert msgs[-1].type == b"Z"
    c.close()


def test_empty_query(dbgov):
    c = login(dbgov)
    assert types_of(q(c, "")) == b"IZ"
    c.close()


# ---------------------------------------------------------------- extended protocol


def test_pipeline_of_many_statements_before_one_sync(dbgov):
    c = login(dbgov)
    batch = b""
    for i in range(20):
        batch += Parse("", "SELECT $1::int + 1", (23,)).encode()
        batch += Bind("", "", (), (str(i).encode(),), ()).encode()
        batch += Execute("", 0).encode()
    batch += Sync().encode()
    c.send(batch)
    msgs = c.until_ready()
    assert rows_of(msgs) == [(str(i + 1).encode(),) for i in range(20)]
    assert types_of(msgs) == b"12DC" * 20 + b"Z"
    c.close()


def test_pipeline_with_describes_keeps_every_frame_in_order(dbgov):
    """libpq's pipeline sends Parse, Bind, Describe, Execute per statement. While one
    statement waits for its ledger write, the next one's frames must queue behind it
    whole: a Describe that overtook its own Parse and Bind would describe the
    previous portal (seen as a wrong RowDescription, or a missing portal)."""
    c = login(dbgov)
    batch = b""
    for i in range(20):
        col = f"c{i}"
        batch += Parse("", f"SELECT $1::int * 2 AS {col}", (23,)).encode()
        batch += Bind("", "", (), (str(i).encode(),), ()).encode()
        batch += Describe("P", "").encode()
        batch += Execute("", 0).encode()
    batch += Sync().encode()
    c.send(batch)
    msgs = c.until_ready()
    assert types_of(msgs) == b"12TDC" * 20 + b"Z"
    names = [m.body[2:].split(b"\x00", 1)[0] for m in msgs if m.type == b"T"]
    assert names == [f"c{i}".encode() for i in range(20)]
    assert rows_of(msgs) == [(str(i * 2).encode(),) for i in range(20)]
    c.close()


def test_error_mid_pipeline_skips_until_sync(dbgov):
    dbgov.app("CREATE TABLE IF NOT EXISTS pipeline_probe (n int)")
    dbgov.app("TRUNCATE pipeline_probe")
    c = login(dbgov)
    batch = (
        Parse("", "INSERT INTO pipeline_probe VALUES (1)").encode()
        + Bind("", "").encode()
        + Execute("").encode()
        + Parse("", "SELECT 1/0").encode()
        + Bind("", "").encode()
        + Execute("").encode()
        + Parse("", "INSERT INTO pipeline_probe VALUES (3)").encode()
        + Bind("", "").encode()
        + Execute("").encode()
        + Sync().encode()
    )
    c.send(batch)
    msgs = c.until_ready()
    # 1/0 is folded at planning, so the error comes at Bind; nothing after it runs
    assert types_of(msgs) == b"12C1EZ"
    assert sum(1 for m in msgs if m.type == b"E") == 1
    # the implicit transaction rolled back: no row from before or after the error
    assert dbgov.app("SELECT count(*) FROM pipeline_probe")[0][0] == 0
    assert rows_of(q(c, "SELECT 7")) == [(b"7",)]
    c.close()


def test_named_and_unnamed_statements_and_portals(dbgov):
    c = login(dbgov)
    c.send(
        Parse("s1", "SELECT $1::text || '!'", (25,)).encode()
        + Describe("S", "s1").encode()
        + Sync().encode()
    )
    msgs = c.until_ready()
    assert types_of(msgs) == b"1tTZ"
    c.send(
        Bind("p1", "s1", (), (b"hi",), ()).encode()
        + Bind("", "s1", (), (b"yo",), ()).encode()
        + Execute("p1").encode()
        + Execute("").encode()
        + Close("P", "p1").encode()
        + Close("S", "s1").encode()
        + Sync().encode()
    )
    msgs = c.until_ready()
    assert rows_of(msgs) == [(b"hi!",), (b"yo!",)]
    assert types_of(msgs) == b"22DCDC33Z"
    c.send(Bind("", "s1", (), (b"x",), ()).encode() + Execute("").encode() + Sync().encode())
    err = error_of(c.until_ready())
    assert err is not None and err.sqlstate == "26000"  # closed statement is gone
    c.close()


def test_binary_parameters_and_results(dbgov):
    c = login(dbgov)
    c.send(
        Parse("", "SELECT $1::int8 * 2, $2::float8", (20, 701)).encode()
        + Bind("", "", (1,), (struct.pack("!q", 21), struct.pack("!d", 1.5)), (1,)).encode()
        + Describe("P", "").encode()
        + Execute("").encode()
        + Sync().encode()
    )
    msgs = c.until_ready()
    rd = RowDescription.decode(next(m.body for m in msgs if m.type == b"T"))
    assert [f.format for f in rd.fields] == [1, 1]
    ((a, b),) = rows_of(msgs)
    assert struct.unpack("!q", a)[0] == 42 and struct.unpack("!d", b)[0] == 1.5
    c.close()


def test_execute_with_row_limit_suspends_portal(dbgov):
    c = login(dbgov)
    c.send(Query("BEGIN").encode())
    c.until_ready()
    c.send(
        Parse("", "SELECT g FROM generate_series(1, 5) g").encode()
        + Bind("cur", "").encode()
        + Execute("cur", 2).encode()
        + Execute("cur", 2).encode()
        + Execute("cur", 0).encode()
        + Sync().encode()
    )
    msgs = c.until_ready()
    assert types_of(msgs) == b"12DDsDDsDCZ"
    assert [r[0] for r in rows_of(msgs)] == [b"1", b"2", b"3", b"4", b"5"]
    q(c, "COMMIT")
    c.close()


# ---------------------------------------------------------------- COPY


def test_copy_from_stdin_and_to_stdout(dbgov):
    dbgov.app("CREATE TABLE IF NOT EXISTS copy_probe (a int, b text)")
    dbgov.app("TRUNCATE copy_probe")
    c = login(dbgov)
    c.send(Query("COPY copy_probe FROM STDIN").encode())
    m = c.recv_msg()
    assert m is not None and m.type == b"G"
    c.send(frame(b"d", b"1\tone\n") + frame(b"d", b"2\ttwo\n") + frame(b"c", b""))
    msgs = c.until_ready()
    assert CommandComplete.decode(msgs[0].body).tag == "COPY 2"
    msgs = q(c, "COPY copy_probe TO STDOUT")
    assert types_of(msgs) == b"HddcCZ"
    assert [m.body for m in msgs if m.type == b"d"] == [b"1\tone\n", b"2\ttwo\n"]
    c.close()


def test_copy_fail_mid_stream_changes_nothing(dbgov):
    dbgov.app("CREATE TABLE IF NOT EXISTS copy_probe2 (a int)")
    dbgov.app("TRUNCATE copy_probe2")
    c = login(dbgov)
    c.send(Query("COPY copy_probe2 FROM STDIN").encode())
    assert c.recv_msg().type == b"G"
    c.send(frame(b"d", b"1\n") + CopyFail("client gave up").encode())
    err = error_of(c.until_ready())
    assert err is not None and err.sqlstate == "57014" and "client gave up" in err.message
    assert dbgov.app("SELECT count(*) FROM copy_probe2")[0][0] == 0
    assert rows_of(q(c, "SELECT 1")) == [(b"1",)]
    c.close()


def test_copy_bad_data_mid_stream_is_an_error(dbgov):
    dbgov.app("CREATE TABLE IF NOT EXISTS copy_probe3 (a int)")
    c = login(dbgov)
    c.send(Query("COPY copy_probe3 FROM STDIN").encode())
    assert c.recv_msg().type == b"G"
    c.send(frame(b"d", b"1\nnot-a-number\n") + frame(b"c", b""))
    err = error_of(c.until_ready())
    assert err is not None and err.sqlstate == "22P02"
    c.close()


def test_copy_in_through_the_extended_protocol_as_libpq_sends_it(dbgov):
    """PQexecParams("COPY ... FROM STDIN") sends Sync right behind Execute; the server,
    in COPY IN by then, ignores it, and libpq sends another after CopyDone. Only that
    one is answered: the session stays in step, and the ledger says how each ended."""
    dbgov.app("CREATE TABLE IF NOT EXISTS copy_probe4 (a int)")
    dbgov.app("TRUNCATE copy_probe4")
    c = login(dbgov)
    c.send(
        Parse("", "COPY copy_probe4 FROM STDIN", ()).encode()
        + Bind("", "", (), (), ()).encode()
        + Describe("P", "").encode()
        + Execute("", 0).encode()
        + Sync().encode()
    )
    assert [c.recv_msg().type for _ in range(4)] == [b"1", b"2", b"n", b"G"]
    c.send(frame(b"d", b"7\n8\n") + frame(b"c", b"") + Sync().encode())
    msgs = c.until_ready()
    assert types_of(msgs) == b"CZ" and CommandComplete.decode(msgs[0].body).tag == "COPY 2"
    marker = f"after copy {uuid.uuid4().hex[:8]}"
    assert rows_of(q(c, f"SELECT '{marker}'")) == [(marker.encode(),)]
    c.close()
    assert dbgov.app("SELECT a FROM copy_probe4 ORDER BY a") == [(7,), (8,)]
    select = dbgov.wait_events(lambda e: True, types=["statement"], text=marker)
    assert len(select) == 1
    ran = dbgov.wait_events(lambda e: True, types=["statement"], session=select[0]["session"])
    done = dbgov.wait_events(
        lambda e: True, types=["statement.done"], session=select[0]["session"], count=2
    )
    outcome = {e["ref"]: e.get("tags") for e in done}
    assert [(e["sql"], outcome.get(e["id"])) for e in ran] == [
        ("COPY copy_probe4 FROM STDIN", ["COPY 2"]),
        (f"SELECT '{marker}'", ["SELECT 1"]),
    ]


def test_a_sync_inside_copy_data_is_a_protocol_violation(dbgov):
    """The server ignores a Sync amid CopyData, unless the COPY failed before it: no
    proxy can know which, so the session ends (FATAL 08P01) before it falls out of
    step, and the COPY does not commit."""
    dbgov.app("CREATE TABLE IF NOT EXISTS copy_probe5 (a int)")
    dbgov.app("TRUNCATE copy_probe5")
    c = login(dbgov)
    c.send(Query("COPY copy_probe5 FROM STDIN").encode())
    assert c.recv_msg().type == b"G"
    c.send(frame(b"d", b"1\n") + Sync().encode() + frame(b"d", b"2\n") + frame(b"c", b""))
    err = error_of(c.until_closed())
    assert err is not None and err.sqlstate == "08P01" and "COPY" in err.message
    assert dbgov.app("SELECT count(*) FROM copy_probe5")[0][0] == 0


# ---------------------------------------------------------------- asynchronous messages


def test_listen_notify_across_sessions(dbgov):
    listener = login(dbgov)
    q(listener, "LISTEN dbgov_chan")
    talker = login(dbgov)
    q(talker, "NOTIFY dbgov_chan, 'hello'")
    listener.sock.settimeout(5)
    m = listener.recv_msg()
    assert m is not None and m.type == b"A"
    assert m.body.endswith(b"dbgov_chan\x00hello\x00")
    listener.close()
    talker.close()


def test_parameter_status_shows_the_clients_application_name(dbgov):
    c = RawClient(dbgov.host, dbgov.port)
    c.startup("carol", "prod", dbgov.token("carol"), application_name="my-notebook")
    assert c.params.get("application_name") == "my-notebook"
    rows = rows_of(
        q(c, "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()")
    )
    assert rows[0][0].decode().startswith("dbgov/carol/")
    c.close()


def test_two_sessions_in_parallel_do_not_mix(dbgov):
    results: dict[int, bytes] = {}

    def run(n: int) -> None:
        c = login(dbgov)
        for _ in range(20):
            results[n] = rows_of(q(c, f"SELECT {n}"))[0][0]
        c.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {n: str(n).encode() for n in range(6)}


def test_error_response_fields_survive(dbgov):
    c = login(dbgov)
    err = error_of(q(c, "SELECT * FROM no_such_table_here"))
    assert isinstance(err, ErrorResponse) and err.sqlstate == "42P01"
    assert err.get("P") is not None  # position is forwarded for dba
    c.close()


def test_fast_path_function_call_is_refused_and_audited(dbgov):
    c = login(dbgov, user="alice")
    # FunctionCall of lo_import (OID 764) with one text argument: bypasses SQL analysis.
    body = (
        struct.pack("!Ih", 764, 1)
        + struct.pack("!h", 0)
        + struct.pack("!h", 1)
        + struct.pack("!i", 11)
        + b"/etc/passwd"
        + struct.pack("!h", 0)
    )
    c.send(frame(b"F", body))
    msgs = c.until_ready()
    err = error_of(msgs)
    assert err is not None and err.sqlstate == "42501"
    assert err.message.startswith('dbgov: denied by rule "function_call"')
    assert rows_of(q(c, "SELECT 1")) == [(b"1",)]
    c.close()
    evs = dbgov.wait_events(
        lambda e: "FunctionCall" in e.get("sql", "") and e["user"] == "alice", types=["statement"]
    )
    assert evs and evs[-1]["decision"]["verdict"] == "deny"


def test_statement_events_follow_the_session_state_as_it_changes(dbgov) -> None:
    """The same statement, run as the session's search path and transaction change,
    is audited with the state of each run (events reuse per-session encodings)."""
    c = login(dbgov)
    marker = f"/* state-{time.monotonic_ns()} */"
    sql = f"SELECT 1 {marker}"
    for step in (
        sql,
        "BEGIN",
        sql,
        "COMMIT",
        "SET search_path = pg_catalog, public",
        sql,
        "BEGIN",
        sql,
        "ROLLBACK",
        sql,
    ):
        assert q(c, step)[-1].type == b"Z"
    c.close()
    runs = dbgov.wait_events(lambda e: marker in e.get("sql", ""), count=5, types=["statement"])
    assert [(e.get("in_txn", False), e.get("search_path")) for e in runs] == [
        (False, None),
        (True, None),
        (False, "pg_catalog,public"),
        (True, "pg_catalog,public"),
        (False, "pg_catalog,public"),  # ROLLBACK undid nothing: SET ran outside it
    ]
    ids = {e["id"] for e in runs}
    dones = dbgov.wait_events(lambda e: e.get("ref") in ids, count=5, types=["statement.done"])
    assert sorted(d["ref"] for d in dones) == sorted(ids)
    assert all(d["rows"] == [1] and d["tags"] == ["SELECT 1"] for d in dones)


def test_a_query_the_server_discards_after_an_error_is_not_audited(dbgov) -> None:
    """After an extended-protocol error the server discards everything up to Sync, a
    simple Query too: the ledger must not say it ran, and the session goes on."""
    c = RawClient(dbgov.host, dbgov.port)
    try:
        assert c.startup("carol", "prod", dbgov.token("carol"))[-1].type == b"Z"
        marker = f"discarded-{uuid.uuid4().hex[:8]}"
        c.send(
            Parse("", "SELECT 1/0").encode()
            + Bind("", "", (), (), ()).encode()
            + Execute("", 0).encode()
            + Flush().encode()
        )
        err = c.recv_msg()
        while err is not None and err.type != b"E":
            err = c.recv_msg()
        assert err is not None
        c.send(Query(f"SELECT '{marker}'").encode() + Sync().encode())
        msgs = c.until_ready()
        assert not rows_of(msgs)  # the server discarded the Query
        assert rows_of(c.query("SELECT 41 + 1")) == [(b"42",)]
        assert not dbgov.events(types=["statement"], text=marker)
    finally:
        c.close()
