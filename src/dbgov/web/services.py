"""What every view needs, built once per app: config, keys, the policy, approvals, the store.

The policy and the approvals engine are other packages' work and may be absent
or broken in a given build; the dashboard then shows a clear "not available"
state for their pages instead of failing (and redaction fails closed, see
`redact.py`). The policy file is re-read when it changes on disk, so the Policy
page and redaction follow the file the proxy workers load.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread

from dbgov.config import Config
from dbgov.identity.tokens import TokenVerifier
from dbgov.layout import Layout
from dbgov.ledger.lag import journal_sizes
from dbgov.ledger.note import Verifier
from dbgov.store.sqlite import LedgerStore
from dbgov.web.approvals_port import ApprovalsPort
from dbgov.web.auth import SessionCodec, load_or_create_key
from dbgov.web.redact import MaskedColumn, Redactor
from dbgov.web.types import JSON, Viewer
from dbgov.web.verification import load_ledger_verifier

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class PolicyState:
    """The configured policy file as last read: its text, engine, or why it failed."""

    path: Path | None
    text: str | None = None
    engine: Any = None  # dbgov.policy.PolicyEngine when loadable
    error: str | None = None
    mtime: float | None = None

    @property
    def configured(self) -> bool:
        return self.path is not None

    def masking_columns(self) -> Mapping[str, MaskedColumn] | None:
        """Masked columns per the policy; {} with no policy; None when unknown (fail closed)."""
        if self.path is None:
            return {}
        if self.engine is None:
            return None
        columns: Mapping[str, MaskedColumn] = self.engine.masking_config.columns
        return columns


@dataclass
class Services:
    config: Config
    layout: Layout
    codec: SessionCodec
    verifier: TokenVerifier
    approvals: ApprovalsPort
    ledger_verifier: Verifier | None
    policy: PolicyState = field(init=False)

    def __post_init__(self) -> None:
        self.policy = PolicyState(self.config.policy)

    @classmethod
    def build(cls, config: Config) -> Services:
        from dbgov.proxy.worker import build_verifier

        layout = Layout(config.data_dir)
        key_path = config.ledger.key_file or layout.ledger_key
        return cls(
            config=config,
            layout=layout,
            codec=SessionCodec(load_or_create_key(layout)),
            verifier=build_verifier(config),
            approvals=ApprovalsPort.create(config),
            ledger_verifier=load_ledger_verifier(key_path.with_suffix(".pub")),
        )

    # -- store ---------------------------------------------------------------------

    def open_store(self) -> LedgerStore:
        return LedgerStore(self.layout.ledger_db, readonly=True)

    async def read(self, fn: Callable[[LedgerStore], T]) -> T:
        """Run `fn(store)` on a fresh read-only connection in a worker thread.

        SQLite calls block; the web app shares its event loop with the supervisor,
        so reads never run on the loop.
        """

        def run() -> T:
            store = self.open_store()
            try:
                return fn(store)
            finally:
                store.close()

        return await anyio.to_thread.run_sync(run)

    # -- policy ----------------------------------------------------------------------

    def current_policy(self) -> PolicyState:
        """The policy, reloaded if its file changed since it was last read."""
        state = self.policy
        if state.path is None:
            return state
        try:
            mtime = state.path.stat().st_mtime
        except OSError as exc:
            state.engine, state.text, state.error = None, None, f"cannot read: {exc}"
            return state
        if mtime == state.mtime:
            return state
        state.mtime = mtime
        try:
            state.text = state.path.read_text()
        except OSError as exc:
            state.engine, state.text, state.error = None, None, f"cannot read: {exc}"
            return state
        try:
            from dbgov.policy import load_policy_file

            state.engine = load_policy_file(state.path, self.config)
            state.error = None
        except ImportError as exc:
            state.engine, state.error = None, f"the policy engine is not installed ({exc})"
        except Exception as exc:  # PolicyError and anything a half-built engine raises
            log.warning("policy %s: %s", state.path, exc)
            state.engine, state.error = None, str(exc)
        return state

    def redactor(self, viewer: Viewer) -> Redactor:
        return Redactor.for_groups(viewer.groups, self.current_policy().masking_columns())

    # -- ledger ------------------------------------------------------------------------

    def journal_bytes(self) -> dict[str, int]:
        """Size of each journal segment file now (for the sequencer lag)."""
        return journal_sizes(self.layout.journal)

    def state(self) -> JSON | None:
        """state.json of the running dbgov (proxy address, worker pids, start time)."""
        try:
            data = json.loads(self.layout.state.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None


def redact_tree(redactor: Redactor, data: Any) -> Any:
    """Apply `redactor` to every event-shaped dict inside `data` (lists, dicts, nested).

    Called at each exit (page render, JSON response, SSE message), so no view can
    forget to redact something it returns.
    """
    if isinstance(data, dict):
        out = {k: redact_tree(redactor, v) for k, v in data.items()}
        if "sql" in out or "params" in out:
            out = redactor.event(out)
        return out
    if isinstance(data, list | tuple):
        return [redact_tree(redactor, v) for v in data]
    return data
