"""Receipts: made from a real store, checked offline with nothing but the ledger key."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from dbgov.ledger.note import Verifier, generate_signer
from dbgov.ledger.receipts import FORMAT, build_receipt, find_event, verify_receipt
from ledger.kit import LedgerKit, run_cli, synthetic_events


@pytest.fixture
def kit(tmp_path: Path) -> LedgerKit:
    k = LedgerKit(tmp_path / "data")
    k.build(1000, 400)  # checkpoints at 400, 800, 1000
    return k


def prove(kit: LedgerKit, event: str, out: Path) -> dict[str, Any]:
    assert (
        run_cli("audit", "prove", event, "--data-dir", str(kit.layout.root), "--out", str(out)) == 0
    )
    receipt: dict[str, Any] = json.loads(out.read_text())
    return receipt


def test_round_trip_offline(
    kit: LedgerKit,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    receipt = prove(kit, "500", tmp_path / "receipt.json")
    assert receipt["format"] == FORMAT and receipt["index"] == 500
    assert receipt["size"] == 800, "the smallest checkpoint covering #500"
    assert receipt["origin"] == kit.origin and receipt["key"] == str(kit.signer.verifier)
    row = kit.seq.store.event(500)
    assert row is not None and receipt["event"].encode() == row.body
    # Offline: no data dir anywhere, only the key (as a string, then as a file).
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("DBGOV_HOME", raising=False)
    key = str(kit.signer.verifier)
    assert run_cli("audit", "verify-receipt", str(tmp_path / "receipt.json"), "--key", key) == 0
    assert "ok: event #500 is in log" in capsys.readouterr().out
    pub = tmp_path / "ledger.pub"
    pub.write_text(key + "\n")
    assert (
        run_cli("audit", "verify-receipt", str(tmp_path / "receipt.json"), "--key", str(pub)) == 0
    )
    assert not (elsewhere / ".dbgov").exists()


def test_prove_by_event_id_and_edges(kit: LedgerKit, tmp_path: Path) -> None:
    row = kit.seq.store.event(999)
    assert row is not None
    receipt = prove(kit, row.id, tmp_path / "r.json")
    assert receipt["index"] == 999 and receipt["size"] == 1000
    assert verify_receipt(receipt, kit.signer.verifier).ok
    receipt = prove(kit, "0", tmp_path / "r0.json")
    assert receipt["size"] == 400 and verify_receipt(receipt, kit.signer.verifier).ok


def test_not_covered_yet(kit: LedgerKit, capsys: pytest.CaptureFixture[str]) -> None:
    kit.append(synthetic_events(10, seed=4))  # integrated, not yet checkpointed
    code = run_cli("audit", "prove", "1005", "--data-dir", str(kit.layout.root))
    assert code == 1
    assert "not covered by a signed checkpoint" in capsys.readouterr().err
    assert kit.seq.store.latest_checkpoint()[0] == 1000, "prove MUST NOT sign"
    assert run_cli("audit", "prove", "nope:1", "--data-dir", str(kit.layout.root)) == 1


def _tampered(receipt: dict[str, Any], how: str) -> dict[str, Any]:
    r = json.loads(json.dumps(receipt))
    if how == "event":
        r["event"] = r["event"].replace('"prod"', '"prud"')
    elif how == "index":
        r["index"] += 1
    elif how == "proof":
        h = bytearray(base64.b64decode(r["proof"][2]))
        h[0] ^= 1
        r["proof"][2] = base64.b64encode(bytes(h)).decode()
    elif how == "short proof":
        r["proof"].pop()
    elif how == "checkpoint root":
        lines = r["checkpoint"].split("\n")
        lines[2] = base64.b64encode(os.urandom(32)).decode()
        r["checkpoint"] = "\n".join(lines)
    elif how == "checkpoint size":
        r["checkpoint"] = r["checkpoint"].replace("\n800\n", "\n801\n")
        r["size"] = 801
    elif how == "origin":
        r["origin"] = "evil.example/log"
    elif how == "format":
        r["format"] = "dbgov-receipt/v0"
    elif how == "garbage":
        r["proof"] = ["%%%"]
    return r


@pytest.mark.parametrize(
    "how",
    [
        "event",
        "index",
        "proof",
        "short proof",
        "checkpoint root",
        "checkpoint size",
        "origin",
        "format",
        "garbage",
    ],
)
def test_tampered_receipts_are_rejected(kit: LedgerKit, how: str) -> None:
    row = kit.seq.store.event(500)
    assert row is not None
    receipt = build_receipt(kit.seq.store, row)
    assert verify_receipt(receipt, kit.signer.verifier).ok
    result = verify_receipt(_tampered(receipt, how), kit.signer.verifier)
    assert not result.ok, how
    assert result.reason


def test_wrong_key_and_key_in_receipt_ignored(
    kit: LedgerKit, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    receipt = prove(kit, "7", tmp_path / "r.json")
    _, other = generate_signer(kit.origin)
    assert not verify_receipt(receipt, Verifier.from_string(other)).ok
    assert run_cli("audit", "verify-receipt", str(tmp_path / "r.json"), "--key", other) == 1
    assert "does NOT verify" in capsys.readouterr().err
    assert run_cli("audit", "verify-receipt", str(tmp_path / "r.json"), "--key", "junk") == 2


def test_receipt_carries_witness_cosignatures(kit: LedgerKit) -> None:
    from dbgov.ledger.note import ALG_COSIGNATURE_V1, Signer, cosign, verify_note

    skey, vkey = generate_signer("witness.test/w1", ALG_COSIGNATURE_V1)
    note = kit.seq.store.checkpoint_covering(500)[2]
    text = note.partition(b"\n\n")[0] + b"\n"
    line = cosign(text, Signer.from_string(skey), 1_700_000_000)
    kit.seq.store.put_cosignatures(800, [("witness.test/w1", line)], "now")
    row = find_event(kit.seq.store, "500")
    assert row is not None
    receipt = build_receipt(kit.seq.store, row)
    assert receipt["checkpoint"].endswith(line.decode())
    assert verify_receipt(receipt, kit.signer.verifier).ok
    _, names = verify_note(
        receipt["checkpoint"].encode(), [kit.signer.verifier, Verifier.from_string(vkey)]
    )
    assert names == [kit.origin, "witness.test/w1"]
