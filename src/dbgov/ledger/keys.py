"""The ledger's checkpoint signing key, kept in the data dir (or given in config).

`<data_dir>/keys/ledger.key` holds the signed-note signer string (secret, 0600);
`ledger.pub` the verifier string an auditor needs: `dbgov audit verify-receipt
--key "$(cat ledger.pub)"`. The key name is the log origin, as C2SP advises.
"""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

from dbgov.durable import write_atomic, write_private
from dbgov.ledger.note import Signer, Verifier, generate_signer


def default_origin(data_dir: Path) -> str:
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:8]
    host = socket.gethostname().split(".")[0] or "localhost"
    return f"dbgov.local/{host}/{digest}"


def load_or_create_signer(key_path: Path, origin: str) -> Signer:
    if key_path.exists():
        return Signer.from_string(key_path.read_text().strip())
    skey, vkey = generate_signer(origin)
    write_private(key_path, skey.encode())
    write_atomic(key_path.with_suffix(".pub"), (vkey + "\n").encode())
    return Signer.from_string(skey)


def load_verifier(text: str) -> Verifier:
    """A verifier key string, or a path to a file holding one."""
    candidate = Path(text)
    if len(text) < 512 and candidate.exists():
        text = candidate.read_text()
    return Verifier.from_string(text.strip())
