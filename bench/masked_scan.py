"""Masked full scans: rows per second through dbgov (masking on) against direct.

`SELECT * FROM customers` (5,000 rows, four masked columns: two pseudonyms, a
partial, a redaction) and `SELECT * FROM prompts` (20,000 rows, two pii_text
columns, about one text in five holding PII), read by an identity that sees them
masked (the demo's alice) through the proxy, and by the table owner directly.

Two client modes per query, so that the proxy's share is visible:
- "wire": libpq receives every row, nothing is converted to Python objects
  (psycopg `execute` without fetching): the proxy's cost dominates;
- "fetch": the rows are also converted to Python objects, as an application does.

Each figure is the best of `repeats` runs after one warm-up (the machine is shared;
the best run is the least disturbed), dbgov and direct taking turns scan by scan.
`run()` is what the bench harness calls; `python -m bench.masked_scan --data-dir
DIR` measures a running `dbgov up`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import psycopg

QUERIES = {
    "customers": "SELECT * FROM customers",
    "prompts": "SELECT * FROM prompts",
}
TARGETS = {"customers": 0.5, "prompts": 0.25}  # masked/direct rows/s, from the issue


def _scan(conn: psycopg.Connection[Any], sql: str, fetch: bool) -> tuple[float, int]:
    start = time.perf_counter()
    cur = conn.execute(sql)
    rows = len(cur.fetchall()) if fetch else (cur.pgresult.ntuples if cur.pgresult else 0)
    return time.perf_counter() - start, rows


def _best(
    dbgov_dsn: str, direct_dsn: str, sql: str, fetch: bool, repeats: int
) -> tuple[float, float, float, int]:
    """(dbgov's first seconds, dbgov's best, direct's best, rows). The two sides take
    turns, scan for scan, so that a burst of load on the shared machine falls on
    both rather than on one side's whole series."""
    with (
        psycopg.connect(dbgov_dsn, autocommit=True) as masked,
        psycopg.connect(direct_dsn, autocommit=True) as direct,
    ):
        first, rows = _scan(masked, sql, fetch)  # warm-up: catalog, plans, masking memo
        _, direct_rows = _scan(direct, sql, fetch)
        if rows != direct_rows:
            raise RuntimeError(f"{sql}: {rows} rows masked, {direct_rows} direct")
        best_masked = best_direct = float("inf")
        for _ in range(max(1, repeats)):
            best_masked = min(best_masked, _scan(masked, sql, fetch)[0])
            best_direct = min(best_direct, _scan(direct, sql, fetch)[0])
    return first, best_masked, best_direct, rows


def run(dbgov_dsn: str, direct_dsn: str, repeats: int = 15) -> dict[str, Any]:
    """Rows/s masked through dbgov and direct, per query and client mode.

    `dbgov_dsn` must be an identity that sees the demo columns masked (alice);
    `direct_dsn` the table owner on the same database, bypassing dbgov.
    """
    out: dict[str, Any] = {}
    for name, sql in QUERIES.items():
        for mode in ("wire", "fetch"):
            first, masked_s, direct_s, rows = _best(
                dbgov_dsn, direct_dsn, sql, mode == "fetch", repeats
            )
            masked_rate = rows / masked_s
            direct_rate = rows / direct_s
            out[f"{name}/{mode}"] = {
                "rows": rows,
                "masked_rows_per_s": round(masked_rate),
                # The first scan: values not yet in the maskers' memo (cold, on a fresh
                # worker; warm if something read these rows before).
                "masked_first_rows_per_s": round(rows / first),
                "direct_rows_per_s": round(direct_rate),
                "ratio": round(masked_rate / direct_rate, 3),
                "target_ratio": TARGETS[name],
            }
    return out


def _dsns(data_dir: Path, user: str) -> tuple[str, str]:
    """DSNs for a running `dbgov up`: `user` through the proxy, the owner direct."""
    from dbgov.demo.world import IDENTITIES
    from dbgov.identity.issuer import LocalIssuer

    state = json.loads((data_dir / "state.json").read_text())
    issuer = LocalIssuer.from_file(data_dir / "keys" / "issuer.key", "dbgov-local", "dbgov")
    token = issuer.issue(user, list(IDENTITIES.get(user, [])), 3600)
    host, _, port = str(state["proxy"]).rpartition(":")
    proxied = psycopg.conninfo.make_conninfo(
        host=host, port=port, user=user, dbname="prod", password=token, sslmode="disable"
    )
    direct = str(state["admin_dsn"]).replace("dbname=postgres", "dbname=prod")
    return proxied, direct.replace("user=postgres", "user=dbgov_app")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=Path(".dbgov"))
    ap.add_argument("--user", default="alice")
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    proxied, direct = _dsns(args.data_dir, args.user)
    print(json.dumps(run(proxied, direct, args.repeats), indent=2))


if __name__ == "__main__":
    main()
