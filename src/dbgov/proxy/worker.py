"""One proxy worker process: a listener sharing the port (SO_REUSEPORT), its sessions,
its own journal writer, and a cancel socket for requests routed from other workers.

Run by the supervisor as `python -m dbgov.proxy.worker --config F --worker-id N`.
It prints `READY <port>` on stdout once listening. SIGTERM drains: stop
accepting, give open sessions a grace period, then end them with FATAL 57P01
(admin_shutdown), and flush the journal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

from dbgov.config import Config, ConfigError, load_config
from dbgov.gate import Gate
from dbgov.identity.issuer import LocalIssuer
from dbgov.identity.tokens import LocalTrust, OIDCTrust, TokenVerifier, TrustedIssuer
from dbgov.layout import Layout
from dbgov.ledger.journal import Journal
from dbgov.proxy import tls
from dbgov.proxy.audit import Audit
from dbgov.proxy.backpressure import LedgerBackpressure
from dbgov.proxy.cancel import CancelRegistry
from dbgov.proxy.context import ProxyContext
from dbgov.proxy.listener import Listener, serve_cancels
from dbgov.proxy.reuse import UpstreamPool
from dbgov.proxy.session_limits import SessionLimits
from dbgov.sql.analyze import set_max_analyzed
from dbgov.wire.postgres.messages import ErrorResponse

log = logging.getLogger("dbgov.worker")
DRAIN_GRACE_S = 5.0
HEARTBEAT_S = 1.0  # see _Heartbeat; the supervisor waits config.worker_stall_s


def build_verifier(config: Config) -> TokenVerifier:
    issuers: list[TrustedIssuer] = []
    local = config.identity.local_issuer
    if local.enabled:
        key_path = local.key_file or Layout(config.data_dir).issuer_key
        issuers.append(LocalTrust(LocalIssuer.from_file(key_path, local.issuer, local.audience)))
    issuers.extend(OIDCTrust(o) for o in config.identity.oidc)
    return TokenVerifier(issuers, config.identity.leeway_s)


def build_gate(config: Config) -> tuple[Gate, Any]:
    """The gate, and the policy engine behind it (None without a policy file)."""
    if config.policy is None:
        return Gate(), None
    from dbgov.masking.engine import MaskingEngine
    from dbgov.policy.load import load_policy_file

    policy = load_policy_file(config.policy, config)
    masking = MaskingEngine.from_policy(policy, Layout(config.data_dir).masking_key)
    return Gate(policy, masking), policy


def build_context(config: Config, worker_id: int) -> ProxyContext:
    layout = Layout(config.data_dir)
    set_max_analyzed(config.max_statement_chars)
    server_tls = tls.server_context(config.tls) if config.tls is not None else None
    journal = Journal(
        layout.journal,
        f"{os.getpid()}-{secrets.token_hex(3)}",
        config.ledger.mode,
        config.ledger.fsync_interval_ms,
    )
    gate, policy = build_gate(config)
    ctx = ProxyContext(
        config=config,
        gate=gate,
        verifier=build_verifier(config),
        audit=Audit(journal),
        cancels=CancelRegistry(worker_id),
        server_tls=server_tls,
        upstream_tls={t.name: tls.upstream_context(t) for t in config.targets},
        worker_id=worker_id,
        worker_pid=os.getpid(),
        group_siblings=config.ledger.group_siblings,
    )
    if config.upstream_reuse_s > 0:
        ctx.upstream_pool = UpstreamPool(config.upstream_reuse_s)
    if config.listen.max_sessions_per_user is not None:
        ctx.session_limits = SessionLimits(
            layout.live_sessions, config.listen.max_sessions_per_user
        )
    if ctx.gate.masking is not None:
        from dbgov.proxy.catalogs import Catalogs

        ctx.catalogs = Catalogs(config, ctx.gate.masking.known_sources())
    if policy is not None:
        from dbgov.approvals.jit import parse_jit_grants
        from dbgov.approvals.service import Approvals

        jit = parse_jit_grants(policy.policy.jit_grants, str(config.policy))
        ctx.approvals = Approvals.open(config, ctx.audit, jit=jit)
    return ctx


async def serve(config: Config, worker_id: int, *, announce: bool = True) -> None:
    ctx = build_context(config, worker_id)
    ctx.backpressure = LedgerBackpressure(
        Layout(config.data_dir), config.ledger.max_lag_mb << 20, ctx.sessions
    )
    ctx.backpressure.start()
    host, port = config.listen.proxy_addr()
    listener = Listener(ctx, host, port)
    listener.start()
    cancel_server = await serve_cancels(ctx)
    approvals_task = None
    if ctx.approvals is not None:
        approvals_task = asyncio.get_running_loop().create_task(ctx.approvals.run())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    beat = _Heartbeat(Layout(config.data_dir).heartbeat(worker_id))
    if announce:
        print(f"READY {listener.port}", flush=True)
    await stop.wait()
    beat.stop()
    # Drain: no new connections; let running statements finish for a moment.
    listener.stop()
    ctx.backpressure.stop()
    cancel_server.close()
    deadline = loop.time() + DRAIN_GRACE_S
    while ctx.sessions and loop.time() < deadline:
        busy = [s for s in ctx.sessions.values() if s.units or s.held]
        if not busy:
            break
        await asyncio.sleep(0.05)
    for s in list(ctx.sessions.values()):
        with contextlib.suppress(Exception):
            s._send(
                ErrorResponse.build(
                    "FATAL", "57P01", "dbgov: terminating connection: the proxy is shutting down"
                ).encode()
            )
            s.close("proxy shutdown")
    await asyncio.sleep(0.05)
    if ctx.upstream_pool is not None:
        ctx.upstream_pool.close()
    if approvals_task is not None:
        approvals_task.cancel()
    if ctx.session_limits is not None:
        ctx.session_limits.close()
    ctx.audit.journal.close()


class _Heartbeat:
    """Touch a file every HEARTBEAT_S from the event loop: its mtime tells the
    supervisor that the loop still turns (a stuck worker is killed and replaced)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._timer: asyncio.TimerHandle | None = None
        self._beat()

    def _beat(self) -> None:
        try:
            self.path.touch()
        except OSError as exc:  # the supervisor will see it stale: say why here
            log.warning("cannot touch heartbeat %s: %s", self.path, exc)
        self._timer = asyncio.get_running_loop().call_later(HEARTBEAT_S, self._beat)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="dbgov-worker")
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--worker-id", type=int, default=0)
    ap.add_argument("--port", type=int, default=None, help="override the config's proxy port")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("DBGOV_LOG", "WARNING").upper(),
        format=f"%(asctime)s worker-{args.worker_id} %(levelname)s %(name)s: %(message)s",
    )
    # Die with the supervisor, whatever killed it.
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)
    # Every client costs two descriptors (client and upstream): use the hard limit.
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        config = load_config(args.config)
    except ConfigError as exc:  # the supervisor retries the slot; say why it failed
        print(f"dbgov: proxy worker {args.worker_id}: {exc}", file=sys.stderr, flush=True)
        return 2
    if args.port is not None:
        host, _ = config.listen.proxy_addr()
        listen = config.listen.model_copy(update={"proxy": f"{host}:{args.port}"})
        config = config.model_copy(update={"listen": listen})
    try:
        import uvloop

        uvloop.run(serve(config, args.worker_id))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
