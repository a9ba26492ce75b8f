"""`dbgov audit verify`: every attack class detected, told apart, with its exit code and index.

Each test builds a real store with the Sequencer, tampers with it the way an
attacker with write access to `ledger.db` would (sqlite3 UPDATE/DELETE), and
reads the JSON report the auditor would get.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from dbgov.ledger.keys import load_verifier
from dbgov.ledger.note import Checkpoint, Signer, generate_signer, sign_note
from dbgov.ledger.verify import ExitCode, verify_store
from ledger.kit import LedgerKit, run_cli, swap_rows, synthetic_events

N, EVERY = 3000, 500  # checkpoints at 500, 1000, …, 3000; the last chunk [2816, 3000) has no tile


@pytest.fixture
def kit(tmp_path: Path) -> LedgerKit:
    k = LedgerKit(tmp_path / "data")
    k.build(N, EVERY)
    return k


def verify_json(kit: LedgerKit, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, Any]:
    capsys.readouterr()
    code = run_cli("audit", "verify", "--data-dir", str(kit.layout.root), "--json", *extra)
    return code, json.loads(capsys.readouterr().out)


def test_a_clean_ledger_verifies(kit: LedgerKit, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = verify_json(kit, capsys)
    assert code == 0 and report["ok"] and report["result"] == "ok"
    assert report["events"] == N
    assert report["checkpoints"] == {
        "total": N // EVERY,
        "verified": N // EVERY,
        "latest": {"size": N, "root": report["checkpoints"]["latest"]["root"]},
    }
    assert report["first_bad_index"] is None
    code = run_cli("audit", "verify", "--data-dir", str(kit.layout.root))
    assert code == 0
    assert "ledger verified: 3,000 events" in capsys.readouterr().out


def test_modified_body(kit: LedgerKit, capsys: pytest.CaptureFixture[str]) -> None:
    kit.sql(
        "UPDATE events SET body = CAST(replace(CAST(body AS TEXT), 'prod', 'prud') AS BLOB)"
        " WHERE idx = 1234"
    )
    code, report = verify_json(kit, capsys)
    assert code == ExitCode.MODIFIED == 10
    assert report["result"] == "modified" and report["first_bad_index"] == 1234
    assert report["findings"][0]["exact"] is True


def test_modified_body_and_leaf(kit: LedgerKit, capsys: pytest.CaptureFixture[str]) -> None:
    """The attacker rehashes the leaf too: only the signed root catches it, to a 256-event tile."""
    kit.sql(
        "UPDATE events SET body = CAST(replace(CAST(body AS TEXT), 'prod', 'prud') AS BLOB)"
        " WHERE idx = 1234"
    )
    conn = sqlite3.connect(kit.db)
    (body,) = conn.execute("SELECT body FROM events WHERE idx = 1234").fetchone()
    conn.execute(
        "UPDATE events SET leaf = ? WHERE idx = 1234", (hashlib.sha256(b"\x00" + body).digest(),)
    )
    conn.commit()
    conn.close()
    code, report = verify_json(kit, capsys)
    assert code == 10 and report["result"] == "modified"
    finding = report["findings"][0]
    assert finding["exact"] is False and finding["range"] == [1024, 1500]
    assert report["first_bad_index"] == 1024 <= 1234 < 1024 + 256


def test_deleted_event(kit: LedgerKit, capsys: pytest.CaptureFixture[str]) -> None:
    kit.sql("DELETE FROM events WHERE idx = 777")
    code, report = verify_json(kit, capsys)
    assert code == ExitCode.DELETED == 11
    assert report["result"] == "deleted" and report["first_bad_index"] == 777


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (100, 200),  # inside one tile, under the first checkpoint
        (0, 1),
        (300, 1900),  # across two tiles
        (10, 2900),  # a tile and the last, untiled chunk
        (2850, 2990),  # both in the last chunk: only the signed root at 3000 sees it
    ],
)
def test_reordered_events(
    kit: LedgerKit, capsys: pytest.CaptureFixture[str], a: int, b: int
) -> None:
    swap_rows(kit.db, a, b)
    code, report = verify_json(kit, capsys)
    assert code == ExitCode.REORDERED == 12
    assert report["result"] == "reordered" and report["first_bad_index"] == a
    assert report["findings"][0]["positions"] == [a, b]


def test_truncated_tail(kit: LedgerKit, capsys: pytest.CaptureFixture[str]) -> None:
    kit.sql("DELETE FROM events WHERE idx >= 2990")
    code, report = verify_json(kit, capsys)
    assert code == ExitCode.TRUNCATED == 13
    assert report["result"] == "truncated" and report["first_bad_index"] == 2990


def test_checkpoint_signed_with_another_key(
    kit: LedgerKit, capsys: pytest.CaptureFixture[str]
) -> None:
    skey, _ = generate_signer(kit.origin)  # same name, another key
    conn = sqlite3.connect(kit.db)
    size, root = conn.execute("SELECT size, root FROM checkpoints WHERE size = 1500").fetchone()
    forged = sign_note(Checkpoint(kit.origin, size, bytes(root)).body(), Signer.from_string(skey))
    conn.execute("UPDATE checkpoints SET note = ? WHERE size = 1500", (forged,))
    conn.commit()
    conn.close()
    code, report = verify_json(kit, capsys)
    assert code == ExitCode.BAD_SIGNATURE == 14
    assert report["result"] == "bad_checkpoint"
    assert report["findings"][0]["checkpoint_size"] == 1500
    assert report["checkpoints"]["verified"] == N // EVERY - 1


def test_rollback_against_a_trusted_checkpoint(
    kit: LedgerKit, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    trusted = tmp_path / "trusted.note"
    trusted.write_bytes(kit.seq.store.latest_checkpoint()[2])  # size 3000
    # Roll the log back to 2500 and hide it: drop the events and the newer checkpoint.
    kit.sql("DELETE FROM events WHERE idx >= 2500")
    kit.sql("DELETE FROM checkpoints WHERE size > 2500")
    code, report = verify_json(kit, capsys)
    assert code == 0, "without the trusted checkpoint the rollback is invisible"
    code, report = verify_json(kit, capsys, "--trusted-checkpoint", str(trusted))
    assert code == ExitCode.ROLLBACK == 15
    assert report["result"] == "rollback" and report["first_bad_index"] == 2500
    assert report["trusted"]["size"] == 3000


def test_fork_against_a_trusted_checkpoint(
    kit: LedgerKit, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Another history, signed with the same key (the key was stolen, or the log lied).
    other = LedgerKit(tmp_path / "fork", signer=kit.signer)
    other.append(synthetic_events(1200, seed=99))
    trusted = tmp_path / "trusted.note"
    trusted.write_bytes(other.checkpoint())
    code, report = verify_json(kit, capsys, "--trusted-checkpoint", str(trusted))
    assert code == 15 and report["result"] == "rollback"
    assert "forked" in report["message"]


def test_consistent_trusted_checkpoint(
    kit: LedgerKit, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    trusted = tmp_path / "trusted.note"
    trusted.write_bytes(kit.seq.store.checkpoint_covering(1200)[2])  # size 1500
    kit.append(synthetic_events(700, seed=5))
    kit.checkpoint()
    code, report = verify_json(kit, capsys, "--trusted-checkpoint", str(trusted))
    assert code == 0 and report["trusted"]["size"] == 1500 and report["events"] == 3700


def test_unreadable_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kit = LedgerKit(tmp_path / "data")
    kit.build(300, 300)
    kit.close()
    for suffix in ("-wal", "-shm"):
        Path(str(kit.db) + suffix).unlink(missing_ok=True)
    kit.db.write_bytes(b"this is not a database" * 100)
    code, report = verify_json(kit, capsys)
    assert code == ExitCode.UNREADABLE == 16 and report["result"] == "unreadable"


def test_usage_errors(kit: LedgerKit, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(kit.layout.root)
    assert run_cli("audit", "verify", "--data-dir", root, "--key", "not-a-key") == 2
    bad = tmp_path / "bad.note"
    bad.write_bytes(b"not a note\n")
    assert run_cli("audit", "verify", "--data-dir", root, "--trusted-checkpoint", str(bad)) == 2
    assert "trusted checkpoint" in capsys.readouterr().err


def test_key_comes_from_the_auditor(kit: LedgerKit, capsys: pytest.CaptureFixture[str]) -> None:
    """An attacker who re-signs with a new key is caught when the auditor brings the real key."""
    real = str(kit.signer.verifier)
    skey, vkey = generate_signer(kit.origin)
    attacker = Signer.from_string(skey)
    conn = sqlite3.connect(kit.db)
    for size, root in conn.execute("SELECT size, root FROM checkpoints").fetchall():
        note = sign_note(Checkpoint(kit.origin, size, bytes(root)).body(), attacker)
        conn.execute("UPDATE checkpoints SET note = ? WHERE size = ?", (note, size))
    conn.commit()
    conn.close()
    kit.layout.ledger_pub.write_text(vkey + "\n")
    code, _ = verify_json(kit, capsys)
    assert code == 0, "the data dir's own key was replaced too"
    code, _ = verify_json(kit, capsys, "--key", real)
    assert code == 14


def test_parallel_and_serial_agree(kit: LedgerKit) -> None:
    swap_rows(kit.db, 300, 1900)
    verifier = load_verifier(str(kit.layout.ledger_pub))
    serial = verify_store(kit.db, verifier, workers=1).to_json()
    parallel = verify_store(kit.db, verifier, workers=3).to_json()
    for doc in (serial, parallel):
        doc.pop("seconds"), doc.pop("events_per_second")
    assert serial == parallel and serial["result"] == "reordered"
