"""Where everything lives under the data dir (`--data-dir`, `DBGOV_HOME`, `./.dbgov`).

Pure path arithmetic, like Tessera's `api/layout`: no I/O here, so every
component (proxy, sequencer, CLI, web) agrees on the same files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def resolve_data_dir(flag: str | None) -> Path:
    return Path(flag or os.environ.get("DBGOV_HOME") or ".dbgov").resolve()


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def issuer_key(self) -> Path:
        return self.keys / "issuer.key"

    @property
    def ledger_key(self) -> Path:
        return self.keys / "ledger.key"

    @property
    def ledger_pub(self) -> Path:
        return self.keys / "ledger.pub"

    @property
    def masking_key(self) -> Path:
        return self.keys / "masking.key"

    @property
    def ledger_db(self) -> Path:
        return self.root / "ledger" / "ledger.db"

    @property
    def control_db(self) -> Path:
        return self.root / "control.db"

    @property
    def journal(self) -> Path:
        return self.root / "ledger" / "journal"

    @property
    def run(self) -> Path:
        return self.root / "run"

    def heartbeat(self, worker_id: int) -> Path:
        """Touched by proxy worker `worker_id` every HEARTBEAT_S while its loop turns."""
        return self.run / f"worker-{worker_id}.alive"

    @property
    def live_sessions(self) -> Path:
        """Sessions per user across workers, for `listen.max_sessions_per_user`."""
        return self.run / "sessions.db"

    @property
    def effective_config(self) -> Path:
        return self.run / "config.json"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def tls(self) -> Path:
        return self.root / "tls"
