"""``dbgov witness``: an independent cosigner that refuses to see two histories of one log.

A log can show one auditor a history and another auditor a rewritten one (a
split view), each consistent on its own. A witness closes that gap: it remembers
the latest checkpoint it cosigned for each log and cosigns a new one only with a
consistency proof from there (RFC 9162 §2.1.4), so two checkpoints it cosigned
are always one history. Run it on another machine, under another operator, with
its own key; its cosignature then means "this log did not fork, as far as I have
seen".

Protocol: c2sp.org/tlog-witness, ``POST <prefix>/add-checkpoint`` with the body
``old <size>\\n``, at most 63 base64 consistency proof lines, an empty line and
the signed checkpoint note (c2sp.org/tlog-checkpoint). Answers, as the spec
requires:

- 400: malformed request, or the old size is above the checkpoint size;
- 403: no signature from a trusted key of that log;
- 404: the witness is not configured for that origin;
- 409 (``text/x.tlog.size``, body ``<size>\\n``): the old size is not the size
  of the latest checkpoint cosigned for that origin (0 when none), or the sizes
  are equal and the roots differ;
- 422: the consistency proof does not verify;
- 200: one cosignature line (c2sp.org/tlog-cosignature, Ed25519
  ``cosignature/v1``, key type 0x04).

The check against the stored size and the update of it happen under one lock,
and the new state MUST be on disk (``durable.write_atomic``) before the 200 is
sent: otherwise two racing requests could roll the state back (the race the
spec describes). A request that is signed by the log but fails the proof, or
conflicts at an equal size, is kept under ``evidence/`` as proof of log
misbehaviour (the spec: "MAY log the request").

Files in the witness data dir: ``witness.key`` (signer, 0600), ``witness.pub``
(its verifier string, to give to auditors), ``state.json``, ``evidence/``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dbgov.durable import write_atomic, write_private
from dbgov.ledger.merkle import EMPTY_ROOT, HASH_SIZE, ProofError, verify_consistency
from dbgov.ledger.note import (
    ALG_COSIGNATURE_V1,
    MAX_NOTE_SIZE,
    BadSignatureError,
    Checkpoint,
    MalformedNoteError,
    Signer,
    UnknownKeyError,
    Verifier,
    cosign,
    generate_signer,
    verify_note,
)

__all__ = [
    "Answer",
    "Witness",
    "WitnessServer",
    "create_app",
    "load_or_create_witness_key",
    "parse_add_checkpoint",
]

log = logging.getLogger(__name__)

MAX_PROOF_LINES: Final = 63
MAX_BODY: Final = MAX_NOTE_SIZE + 64 * (MAX_PROOF_LINES + 2)
SIZE_CONTENT_TYPE: Final = "text/x.tlog.size"
_OLD = re.compile(rb"old (0|[1-9][0-9]{0,19})")
_STATE_FORMAT: Final = "dbgov-witness-state/v1"


class BadRequest(Exception):
    """The request body is not an add-checkpoint request (400)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


def load_or_create_witness_key(path: Path, name: str | None = None) -> Signer:
    """The witness's cosignature key (type 0x04), created on first use with ``name``."""
    if path.exists():
        signer = Signer.from_string(path.read_text().strip())
        if signer.alg != ALG_COSIGNATURE_V1:
            raise ValueError(f"{path} is not a cosignature (type 0x04) key")
        return signer
    host = socket.gethostname().split(".")[0] or "localhost"
    skey, vkey = generate_signer(name or f"dbgov-witness/{host}", ALG_COSIGNATURE_V1)
    write_private(path, skey.encode())
    write_atomic(path.with_suffix(".pub"), (vkey + "\n").encode())
    return Signer.from_string(skey)


def parse_add_checkpoint(body: bytes) -> tuple[int, list[bytes], bytes]:
    """Split a request body into (old size, consistency proof, checkpoint note)."""
    line, sep, rest = body.partition(b"\n")
    m = _OLD.fullmatch(line)
    if not sep or m is None:
        raise BadRequest("the first line must be 'old <size>'")
    proof: list[bytes] = []
    while True:
        line, sep, rest = rest.partition(b"\n")
        if not sep:
            raise BadRequest("no empty line before the checkpoint")
        if not line:
            break
        if len(proof) == MAX_PROOF_LINES:
            raise BadRequest(f"more than {MAX_PROOF_LINES} consistency proof lines")
        try:
            h = base64.b64decode(line, validate=True)
        except binascii.Error:
            raise BadRequest("a consistency proof line is not base64") from None
        if len(h) != HASH_SIZE:
            raise BadRequest(f"a consistency proof hash has {len(h)} bytes, want {HASH_SIZE}")
        proof.append(h)
    return int(m.group(1)), proof, rest


class Witness:
    """The add-checkpoint logic and its persistent state; thread-safe, no I/O but files."""

    def __init__(
        self,
        data_dir: Path,
        logs: Mapping[str, Sequence[Verifier]],
        *,
        name: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.signer = load_or_create_witness_key(data_dir / "witness.key", name)
        self.logs = {origin: list(keys) for origin, keys in logs.items()}
        self.clock = clock
        self.state_path = data_dir / "state.json"
        self._lock = threading.Lock()
        self._state: dict[str, dict[str, Any]] = self._load()

    @property
    def verifier(self) -> Verifier:
        return self.signer.verifier

    def latest(self, origin: str) -> tuple[int, bytes]:
        """Size and root last cosigned for ``origin``: ``(0, MTH({}))`` if none yet."""
        entry = self._state.get(origin)
        if entry is None:
            return 0, EMPTY_ROOT
        return int(entry["size"]), base64.b64decode(entry["root"])

    def _load(self) -> dict[str, dict[str, Any]]:
        if not self.state_path.exists():
            return {}
        doc = json.loads(self.state_path.read_bytes())
        if doc.get("format") != _STATE_FORMAT:
            raise ValueError(f"{self.state_path} is not a {_STATE_FORMAT} file")
        logs: dict[str, dict[str, Any]] = doc["logs"]
        return logs

    def _save(self, state: dict[str, dict[str, Any]]) -> None:
        doc = {"format": _STATE_FORMAT, "logs": state}
        write_atomic(self.state_path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())

    def add_checkpoint(self, body: bytes) -> Answer:
        """Handle one add-checkpoint request body (c2sp.org/tlog-witness)."""
        try:
            old, proof, note = parse_add_checkpoint(body)
            text = note.partition(b"\n\n")[0] + b"\n"
            checkpoint = Checkpoint.from_body(text)
        except (BadRequest, MalformedNoteError) as exc:
            return Answer(400, f"{exc}\n".encode())
        verifiers = self.logs.get(checkpoint.origin)
        if verifiers is None:
            return Answer(404, f"unknown log {checkpoint.origin!r}\n".encode())
        try:
            verify_note(note, verifiers)
        except (UnknownKeyError, BadSignatureError) as exc:
            return Answer(403, f"{exc}\n".encode())
        except MalformedNoteError as exc:
            return Answer(400, f"{exc}\n".encode())
        if old > checkpoint.size:
            return Answer(400, f"old size {old} is above the checkpoint size\n".encode())
        with self._lock:
            size, root = self.latest(checkpoint.origin)
            if old != size:
                return Answer(409, f"{size}\n".encode(), SIZE_CONTENT_TYPE)
            if old == checkpoint.size and root != checkpoint.root:
                self._keep_evidence(body, "same size, different root")
                return Answer(409, f"{size}\n".encode(), SIZE_CONTENT_TYPE)
            try:
                verify_consistency(old, checkpoint.size, root, checkpoint.root, proof)
            except ProofError as exc:
                self._keep_evidence(body, str(exc))
                return Answer(422, f"consistency proof does not verify: {exc}\n".encode())
            now = int(self.clock())
            state = dict(self._state)
            state[checkpoint.origin] = {
                "size": checkpoint.size,
                "root": base64.b64encode(checkpoint.root).decode(),
                "checkpoint": text.decode(),
                "time": now,
            }
            self._save(state)  # MUST be durable before the cosignature is returned
            self._state = state
        return Answer(200, cosign(text, self.signer, now))

    def _keep_evidence(self, body: bytes, why: str) -> None:
        digest = hashlib.sha256(body).hexdigest()[:16]
        path = self.data_dir / "evidence" / f"{int(self.clock())}-{digest}.txt"
        try:
            write_atomic(path, f"# {why}\n".encode() + body)
        except OSError:
            log.exception("witness: cannot keep evidence of log misbehaviour")
        log.warning("witness: refused a signed checkpoint (%s); kept as %s", why, path)


def create_app(witness: Witness) -> Starlette:
    """The HTTP interface: ``POST /add-checkpoint`` only."""

    async def add_checkpoint(request: Request) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return Response(b"request too large\n", status_code=413)
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > MAX_BODY:
                return Response(b"request too large\n", status_code=413)
            chunks.append(chunk)
        answer = await run_in_threadpool(witness.add_checkpoint, b"".join(chunks))
        return Response(answer.body, status_code=answer.status, media_type=answer.content_type)

    return Starlette(routes=[Route("/add-checkpoint", add_checkpoint, methods=["POST"])])


class WitnessServer:
    """uvicorn serving ``create_app``: ``run()`` in the foreground, or ``start()``/``stop()``."""

    def __init__(self, witness: Witness, host: str, port: int) -> None:
        config = uvicorn.Config(
            create_app(witness), host=host, port=port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        self.server.run()

    def start(self, timeout: float = 10.0) -> None:
        self._thread = threading.Thread(target=self.server.run, name="witness", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the witness server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
