"""One client session: authenticate, open the upstream, pump messages both ways.

Theory of operation
-------------------
Startup runs as a coroutine over the sans-I/O `ServerConnection`: protocol
negotiation, authentication (token, SCRAM or client certificate), target and
connect checks, the `connection.open` event, then the upstream login with the
target's credentials. Nothing upstream is opened before the client is verified.

Then the pump (`_on_client_frame` / `_on_server_frame`) decides from each frame's
type byte (PgBouncer `handle_client_work()`):

- statements (Query, Parse, Execute, FunctionCall) go through the gate; an allowed
  statement is forwarded only after its event is durable (write-ahead audit);
- a denied statement is never forwarded: an always-failing statement takes its
  place, so the server fails the batch (and any open transaction) exactly as on
  a server error, and the error that comes back is rewritten into the denial;
- everything else is forwarded unchanged, contiguous frames in one write.

Every message forwarded upstream that elicits a response pushes a `Unit` on a
FIFO; server messages are matched to the head unit. That is how results are
tied to statements (masking plans, row counts, completion events) and how the
extended protocol's "skip until Sync after an error" is followed (asyncpg
`coreproto.pyx`).
"""

from __future__ import annotations

import asyncio
import fnmatch
import ipaddress
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dbgov.gate import Decision, ResultPlan, SessionContext, Verdict
from dbgov.identity import AuthError, Identity
from dbgov.identity.scram import MECHANISM, ScramExchange
from dbgov.ledger import events
from dbgov.masking import order
from dbgov.masking.engine import planner_settings
from dbgov.models.registry import model_links
from dbgov.proxy import masking_io, reuse, startup_params
from dbgov.proxy.pending import SHED_HINT, SHED_MESSAGE, expire_now
from dbgov.proxy.redact import redact_sql
from dbgov.proxy.session_limits import SessionLimitError
from dbgov.proxy.upstream import UpstreamError, connect_upstream, send_cancel
from dbgov.sql.model import Analysis, Statement
from dbgov.sql.settings import parse_search_path
from dbgov.wire.postgres import (
    NEED_DATA,
    ConnectionClosed,
    FrameBuffer,
    Phase,
    ProtocolError,
    RemoteProtocolError,
    ServerConnection,
    backend_step,
    frontend_step,
)
from dbgov.wire.postgres.messages import (
    AUTH_CLEARTEXT,
    AUTH_OK_BYTES,
    AUTH_SASL_CONTINUE,
    AUTH_SASL_FINAL,
    PROTOCOL_3_2,
    Authentication,
    BackendKeyData,
    DataRow,
    Describe,
    ErrorResponse,
    Execute,
    Flush,
    NegotiateProtocolVersion,
    NoticeResponse,
    ParameterDescription,
    ParameterStatus,
    Parse,
    PasswordMessage,
    Query,
    ReadyForQuery,
    RowDescription,
    SASLInitialResponse,
    SASLResponse,
    StartupMessage,
    bind_fields,
    close_fields,
    command_tag,
    describe_fields,
    execute_fields,
    frame,
    ready_status,
    tag_rows,
)

if TYPE_CHECKING:
    from dbgov.config import Target
    from dbgov.proxy.context import ProxyContext
    from dbgov.wire.postgres.messages import FieldDescription

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 30.0
# What replaces a refused statement upstream: fails at parse time, touches nothing.
REFUSED_SQL = "DBGOV REFUSED"
REFUSED_PORTAL = "\x01dbgov-refused"
_RESERVED_NAME = "\x01dbgov"  # statement and portal names no client may take
_MADE_MAX = 64  # names in flight kept before answered ones are dropped (_forget_answered)
_REFUSED_QUERY = Query(REFUSED_SQL).encode()
_REFUSED_EXECUTE = Execute(REFUSED_PORTAL, 0).encode()
_FLUSH = Flush().encode()
# Lineage's reason for a relation missing from the catalog snapshot (sql/queries.py).
_CATALOG_MISS = "is not in the catalog"
CATALOG_RELOAD_INTERVAL_S = 5.0
# At most this long, a client whose DDL committed waits for the catalog reload.
CATALOG_WAIT_S = 5.0
# A client that leaves mid-statement: its statement's outcome is awaited this long,
# for the ledger. Unless the client said Terminate, the statement is cancelled, again
# every CANCEL_AGAIN_S (a cancel that reaches the backend before the statement is lost).
ABANDONED_WAIT_S = 10.0
CANCEL_AGAIN_S = 1.0
# Client bytes buffered while nothing can consume them (login not finished, a statement
# held for approval or awaiting its event's write, a name barrier): past this much the
# socket is not read, so a client that pipelines on regardless costs the worker this
# much memory, not whatever it sends (`_update_reading`).
INPUT_BUFFER_MAX = 1 << 20

# Unit kinds: what a forwarded message expects back.
U_QUERY, U_PARSE, U_BIND, U_DESC_STMT, U_DESC_PORTAL, U_EXECUTE, U_CLOSE, U_SYNC = range(8)


@dataclass(slots=True)
class Prepared:
    """A protocol-level prepared statement (Parse)."""

    sql: str
    analysis: Analysis
    decision: Decision
    param_oids: tuple[int, ...] = ()
    fields: tuple[FieldDescription, ...] | None = None  # from Describe(S)
    # _secret_params' answer, with the policy and default schema it was computed for.
    secret: tuple[object, str, bool] | None = None
    unordered: bool = False  # sent wrapped in random order (_random_order)


class Portal:
    """A bound portal (Bind). A plain class, like Unit: one per Bind.

    `prepared` is the statement as it was when bound: a later Parse may reuse the
    name (the unnamed statement always does) while this portal still runs the old
    one, and a pipelined Bind may reuse the portal's own name before this one's
    answers are back. So responses are matched to the Portal and Prepared objects
    their request named, never looked up by name when they arrive."""

    __slots__ = ("fields", "param_formats", "params", "prepared", "result_formats", "statement")

    def __init__(
        self,
        statement: str,
        prepared: Prepared | None,
        params: tuple[bytes | None, ...] = (),
        param_formats: tuple[int, ...] = (),
        result_formats: tuple[int, ...] = (),
    ) -> None:
        self.statement = statement
        self.prepared = prepared
        self.params = params
        self.param_formats = param_formats
        self.result_formats = result_formats
        self.fields: tuple[FieldDescription, ...] | None = None  # from Describe(P)


class Unit:
    """One forwarded message awaiting its response. Cheap to make: four per pipelined
    statement, so the result lists are created only for units that get results. A
    plain class, not a dataclass: compiled (dbgov.native), its constructor is native,
    where a dataclass's generated __init__ would run as Python."""

    __slots__ = (
        "copy_mark", "event_id", "formats", "internal", "kind", "masked", "name", "plan",
        "portal", "prepared", "result_formats", "rewrite", "rewriter", "rows", "sqlstate",
        "started", "statements", "stmt_i", "tags",
    )  # fmt: skip

    def __init__(
        self,
        kind: int,
        name: str = "",
        *,
        event_id: str | None = None,
        statements: tuple[Statement, ...] = (),
        started: float = 0.0,
        rewrite: ErrorResponse | None = None,
        internal: bool = False,
        result_formats: tuple[int, ...] = (),
        portal: Portal | None = None,
        prepared: Prepared | None = None,
    ) -> None:
        self.kind = kind
        self.name = name
        self.event_id = event_id
        self.statements = statements
        self.stmt_i = 0
        self.started = started
        self.rows: list[int | None] | None = None
        self.tags: list[str] | None = None
        self.sqlstate: str | None = None
        self.plan: ResultPlan | None = None
        self.rewriter: masking_io.RowRewriter | None = None  # applies `plan` to DataRows
        self.masked: list[dict[str, str]] | None = None
        self.rewrite = rewrite  # replaces the server's error for this unit
        self.internal = internal  # injected by dbgov: its responses are swallowed
        self.result_formats = result_formats  # Bind's result format codes
        self.formats: tuple[int, ...] = ()  # per-column formats of the current result
        self.portal = portal  # Describe(P), Execute: the portal as it was when sent
        self.prepared = prepared  # Describe(S): the statement as it was when sent
        self.copy_mark = 0  # Session._copy_msgs when sent (_skip_copy_syncs)


class ServerSide:
    """The upstream socket's protocol once logged in: every event goes straight to
    its session. (The login's UpstreamProtocol is plain Python; this one is compiled,
    so a server chunk reaches the pump without an interpreted call.)

    Both sockets use data_received, not BufferedProtocol: uvloop hands over each read
    as one new bytes object, which FrameBuffer keeps as its buffer without a copy
    (framing.py), while reading into a preallocated buffer costs a get_buffer call
    and a view per read, and a copy of every frame that outlives the read. A bare
    uvloop relay under pgbench -S c=8 measured 2.8 µs of user CPU a transaction with
    data_received, 3.8 µs with BufferedProtocol (medians of 3 runs; issue 8)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        pass  # never called: the transport is connected when it is handed over

    def data_received(self, data: bytes) -> None:
        self.session._on_server_data(data)

    def eof_received(self) -> bool:
        return False  # close; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.session._on_upstream_lost(exc)

    def pause_writing(self) -> None:
        self.session._on_upstream_pause(True)

    def resume_writing(self) -> None:
        self.session._on_upstream_pause(False)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in ("localhost", "")


class Session:
    """One client connection and its upstream: an asyncio protocol by duck typing (a
    base class would keep mypyc from compiling it as a native class, see dbgov.native)."""

    def __init__(self, ctx: ProxyContext, *, tls: bool = False, direct_tls: bool = False) -> None:
        self.ctx = ctx
        self.id = events.new_session_id()
        self.tls = tls
        self.direct_tls = direct_tls
        self.transport: asyncio.Transport | None = None
        self.peer = ("", 0)
        self.conn = ServerConnection()
        self._startup_data: asyncio.Queue[bytes] = asyncio.Queue()
        self._startup_bytes = 0  # in _startup_data
        # Who the startup packet names, for the auth.failed event of a login that breaks
        # off before it is decided (None until the packet is read).
        self._login_user: str | None = None
        self._login_target: str | None = None
        self._startup_task: asyncio.Task[None] | None = None
        self.pumping = False
        self.closed = False
        self.identity: Identity | None = None
        self.target: Target | None = None
        self.sctx: SessionContext | None = None
        self.client_app = ""
        self.protocol_minor = 0
        self.opened = time.monotonic()
        self.bytes_in = 0
        self.bytes_out = 0
        self.statements = 0
        # upstream
        self.up_transport: asyncio.Transport | None = None
        self.up_pid = 0
        self.up_key = b""
        self.up_params: dict[str, str] = {}  # the upstream's ParameterStatus values
        self._reuse_key: reuse.Key | None = None  # set when the pool may keep the upstream
        self._terminated = False  # the client said Terminate (a clean end)
        self._counted = False  # in listen.max_sessions_per_user's count (_admit)
        # Extended-protocol names in flight (_wait_for): segments (Syncs and Queries) sent
        # and answered, and the segment that last made, changed or closed each name.
        self._segments_sent = 0
        self._segments_done = 0
        self._barrier = False
        self._made_statements: dict[str, int] = {}
        self._made_portals: dict[str, int] = {}
        # COPY IN: client CopyData/CopyDone/CopyFail messages so far, and whether the
        # client is inside its copy data (a CopyData not yet ended by CopyDone or
        # CopyFail). See _skip_copy_syncs.
        self._copy_msgs = 0
        self._copy_open = False
        # SQL dbgov itself sent upstream after the connection opened (distinct texts, in
        # order): the connection.close event lists it.
        self._internal_sql: list[str] = []
        self.cancel_pid = 0
        # pump state
        self.phase = Phase.READY  # one phase, moved by both directions (states.py)
        self.cin = FrameBuffer(max_len=ctx.config.max_message_bytes)
        self.sin = FrameBuffer(max_len=1 << 30, frontend=False)
        self.units: deque[Unit] = deque()
        self.skip_until_sync = False
        self.txn = "I"
        self.search_path: tuple[str, ...] = ("public",)
        self.time_zone: str | None = None  # ParameterStatus TimeZone, for masks of timestamps
        self._catalog_reload_at = -CATALOG_RELOAD_INTERVAL_S
        self._ev_statement: dict[str, Any] = {}  # set at login (_handle_startup)
        self._ev_done: dict[str, Any] = {}
        # _context's reuse of the approvals service's grants_view answer.
        self._grants_identity: Identity | None = None
        self._grants_from = 0.0
        self._grants_until = 0.0
        self._grants_generation = -1
        self._wrote: set[str] | None = None  # tables written in this transaction (catalogs)
        # DDL ran in this transaction: until it ends, this session's schema is its own
        # and no catalog snapshot describes it (`_catalog`); then every worker reloads.
        self._ddl = False
        # Events to build (`_write_due`), each list in the session's order, their places
        # in it numbered by `_due_seq`. statement.done events: (seq, unit, id, statement's
        # id, duration, time.time()). Statement events (async mode): (seq, statement,
        # analysis, decision, the portal whose bind parameters they record, extra fields,
        # id, and the session state when it was sent: time, in a transaction, path).
        self._done: list[tuple[int, Unit, str, str, int | None, float]] = []
        self._later: list[
            tuple[
                int, str, Analysis, Decision, Portal | None, dict[str, Any] | None, str, float,
                bool, tuple[str, ...],
            ]
        ] = []  # fmt: skip
        self._due_seq = 0
        self._due_deferred = False  # async mode: the journal's next tick runs _write_due
        self.prepared: dict[str, Prepared] = {}
        self.portals: dict[str, Portal] = {}
        self.sql_prepared: dict[str, Analysis] = {}  # PREPARE name -> the PREPARE statement
        self.cursors: dict[str, Statement] = {}
        # Masking plans by result shape (id of a shared fields tuple, see _row_description),
        # made on the first masked result.
        self._plans: dict[int, _PlanMemo] | None = None
        self.held = False  # a statement waits for approval: client frames stay buffered
        self._hold_task: asyncio.Task[None] | None = None
        self._to_server: list[bytes] = []
        self._to_client: list[bytes] = []
        self._durable_wait = 0  # batches waiting for their events' write or group commit
        self._in_flight = False  # counted in ctx.busy: a statement awaits its answer
        self._queued_batches: list[list[bytes]] = []
        self.masking = False
        self.close_reason = "client disconnected"
        self._sp_dirty = False  # a statement may have changed search_path
        self._sp_in_txn = False
        self._held_ready = b""
        self._reload_after_sp = False  # that ReadyForQuery then waits for a catalog reload
        self._up_paused = False  # the upstream cannot take more (flow control)
        self._ledger_paused = False  # the ledger lags its bound (backpressure)
        self._reading = True  # the client socket is read (`_update_reading`)
        self._pending_key: int | None = None  # counted in ctx.pending (`_login_over`)
        self._deadline: asyncio.Timeout | None = None  # the login's (`_run_startup`)
        self._shed = False  # the worker was full: dropped before it logged in
        # The client left mid-statement: the close reason while the outcome is awaited.
        self._abandoned: str | None = None
        self._abandoned_timer: asyncio.TimerHandle | None = None
        self._abandoned_until = 0.0
        # A protocol violation read while earlier statements await their events' write:
        # reported once they are upstream (`_pump_client`, `_wait_durable`).
        self._failure_due: ProtocolError | None = None

    # ------------------------------------------------------------------ lifecycle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop SSL transports are duck-typed
        self.ctx.clients += 1
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer = (str(peer[0]), int(peer[1]))
        # Counted from here: the listener's count of this connection ends when this starts.
        self._pending_key = self.ctx.pending.add(self.peer[0], self._shed_login)
        self._startup_task = asyncio.get_running_loop().create_task(self._run_startup())

    def data_received(self, data: bytes) -> None:
        if self.pumping:
            self.bytes_in += len(data)
            self.cin.feed(data)
            if not self.held and not self._durable_wait:
                self._pump_client()
            elif self.cin.pending() > INPUT_BUFFER_MAX:
                self._update_reading()
        else:
            self._startup_data.put_nowait(data)
            self._startup_bytes += len(data)
            if self._startup_bytes > INPUT_BUFFER_MAX:
                self._update_reading()

    def eof_received(self) -> bool:
        if not self.pumping:
            self._startup_data.put_nowait(b"")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.ctx.clients -= 1
        if not self.pumping:
            self._startup_data.put_nowait(b"")
        self._teardown(self.close_reason if exc is None else f"client connection lost: {exc}")

    def pause_writing(self) -> None:
        if self.up_transport is not None:
            self.up_transport.pause_reading()

    def resume_writing(self) -> None:
        if self.up_transport is not None and not self.up_transport.is_closing():
            self.up_transport.resume_reading()

    def _on_upstream_pause(self, paused: bool) -> None:
        self._up_paused = paused
        self._update_reading()

    def ledger_backpressure(self, paused: bool) -> None:
        """Stop or resume reading client messages while the ledger lags its bound
        (proxy/backpressure.py); statements already read run on."""
        self._ledger_paused = paused
        self._update_reading()

    def _update_reading(self) -> None:
        """Read the client socket unless the upstream cannot take more, the ledger lags,
        or more than INPUT_BUFFER_MAX bytes wait for something other than the rest of
        a message (a hold, a write, a barrier, the login)."""
        if self.pumping:
            blocked = self.held or self._barrier or self._durable_wait > 0
            full = blocked and self.cin.pending() > INPUT_BUFFER_MAX
        else:
            full = self._startup_bytes > INPUT_BUFFER_MAX
        want = not (full or self._up_paused or self._ledger_paused)
        transport = self.transport
        if want == self._reading or transport is None or transport.is_closing():
            return
        self._reading = want
        if want:
            transport.resume_reading()
        else:
            transport.pause_reading()

    def _login_over(self) -> None:
        if self._pending_key is not None:
            self.ctx.pending.done(self._pending_key)
            self._pending_key = None

    def _shed_login(self) -> bool:
        """proxy/pending.py: end this login to make room, unless it has authenticated."""
        if self.identity is not None or self.closed or self._shed:
            return False
        if not expire_now(self._deadline):
            return False
        self._shed = True
        return True

    def _teardown(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self._login_over()
        if self._startup_task is not None and not self._startup_task.done():
            self._startup_task.cancel()
        if self._hold_task is not None and not self._hold_task.done():
            self._hold_task.cancel()
        if self.cancel_pid:
            self.ctx.cancels.release(self.cancel_pid)
        up = self.up_transport
        if up is not None and not up.is_closing():
            pool = self.ctx.upstream_pool
            if pool is not None and self._reuse_key is not None and self._reusable():
                if pool.release(self._reuse_key, up, self.up_pid, self.up_key, self.up_params):
                    self._note_internal(reuse.RESET_SQL)
            elif self.units and self.pumping and not self._queued_batches:
                # The client left mid-statement: read on until the server has answered
                # what is in flight (cancelled, unless the client said Terminate), so
                # that the ledger says how each statement ended before the close.
                self._abandoned = reason
                self._abandoned_until = time.monotonic() + ABANDONED_WAIT_S
                if self.units[-1].kind not in (U_SYNC, U_QUERY):
                    # A pipeline without its Sync: the server holds its answers until
                    # asked. Flush asks, and commits nothing (Sync would).
                    up.write(_FLUSH)
                self._cancel_abandoned()
                return
            else:
                if self.units:
                    self._cancel_upstream()  # fsync mode's unsent batches never run
                reuse.terminate(up)
        self._closed(reason)

    def _cancel_abandoned(self) -> None:
        if self._abandoned is None:
            return
        if time.monotonic() >= self._abandoned_until:
            log.warning(
                "session %s: an abandoned statement did not end in %.0f s; upstream closed",
                self.id,
                ABANDONED_WAIT_S,
            )
            self._end_abandoned()
            return
        if not self._terminated:
            # Gone without a word: stop what it left running. After a Terminate, what
            # the client sent before it runs to its end, as on PostgreSQL.
            self._cancel_upstream()
        loop = asyncio.get_running_loop()
        self._abandoned_timer = loop.call_later(CANCEL_AGAIN_S, self._cancel_abandoned)

    def _end_abandoned(self) -> None:
        """What the abandoning client left in flight has ended (or timed out)."""
        reason = self._abandoned
        if reason is None:
            return
        self._abandoned = None
        if self._abandoned_timer is not None:
            self._abandoned_timer.cancel()
        if self.up_transport is not None and not self.up_transport.is_closing():
            reuse.terminate(self.up_transport)
        self._closed(reason)

    def _closed(self, reason: str) -> None:
        """The session is over: forget it, and write its last events."""
        self.ctx.sessions.pop(self.id, None)
        if self._counted and self.ctx.session_limits is not None:
            self._counted = False
            self.ctx.session_limits.release(self.id)
        self._answered()
        if self.identity is not None and self.target is not None:
            self._write_due()
            self.ctx.audit.record(
                "connection.close",
                self.ctx.audit.next_id(self.id),
                session=self.id,
                user=self.identity.user,
                target=self.target.name,
                bytes_in=self.bytes_in,
                bytes_out=self.bytes_out,
                statements=self.statements,
                duration_us=int((time.monotonic() - self.opened) * 1e6),
                reason=reason,
                internal_sql=self._internal_sql or None,
            )

    def _note_internal(self, sql: str) -> None:
        if sql not in self._internal_sql:
            self._internal_sql.append(sql)

    def _reusable(self) -> bool:
        """May the upstream serve another session? Only after a clean end: the client's
        Terminate, no statement in flight or held, no transaction, nothing buffered."""
        return (
            self._terminated
            and self.pumping
            and not self.units
            and self.txn == "I"
            and not self.held
            and not self._durable_wait
            and not self._queued_batches
            and not self._up_paused
            and self.sin.pending() == 0
        )

    def close(self, reason: str) -> None:
        if self._abandoned is not None:  # shutdown: the outcome is not awaited any longer
            self._end_abandoned()
            return
        self.close_reason = reason
        if self.transport is not None:
            self.transport.close()

    # ------------------------------------------------------------------ startup

    def _send(self, data: bytes) -> None:
        assert self.transport is not None
        if self.closed:
            return  # answers to an abandoned statement: the client is gone
        self.bytes_out += len(data)
        self.transport.write(data)

    def _fatal(self, sqlstate: str, message: str, hint: str | None = None) -> None:
        self._send(self.conn.send(ErrorResponse.build("FATAL", sqlstate, message, hint=hint)))
        self.close(message)

    async def _event(self) -> Any:
        while True:
            ev = self.conn.next_event()
            if ev is not NEED_DATA:
                return ev
            data = await self._startup_data.get()
            self._startup_bytes -= len(data)
            if not self._reading:
                self._update_reading()
            self.conn.receive_data(data)

    async def _run_startup(self) -> None:
        try:
            async with asyncio.timeout(-1.0 if self._shed else STARTUP_TIMEOUT_S) as deadline:
                self._deadline = deadline
                try:
                    await self._startup()
                finally:
                    self._deadline = None
        except TimeoutError:
            if self._shed:  # no event: see proxy/pending.py
                self._fatal("53300", SHED_MESSAGE, SHED_HINT)
                return
            message = "startup did not complete in time"
            if self.identity is None:  # else connection.open is written; its close follows
                self._audit_auth_failed(self._login_user, self._login_target, "timeout", message)
            self._fatal("08P01", f"dbgov: {message}")
        except ProtocolError as exc:
            self._audit_auth_failed(
                self._login_user, self._login_target, "protocol_violation", str(exc)
            )
            self._fatal(exc.sqlstate, f"dbgov: {exc}")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("session %s: startup failed", self.id)
            self._fatal("XX000", "dbgov: internal error during startup")

    async def _startup(self) -> None:
        ev = await self._event()
        if isinstance(ev, ConnectionClosed):
            self.close("closed before startup")
            return
        if not isinstance(ev, StartupMessage):  # CancelRequests never get here: listener.py
            raise RemoteProtocolError("expected a startup message")
        await self._handle_startup(ev)

    async def _handle_startup(self, msg: StartupMessage) -> None:
        params = dict(msg.params)
        minor = msg.protocol & 0xFFFF
        unknown = tuple(k for k in params if k.startswith("_pq_."))
        self.protocol_minor = min(minor, PROTOCOL_3_2 & 0xFFFF)
        if minor > self.protocol_minor or unknown:
            self._send(NegotiateProtocolVersion(self.protocol_minor, unknown).encode())
        for k in unknown:
            params.pop(k)
        user = params.pop("user", "")
        if not user:
            raise RemoteProtocolError("no user name given in the startup packet", sqlstate="28000")
        database = params.pop("database", "") or user
        self._login_user, self._login_target = user, database
        self.client_app = params.get("application_name", "")
        try:
            upstream_params, search_path = startup_params.filter(params)
        except startup_params.StartupParamError as exc:
            self._audit_auth_failed(user, database, "bad_startup_param", str(exc))
            self._fatal(exc.sqlstate, f"dbgov: {exc}")
            return
        try:
            identity = await self._authenticate(user)
        except AuthError as exc:
            self._audit_auth_failed(user, database, exc.reason, exc.message)
            self._fatal(exc.sqlstate, f"dbgov: {exc.message}")
            return
        target = self.ctx.target(database)
        if target is None:
            self._audit_auth_failed(user, database, "unknown_target", "no such target")
            self._fatal(
                "3D000",
                f'dbgov: target "{database}" does not exist',
                hint="connect to one of the targets in the dbgov config",
            )
            return
        self.identity, self.target = identity, target
        if search_path is not None:
            self.search_path = search_path
        self.sctx = SessionContext(identity, target.name, target.env, self.search_path, self.id)
        # What every statement and statement.done event of this session shares (copied
        # per event: one C-level dict copy instead of five inserts).
        common = {
            "v": events.SCHEMA_VERSION,
            "session": self.id,
            "user": identity.user,
            "target": target.name,
        }
        self._ev_statement = {**common, "type": "statement"}
        self._ev_done = {**common, "type": "statement.done"}
        verdict = self.ctx.gate.may_connect(self._context())
        if not verdict.allowed:
            self._audit_auth_failed(user, database, "no_access", verdict.reason)
            self._fatal("42501", verdict.message(), verdict.hint)
            self.identity = None
            return
        if not self._admit(identity.user, database):
            self.identity = None
            return
        self.masking = self.ctx.gate.masking_active(self.sctx)
        planner = planner_settings(upstream_params) if self.masking else []
        if planner:
            reason = (
                f"{planner[0]} is not allowed for you: planner settings can return masked "
                "values in their raw order"
            )
            self._audit_auth_failed(user, database, "no_access", reason)
            self._fatal("42501", f'dbgov: denied by rule "masking": {reason}')
            self.identity = None
            return
        pool = self.ctx.upstream_pool
        kept = None
        if pool is not None:
            self._reuse_key = reuse.key(
                target.name, identity.issuer, identity.user, upstream_params
            )
            kept = pool.take(self._reuse_key)
        app_name = f"dbgov/{identity.user}/{self.id}"
        # A kept connection still names the session it was opened for: renamed with a
        # statement of ours, which the open event lists.
        rename = _set_application_name(app_name) if kept is not None else None
        ssl_obj = self.transport.get_extra_info("ssl_object") if self.transport else None
        err = self.ctx.audit.write_ahead(
            "connection.open",
            self.ctx.audit.next_id(self.id),
            session=self.id,
            user=identity.user,
            groups=sorted(identity.groups),
            target=target.name,
            client=f"{self.peer[0]}:{self.peer[1]}",
            tls=ssl_obj.version() if ssl_obj is not None else None,
            direct_tls=self.direct_tls or None,
            auth=identity.method,
            issuer=identity.issuer,
            token_id=identity.token_id,
            application_name=self.client_app or None,
            protocol=f"3.{self.protocol_minor}",
            worker=self.ctx.worker_id,
            worker_pid=self.ctx.worker_pid or None,
            upstream_reused=True if kept is not None else None,
            internal_sql=[rename] if rename else None,
        )
        if err is not None:
            if kept is not None:
                reuse.terminate(kept.transport)
            self.identity = None
            self._fatal(
                "58000",
                "dbgov: the audit ledger cannot be written; refusing new sessions",
                hint="check the dbgov data directory's disk",
            )
            return
        if kept is not None:
            transport = kept.transport
            self.up_pid, self.up_key, self.up_params = kept.pid, kept.secret, kept.params
        else:
            upstream_params["application_name"] = app_name
            try:
                transport, _login_protocol, login = await connect_upstream(
                    target.host,
                    target.port,
                    user=target.user,
                    database=target.database,
                    password=target.password(),
                    params=upstream_params,
                    ssl_context=self.ctx.upstream_tls.get(target.name),
                )
            except UpstreamError as exc:
                self._fatal(exc.sqlstate, f"dbgov: target {target.name}: {exc.message}")
                return
            self.up_pid, self.up_key, self.up_params = login.pid, login.key, login.params
        self.up_transport = transport
        if self.closed:
            transport.close()
            return
        if self.ctx.catalogs is not None and self.masking:
            await self.ctx.catalogs.ensure(target.name)
        if kept is not None and (kept.lost or transport.is_closing()):
            # The server ended the kept connection while the catalog loaded (rare).
            self._fatal("08006", "dbgov: the upstream database closed the connection")
            return
        # Hand the client what a server would: AuthenticationOk, parameters, our key.
        out = [AUTH_OK_BYTES]
        self.time_zone = self.up_params.get("TimeZone")
        for name, value in self.up_params.items():
            if name == "application_name":
                value = self.client_app
            out.append(ParameterStatus(name, value).encode())
        key_len = 32 if self.protocol_minor >= 2 else 4
        self.cancel_pid, key = self.ctx.cancels.issue(key_len, self._on_cancel)
        out.append(BackendKeyData(self.cancel_pid, key).encode())
        out.append(self.conn.send(ReadyForQuery("I")))
        self._send(b"".join(out))
        self.ctx.sessions[self.id] = self
        if self.ctx.backpressure is not None and self.ctx.backpressure.engaged:
            self.ledger_backpressure(True)
        transport.set_protocol(ServerSide(self))  # type: ignore[arg-type]  # a duck-typed protocol
        self.pumping = True
        self._login_over()
        if rename is not None:
            # Answered before the client's first statement, and swallowed.
            self.units.append(Unit(U_QUERY, "application_name", internal=True))
            transport.write(Query(rename).encode())
        # One join: a client that pipelined megabytes behind its login left them here
        # in many reads (adding them up one by one copied the whole each time).
        leftover = [self.conn.take_leftover()]
        while not self._startup_data.empty():
            leftover.append(self._startup_data.get_nowait())
        self._startup_bytes = 0
        rest = b"".join(leftover)
        if rest:
            self.data_received(rest)
        if not self._reading:
            self._update_reading()

    def _admit(self, user: str, database: str) -> bool:
        """Count this session against `listen.max_sessions_per_user` (session_limits.py);
        refuse the login past it, or if the count cannot be kept."""
        limits = self.ctx.session_limits
        if limits is None:
            return True
        try:
            held = limits.admit(self.id, user)
        except SessionLimitError as exc:
            log.error("session %s: cannot count the sessions of %s: %s", self.id, user, exc)
            message = "the proxy cannot count this user's sessions"
            self._audit_auth_failed(user, database, "session_limit", message)
            self._fatal("53300", f"dbgov: {message}; try again later")
            return False
        if held is not None:
            message = f"too many sessions for {user} (limit {limits.limit})"
            self._audit_auth_failed(user, database, "session_limit", message)
            self._fatal(
                "53300",
                f"dbgov: {message}",
                hint="close other sessions of this user, or ask the operator to raise "
                "listen.max_sessions_per_user",
            )
            return False
        self._counted = True
        return True

    async def _authenticate(self, user: str) -> Identity:
        account = self.ctx.service_account(user)
        if account is not None:
            return await self._scram(account)
        ssl_obj = self.transport.get_extra_info("ssl_object") if self.transport else None
        if ssl_obj is not None and self.ctx.config.identity.client_certs.enabled:
            from dbgov.identity.certs import identity_from_cert

            ident = identity_from_cert(
                ssl_obj.getpeercert(), user, self.ctx.config.identity.client_certs
            )
            if ident is not None:
                return ident
        if ssl_obj is None and not _is_loopback(self.peer[0]):
            raise AuthError(
                "plaintext",
                "tokens are only accepted over TLS; connect with sslmode=require",
                sqlstate="28000",
            )
        self._send(self.conn.send(Authentication(AUTH_CLEARTEXT)))
        ev = await self._event()
        if isinstance(ev, ConnectionClosed):
            raise AuthError("missing_password", "client closed the connection without a password")
        if not isinstance(ev, PasswordMessage):
            raise AuthError("missing_password", "expected a password message")
        return await self.ctx.verifier.verify(ev.password, user)

    async def _scram(self, account: Any) -> Identity:
        exchange = ScramExchange(account)
        self._send(self.conn.send(Authentication.sasl([MECHANISM])))
        first = await self._event()
        if not isinstance(first, SASLInitialResponse) or first.mechanism != MECHANISM:
            raise AuthError("scram_failed", "expected a SCRAM-SHA-256 initial response")
        server_first = exchange.first(first.data or b"")
        self._send(self.conn.send(Authentication(AUTH_SASL_CONTINUE, server_first)))
        final = await self._event()
        if not isinstance(final, SASLResponse):
            raise AuthError("scram_failed", "expected a SCRAM final message")
        server_final = exchange.final(final.data)
        self._send(self.conn.send(Authentication(AUTH_SASL_FINAL, server_final)))
        return exchange.identity()

    def _audit_auth_failed(
        self, user: str | None, target: str | None, reason: str, message: str
    ) -> None:
        tls = self.transport.get_extra_info("ssl_object") is not None if self.transport else None
        client = f"{self.peer[0]}:{self.peer[1]}"
        self.ctx.audit.auth_failed(self.id, client, tls, reason, message, user, target)

    # ------------------------------------------------------------------ cancel

    def _catalog(self) -> Any:
        if self.ctx.catalogs is None or self.target is None or self._ddl:
            return None
        return self.ctx.catalogs.get(self.target.name)

    def _reload_catalog(self) -> None:
        """Masking refused a relation the catalog snapshot does not know (created
        outside the proxy): reload it in the background, at most every few seconds
        per session, so that a retry can be traced. The refusal itself stands."""
        now = time.monotonic()
        if (
            self.ctx.catalogs is None
            or self.target is None
            or now - self._catalog_reload_at < CATALOG_RELOAD_INTERVAL_S
        ):
            return
        self._catalog_reload_at = now
        self.ctx.catalogs.refresh(self.target.name)

    def _on_cancel(self) -> None:
        """A CancelRequest with our key arrived (possibly via another worker)."""
        if self.held and self._hold_task is not None:
            self._hold_task.cancel()
            return
        self._cancel_upstream()

    def _cancel_upstream(self) -> None:
        if self.target is None or not self.up_pid:
            return
        target = self.target
        asyncio.get_running_loop().create_task(
            send_cancel(
                target.host,
                target.port,
                self.up_pid,
                self.up_key,
                self.ctx.upstream_tls.get(target.name),
            )
        )

    # ------------------------------------------------------------------ client -> server

    def _pump_client(self) -> None:
        cin = self.cin
        buf = cin.buf
        run_start = -1
        good = cin.pos  # the end of the last frame taken without error
        try:
            while True:
                good = cin.pos
                t = cin.advance()
                if t < 0:
                    break
                start = cin.start
                end = cin.end
                if self.held or self.closed or self._barrier:
                    cin.pos = start  # the rest waits until the hold is decided
                    break
                if self.phase is not Phase.READY or t not in _READY_FRONTEND_STAY:
                    self.phase = frontend_step(self.phase, t)
                if t in _PASS_FRONTEND:
                    if run_start < 0:
                        run_start = start
                    if t == 0x53:  # 'S' Sync
                        if self._copy_open:
                            raise RemoteProtocolError(
                                "Sync inside COPY data is not supported: whether the "
                                "server ignores it depends on how the COPY fares"
                            )
                        sync = Unit(U_SYNC)
                        sync.copy_mark = self._copy_msgs
                        self.units.append(sync)
                        self._segments_sent += 1
                        self.skip_until_sync = False
                    elif t in _COPY_FRONTEND:
                        self._copy_msgs += 1
                        self._copy_open = t == 0x64  # 'd' CopyData
                    elif t == 0x44:  # 'D' Describe
                        self._note_describe(buf, start, end)
                    elif t == 0x43:  # 'C' Close
                        self._note_close(buf, start, end)
                    continue
                if run_start >= 0:
                    # Not a local alias: `_wait_durable` swaps the list mid-chunk.
                    self._to_server.append(buf[run_start:start])
                    run_start = -1
                if self._copy_open and t != 0x58:  # only the copy's end, or Terminate
                    raise RemoteProtocolError(
                        f"message type {chr(t)!r} inside COPY data (end it with CopyDone "
                        "or CopyFail first)"
                    )
                self._client_frame(t, buf[start + 5 : end], buf[start:end])
                if self._at_barrier():  # (a call: the check above narrowed the attribute)
                    cin.pos = start  # read again once the server has answered: _on_ready
                    break
            if run_start >= 0:
                self._to_server.append(buf[run_start : cin.pos])
        except ProtocolError as exc:
            # What came before the bad message runs, as on PostgreSQL, which reads
            # messages one at a time: their events are written, and the session's
            # close waits for their outcome.
            if run_start >= 0:
                self._to_server.append(buf[run_start:good])
            self._flush_server()
            if self._durable_wait:
                # Statements before it wait for their events' write (`_wait_durable`):
                # the failure follows once they are upstream, or they would never run.
                self._failure_due = exc
                return
            self._protocol_failure(exc)
            return
        self._flush_server()
        if not self._reading or cin.pending() > INPUT_BUFFER_MAX:
            self._update_reading()

    def _flush_server(self) -> None:
        if self._to_server and self.up_transport is not None:
            batch, self._to_server = self._to_server, []
            if self._durable_wait or self._queued_batches:
                self._queued_batches.append(batch)
            else:
                self.up_transport.write(b"".join(batch) if len(batch) > 1 else batch[0])

    def _protocol_failure(self, exc: ProtocolError) -> None:
        log.info("session %s: %s", self.id, exc)
        err = ErrorResponse.build("FATAL", exc.sqlstate, f"dbgov: {exc}")
        self._send(err.encode())
        self.close(f"protocol violation: {exc}")

    def _client_frame(self, t: int, body: bytes, raw: bytes) -> None:
        if self.skip_until_sync and t in (0x51, 0x46):
            # After an extended-protocol error the server discards everything up to
            # Sync, a Query or FunctionCall too: it never runs, so it is neither
            # decided nor audited, and no answer is awaited.
            self._to_server.append(raw)
            return
        if t == 0x51:  # 'Q' Query
            # Fast path for a well-formed body; anything odd gets the full decoder's error.
            if body[-1:] == b"\x00" and body.find(b"\x00") == len(body) - 1:
                try:
                    sql = body[:-1].decode()
                except UnicodeDecodeError:
                    sql = Query.decode(body).sql
            else:
                sql = Query.decode(body).sql
            self._on_query(sql, raw)
        elif t == 0x50:  # 'P' Parse
            self._on_parse(Parse.decode(body), raw)
        elif t == 0x42:  # 'B' Bind
            self._on_bind(body, raw)
        elif t == 0x45:  # 'E' Execute
            name, max_rows = execute_fields(body)
            self._on_execute(name, max_rows, raw)
        elif t == 0x58:  # 'X' Terminate
            self._terminated = True
            self.close_reason = "client terminated"
            self._flush_server()
            self.close("client terminated")
        elif t == 0x46:  # 'F' FunctionCall: calls a function by OID, out of SQL's sight
            self._on_function_call(body, raw)
        else:  # pragma: no cover - the phase table admits nothing else
            raise RemoteProtocolError(f"unexpected message type {chr(t)!r}")

    def _on_function_call(self, body: bytes, raw: bytes) -> None:
        """The function_call guardrail decides (deny by default); if a policy turns it
        off, the call is audited like a statement, by OID, before it is forwarded."""
        policy = self.ctx.gate.policy
        decide = getattr(policy, "decide_function_call", None)
        decision = decide(self._context()) if decide is not None else Decision(Verdict.ALLOW)
        oid = int.from_bytes(body[:4], "big") if len(body) >= 4 else 0
        label = f"/* FunctionCall */ function oid {oid}"
        analysis = Analysis((), "", False)
        if decision.verdict is not Verdict.ALLOW:
            if decision.verdict is Verdict.APPROVAL:  # nothing to hold: no statement text
                decision = Decision(Verdict.DENY, decision.rule, decision.reason, decision.hint)
            self._refuse_simple(decision, label, analysis)
            return
        self._forward_query(label, analysis, decision, raw)

    # -- decisions -------------------------------------------------------------------------

    def _context(self) -> SessionContext:
        """The gate's view of this session now: search path, transaction, time zone, and
        the identity with its just-in-time grants (which end mid-session on expiry)."""
        ctx = self.sctx
        assert ctx is not None and self.identity is not None
        identity = self.identity
        approvals = self.ctx.approvals
        if approvals is not None and self.target is not None:
            # The service's answer, reused while it stands (grants_view): no look-up
            # per statement, and a grant's end still applies from its first instant.
            now = approvals.clock()
            if (
                not self._grants_from <= now < self._grants_until
                or self._grants_generation != approvals.generation
            ):
                self._grants_identity, self._grants_until = approvals.grants_view(
                    identity, self.target.name
                )
                self._grants_from = now
                self._grants_generation = approvals.generation
            identity = self._grants_identity or identity
        if (
            ctx.search_path != self.search_path
            or ctx.in_transaction != (self.txn != "I")
            or ctx.time_zone != self.time_zone
            or ctx.identity is not identity
        ):
            ctx = SessionContext(
                identity,
                ctx.target,
                ctx.target_env,
                self.search_path,
                self.id,
                self.txn != "I",
                self.time_zone,
            )
            self.sctx = ctx
        return ctx

    def _decide(self, analysis: Analysis) -> Decision:
        """Decide, resolving what only this session knows (EXECUTE, FETCH targets)."""
        ctx = self._context()
        if (
            self.identity is not None
            and self.identity.expires_at is not None
            and time.time() > self.identity.expires_at
        ):
            return Decision(
                Verdict.DENY,
                "token-expired",
                "your token has expired",
                hint="get a new token and reconnect",
            )
        catalog = self._catalog() if self.masking else None
        decision = self.ctx.gate.decide(analysis, ctx, catalog)
        if not decision.allowed:
            if decision.rule == "masking" and _CATALOG_MISS in decision.reason:
                self._reload_catalog()
            return decision
        batch: dict[str, Analysis] = {}  # PREPAREd earlier in this same query string
        for i, stmt in enumerate(analysis.statements):
            if stmt.prepare_name is not None:
                batch[stmt.prepare_name] = Analysis((stmt,), "", False)
            if stmt.execute_name is not None:
                inner = batch.get(stmt.execute_name) or self._sql_prepared_named(stmt.execute_name)
                if inner is None:
                    # Unknown here is refused, even if the server might know the name.
                    return Decision(
                        Verdict.DENY,
                        "unknown-statement",
                        f'prepared statement "{stmt.execute_name}" is not known to dbgov',
                        statement_index=i,
                        sqlstate="26000",
                    )
                d = self.ctx.gate.decide(inner, ctx, catalog)
                if not d.allowed:
                    return Decision(
                        d.verdict,
                        d.rule,
                        d.reason,
                        d.hint,
                        i,
                        d.approval,
                        d.sqlstate,
                        d.grants_used,
                        d.masking,
                    )
        return decision

    def _statement_fields(self, analysis: Analysis) -> dict[str, Any]:
        """The event fields that depend only on the analysis (those with a value),
        computed once per analysis."""
        hit = _FIELDS_CACHE.get(id(analysis))
        if hit is not None and hit[0] is analysis:
            return hit[1]  # shared: callers MUST NOT mutate it
        stmts = analysis.statements
        reads = sorted({str(r) for s in stmts for r in s.reads})
        writes = sorted({str(r) for s in stmts for r in s.writes})
        fields: dict[str, Any] = {"kinds": [s.kind for s in stmts]}
        if reads:
            fields["reads"] = reads
        if writes:
            fields["writes"] = writes
        if analysis.fingerprint:
            fields["fingerprint"] = analysis.fingerprint
        if len(_FIELDS_CACHE) > 10_000:
            _FIELDS_CACHE.clear()
        _FIELDS_CACHE[id(analysis)] = (analysis, fields)  # holds the analysis: ids stay unique
        return fields

    def _statement_event(
        self,
        sql: str,
        analysis: Analysis,
        decision: Decision,
        params: list[str | None] | None = None,
        extra: dict[str, Any] | None = None,
        event_id: str | None = None,
        grouped: bool = False,
    ) -> tuple[str, OSError | None]:
        """Build a statement event and append it write-ahead; `grouped`: append only,
        the statement then waits in `_wait_durable` for the write (strict mode)."""
        self._write_due()  # the events due come first, in the session's order
        ev = self._statement_body(
            sql,
            analysis,
            decision,
            params,
            extra,
            event_id or self.ctx.audit.next_id(self.id),
            time.time(),
            self.txn != "I",
            self.search_path,
        )
        if grouped:
            self.ctx.audit.append_ahead(ev)
            return ev["id"], None
        return ev["id"], self.ctx.audit.write_ahead_event(ev)

    def _statement_body(
        self,
        sql: str,
        analysis: Analysis,
        decision: Decision,
        params: list[str | None] | None,
        extra: dict[str, Any] | None,
        event_id: str,
        at: float,
        in_txn: bool,
        search_path: tuple[str, ...],
    ) -> dict[str, Any]:
        """A statement event, as of the session state given (`_write_due` builds it
        after that state may have moved on)."""
        assert self.identity is not None and self.target is not None
        self.statements += 1
        ev = self._ev_statement.copy()
        ev["id"] = event_id
        ev["ts"] = events.utc_iso(at)
        ev["sql"] = events.clip(redact_sql(sql, analysis))
        if params is not None:
            ev["params"] = params
        ev["decision"] = _decision_event(decision)
        if search_path != ("public",):
            ev["search_path"] = ",".join(search_path)
        if in_txn:
            ev["in_txn"] = True
        ev.update(self._statement_fields(analysis))
        # Model provenance (dbgov.models): link changes of declared model inputs.
        models = model_links(
            self.ctx.gate.policy, analysis, search_path, self.target.name, self.sql_prepared
        )
        if models:
            ev["models"] = models
        if extra:
            ev.update((k, v) for k, v in extra.items() if v is not None)
        return ev

    def _forward_event(
        self,
        sql: str,
        analysis: Analysis,
        decision: Decision,
        portal: Portal | None = None,
        extra: dict[str, Any] | None = None,
    ) -> tuple[str, OSError | None, bool]:
        """The statement event of a statement about to be forwarded (with the bind
        parameters of `portal`, if any): its id, the error that refuses the statement,
        and whether the statement must wait in `_wait_durable`. In async ledger mode
        nothing waits for the event, so only its id and the session state it records
        are taken now; the event is built at the journal's next tick (`_write_due`),
        before any later event of the session, as the completions are. Built right after
        the batch went upstream, it stood between a fast answer (a prepared statement's)
        and the client. Measured against that (pgbench -S, 2 workers, alternating runs,
        issue 8): p50 at 1 client 137 against 177.5 µs prepared, 140.5 against 139.5
        simple; at 8 clients 20,234 against 17,721 tps prepared and 15,691 against
        15,033 simple, the workers' CPU 64 against 72 and 68 against 73 µs a
        transaction (a tick's batch is cheaper than one event at a time). p99 rises:
        a tick builds about 10 ms of events at once.

        In strict mode, while more than `ledger.group_siblings` other sessions of this
        worker await answers, the event is only appended: `_wait_durable` holds the
        statement until the loop iteration's one write for all of them (PostgreSQL's
        commit_siblings rule). Grouping takes writes away but makes each statement
        wait for the rest of the iteration; with one other session busy a group
        seldom holds more than one statement, so it starts at two. Measured with
        pgbench -S, 2 workers, medians of 3 alternating runs (issue 8), against
        never grouping: write() calls a transaction 2.7 instead of 3.0 at 8 clients,
        2.1 instead of 3.0 at 64; worker CPU a transaction 62 µs instead of 66 at 8
        clients, 45 instead of 61 at 64; and at least as many transactions a second
        as a threshold of 5 at 8, 16, 32 and 64 clients, simple and prepared.
        """
        ctx = self.ctx
        audit = ctx.audit
        if not self._in_flight:
            self._in_flight = True
            ctx.busy += 1
        if audit.mode != "async" or audit.failed is not None:
            params = self._params(portal) if portal is not None else None
            siblings = ctx.busy - 1  # the other sessions awaiting answers
            grouped = audit.mode == "strict" and siblings > ctx.group_siblings
            event_id, err = self._statement_event(
                sql, analysis, decision, params, extra, None, grouped
            )
            return event_id, err, grouped or audit.mode == "fsync"
        event_id = audit.next_id(self.id)
        self._due_seq += 1
        self._later.append(
            (self._due_seq, sql, analysis, decision, portal, extra, event_id, time.time(),
             self.txn != "I", self.search_path)
        )  # fmt: skip
        if _executes(analysis):
            self._write_due()  # its models resolve through this session's PREPAREs now
        else:
            self._defer_due()
        return event_id, None, False

    def _answered(self) -> None:
        """No statement of this session awaits its answer any longer (ctx.busy)."""
        if self._in_flight:
            self._in_flight = False
            self.ctx.busy -= 1

    def _denial_error(
        self, decision: Decision, analysis: Analysis | None, sql: str
    ) -> ErrorResponse:
        message = decision.message()
        if analysis is not None and len(analysis.statements) > 1:
            from dbgov.sql.analyze import split_statements

            parts = split_statements(sql)
            if decision.statement_index < len(parts):
                text = parts[decision.statement_index].strip()
                if len(text) > 200:
                    text = text[:200] + "…"
                message += f" (statement {decision.statement_index + 1}: {text})"
        return ErrorResponse.build("ERROR", decision.sqlstate, message, hint=decision.hint)

    def _refuse_simple(
        self, decision: Decision, sql: str, analysis: Analysis | None = None, event: bool = True
    ) -> None:
        """Replace a simple-protocol statement with one the server rejects, and rewrite
        that rejection into our denial: the batch fails as on a server error."""
        unit = Unit(
            U_QUERY, rewrite=self._denial_error(decision, analysis, sql), started=time.monotonic()
        )
        if event and analysis is not None:
            unit.event_id, _ = self._statement_event(sql, analysis, decision)
        self.units.append(unit)
        self._segments_sent += 1
        self._to_server.append(_REFUSED_QUERY)

    def _audit_unavailable(self, err: OSError) -> ErrorResponse:
        return ErrorResponse.build(
            "ERROR",
            "58000",
            f"dbgov: the audit ledger cannot be written ({err.strerror or err}); statement refused",
            hint="nothing ran; retry when the ledger's disk is healthy",
        )

    # -- simple protocol ---------------------------------------------------------------------

    def _on_query(self, sql: str, raw: bytes) -> None:
        analysis = self.ctx.gate.analyze(sql)
        decision = self._decide(analysis)
        if decision.verdict is Verdict.APPROVAL and self.ctx.approvals is not None:
            self._hold(sql, analysis, decision, raw, None)
            return
        if not decision.allowed:
            if decision.verdict is Verdict.APPROVAL:
                decision = Decision(
                    Verdict.DENY, decision.rule, f"{decision.reason} (approvals are not configured)"
                )
            self._refuse_simple(decision, sql, analysis)
            return
        self._forward_query(sql, analysis, decision, raw)

    def _forward_query(
        self,
        sql: str,
        analysis: Analysis,
        decision: Decision,
        raw: bytes,
        approval_ref: str | None = None,
    ) -> None:
        extra: dict[str, Any] | None = {"approval_ref": approval_ref} if approval_ref else None
        shuffled = self._random_order(sql, analysis)
        if shuffled is not None:
            raw = Query(shuffled).encode()
            extra = {**(extra or {}), "random_order": True}
        event_id, err, hold = self._forward_event(sql, analysis, decision, extra=extra)
        unit = Unit(
            U_QUERY, event_id=event_id, statements=analysis.statements, started=time.monotonic()
        )
        unit.copy_mark = self._copy_msgs
        self._segments_sent += 1
        if err is not None:
            unit.rewrite = self._audit_unavailable(err)
            self.units.append(unit)
            self._to_server.append(_REFUSED_QUERY)
            return
        self.units.append(unit)
        self._to_server.append(raw)
        if hold:
            self._wait_durable(unit, _REFUSED_QUERY)

    def _wait_durable(self, unit: Unit, refusal: bytes) -> None:
        """Hold the batch that ends with `unit`'s statement until the journal has its
        event (fsync mode: the group commit; strict mode, when `_forward_event` grouped
        it: the loop iteration's write). If that fails, `refusal` replaces the statement
        and the client gets 58000, as when the event cannot be appended at all; the
        session goes on."""
        self._durable_wait += 1
        batch, self._to_server = self._to_server, []
        at = len(batch) - 1
        self._queued_batches.append(batch)

        def done(err: OSError | None) -> None:
            self._durable_wait -= 1
            if self.closed:
                return
            if err is not None:
                unit.rewrite = self._audit_unavailable(err)
                batch[at] = refusal
            up = self.up_transport
            if self._durable_wait == 0 and up is not None and not up.is_closing():
                queued = self._queued_batches
                # One write for all of it: Bind and Execute, then the Sync behind them.
                up.write(b"".join([part for waiting in queued for part in waiting]))
                queued.clear()
                failure = self._failure_due
                if failure is not None:
                    self._failure_due = None
                    self._protocol_failure(failure)
                elif self.cin.pending() and not self.held:
                    self._pump_client()

        self.ctx.audit.when_durable(done)

    # -- extended protocol -------------------------------------------------------------------

    def _on_parse(self, msg: Parse, raw: bytes) -> None:
        name = msg.name
        if self.skip_until_sync:
            self._to_server.append(raw)  # the server ignores it, after an error
            return
        if self._wait_for(self._made_statements.get(name)):
            return
        self._made_statements[name] = self._segments_sent
        if _claimed(name, self.prepared, self.sql_prepared):
            # The server would refuse it too (42P05), but a Parse it refuses must not
            # replace what this session knows the name stands for.
            self._refuse_extended(U_PARSE, name, "42P05", f'prepared statement "{name}" exists')
            return
        analysis = self.ctx.gate.analyze(msg.sql)
        decision = self._decide(analysis)
        prepared = Prepared(msg.sql, analysis, decision, msg.param_oids)
        self.prepared[name] = prepared  # until the server fails it: see _not_run
        if decision.verdict is Verdict.DENY:
            unit = Unit(
                U_PARSE,
                name,
                rewrite=self._denial_error(decision, analysis, msg.sql),
                prepared=prepared,
            )
            unit.event_id, _ = self._statement_event(
                msg.sql, analysis, decision, extra={"protocol": "extended"}
            )
            self._push(unit)
            self._to_server.append(Parse(name, REFUSED_SQL, ()).encode())
            return
        # Approval-bound statements are prepared normally and held at Execute.
        self._push(Unit(U_PARSE, name, prepared=prepared))
        shuffled = self._random_order(msg.sql, analysis)
        if shuffled is not None:
            prepared.unordered = True
            raw = Parse(name, shuffled, msg.param_oids).encode()
        self._to_server.append(raw)

    def _random_order(self, sql: str, analysis: Analysis) -> str | None:
        """What to send instead of `sql` when its rows must reach the client in random
        order (MaskingEngine.unordered: the server's order would rank masked values),
        else None. Columns, parameters and masking are the same (masking/order.py);
        the ledger's statement event says `random_order`."""
        if not self.masking or self.sctx is None:
            return None
        indexes = self.ctx.gate.unordered(analysis, self._context(), self._catalog())
        return order.shuffled(sql, indexes) if indexes else None

    def _wait_for(self, made_in: int | None) -> bool:
        """Whether a message naming a statement or portal last made, changed or closed
        in segment `made_in` (Syncs and Queries sent before it) must wait for that
        segment's ReadyForQuery. In its own segment it need not: if what made the name
        failed, the server skips the rest of the segment too. In an earlier one still
        unanswered, what the name stands for on the server is not known yet (a Parse
        or Close the server skipped after an error), so the session reads no further
        until the answer is in (_pump_client rereads this message)."""
        if made_in is None or made_in >= self._segments_sent or made_in < self._segments_done:
            return False
        self._barrier = True
        return True

    def _refuse_denied(self, kind: int, name: str, prepared: Prepared) -> None:
        """Bind or Execute of a statement refused at Parse: the server never had it as
        recorded, so nothing naming it is forwarded."""
        self._refuse_with(
            kind, name, self._denial_error(prepared.decision, prepared.analysis, prepared.sql)
        )

    def _refuse_extended(self, kind: int, name: str, sqlstate: str, message: str) -> None:
        self._refuse_with(kind, name, ErrorResponse.build("ERROR", sqlstate, f"dbgov: {message}"))

    def _refuse_with(self, kind: int, name: str, error: ErrorResponse) -> None:
        """Answer a Parse, Bind or Execute with `error` instead of forwarding it: the
        server gets an Execute of a portal no client can create, fails it, and skips to
        Sync as after an error of its own; the error is rewritten into ours."""
        self._push(Unit(kind, name, rewrite=error))
        self._to_server.append(_REFUSED_EXECUTE)

    def _statement_named(self, name: str) -> Prepared | None:
        """The prepared statement `name` stands for in this session: PostgreSQL keeps
        one namespace for protocol Parse and SQL PREPARE, and so does this lookup."""
        prepared = self.prepared.get(name)
        if prepared is not None:
            return prepared
        analysis = self.sql_prepared.get(name)
        if analysis is None:
            return None
        label = 'EXECUTE "' + name.replace('"', '""') + '" /* bound over the extended protocol */'
        return Prepared(label, analysis, self._decide(analysis))

    def _sql_prepared_named(self, name: str) -> Analysis | None:
        """What SQL EXECUTE `name` runs: a SQL PREPARE, or a protocol Parse."""
        analysis = self.sql_prepared.get(name)
        if analysis is None:
            prepared = self.prepared.get(name)
            analysis = prepared.analysis if prepared is not None else None
        return analysis

    def _not_run(self, unit: Unit) -> None:
        """The server did not run this Parse or Bind (it failed, or followed an error):
        forget the statement or portal it would have made. Forgetting is the safe side:
        a name this session does not know is refused, never guessed."""
        name = unit.name
        made: object = unit.prepared if unit.kind == U_PARSE else unit.portal
        if made is None or unit.kind not in (U_PARSE, U_BIND):
            return
        records: dict[str, Any] = self.prepared if unit.kind == U_PARSE else self.portals
        if records.get(name) is made:
            del records[name]

    def _push(self, unit: Unit) -> None:
        """Expect a response, unless the server is skipping messages until Sync."""
        if not self.skip_until_sync:
            unit.copy_mark = self._copy_msgs
            self.units.append(unit)

    def _on_bind(self, body: bytes, raw: bytes) -> None:
        name, statement, param_formats, params, result_formats = bind_fields(body)
        if self.skip_until_sync:
            self._to_server.append(raw)
            return
        if self._wait_for(self._made_statements.get(statement)) or self._wait_for(
            self._made_portals.get(name)
        ):
            return
        self._made_portals[name] = self._segments_sent
        if _claimed(name, self.portals, self.cursors):
            self._refuse_extended(U_BIND, name, "42P03", f'cursor "{name}" already exists')
            return
        prepared = self._statement_named(statement)
        if prepared is None:
            # Unknown here is refused, even if the server might know it: what it would
            # run could not be decided or masked.
            self._refuse_extended(
                U_BIND, name, "26000", f'prepared statement "{statement}" does not exist'
            )
            return
        if prepared.decision.verdict is Verdict.DENY:  # never on the server as recorded
            self._refuse_denied(U_BIND, name, prepared)
            return
        portal = Portal(statement, prepared, params, param_formats, result_formats)
        self.portals[name] = portal  # until the server fails it: see _not_run
        self._push(Unit(U_BIND, name, portal=portal))
        self._to_server.append(raw)

    def _note_describe(self, buf: bytes, start: int, end: int) -> None:
        kind, name = describe_fields(buf[start + 5 : end])
        if kind == "S":
            self._push(Unit(U_DESC_STMT, name, prepared=self.prepared.get(name)))
        else:
            self._push(Unit(U_DESC_PORTAL, name, portal=self.portals.get(name)))

    def _note_close(self, buf: bytes, start: int, end: int) -> None:
        kind, name = close_fields(buf[start + 5 : end])
        if kind == "S":  # one namespace with SQL PREPARE, and portals with DECLARE
            self.prepared.pop(name, None)
            self.sql_prepared.pop(name, None)
            self._made_statements[name] = self._segments_sent
        else:
            self.portals.pop(name, None)
            self.cursors.pop(name, None)
            self._made_portals[name] = self._segments_sent
        self._push(Unit(U_CLOSE, name))

    def _on_execute(self, name: str, max_rows: int, raw: bytes) -> None:
        if self.skip_until_sync:
            self._to_server.append(raw)
            return
        if self._wait_for(self._made_portals.get(name)):
            return
        portal = self.portals.get(name) or self._cursor_portal(name)
        prepared = portal.prepared if portal is not None else None
        if portal is None or prepared is None:
            self._refuse_extended(U_EXECUTE, name, "34000", f'portal "{name}" does not exist')
            return
        if prepared.decision.verdict is Verdict.DENY:  # refused at Parse: never forwarded
            self._refuse_denied(U_EXECUTE, name, prepared)
            return
        decision = self._decide(prepared.analysis)  # re-checked: grants and tokens expire
        if decision.verdict is Verdict.APPROVAL and self.ctx.approvals is not None:
            self._hold(prepared.sql, prepared.analysis, decision, raw, (name, max_rows, portal))
            return
        if not decision.allowed:
            if decision.verdict is Verdict.APPROVAL:
                decision = Decision(
                    Verdict.DENY, decision.rule, f"{decision.reason} (approvals are not configured)"
                )
            unit = Unit(
                U_EXECUTE,
                name,
                rewrite=self._denial_error(decision, prepared.analysis, prepared.sql),
            )
            unit.event_id, _ = self._statement_event(
                prepared.sql, prepared.analysis, decision, self._params(portal)
            )
            self._push(unit)
            self._to_server.append(_REFUSED_EXECUTE)
            return
        self._forward_execute(name, max_rows, portal, prepared, decision, raw)

    def _cursor_portal(self, name: str) -> Portal | None:
        """A DECLAREd cursor run by a protocol Execute (portals and cursors share a
        namespace): it returns the rows of the DECLARE's query, decided and masked as
        FETCH from it would be."""
        cursor = self.cursors.get(name)
        if cursor is None:
            return None
        analysis = Analysis((cursor,), "", False)
        quoted = '"' + name.replace('"', '""') + '"'
        label = f"FETCH FROM {quoted} /* Execute over the extended protocol */"
        return Portal(name, Prepared(label, analysis, self._decide(analysis)))

    def _secret_params(self, prepared: Prepared) -> bool:
        """Does the policy mark this statement's bind parameters as secret? (Once per
        prepared statement, policy and default schema: glob matching runs as Python.)"""
        if self.ctx.gate.masking is None:
            return False  # no masking key: nothing to hash them with
        policy = self.ctx.gate.policy
        default = self.search_path[0] if self.search_path else "public"
        known = prepared.secret
        if known is not None and known[0] is policy and known[1] == default:
            return known[2]
        globs = getattr(policy, "secret_params_tables", ())
        secret = bool(globs)
        if secret:
            secret = any(
                fnmatch.fnmatchcase(rel.qualified(default), g)
                for stmt in prepared.analysis.statements
                for rel in stmt.reads | stmt.writes
                for g in globs
            )
        prepared.secret = (policy, default, secret)
        return secret

    def _params(self, portal: Portal) -> list[str | None] | None:
        if not portal.params:
            return None
        prepared = portal.prepared
        if prepared is not None and self._secret_params(prepared):
            token = self.ctx.gate.masking.audit_token  # type: ignore[union-attr]
            return [None if v is None else token(v) for v in portal.params]
        oids = prepared.param_oids if prepared is not None else ()
        fmts = _formats(len(portal.params), portal.param_formats)
        n_oids = len(oids)
        return [
            events.param_repr(v, fmts[i], oids[i] if i < n_oids else 0)
            for i, v in enumerate(portal.params)
        ]

    def _forward_execute(
        self,
        name: str,
        max_rows: int,
        portal: Portal,
        prepared: Prepared,
        decision: Decision,
        raw: bytes,
        approval_ref: str | None = None,
    ) -> None:
        extra: dict[str, Any] = {"protocol": "extended"}
        if approval_ref:
            extra["approval_ref"] = approval_ref
        if prepared.unordered:
            extra["random_order"] = True
        if max_rows:
            extra["max_rows"] = max_rows
        event_id, err, hold = self._forward_event(
            prepared.sql, prepared.analysis, decision, portal, extra
        )
        unit = Unit(
            U_EXECUTE,
            name,
            event_id=event_id,
            statements=prepared.analysis.statements,
            started=time.monotonic(),
            result_formats=portal.result_formats,
        )
        if err is not None:
            unit.rewrite = self._audit_unavailable(err)
            self._push(unit)
            self._to_server.append(_REFUSED_EXECUTE)
            return
        if self.masking and prepared.analysis.statements:
            fields = portal.fields or prepared.fields
            if fields is not None:
                formats = (
                    tuple(f.format for f in fields)
                    if portal.fields is not None
                    else _formats(len(fields), portal.result_formats)
                )
                self._set_plan(unit, prepared.analysis.statements[0], fields, formats)
            elif not self._describing(portal):
                # We must know the columns before rows arrive: ask, and swallow the answer.
                self._push(Unit(U_DESC_PORTAL, name, internal=True, portal=portal))
                self._to_server.append(Describe("P", name).encode())
        unit.portal = portal
        self._push(unit)
        self._to_server.append(raw)
        if hold:
            self._wait_durable(unit, _REFUSED_EXECUTE)

    def _describing(self, portal: Portal) -> bool:
        """Did the client's own Describe of this portal go just before its Execute?
        (libpq sends Bind, Describe, Execute.) Its answer then plans the Execute's rows
        (`_on_row_description`), and no Describe of ours needs to ask again."""
        last = self.units[-1] if self.units else None
        return (
            last is not None
            and last.kind == U_DESC_PORTAL
            and last.portal is portal
            and not last.internal
            and not self.skip_until_sync
        )

    # -- holds (approvals) -------------------------------------------------------------------

    def _hold(
        self,
        sql: str,
        analysis: Analysis,
        decision: Decision,
        raw: bytes,
        extended: tuple[str, int, Portal] | None,
    ) -> None:
        self.held = True
        self._flush_server()
        self._write_due()  # before the approval's events
        self._hold_task = asyncio.get_running_loop().create_task(
            self._await_approval(sql, analysis, decision, raw, extended)
        )

    async def _await_approval(
        self,
        sql: str,
        analysis: Analysis,
        decision: Decision,
        raw: bytes,
        extended: tuple[str, int, Portal] | None,
    ) -> None:
        from dbgov.approvals.hold import wait_for_approval

        params = self._params(extended[2]) if extended else None
        try:
            outcome = await wait_for_approval(
                self, sql, analysis, decision, params, portal=extended[2] if extended else None
            )
        except asyncio.CancelledError:
            outcome = None
        if self.closed:
            return
        self.held = False
        self._hold_task = None
        if outcome is not None and outcome.approved:
            if extended is None:
                self._forward_query(sql, analysis, decision, raw, approval_ref=outcome.ref)
            else:
                name, max_rows, portal = extended
                prepared = portal.prepared
                if prepared is not None:
                    self._forward_execute(
                        name, max_rows, portal, prepared, decision, raw, outcome.ref
                    )
        else:
            if outcome is None:
                denial = Decision(
                    Verdict.DENY,
                    decision.rule,
                    "cancelled while waiting for approval",
                    sqlstate="57014",
                )
            else:
                denial = outcome.as_decision(decision)
            if extended is None:
                self._refuse_simple(denial, sql, analysis)
            else:
                unit = Unit(
                    U_EXECUTE, extended[0], rewrite=self._denial_error(denial, analysis, sql)
                )
                unit.event_id, _ = self._statement_event(sql, analysis, denial, params)
                self._push(unit)
                self._to_server.append(_REFUSED_EXECUTE)
        self._pump_client()

    def notice(self, message: str, hint: str | None = None) -> None:
        """Send a NOTICE to the client now (used while a statement is held)."""
        if self.transport is not None and not self.transport.is_closing():
            self._send(NoticeResponse.build(message, hint=hint).encode())

    # ------------------------------------------------------------------ server -> client

    def _on_upstream_lost(self, exc: Exception | None) -> None:
        if self.closed:
            self._end_abandoned()
            return
        msg = "dbgov: the upstream database closed the connection"
        if self.transport is not None and not self.transport.is_closing():
            self._send(ErrorResponse.build("FATAL", "08006", msg).encode())
        self.close("upstream closed")

    def _on_server_data(self, data: bytes) -> None:
        self._pump_server(data)
        if self.closed:
            if not self.units:
                self._end_abandoned()  # writes the completions, then the close
            return
        if self._done:
            if self.ctx.audit.mode != "async":
                self._write_due()
            else:
                # Async: building the completions here would delay the next request,
                # already on its way (half the time at 1 client, bench). They are built
                # before this session's next event, or by the journal's next tick.
                self._defer_due()

    def _pump_server(self, data: bytes) -> None:
        """Server bytes: frames that need attention are handled, runs of the others are
        forwarded as they are. When a whole chunk passes unchanged (the common case),
        the received bytes object itself is sent on, with no copy."""
        sin = self.sin
        whole = sin.pending() == 0  # the chunk starts at a frame boundary
        sin.feed(data)
        buf = sin.buf
        out = self._to_client
        run_start = -1
        changed = False
        try:
            while True:
                t = sin.advance()
                if t < 0:
                    break
                start = sin.start
                end = sin.end
                if self.phase is not Phase.READY or (t != 0x44 and t not in _READY_STAY):
                    self.phase = backend_step(self.phase, t)
                unit = self.units[0] if self.units else None
                internal = unit is not None and unit.internal
                if t == 0x44 and not internal:
                    # DataRow, the bulk of every result: passed, or rewritten under
                    # the result's masking plan.
                    if unit is None or unit.rewriter is None:
                        if run_start < 0:
                            run_start = start
                        while sin.advance_if(0x44):  # and the rows right after it
                            pass
                    else:
                        if run_start >= 0:
                            out.append(buf[run_start:start])
                            run_start = -1
                        changed = True
                        unit.rewriter.write_run(sin, out)
                    continue
                if (
                    unit is not None
                    and not internal
                    and not self.masking
                    and (
                        (t in _COMPLETIONS and unit.kind in (U_PARSE, U_BIND, U_CLOSE))
                        or (t == 0x54 and unit.kind in (U_DESC_STMT, U_DESC_PORTAL))
                        or (t == 0x6E and unit.kind in (U_DESC_STMT, U_DESC_PORTAL))
                    )
                ):
                    # Parse/Bind/CloseComplete, and descriptions nobody needs to read
                    # (column origins matter only to masking): settle the unit, pass bytes.
                    self.units.popleft()
                    if run_start < 0:
                        run_start = start
                    continue
                if not internal and (
                    (t in _PASS_BACKEND and not (t == 0x4E and self.masking))
                    or (
                        t == 0x54 and not self.masking and unit is not None and unit.kind == U_QUERY
                    )
                ):
                    if run_start < 0:
                        run_start = start
                    continue
                if run_start >= 0:
                    out.append(buf[run_start:start])
                    run_start = -1
                if internal:
                    assert unit is not None
                    changed = True
                    reply = self._internal_frame(t, buf[start + 5 : end], unit)
                    if reply:
                        out.append(reply)
                    continue
                answer = self._server_frame(t, buf[start + 5 : end], unit)
                if answer is None:
                    out.append(buf[start:end])
                else:
                    changed = True
                    if answer:
                        out.append(answer)
            if run_start >= 0:
                out.append(buf[run_start : sin.pos])
        except ProtocolError as exc:
            log.warning("session %s: upstream protocol error: %s", self.id, exc)
            self._send(
                ErrorResponse.build("FATAL", "08P01", "dbgov: upstream protocol error").encode()
            )
            self.close("upstream protocol error")
            return
        if whole and not changed and sin.pending() == 0:
            # Every frame went out unchanged, some via _server_frame's bookkeeping.
            out.clear()
            self._send(data)
            return
        if out:
            data_out = b"".join(out) if len(out) > 1 else out[0]
            out.clear()
            self._send(data_out)

    def _internal_frame(self, t: int, body: bytes, unit: Unit) -> bytes:
        """Responses to messages dbgov injected itself: consumed, never shown."""
        if t == 0x44 and unit.name == "search_path":  # the SHOW search_path row
            values = DataRow.decode(body).values
            if values and values[0] is not None:
                self.search_path = parse_search_path(values[0].decode())
        elif t == 0x54 and unit.kind == U_DESC_PORTAL:
            rd = _row_description(body)
            self._on_row_description(rd, unit)
            return b""
        elif t == 0x6E and unit.kind == U_DESC_PORTAL:
            self.units.popleft()
        elif t == 0x45:
            err = ErrorResponse.decode(body)
            log.warning("session %s: internal request failed: %s", self.id, err.message)
            if unit.kind == U_DESC_PORTAL:
                # Not ours to hide: it is the error the client's Execute would get.
                return self._on_server_error(err, unit) or err.encode()
        elif t == 0x5A:
            self.units.popleft()
            held, self._held_ready = self._held_ready, b""
            if self._reload_after_sp:
                self._reload_after_sp = False
                self._hold_for_reload(held)
                return b""
            return held
        elif t in (0x4E, 0x41, 0x53):
            reply = self._async_message(t, body) or frame(bytes((t,)), body)
            return b"" if t == 0x53 and unit.name == "application_name" else reply
        return b""

    def _refresh_search_path(self) -> bytes:
        """Ask the server for the search_path after anything that may have changed it
        (SET, set_config, RESET, DISCARD, a rollback). The client's ReadyForQuery is
        held until the answer is in, so no statement is decided on a stale path."""
        assert self.up_transport is not None
        self.units.append(Unit(U_QUERY, "search_path", internal=True))
        self.up_transport.write(Query(_SHOW_SEARCH_PATH).encode())
        self._note_internal(_SHOW_SEARCH_PATH)
        return b""

    def _server_frame(self, t: int, body: bytes, unit: Unit | None) -> bytes | None:
        """Handle one server message that needs attention. Returns None to forward it as
        is, b"" to swallow it, or replacement bytes."""
        if t == 0x45:  # 'E' ErrorResponse
            return self._on_server_error(ErrorResponse.decode(body), unit)
        if t == 0x5A:  # 'Z' ReadyForQuery
            return self._on_ready(ready_status(body), unit)
        if unit is None:
            if t in (0x4E, 0x41, 0x53):  # Notice, Notification, ParameterStatus: asynchronous
                return self._async_message(t, body)
            raise RemoteProtocolError(f"unexpected message {chr(t)!r} with nothing pending")
        kind = unit.kind
        if t in (0x31, 0x32, 0x33):  # ParseComplete, BindComplete, CloseComplete
            self.units.popleft()
            return b"" if unit.internal else None
        if t == 0x74:  # 't' ParameterDescription
            if kind == U_DESC_STMT:
                p = unit.prepared
                if p is not None:
                    p.param_oids = ParameterDescription.decode(body).oids
                return b"" if unit.internal else None
            raise RemoteProtocolError("unexpected ParameterDescription")
        if t == 0x54:  # 'T' RowDescription
            return self._on_row_description(_row_description(body), unit)
        if t == 0x6E:  # 'n' NoData
            if kind in (U_DESC_STMT, U_DESC_PORTAL):
                self.units.popleft()
                return b"" if unit.internal else None
            raise RemoteProtocolError("unexpected NoData")
        if t == 0x43:  # 'C' CommandComplete
            self._on_command_complete(command_tag(body), unit)
            return None
        if t in (0x49, 0x73):  # 'I' EmptyQueryResponse, 's' PortalSuspended
            if kind == U_EXECUTE:
                unit.tags = [*(unit.tags or ()), "SUSPENDED" if t == 0x73 else "EMPTY"]
                self._end_result(unit)
                self._finish_unit(unit)
                self.units.popleft()
            elif kind == U_QUERY:
                unit.stmt_i += 1
            return None
        if t == 0x47:  # CopyInResponse
            self._skip_copy_syncs(unit)
            return None
        if t in (0x48, 0x56):  # CopyOutResponse, FunctionCallResponse
            return None
        if t in (0x4E, 0x41, 0x53):
            return self._async_message(t, body)
        if t == 0x57:  # CopyBothResponse: replication, never allowed through
            raise RemoteProtocolError("COPY BOTH (replication) is not supported through dbgov")
        raise RemoteProtocolError(f"unexpected message {chr(t)!r}")

    def _skip_copy_syncs(self, unit: Unit) -> None:
        """The server is in COPY IN for `unit`, and ignores the Syncs it reads there:
        those the client sent after the COPY and before any copy message (libpq's
        PQexecParams sends one right behind Execute, and another after CopyDone). No
        answer comes for them, so they are no longer awaited, and their segments count
        as answered (everything before the COPY has run). Later Syncs inside the copy
        data are refused (_pump_client): whether the server reads those in COPY IN
        depends on whether the COPY failed first."""
        units = self.units
        skipped = 0
        while len(units) > 1 and units[1].kind == U_SYNC and units[1].copy_mark == unit.copy_mark:
            del units[1]
            skipped += 1
        if skipped:
            self._segments_done += skipped
            self._lift_barrier()

    def _async_message(self, t: int, body: bytes) -> bytes | None:
        if t == 0x53:  # ParameterStatus: keep the client's own application_name visible
            ps = ParameterStatus.decode(body)
            self.up_params[ps.name] = ps.value
            if ps.name == "TimeZone":
                self.time_zone = ps.value
            if ps.name == "application_name" and ps.value.startswith("dbgov/"):
                return ParameterStatus(ps.name, self.client_app).encode()
        elif t == 0x4E and self.masking:  # NoticeResponse: scrubbed like errors
            notice = masking_io.sanitize_error(ErrorResponse.decode(body))
            return None if notice is None else notice.encode(b"N")
        return None

    def _on_row_description(self, rd: RowDescription, unit: Unit) -> bytes | None:
        if unit.kind == U_DESC_STMT:
            p = unit.prepared
            if p is not None:
                p.fields = rd.fields
            self.units.popleft()
            return b"" if unit.internal else None
        if unit.kind == U_DESC_PORTAL:
            portal = unit.portal
            if portal is not None:
                portal.fields = rd.fields
            self.units.popleft()
            nxt = self.units[0] if self.units else None
            if (
                self.masking
                and nxt is not None
                and nxt.kind == U_EXECUTE
                and portal is not None
                and nxt.portal is portal
            ):
                prepared = portal.prepared
                if prepared is not None and prepared.analysis.statements:
                    self._set_plan(
                        nxt,
                        prepared.analysis.statements[0],
                        rd.fields,
                        tuple(f.format for f in rd.fields),
                    )
            return b"" if unit.internal else None
        if unit.kind == U_QUERY:
            if self.masking:
                stmt = unit.statements[unit.stmt_i] if unit.stmt_i < len(unit.statements) else None
                self._set_plan(unit, stmt, rd.fields, tuple(f.format for f in rd.fields))
            return None
        raise RemoteProtocolError("unexpected RowDescription")

    def _set_plan(
        self,
        unit: Unit,
        stmt: Statement | None,
        fields: tuple[FieldDescription, ...],
        formats: tuple[int, ...],
    ) -> None:
        """Plan the result set that `unit` is about to receive."""
        unit.plan = self._plan(stmt, fields)
        unit.formats = formats
        unit.rewriter = masking_io.RowRewriter(unit.plan, formats) if unit.plan else None

    def _end_result(self, unit: Unit) -> None:
        """A result set ended (CommandComplete, PortalSuspended): audit its masks."""
        if unit.plan:
            if unit.masked is None:
                unit.masked = []
            unit.masked.extend({"column": c.column, "mask": c.mask} for c in unit.plan.columns)
        unit.plan = None
        unit.rewriter = None

    def _plan(
        self, stmt: Statement | None, fields: tuple[FieldDescription, ...]
    ) -> ResultPlan | None:
        """The masking plan for one result set. Failure to plan masks everything."""
        if stmt is not None and stmt.cursor_name is not None and stmt.kind == "fetch":
            stmt = self.cursors.get(stmt.cursor_name, stmt)
        elif stmt is not None and stmt.execute_name is not None:
            prepared = self._sql_prepared_named(stmt.execute_name)
            stmt = prepared.statements[0] if prepared is not None and prepared.statements else None
        catalog = self._catalog()
        ctx = self._context()
        engine = self.ctx.gate.masking
        # A plan is a function of exactly these objects (the statement as resolved above,
        # the result's columns, the session context, the catalog snapshot and the policy's
        # masking engine), each replaced, never changed, when what it stands for changes.
        # So a repeat of the same query reuses its plan by identity checks.
        plans = self._plans
        hit = plans.get(id(fields)) if plans is not None else None
        if (
            hit is not None
            and hit[0] is fields
            and hit[1] is stmt
            and hit[2] is ctx
            and hit[3] is catalog
            and hit[4] is engine
        ):
            cached: ResultPlan | None = hit[5]
            return cached
        try:
            plan = (
                self.ctx.gate.result_plan(stmt, fields, ctx, catalog)
                if stmt is not None
                else masking_io.mask_all(fields, "origin unknown")
            )
        except Exception:
            log.exception("session %s: masking plan failed; masking every column", self.id)
            return masking_io.mask_all(fields, "masking plan failed") or None
        if isinstance(plan, Decision):
            plan = masking_io.mask_all(fields, plan.reason)
        result = plan or None
        if plans is None or len(plans) >= _PLANS_MAX:
            plans = self._plans = {}
        plans[id(fields)] = (fields, stmt, ctx, catalog, engine, result)
        return result

    def _on_command_complete(self, tag: str, unit: Unit) -> None:
        if unit.tags is None:
            unit.tags, unit.rows = [tag], [tag_rows(tag)]
        else:
            assert unit.rows is not None
            unit.tags.append(tag)
            unit.rows.append(tag_rows(tag))
        self._end_result(unit)
        if unit.kind == U_QUERY:
            if unit.stmt_i < len(unit.statements):
                self._apply_effects(unit.statements[unit.stmt_i])
            unit.stmt_i += 1
        elif unit.kind == U_EXECUTE:
            if unit.statements:
                self._apply_effects(unit.statements[0])
            self._finish_unit(unit)
            self.units.popleft()

    def _apply_effects(self, stmt: Statement) -> None:
        """Track what a successful statement changed in the session."""
        if (
            (stmt.set_param is not None and stmt.set_param[0] in ("search_path", "all"))
            or "set_config" in stmt.functions
            or stmt.kind in ("discard", "reset")
        ):
            self._sp_dirty = True
        # SQL PREPARE shares its namespace with protocol Parse, DECLARE with Bind: a name
        # the one takes or frees, it takes or frees for the other too.
        if stmt.prepare_name is not None:
            self.sql_prepared[stmt.prepare_name] = Analysis((stmt,), "", False)
            self.prepared.pop(stmt.prepare_name, None)
        if stmt.deallocate_name is not None:
            if stmt.deallocate_name == "":
                self.sql_prepared.clear()
                self.prepared.clear()
            else:
                self.sql_prepared.pop(stmt.deallocate_name, None)
                self.prepared.pop(stmt.deallocate_name, None)
        if stmt.cursor_name is not None:
            if stmt.kind == "declare":
                self.cursors[stmt.cursor_name] = stmt
                self.portals.pop(stmt.cursor_name, None)
            elif stmt.kind == "close":
                if stmt.cursor_name == "":
                    self.cursors.clear()
                    self.portals.clear()
                else:
                    self.cursors.pop(stmt.cursor_name, None)
                    self.portals.pop(stmt.cursor_name, None)
        if self.ctx.catalogs is not None and self.target is not None:
            if "ddl" in stmt.categories:
                self._ddl = True  # told once the transaction ends, as writes are
            elif stmt.writes and self.ctx.catalogs.known:
                # Told once the transaction ends: a load before the commit would miss it.
                if self._wrote is None:
                    self._wrote = set()
                self._wrote.update(r.name for r in stmt.writes)

    def _on_server_error(self, err: ErrorResponse, unit: Unit | None) -> bytes | None:
        replacement: ErrorResponse | None = None
        if unit is not None and unit.rewrite is not None:
            replacement = unit.rewrite
        elif self.masking:
            replacement = masking_io.sanitize_error(err)
        if unit is None:
            return None if replacement is None else replacement.encode()
        unit.sqlstate = (replacement or err).sqlstate
        if unit.kind == U_QUERY:
            unit.plan = None
            unit.rewriter = None
        elif unit.kind != U_SYNC:
            self._not_run(unit)
            # Extended protocol: the server now skips everything until Sync.
            while self.units and self.units[0].kind != U_SYNC:
                u = self.units.popleft()
                self._not_run(u)
                if u.event_id is not None:
                    u.sqlstate = u.sqlstate or "skipped"
                    self._finish_unit(u)
            if not self.units:
                self.skip_until_sync = True
        return None if replacement is None else replacement.encode()

    def _on_ready(self, status: str, unit: Unit | None) -> bytes | None:
        if unit is None or unit.kind not in (U_QUERY, U_SYNC):
            raise RemoteProtocolError("unexpected ReadyForQuery")
        self.units.popleft()
        self._segments_done += 1
        self._lift_barrier()
        if len(self._made_statements) + len(self._made_portals) > _MADE_MAX:
            self._forget_answered()
        if unit.kind == U_QUERY and unit.event_id is not None:
            self._finish_unit(unit)
        if not self.units:
            self._answered()
        if self.txn != "I" and self._sp_dirty:
            self._sp_in_txn = True
        self.txn = status
        if status == "I" and self._sp_in_txn:
            self._sp_in_txn = False
            self._sp_dirty = True  # a rollback may have undone a SET
        reloading = False
        if status == "I":
            catalogs = self.ctx.catalogs
            if catalogs is not None and self.target is not None:
                if self._ddl:
                    catalogs.invalidate(self.target.name)
                    reloading = True
                if self._wrote is not None:
                    catalogs.wrote(self.target.name, self._wrote)
            self._ddl = False
            self._wrote = None
            if self.portals:
                self.portals.clear()
            if self.cursors:
                # Cursors without HOLD die with their transaction; keep the holdable ones.
                self.cursors = {k: v for k, v in self.cursors.items() if "with_hold" in v.flags}
        if self._sp_dirty and not self.units:
            self._sp_dirty = False
            self._held_ready = ReadyForQuery(status).encode()
            self._reload_after_sp = reloading  # the two waits, one after the other
            return self._refresh_search_path()
        if reloading and not self.units:
            self._hold_for_reload(ReadyForQuery(status).encode())
            return b""
        return None

    def _lift_barrier(self) -> None:
        """Segments were answered: the message waiting at the barrier is read again,
        and checked again (`_wait_for`)."""
        if self._barrier:
            self._barrier = False
            asyncio.get_running_loop().call_soon(self._read_on)

    def _at_barrier(self) -> bool:
        return self._barrier

    def _read_on(self) -> None:
        if not self.closed and not self.held and not self._barrier and self.cin.pending():
            self._pump_client()

    def _forget_answered(self) -> None:
        """Names whose last change the server has answered need no waiting any more."""
        done = self._segments_done
        self._made_statements = {k: v for k, v in self._made_statements.items() if v >= done}
        self._made_portals = {k: v for k, v in self._made_portals.items() if v >= done}

    def _hold_for_reload(self, ready: bytes) -> None:
        """Until the reload is in, masked identities' statements are refused ("retry in a
        moment"): the client that changed the schema waits for it here, so that what it
        (or a script it drives) runs next is traced by the new definitions."""
        self.held = True
        self._hold_task = asyncio.get_running_loop().create_task(self._ready_after_reload(ready))

    async def _ready_after_reload(self, ready: bytes) -> None:
        assert self.ctx.catalogs is not None and self.target is not None
        try:
            async with asyncio.timeout(CATALOG_WAIT_S):
                await self.ctx.catalogs.reloaded(self.target.name)
        except TimeoutError:
            log.warning("session %s: catalog of %s not reloaded yet", self.id, self.target.name)
        finally:  # a CancelRequest cuts the wait short; a closed session needs nothing
            if not self.closed:
                self.held = False
                self._hold_task = None
                self._send(ready)
                if self.cin.pending():
                    self._pump_client()

    def _finish_unit(self, unit: Unit) -> None:
        """Queue the unit's statement.done event. Every caller runs inside
        `_on_server_data`, which writes the queue once the bytes that ended the unit
        have gone to the client: the event is off the response's path. In strict and
        fsync mode it is in the journal before the client's next statement can be
        read; in async mode, before this session's next event (its id, taken now,
        keeps the session's order)."""
        if unit.event_id is None or self.identity is None:
            return
        duration = int((time.monotonic() - unit.started) * 1e6) if unit.started else None
        done_id = self.ctx.audit.next_id(self.id)
        self._due_seq += 1
        self._done.append((self._due_seq, unit, done_id, unit.event_id, duration, time.time()))
        unit.event_id = None

    def _defer_due(self) -> None:
        if not self._due_deferred:
            self._due_deferred = True
            self.ctx.audit.defer(self._write_due)

    def _write_due(self) -> None:
        """Append the events left to build, statement events (async mode) and
        completions, in the session's order: at the journal's next tick, or before the
        session's next event, whichever comes first (then the tick finds nothing)."""
        self._due_deferred = False
        if not (self._later or self._done):
            return
        later, self._later = self._later, []
        done, self._done = self._done, []
        i = j = 0
        while i < len(later) or j < len(done):
            if j == len(done) or (i < len(later) and later[i][0] < done[j][0]):
                _, sql, analysis, decision, portal, extra, event_id, at, in_txn, path = later[i]
                i += 1
                params = self._params(portal) if portal is not None else None
                self.ctx.audit.append_event(
                    self._statement_body(
                        sql, analysis, decision, params, extra, event_id, at, in_txn, path
                    )
                )
            else:
                _, unit, done_id, event_id, duration, at = done[j]
                j += 1
                self._append_done(unit, done_id, event_id, duration, at)

    def _append_done(
        self, unit: Unit, done_id: str, event_id: str, duration: int | None, at: float
    ) -> None:
        assert self.identity is not None
        ev = self._ev_done.copy()
        ev["id"] = done_id
        ev["ts"] = events.utc_iso(at)
        ev["ref"] = event_id
        if unit.tags:
            ev["tags"] = unit.tags
        if unit.rows:
            ev["rows"] = unit.rows
        ev["sqlstate"] = unit.sqlstate or "00000"
        if duration is not None:
            ev["duration_us"] = duration
        if unit.masked:
            ev["masked"] = unit.masked
        self.ctx.audit.append_event(ev)


_SHOW_SEARCH_PATH = "SHOW search_path"


def _claimed(name: str, *namespaces: dict[str, Any]) -> bool:
    """A name a Parse or Bind may not take: reserved for dbgov, or (unless unnamed)
    already in one of `namespaces`."""
    return name.startswith(_RESERVED_NAME) or (name != "" and any(name in n for n in namespaces))


def _executes(analysis: Analysis) -> bool:
    return any(stmt.execute_name is not None for stmt in analysis.statements)


def _set_application_name(name: str) -> str:
    return "SET application_name = '" + name.replace("'", "''") + "'"


def _row_description(body: bytes) -> RowDescription:
    """RowDescription.decode, shared by every session of this process: a query run again
    gets the same message, so its decoded form (immutable) and its fields tuple, which
    `Session._plan` keys its plans by, are the same objects each time."""
    rd = _ROW_DESCRIPTIONS.get(body)
    if rd is None:
        rd = RowDescription.decode(body)
        if len(body) > _ROW_DESCRIPTION_MAX_BYTES:
            return rd  # a very wide result: not worth the memory a client could fill
        if len(_ROW_DESCRIPTIONS) >= _ROW_DESCRIPTIONS_MAX:
            _ROW_DESCRIPTIONS.clear()
        _ROW_DESCRIPTIONS[body] = rd
    return rd


def _formats(n: int, result_formats: tuple[int, ...]) -> tuple[int, ...]:
    """Bind's result format codes expanded to one per column (protocol rules)."""
    if not result_formats:
        return (0,) * n
    if len(result_formats) == 1:
        return result_formats * n
    return result_formats


# Frontend types forwarded without decoding: Sync, Flush, Describe, Close, CopyData,
# CopyDone, CopyFail (Describe/Close/Sync are noted on the fly).
_PASS_FRONTEND = frozenset(b"SHDCdcf")
_COPY_FRONTEND = frozenset(b"dcf")  # CopyData, CopyDone, CopyFail
# Decoded RowDescriptions by message body, and masking plans per session (bounds).
_ROW_DESCRIPTIONS: dict[bytes, RowDescription] = {}
_ROW_DESCRIPTIONS_MAX = 1024
_ROW_DESCRIPTION_MAX_BYTES = 4096  # with the count, at most ~4 MiB per process
_PLANS_MAX = 64
# A plan and what it was made for: (fields, statement, context, catalog, engine, plan).
_PlanMemo = tuple[object, object, object, object, object, Any]
# Statement event fields per analysis (id -> (analysis, fields)).
_FIELDS_CACHE: dict[int, tuple[Analysis, dict[str, Any]]] = {}
# Decisions' ledger form (id -> (decision, form)); the policy engine reuses its decisions.
_DECISION_EVENTS: dict[int, tuple[Decision, dict[str, Any]]] = {}


def _decision_event(decision: Decision) -> dict[str, Any]:
    """`decision.as_event()`, once per decision object (shared: MUST NOT be mutated)."""
    hit = _DECISION_EVENTS.get(id(decision))
    if hit is not None and hit[0] is decision:
        return hit[1]
    form = decision.as_event()
    if len(_DECISION_EVENTS) > 10_000:
        _DECISION_EVENTS.clear()
    _DECISION_EVENTS[id(decision)] = (decision, form)  # holds the decision: ids stay unique
    return form


_COMPLETIONS = frozenset(b"123")  # ParseComplete, BindComplete, CloseComplete
# Frontend and backend types that leave phase READY unchanged (checked inline on the
# hot path: the states tables are keyed by an Enum, whose hash runs Python code;
# everything else goes through states.frontend_step / backend_step).
_READY_FRONTEND_STAY = frozenset(b"QPBDECSHFdcf")
_READY_STAY = frozenset(b"123nIsTDCNASZtK")
# Backend types forwarded without decoding when nothing internal is pending.
_PASS_BACKEND = frozenset(b"dcNA")
