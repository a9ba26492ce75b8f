"""Everything a worker's sessions share, passed explicitly (no globals).

PgBouncer reads `cf_*` globals deep inside packet handlers; we hand each session
one `ProxyContext` built from the config at start-up, so a reload swaps a
snapshot instead of mutating state under a running session.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dbgov.config import Config, ServiceAccount, Target
from dbgov.gate import Gate
from dbgov.identity.tokens import TokenVerifier
from dbgov.proxy.audit import Audit
from dbgov.proxy.cancel import CancelRegistry
from dbgov.proxy.pending import PendingLogins

if TYPE_CHECKING:
    from dbgov.proxy.backpressure import LedgerBackpressure
    from dbgov.proxy.catalogs import Catalogs
    from dbgov.proxy.reuse import UpstreamPool
    from dbgov.proxy.session_limits import SessionLimits


@dataclass
class ProxyContext:
    config: Config
    gate: Gate
    verifier: TokenVerifier
    audit: Audit
    cancels: CancelRegistry
    server_tls: ssl.SSLContext | None
    upstream_tls: dict[str, ssl.SSLContext | None]
    catalogs: Catalogs | None = None
    approvals: Any = None  # approvals.service.Approvals when configured
    worker_id: int = 0
    worker_pid: int = 0  # this process: a restarted worker keeps its id, not its pid
    clients: int = 0  # client connections with a session (logging in or logged in)
    busy: int = 0  # sessions waiting for the answer to a statement (Session._in_flight)
    group_siblings: int = 1  # config.ledger.group_siblings
    sessions: dict[str, Any] = field(default_factory=dict)  # session id -> Session
    backpressure: LedgerBackpressure | None = None
    upstream_pool: UpstreamPool | None = None  # kept upstream connections (proxy/reuse.py)
    session_limits: SessionLimits | None = None  # listen.max_sessions_per_user
    pending: PendingLogins = field(init=False)  # connections not logged in yet

    def __post_init__(self) -> None:
        self.pending = PendingLogins(self.config.listen.max_pending_logins_per_source)

    def target(self, name: str) -> Target | None:
        return self.config.target(name)

    def service_account(self, name: str) -> ServiceAccount | None:
        for acct in self.config.identity.service_accounts:
            if acct.name == name:
                return acct
        return None
