"""The witness (c2sp.org/tlog-witness) over real HTTP, and the log's client pushing to it."""

from __future__ import annotations

import base64
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from dbgov.ledger.note import (
    Checkpoint,
    Signer,
    Verifier,
    generate_signer,
    sign_note,
    verify_cosignature,
    verify_note,
)
from dbgov.ledger.tree import TreeReader
from dbgov.ledger.witness import Witness, WitnessServer
from dbgov.ledger.witness_client import send_checkpoint, state_path
from ledger.kit import LedgerKit, synthetic_events


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Running:
    def __init__(self, data_dir: Path, log_key: Verifier, origin: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.witness = Witness(data_dir, {origin: [log_key]}, name="witness.test/w1")
        self.server = WitnessServer(self.witness, "127.0.0.1", self.port)
        self.server.start()

    def post(self, body: bytes) -> tuple[int, str, bytes]:
        req = urllib.request.Request(self.url + "/add-checkpoint", data=body, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.headers.get("Content-Type", ""), r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Content-Type", ""), exc.read()


@pytest.fixture
def log(tmp_path: Path) -> LedgerKit:
    return LedgerKit(tmp_path / "log")


@pytest.fixture
def witness(tmp_path: Path, log: LedgerKit) -> Iterator[Running]:
    w = Running(tmp_path / "witness", log.signer.verifier, log.origin)
    yield w
    w.server.stop()


def _text(note: bytes) -> bytes:
    return note.partition(b"\n\n")[0] + b"\n"


def test_cosigns_consistent_checkpoints_and_refuses_a_fork(
    tmp_path: Path, log: LedgerKit, witness: Running
) -> None:
    wkey = witness.witness.verifier
    note1 = log.build(300, 300)[0]
    line1 = send_checkpoint(witness.url, note1, log.layout)
    assert line1 is not None and verify_cosignature(_text(note1), line1.encode(), wkey) > 0

    log.append(synthetic_events(400, seed=3))
    note2 = log.checkpoint()
    line2 = send_checkpoint(witness.url, note2, log.layout)
    assert line2 is not None and verify_cosignature(_text(note2), line2.encode(), wkey)
    assert log.seq.store.cosignatures(700) == [line2.encode()]
    # The stored line makes a cosigned note that a client trusting both keys accepts.
    _, names = verify_note(note2 + line2.encode(), [log.signer.verifier, wkey])
    assert names == [log.origin, "witness.test/w1"]
    assert '"size": 700' in state_path(log.layout).read_text()

    # A fork: same key, same origin, another history of 900 events.
    fork = LedgerKit(tmp_path / "fork", signer=log.signer)
    fork_note = fork.build(900, 900, seed=42)[0]
    assert send_checkpoint(witness.url, fork_note, fork.layout) is None  # 409, then 422
    assert witness.witness.latest(log.origin)[0] == 700
    assert list((tmp_path / "witness" / "evidence").iterdir()), "the signed fork is kept"
    # The same fork sent by hand from the witness's size: 422 Unprocessable Entity.
    proof = TreeReader(fork.seq.store).consistency_proof(700, 900)
    body = b"old 700\n" + b"".join(base64.b64encode(h) + b"\n" for h in proof)
    status, _, _ = witness.post(body + b"\n" + fork_note)
    assert status == 422

    # Restart: the witness remembers the size it cosigned.
    witness.server.stop()
    again = Running(tmp_path / "witness", log.signer.verifier, log.origin)
    try:
        assert again.witness.verifier == wkey, "same key after a restart"
        status, ctype, body = again.post(b"old 0\n\n" + note2)
        assert (status, ctype.split(";")[0], body) == (409, "text/x.tlog.size", b"700\n")
        log.append(synthetic_events(100, seed=8))
        note3 = log.checkpoint()
        assert send_checkpoint(again.url, note3, log.layout) is not None
        assert again.witness.latest(log.origin)[0] == 800
    finally:
        again.server.stop()


def test_protocol_answers(log: LedgerKit, witness: Running) -> None:
    note = log.build(50, 50)[0]
    # A proof from old size 0 MUST be empty: 422.
    assert witness.post(b"old 0\n" + base64.b64encode(bytes(32)) + b"\n\n" + note)[0] == 422
    assert witness.post(b"old 0\n\n" + note)[0] == 200
    status, ctype, body = witness.post(b"old 3\n\n" + note)
    assert (status, ctype.split(";")[0], body) == (409, "text/x.tlog.size", b"50\n")
    # Equal size, other root: 409.
    cp = Checkpoint.from_body(_text(note))
    other = sign_note(Checkpoint(cp.origin, 50, bytes(32)).body(), log.signer)
    assert witness.post(b"old 50\n\n" + other)[0] == 409
    # Unknown origin: 404. Unknown key for a known origin: 403.
    skey, _ = generate_signer("elsewhere.example/log")
    stranger = Signer.from_string(skey)
    assert (
        witness.post(
            b"old 0\n\n"
            + sign_note(Checkpoint("elsewhere.example/log", 1, bytes(32)).body(), stranger)
        )[0]
        == 404
    )
    skey, _ = generate_signer(log.origin)
    impostor = sign_note(cp.body(), Signer.from_string(skey))
    assert witness.post(b"old 50\n\n" + impostor)[0] == 403
    # Malformed requests and an old size above the checkpoint: 400.
    assert witness.post(b"old 01\n\n" + note)[0] == 400
    assert witness.post(b"new 0\n\n" + note)[0] == 400
    assert witness.post(b"old 0\nnot base64!\n\n" + note)[0] == 400
    assert witness.post(b"old 51\n\n" + note)[0] == 400
    # Only POST.
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(witness.url + "/add-checkpoint", timeout=5)
    assert err.value.code == 405


def test_push_never_raises(
    tmp_path: Path, log: LedgerKit, caplog: pytest.LogCaptureFixture
) -> None:
    note = log.build(10, 10)[0]
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens
    assert send_checkpoint(url, note, log.layout) is None
    assert send_checkpoint(url, note, log.layout) is None  # backing off: not even tried
    assert "unreachable" in caplog.text
    assert send_checkpoint("http://127.0.0.1:1", b"not a note", log.layout) is None


def test_the_sequencer_hook(tmp_path: Path, log: LedgerKit, witness: Running) -> None:
    from dbgov.ledger.sequencer import Sequencer
    from dbgov.ledger.witness_client import push_checkpoint

    log.close()
    seq = Sequencer(
        log.layout.root,
        log.signer,
        log.origin,
        on_checkpoint=lambda note: push_checkpoint(witness.url, note, log.layout),
    )
    log.seq = seq
    log.append(synthetic_events(300, seed=6))
    assert seq.checkpoint() is not None
    (line,) = seq.store.cosignatures(300)
    note = seq.store.latest_checkpoint()[2]
    assert verify_cosignature(_text(note), line, witness.witness.verifier)
    seq.close()
