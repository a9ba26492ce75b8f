"""Ledger speed: journal appends, sequencer integration and full verification, measured.

No proxy and no database: the three stages of the write-ahead audit are driven
directly, the way the proxy and `dbgov audit verify` drive them.

1. encode: proxy-like events (connections, statements with decisions, completions)
   are encoded with the ledger's canonical JSON (timed on its own: the proxy pays
   it per event too);
2. append: every encoded event goes through `Journal` in strict mode and is made
   durable before the next one is appended (`when_durable` per event, as
   `Audit.write_ahead` does for a single session: one `os.write` per event, the
   worst case; concurrent sessions share writes). The event loop gets control every
   256 events so strict mode's background fdatasync runs as in the proxy;
3. integrate: the real `Sequencer` reads the journal, assigns indices, hashes
   leaves, extends the Merkle range, stores tiles, and a checkpoint is signed after
   every batch (20,000 events);
4. verify: `verify_store` rechecks the whole store from the bodies, once with one
   process and once with its default worker count; best of `repeats` each.

Targets from the issue: append >= 50,000 events/s, verification >= 200,000 events/s.
`python -m bench.ledger_speed --events N` prints the result as JSON; the harness
runs it that way, in a fresh process, so that `verify_store` may fork workers
(it refuses to fork from a threaded process) and the memory is returned afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dbgov.layout import Layout
from dbgov.ledger.canonical import canonical_json
from dbgov.ledger.journal import Journal
from dbgov.ledger.keys import load_or_create_signer
from dbgov.ledger.sequencer import Sequencer
from dbgov.ledger.verify import verify_store

ORIGIN = "dbgov.bench/ledger"
APPEND_TARGET = 50_000
VERIFY_TARGET = 200_000
_CHUNK = 20_000
_YIELD_EVERY = 256
_TABLES = ("public.customers", "public.prompts", "public.feature_store", "public.inference_log")


def _ts(k: int) -> str:
    """A timestamp that advances one microsecond-ish step per statement."""
    return (
        f"2026-03-01T{(k // 3_600_000) % 24:02d}:{(k // 60_000) % 60:02d}:"
        f"{(k // 1000) % 60:02d}.{k % 1_000_000:06d}Z"
    )


def synthetic_events(n: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    """`n` events shaped like the proxy's: a session opens, runs statements, closes."""
    rng = random.Random(seed)
    k = 0
    while True:
        session = f"{rng.getrandbits(48):012x}"
        user, groups = rng.choice(
            [
                ("alice", ["analysts"]),
                ("bob", ["ml-engineers"]),
                ("carol", ["dba"]),
                ("etl", ["pipelines"]),
            ]
        )
        common = {"v": 1, "session": session, "user": user, "target": "prod"}

        batch: list[dict[str, Any]] = [
            {
                **common,
                "type": "connection.open",
                "id": f"{session}:0",
                "ts": _ts(k),
                "groups": groups,
                "client": f"10.0.{rng.randint(0, 255)}.{rng.randint(1, 254)}:"
                f"{rng.randint(1024, 65535)}",
                "auth": "token",
                "tls": True,
                "protocol": "3.0",
                "application_name": "bench",
            }
        ]
        for i in range(1, rng.randint(2, 8)):
            k += 1
            table = rng.choice(_TABLES)
            aid = rng.randint(1, 1_000_000)
            deny = rng.random() < 0.05
            stmt_id = f"{session}:{2 * i - 1}"
            batch.append(
                {
                    **common,
                    "type": "statement",
                    "id": stmt_id,
                    "ts": _ts(k),
                    "sql": f"SELECT * FROM {table} WHERE id = {aid}",
                    "kinds": ["select"],
                    "reads": [table],
                    "fingerprint": f"{rng.getrandbits(64):016x}",
                    "decision": {
                        "verdict": "deny",
                        "rule": "not-granted",
                        "reason": f"{table} is not granted",
                    }
                    if deny
                    else {"verdict": "allow", "grant": "analysts-read"},
                }
            )
            batch.append(
                {
                    **common,
                    "type": "statement.done",
                    "id": f"{session}:{2 * i}",
                    "ts": _ts(k),
                    "ref": stmt_id,
                    "sqlstate": "42501" if deny else "00000",
                    "rows": 0 if deny else rng.randint(0, 50),
                    "duration_us": rng.randint(80, 9000),
                }
            )
        k += 1
        batch.append(
            {
                **common,
                "type": "connection.close",
                "id": f"{session}:c",
                "ts": _ts(k),
                "reason": "client",
                "bytes_in": rng.randint(100, 10_000),
                "bytes_out": rng.randint(100, 90_000),
            }
        )
        for ev in batch:
            yield ev
            n -= 1
            if n == 0:
                return


def _encode(n: int) -> tuple[list[bytes], float]:
    lines: list[bytes] = []
    spent = 0.0
    events = synthetic_events(n)
    while len(lines) < n:
        chunk = [ev for _, ev in zip(range(_CHUNK), events, strict=False)]
        started = time.perf_counter()
        lines.extend(canonical_json(ev) for ev in chunk)
        spent += time.perf_counter() - started
    return lines, spent


async def _append(journal: Journal, lines: list[bytes]) -> tuple[float, int]:
    errors: list[OSError] = []

    def durable(err: OSError | None) -> None:
        if err is not None:
            errors.append(err)

    started = time.perf_counter()
    for i, line in enumerate(lines, 1):
        journal.append(line)
        journal.when_durable(durable)
        if i % _YIELD_EVERY == 0:
            await asyncio.sleep(0)
    journal.close()  # writes and fdatasyncs whatever is left
    return time.perf_counter() - started, len(errors)


def _rate(n: int, seconds: float) -> int:
    return round(n / seconds) if seconds > 0 else 0


def run(events: int, workdir: Path | None = None, repeats: int = 2) -> dict[str, Any]:
    """Measure the ledger stages on `events` synthetic events; returns rates in events/s."""
    own = workdir is None
    root = Path(tempfile.mkdtemp(prefix="dbgov-ledger-")) if workdir is None else workdir
    try:
        layout = Layout(root / "ledger-speed")
        lines, encode_s = _encode(events)
        mean = sum(map(len, lines)) / len(lines)
        journal = Journal(layout.journal, f"{os.getpid()}-bench", "strict")
        append_s, append_errors = asyncio.run(_append(journal, lines))
        del lines
        signer = load_or_create_signer(layout.ledger_key, ORIGIN)
        seq = Sequencer(layout.root, signer, ORIGIN, checkpoint_every=_CHUNK)
        signed = 0
        started = time.perf_counter()
        while seq.integrate_once():
            signed += seq.checkpoint() is not None
        seq.store.sync()
        integrate_s = time.perf_counter() - started
        size = seq.tree.size
        seq.close()
        if size != events:
            raise RuntimeError(f"integrated {size} events, wrote {events}")
        verify: dict[str, Any] = {}
        for label, workers in (("1 process", 1), ("default workers", None)):
            best = None
            for _ in range(max(1, repeats)):
                report = verify_store(layout.ledger_db, signer.verifier, workers=workers)
                if not report.ok:
                    raise RuntimeError(f"verification failed: {report.to_json()}")
                best = report.seconds if best is None else min(best, report.seconds)
            assert best is not None
            verify[label] = {"seconds": round(best, 3), "events_per_s": _rate(events, best)}
        return {
            "events": events,
            "mean_event_bytes": round(mean),
            "checkpoints_signed": signed,
            "encode_per_s": _rate(events, encode_s),
            "append_per_s": _rate(events, append_s),
            "append_errors": append_errors,
            "encode_and_append_per_s": _rate(events, encode_s + append_s),
            "integrate_per_s": _rate(events, integrate_s),
            "integrate_seconds": round(integrate_s, 2),
            "verify": verify,
            "verify_per_s": max(v["events_per_s"] for v in verify.values()),
            "threads_at_verify": threading.active_count(),
            "cpus": os.cpu_count(),
            "targets": {"append_per_s": APPEND_TARGET, "verify_per_s": VERIFY_TARGET},
        }
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    print(json.dumps(run(args.events, args.workdir, args.repeats), indent=2))


if __name__ == "__main__":
    main()
