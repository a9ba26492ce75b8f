"""The sans-I/O PostgreSQL codec: messages, framing, the phase table, and the two
startup connections talking to each other through a fake link (h11 ConnectionPair)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbgov.wire.postgres import (
    CONNECTION_CLOSED,
    NEED_DATA,
    ClientConnection,
    FrameBuffer,
    Phase,
    RemoteProtocolError,
    ServerConnection,
    backend_step,
    frontend_step,
    read_startup_packet,
)
from dbgov.wire.postgres.errors import LocalProtocolError
from dbgov.wire.postgres.framing import DIRECT_TLS
from dbgov.wire.postgres.messages import (
    AUTH_CLEARTEXT,
    AUTH_OK,
    PROTOCOL_3_0,
    Authentication,
    BackendKeyData,
    Bind,
    CancelRequest,
    Close,
    CommandComplete,
    CopyResponse,
    DataRow,
    Describe,
    ErrorResponse,
    Execute,
    FieldDescription,
    GSSENCRequest,
    NegotiateProtocolVersion,
    NotificationResponse,
    ParameterDescription,
    ParameterStatus,
    Parse,
    PasswordMessage,
    Query,
    ReadyForQuery,
    RowDescription,
    SASLInitialResponse,
    SSLRequest,
    StartupMessage,
    command_tag,
    ready_status,
)

ROUND_TRIP = [
    Query("SELECT 1; SELECT 'é'"),
    Parse("s1", "SELECT $1::int", (23,)),
    Parse("", "SELECT 1", ()),
    Bind("p", "s", (0, 1, 1), (b"1", None, b"\x00\x01"), (1,)),
    Describe("S", "s1"),
    Describe("P", ""),
    Execute("p", 10),
    Close("P", "p"),
    PasswordMessage("secret"),
    SASLInitialResponse("SCRAM-SHA-256", b"n,,n=,r=abc"),
    SASLInitialResponse("SCRAM-SHA-256", None),
    Authentication(AUTH_CLEARTEXT),
    BackendKeyData(42, b"\x01\x02\x03\x04"),
    BackendKeyData(42, bytes(32)),
    ParameterStatus("server_version", "18.1"),
    ReadyForQuery("T"),
    RowDescription(
        (FieldDescription("id", 16384, 1, 23, 4, -1, 0), FieldDescription("e", 0, 0, 25, -1, -1, 1))
    ),
    DataRow((b"1", None, b"")),
    CommandComplete("INSERT 0 5"),
    ErrorResponse.build("ERROR", "42501", "dbgov: denied", hint="ask"),
    NotificationResponse(7, "chan", "payload"),
    ParameterDescription((23, 25)),
    NegotiateProtocolVersion(2, ("_pq_.x",)),
]


@pytest.mark.parametrize("msg", ROUND_TRIP, ids=lambda m: type(m).__name__)
def test_round_trip(msg) -> None:
    data = msg.encode()
    (n,) = struct.unpack("!I", data[1:5])
    assert n == len(data) - 1
    assert type(msg).decode(data[5:]) == msg


def test_startup_round_trips() -> None:
    sm = StartupMessage(PROTOCOL_3_0, {"user": "alice", "database": "prod"})
    packet, used = read_startup_packet(sm.encode())  # type: ignore[misc]
    assert packet == sm and used == len(sm.encode())
    assert read_startup_packet(SSLRequest().encode()) == (SSLRequest(), 8)
    assert read_startup_packet(GSSENCRequest().encode()) == (GSSENCRequest(), 8)
    cr = CancelRequest(9, bytes(32))
    assert read_startup_packet(cr.encode()) == (cr, 44)
    assert read_startup_packet(b"\x16\x03\x01") == (DIRECT_TLS, 0)
    assert read_startup_packet(b"\x00\x00") is None


@pytest.mark.parametrize(
    ("cls", "body", "why"),
    [
        (Query, b"SELECT 1", "unterminated"),
        (Query, b"SELECT 1\x00junk", "trailing"),
        (Query, b"\xff\xfe\x00", "UTF-8"),
        (Parse, b"s\x00SELECT\x00\x00\x05", "bad count"),
        (Parse, b"s\x00SELECT\x00\xff\xff", "bad count"),
        (Bind, b"p\x00s\x00\x00\x00\x00\x01\xff\xff\xff\xfe\x00\x00", "negative length"),
        (Bind, b"p\x00s\x00\x00\x01\x00\x07\x00\x00\x00\x00", "format code"),
        (Bind, b"p\x00s\x00\x00\x00\x00\x01\x00\x00\x00\x10ab\x00\x00", "too short"),
        (Describe, b"Xname\x00", "kind"),
        (Execute, b"p\x00\xff\xff\xff\xff", "negative row limit"),
        (DataRow, b"\x00\x02\x00\x00\x00\x01a", "bad count"),
        (DataRow, b"\x00\x01\x00\x00\x00\x09a", "too short"),
        (DataRow, b"\x7f\xff", "bad count"),
        (RowDescription, b"\x00\x01name\x00", "bad count"),
        (ReadyForQuery, b"X", "ReadyForQuery"),
        (BackendKeyData, b"\x00\x00\x00\x01\x00", "key length"),
        (CancelRequest, struct.pack("!II", 80877102, 1) + b"\x00", "key length"),
        (
            StartupMessage,
            struct.pack("!I", PROTOCOL_3_0) + b"user\x00a\x00user\x00b\x00\x00",
            "repeats",
        ),
        (StartupMessage, struct.pack("!I", PROTOCOL_3_0) + b"user\x00alice\x00", "terminator"),
    ],
)
def test_malformed_bodies_raise_protocol_errors(cls, body: bytes, why: str) -> None:
    with pytest.raises(RemoteProtocolError, match=why):
        cls.decode(body)


@given(st.binary(max_size=64))
def test_decoders_never_crash_on_garbage(body: bytes) -> None:
    for cls in (
        Query,
        Parse,
        Bind,
        Describe,
        Execute,
        Close,
        DataRow,
        RowDescription,
        ErrorResponse,
        CommandComplete,
        ParameterStatus,
        NotificationResponse,
    ):
        try:
            cls.decode(body)
        except RemoteProtocolError:
            pass


def test_copy_response_and_rows_helper() -> None:
    cr = CopyResponse(b"G", 0, (0, 0))
    assert CopyResponse.decode(b"G", cr.encode()[5:]) == cr
    assert CommandComplete("SELECT 3").rows() == 3
    assert CommandComplete("CREATE TABLE").rows() is None


def test_nul_in_outgoing_strings_is_refused() -> None:
    with pytest.raises(ValueError):
        Query("a\x00b").encode()


# ---------------------------------------------------------------- framing


def test_frame_buffer_splits_and_waits_for_more() -> None:
    fb = FrameBuffer()
    data = Query("SELECT 1").encode() + b"S\x00\x00\x00\x04"
    fb.feed(data[:3])
    assert fb.next_frame() is None
    fb.feed(data[3:])
    t, s, e = fb.next_frame()  # type: ignore[misc]
    assert (t, bytes(fb.buf[s:e])) == (ord("Q"), Query("SELECT 1").encode())
    assert fb.next_frame()[0] == ord("S")  # type: ignore[index]
    assert fb.next_frame() is None


def test_frame_buffer_gathers_a_big_frame_whole() -> None:
    """A multi-megabyte message arriving in small chunks, between two small ones, comes
    out byte for byte, with pending() counting every buffered byte on the way."""
    big = Query("SELECT '" + "x" * (3 << 20) + "'").encode()
    stream = Query("SELECT 1").encode() + big + b"S\x00\x00\x00\x04"
    fb = FrameBuffer(max_len=8 << 20)
    got: list[bytes] = []
    fed = 0
    for i in range(0, len(stream), 65536):
        chunk = stream[i : i + 65536]
        fb.feed(chunk)
        fed += len(chunk)
        frames = fb.frames()
        got += [fb.buf[s:e] for _, s, e in frames]
        assert fb.pending() == fed - sum(len(g) for g in got)
    assert got == [Query("SELECT 1").encode(), big, b"S\x00\x00\x00\x04"]
    assert fb.pending() == 0 and fb.take_rest() == b""


def test_frame_buffer_keeps_frames_handed_back_before_a_big_one() -> None:
    """A caller that stops early (a held statement) sets pos back; what follows, a big
    frame still arriving included, is delivered later in order."""
    first, second = Query("SELECT 1").encode(), Query("SELECT 2").encode()
    big = Query("SELECT '" + "y" * (1 << 20) + "'").encode()
    stream = first + second + big
    fb = FrameBuffer(max_len=4 << 20)
    fb.feed(stream[:100_000])
    frames = fb.frames()
    assert [fb.buf[s:e] for _, s, e in frames] == [first, second]
    fb.pos = frames[1][1]  # hand the second frame back
    for i in range(100_000, len(stream), 32768):
        fb.feed(stream[i : i + 32768])
    assert [fb.buf[s:e] for _, s, e in fb.frames()] == [second, big]


def test_advance_if_takes_only_whole_frames_of_the_wanted_type() -> None:
    """The pumps take runs of DataRows with advance_if; anything else, a partial
    frame or a bad length included, is left for advance to return or report."""
    row = DataRow((b"1", None)).encode()
    fb = FrameBuffer(max_len=1 << 20, frontend=False)
    fb.feed(row + row + CommandComplete("SELECT 2").encode() + row[:3])
    assert fb.advance() == ord("D")
    assert fb.advance_if(ord("D")) and fb.buf[fb.start : fb.end] == row
    assert not fb.advance_if(ord("D"))  # a CommandComplete is next
    assert fb.advance() == ord("C") and fb.advance_if(ord("D")) is False  # partial
    assert fb.advance() == -1 and fb.pending() == 3
    bad = FrameBuffer(max_len=1 << 20, frontend=False)
    bad.feed(b"D\x00\x00\x00\x02")
    assert not bad.advance_if(ord("D"))
    with pytest.raises(RemoteProtocolError, match="invalid message length 2"):
        bad.advance()


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"Q\x00\x00\x00\x03", "invalid message length 3"),
        (b"Q\x7f\xff\xff\xff", "invalid message length"),
        (b"S\x00\x00\x00\x05x", "must have no body"),
        (b"X\x00\x00\x00\x08abcd", "must have no body"),
    ],
)
def test_frame_buffer_distrusts_lengths(data: bytes, why: str) -> None:
    fb = FrameBuffer(max_len=1 << 20)
    fb.feed(data)
    with pytest.raises(RemoteProtocolError, match=why):
        fb.next_frame()


@pytest.mark.parametrize(
    "packet",
    [b"\x00\x00\x00\x04xxxx", b"\x00\x01\x00\x00" + b"x" * 8, struct.pack("!II", 8, 1 << 16)],
)
def test_bad_startup_packets(packet: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        read_startup_packet(packet)


# ---------------------------------------------------------------- the phase table


@pytest.mark.parametrize(
    ("phase", "t", "after"),
    [
        (Phase.READY, b"Q", Phase.READY),
        (Phase.READY, b"X", Phase.CLOSED),
        (Phase.COPY_IN, b"d", Phase.COPY_IN),
        (Phase.COPY_IN, b"c", Phase.READY),
        (Phase.COPY_IN, b"f", Phase.READY),
        (Phase.COPY_OUT, b"Q", Phase.COPY_OUT),
    ],
)
def test_frontend_transitions(phase: Phase, t: bytes, after: Phase) -> None:
    assert frontend_step(phase, t[0]) is after


@pytest.mark.parametrize(
    ("phase", "t"),
    [(Phase.COPY_IN, b"Q"), (Phase.READY, b"?"), (Phase.STARTUP, b"Q"), (Phase.CLOSED, b"S")],
)
def test_frontend_violations(phase: Phase, t: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        frontend_step(phase, t[0])


@pytest.mark.parametrize(
    ("phase", "t", "after"),
    [
        (Phase.READY, b"G", Phase.COPY_IN),
        (Phase.READY, b"H", Phase.COPY_OUT),
        (Phase.COPY_OUT, b"d", Phase.COPY_OUT),
        (Phase.COPY_OUT, b"c", Phase.READY),
        (Phase.COPY_IN, b"E", Phase.READY),
        (Phase.CLOSED, b"C", Phase.CLOSED),  # answering what came before a Terminate
    ],
)
def test_backend_transitions(phase: Phase, t: bytes, after: Phase) -> None:
    assert backend_step(phase, t[0]) is after


@pytest.mark.parametrize(
    ("phase", "t"), [(Phase.READY, b"W"), (Phase.COPY_IN, b"D"), (Phase.READY, b"R")]
)
def test_backend_violations(phase: Phase, t: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        backend_step(phase, t[0])


# ---------------------------------------------------------------- connections


def _events(conn):  # type: ignore[no-untyped-def]
    out = []
    while (ev := conn.next_event()) is not NEED_DATA:
        out.append(ev)
        if ev is CONNECTION_CLOSED:
            break
    return out


def test_client_and_server_connections_complete_a_login() -> None:
    server, client = ServerConnection(), ClientConnection()
    server.receive_data(client.send(StartupMessage(PROTOCOL_3_0, {"user": "alice"})))
    (startup,) = _events(server)
    assert isinstance(startup, StartupMessage) and server.phase is Phase.AUTHENTICATING
    client.receive_data(server.send(Authentication(AUTH_CLEARTEXT)))
    (auth,) = _events(client)
    assert auth == Authentication(AUTH_CLEARTEXT)
    server.receive_data(client.send(PasswordMessage("tok")))
    assert _events(server) == [PasswordMessage("tok")]
    reply = (
        server.send(Authentication(AUTH_OK))
        + server.send(ParameterStatus("a", "b"))
        + server.send(BackendKeyData(1, b"1234"))
        + server.send(ReadyForQuery("I"))
    )
    client.receive_data(reply + Query("pipelined").encode())
    evs = _events(client)
    assert [type(e).__name__ for e in evs] == [
        "Authentication",
        "ParameterStatus",
        "BackendKeyData",
        "ReadyForQuery",
    ]
    assert client.phase is Phase.READY and server.phase is Phase.READY
    assert client.take_leftover() == Query("pipelined").encode()


def test_password_without_asking_is_refused() -> None:
    server = ServerConnection()
    server.receive_data(
        StartupMessage(PROTOCOL_3_0, {"user": "a"}).encode() + PasswordMessage("x").encode()
    )
    assert isinstance(server.next_event(), StartupMessage)
    with pytest.raises(RemoteProtocolError):
        server.next_event()
    # errors are sticky
    with pytest.raises(RemoteProtocolError):
        server.next_event()
    assert server.phase is Phase.CLOSED


def test_server_connection_reports_eof() -> None:
    server = ServerConnection()
    server.receive_data(b"")
    assert server.next_event() is CONNECTION_CLOSED


def test_leftover_only_when_ready() -> None:
    server = ServerConnection()
    with pytest.raises(LocalProtocolError):
        server.take_leftover()


def test_client_connection_refuses_unknown_auth_method() -> None:
    client = ClientConnection()
    client.send(StartupMessage(PROTOCOL_3_0, {"user": "a"}))
    client.receive_data(Authentication(7).encode())  # GSS
    with pytest.raises(RemoteProtocolError, match="unsupported authentication"):
        client.next_event()


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "unterminated"),
        (b"SELECT 1", "unterminated"),
        (b"SELECT\x001\x00", "trailing bytes"),
        (b"SELECT \xff\x00", "invalid UTF-8"),
    ],
)
def test_the_pump_s_command_tag_reader_refuses_what_the_decoder_refuses(
    body: bytes, why: str
) -> None:
    with pytest.raises(RemoteProtocolError, match=why):
        command_tag(body)
    with pytest.raises(RemoteProtocolError):
        CommandComplete.decode(body)


def test_the_pump_s_readers_agree_with_the_decoders() -> None:
    for tag in ("SELECT 1", "INSERT 0 12", "", "ÉTIQUETTE 3"):
        body = tag.encode() + b"\x00"
        assert command_tag(body) == CommandComplete.decode(body).tag == tag
    for status in "ITE":
        assert ready_status(status.encode()) == ReadyForQuery.decode(status.encode()).status
    for bad in (b"", b"X", b"II", b"i"):
        with pytest.raises(RemoteProtocolError, match="ReadyForQuery"):
            ready_status(bad)
