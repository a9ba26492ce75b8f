"""The log's side of c2sp.org/tlog-witness: send each new checkpoint to a witness.

The supervisor passes ``push_checkpoint`` to the sequencer as its checkpoint hook
when ``ledger.witness_url`` is set. For every checkpoint it sends ``old <size>``
(the size the witness last cosigned, remembered in
``<data_dir>/ledger/witness.json``), the consistency proof from that size built
with ``TreeReader`` (RFC 9162 §2.1.4), and the signed note. A 200 carries the
witness's cosignature lines; they are kept in the ledger store's
``cosignatures`` table, keyed by checkpoint size and witness key, and appended
to the note in receipts and bundles, where anyone trusting the witness key can
check them. A 409 carries the size the witness really has: the push is retried
once from there.

Contract: ``push_checkpoint`` MUST NOT raise into the sequencer and MUST NOT hold
it up for long. Every failure is logged and the checkpoint stays uncosigned (the
next push proves consistency from the witness's size, so it catches up); each
request times out after 5 s, and after a network failure the witness is not
contacted again for 30 s.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Final

from dbgov.durable import write_atomic
from dbgov.layout import Layout
from dbgov.ledger.events import utc_now_iso
from dbgov.ledger.note import Checkpoint, MalformedNoteError, parse_signature_line
from dbgov.ledger.tree import TreeReader
from dbgov.store.sqlite import LedgerStore

__all__ = ["push_checkpoint", "send_checkpoint", "state_path"]

log = logging.getLogger(__name__)

TIMEOUT_S: Final = 5.0
BACKOFF_S: Final = 30.0
_backoff: dict[str, float] = {}
_backoff_lock = threading.Lock()


def state_path(layout: Layout) -> Path:
    """``<data_dir>/ledger/witness.json``: per witness URL, the size it last cosigned."""
    return layout.root / "ledger" / "witness.json"


def _endpoint(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/add-checkpoint") else url + "/add-checkpoint"


def _load_state(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    witnesses = doc.get("witnesses") if isinstance(doc, dict) else None
    return witnesses if isinstance(witnesses, dict) else {}


def _save_state(path: Path, url: str, origin: str, size: int) -> None:
    state = _load_state(path)
    state[url] = {"origin": origin, "size": size, "updated": utc_now_iso()}
    write_atomic(path, (json.dumps({"witnesses": state}, indent=1) + "\n").encode())


def push_checkpoint(url: str, note: bytes, layout: Layout, *, timeout: float = TIMEOUT_S) -> None:
    """The sequencer's checkpoint hook: ``send_checkpoint``, result ignored. Never raises."""
    send_checkpoint(url, note, layout, timeout=timeout)


def send_checkpoint(
    url: str, note: bytes, layout: Layout, *, timeout: float = TIMEOUT_S
) -> str | None:
    """Send ``note`` to the witness at ``url``; returns its cosignature lines, or None.

    Never raises: failures are logged (see the module docstring).
    """
    with _backoff_lock:
        if _backoff.get(url, 0.0) > time.monotonic():
            log.info("witness %s: skipped, backing off after a failure", url)
            return None
    try:
        return _push(url, note, layout, timeout)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        log.warning("witness %s unreachable: %s; retrying in %.0f s", url, exc, BACKOFF_S)
        with _backoff_lock:
            _backoff[url] = time.monotonic() + BACKOFF_S
    except Exception:
        log.exception("witness %s: push failed", url)
    return None


def _push(url: str, note: bytes, layout: Layout, timeout: float) -> str | None:
    checkpoint = Checkpoint.from_body(note.partition(b"\n\n")[0] + b"\n")
    path = state_path(layout)
    known = _load_state(path).get(url) or {}
    old = int(known.get("size", 0)) if known.get("origin") == checkpoint.origin else 0
    store = LedgerStore(layout.ledger_db)
    try:
        for attempt in (1, 2):
            if old > checkpoint.size:
                log.info("witness %s already cosigned size %d > %d", url, old, checkpoint.size)
                return None
            proof = TreeReader(store).consistency_proof(old, checkpoint.size)
            body = f"old {old}\n".encode() + b"".join(_b64line(h) for h in proof) + b"\n" + note
            status, answer = _post(url, body, timeout)
            if status == 200:
                lines = _cosignature_lines(answer)
                store.put_cosignatures(checkpoint.size, lines, utc_now_iso())
                _save_state(path, url, checkpoint.origin, checkpoint.size)
                return b"".join(line for _, line in lines).decode()
            if status == 409 and attempt == 1:
                reported = answer.strip()
                if not reported.isdigit():
                    log.error("witness %s: 409 without a size: %r", url, answer[:100])
                    return None
                old = int(reported)
                _save_state(path, url, checkpoint.origin, old)
                if old == checkpoint.size:
                    log.error(
                        "witness %s holds a different checkpoint at size %d: the log forked "
                        "or the witness is confused",
                        url,
                        old,
                    )
                    return None
                continue
            log.error(
                "witness %s refused checkpoint %d (HTTP %d): %s",
                url,
                checkpoint.size,
                status,
                answer[:200].decode("utf-8", "replace").strip(),
            )
            return None
    finally:
        store.close()
    return None


def _b64line(h: bytes) -> bytes:
    return base64.b64encode(h) + b"\n"


def _post(url: str, body: bytes, timeout: float) -> tuple[int, bytes]:
    request = urllib.request.Request(  # noqa: S310 - the operator configures the URL
        _endpoint(url), data=body, method="POST", headers={"Content-Type": "text/plain"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return int(response.status), bytes(response.read(1 << 16))
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read(1 << 16))


def _cosignature_lines(answer: bytes) -> list[tuple[str, bytes]]:
    """``(witness key, line)`` for each signature line of a 200 answer."""
    out = []
    for raw in answer.decode("utf-8").splitlines(keepends=True):
        try:
            sig = parse_signature_line(raw)
        except MalformedNoteError:
            log.warning("witness answer line %r is not a signature line; ignored", raw[:80])
            continue
        line = raw if raw.endswith("\n") else raw + "\n"
        out.append((f"{sig.name}+{sig.key_id.hex()}", line.encode()))
    return out
