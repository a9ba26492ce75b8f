"""Build real ledger stores for tests: synthetic journal segments through the real Sequencer.

No proxy is involved: events are written as journal segments the way `journal.py`
writes them (one canonical-JSON event per line) under a writer name that is not
a live pid, and the real `Sequencer` integrates them, stores tiles and signs
checkpoints with the data dir's own ledger key.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from dbgov.layout import Layout
from dbgov.ledger.canonical import canonical_json
from dbgov.ledger.keys import load_or_create_signer
from dbgov.ledger.note import Signer
from dbgov.ledger.sequencer import Sequencer

ORIGIN = "dbgov.test/ledger"
KINDS = ("select", "insert", "update", "delete", "create_table", "set")
TABLES = ("public.customers", "public.prompts", "public.feature_store", "public.inference_log")


def synthetic_events(n: int, seed: int = 7, start: int = 0) -> Iterator[dict[str, Any]]:
    """``n`` plausible events: sessions that open, run statements (each with its done), close."""
    rng = random.Random(seed)
    k = start
    produced = 0
    while True:
        session = f"{rng.getrandbits(48):012x}"
        user = rng.choice(["alice", "bob", "carol", "etl"])
        ts = f"2025-03-01T10:{(k // 6000) % 60:02d}:{(k // 100) % 60:02d}.{k % 1_000_000:06d}Z"
        events: list[dict[str, Any]] = [
            {
                "v": 1,
                "type": "connection.open",
                "id": f"{session}:{k}",
                "ts": ts,
                "session": session,
                "user": user,
                "groups": ["analysts"],
                "target": "prod",
                "client": f"10.0.0.{rng.randint(1, 254)}:{rng.randint(1024, 65535)}",
                "auth": "token",
                "protocol": "3.0",
            }
        ]
        for _ in range(rng.randint(1, 4)):
            k += 1
            kind = rng.choice(KINDS)
            table = rng.choice(TABLES)
            stmt_id = f"{session}:{k}"
            verdict = rng.choice(["allow", "allow", "allow", "deny"])
            events.append(
                {
                    "v": 1,
                    "type": "statement",
                    "id": stmt_id,
                    "ts": ts,
                    "session": session,
                    "user": user,
                    "target": "prod",
                    "sql": f"{kind} … {table} /* {k} */",
                    "kinds": [kind],
                    "reads": [table] if kind == "select" else None,
                    "writes": None if kind == "select" else [table],
                    "decision": {"verdict": verdict}
                    | ({"rule": "no-writes", "reason": "read-only"} if verdict == "deny" else {}),
                    "fingerprint": f"{rng.getrandbits(64):016x}",
                }
            )
            k += 1
            events.append(
                {
                    "v": 1,
                    "type": "statement.done",
                    "id": f"{session}:{k}",
                    "ts": ts,
                    "session": session,
                    "user": user,
                    "target": "prod",
                    "ref": stmt_id,
                    "sqlstate": "42501" if verdict == "deny" else "00000",
                    "rows": rng.randint(0, 500),
                    "duration_us": rng.randint(50, 90_000),
                }
            )
        k += 1
        events.append(
            {
                "v": 1,
                "type": "connection.close",
                "id": f"{session}:{k}",
                "ts": ts,
                "session": session,
                "user": user,
                "target": "prod",
                "reason": "client",
            }
        )
        k += 1
        for ev in events:
            yield {key: value for key, value in ev.items() if value is not None}
            produced += 1
            if produced >= n:
                return


class LedgerKit:
    """A data dir with a ledger key and a Sequencer fed by synthetic journal segments."""

    def __init__(self, root: Path, origin: str = ORIGIN, signer: Signer | None = None) -> None:
        self.layout = Layout(root)
        self.origin = origin
        self.signer = signer or load_or_create_signer(self.layout.ledger_key, origin)
        self.seq = Sequencer(root, self.signer, origin)
        self._segment = 0

    @property
    def db(self) -> Path:
        return self.layout.ledger_db

    def append(self, events: Iterable[dict[str, Any] | bytes]) -> int:
        """Journal ``events`` and integrate them; returns the new ledger size."""
        lines = [e if isinstance(e, bytes) else canonical_json(e) for e in events]
        self.layout.journal.mkdir(parents=True, exist_ok=True)
        path = self.layout.journal / f"test.{self._segment:08d}.jsonl"
        self._segment += 1
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        while self.seq.integrate_once():
            pass
        return self.seq.tree.size

    def checkpoint(self) -> bytes:
        note = self.seq.checkpoint()
        assert note is not None, "nothing new to checkpoint"
        return note

    def build(self, n: int, every: int, seed: int = 7) -> list[bytes]:
        """``n`` synthetic events with a checkpoint every ``every``; returns the notes."""
        notes = []
        events = list(synthetic_events(n, seed))
        for start in range(0, n, every):
            self.append(events[start : start + every])
            notes.append(self.checkpoint())
        return notes

    def sql(self, statement: str, *args: Any) -> None:
        """Tamper with the store directly, as an attacker with file access would."""
        conn = sqlite3.connect(self.db)
        try:
            conn.execute(statement, args)
            conn.commit()
        finally:
            conn.close()

    def leaves(self) -> list[bytes]:
        rows = self.seq.store.conn.execute("SELECT leaf FROM events ORDER BY idx").fetchall()
        return [bytes(r[0]) for r in rows]

    def close(self) -> None:
        self.seq.close()


def swap_rows(db: Path, a: int, b: int) -> None:
    """Swap two rows' bodies and leaves: every body still hashes to its own leaf."""
    conn = sqlite3.connect(db)
    try:
        rows = dict(
            (int(r[0]), (r[1], r[2]))
            for r in conn.execute("SELECT idx, body, leaf FROM events WHERE idx IN (?, ?)", (a, b))
        )
        for dst, src in ((a, b), (b, a)):
            conn.execute("UPDATE events SET body = ?, leaf = ? WHERE idx = ?", (*rows[src], dst))
        conn.commit()
    finally:
        conn.close()


def run_cli(*argv: str) -> int:
    """Run a `dbgov audit …`/`dbgov witness` command through the ledger's argparse glue."""
    import argparse

    from dbgov.ledger.commands import add_audit_commands, add_witness_command

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=None)
    parser = argparse.ArgumentParser(prog="dbgov")
    sub = parser.add_subparsers(dest="command", required=True)
    audit = sub.add_parser("audit")
    add_audit_commands(audit.add_subparsers(dest="audit_cmd", required=True), common)
    add_witness_command(sub, common)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code
