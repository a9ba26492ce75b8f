"""Real clients through the proxy: psql, pgbench, psycopg 3, asyncpg (proxy core, item 9)."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import subprocess
import uuid

import asyncpg
import psycopg
import pytest


def test_pgbench_simple_and_prepared(dbgov):
    dbgov.admin("DROP DATABASE IF EXISTS bench_probe")
    # pgbench tables live in staging; carol (dba) may create them there
    env = dict(os.environ, PGPASSWORD=dbgov.token("carol"))
    base = [dbgov.pgbench, "-h", dbgov.host, "-p", str(dbgov.port), "-U", "carol"]
    init = subprocess.run(
        [*base, "-i", "-s", "1", "-q", "-I", "dtgvp", "staging"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert init.returncode == 0, init.stderr
    for mode in ("simple", "extended", "prepared"):
        run = subprocess.run(
            [*base, "-S", "-M", mode, "-c", "4", "-j", "2", "-t", "50", "staging"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        assert "number of transactions actually processed: 200/200" in run.stdout
    tpcb = subprocess.run(
        [*base, "-c", "2", "-t", "20", "staging"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tpcb.returncode == 0, tpcb.stderr
    hist = dbgov.app("SELECT count(*) FROM pgbench_history", target="staging")[0][0]
    assert hist == 40


def test_psycopg_text_and_binary(dbgov):
    with psycopg.connect(dbgov.dsn("carol")) as conn:
        row = conn.execute(
            "SELECT id, email, created_at FROM customers WHERE id = %s", (7,)
        ).fetchone()
        assert row[0] == 7 and "@" in row[1] and isinstance(row[2], datetime.datetime)
        with conn.cursor(binary=True) as cur:
            cur.execute("SELECT id, score, features FROM inference_log WHERE id = %s", (3,))
            rid, score, features = cur.fetchone()
            assert rid == 3 and isinstance(score, float) and isinstance(features, dict)
        # server-side cursor (DECLARE/FETCH) and executemany (pipelined)
        with conn.cursor(name="srv") as cur:
            cur.execute("SELECT id FROM customers ORDER BY id")
            assert [r[0] for r in cur.fetchmany(3)] == [1, 2, 3]
        tag = uuid.uuid4().hex[:8]
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO training_runs (model, started_at, rows_used) VALUES (%s, now(), %s)",
                [(f"probe-{tag}", i) for i in range(5)],
            )
        conn.commit()
    assert dbgov.app("SELECT count(*) FROM training_runs WHERE model = %s", (f"probe-{tag}",)) == [
        (5,)
    ]


def test_psycopg_pipeline_mode(dbgov):
    with psycopg.connect(dbgov.dsn("carol"), autocommit=True) as conn:
        with conn.pipeline():
            curs = [conn.execute("SELECT %s::int * 2", (i,)) for i in range(10)]
        assert [c.fetchone()[0] for c in curs] == [i * 2 for i in range(10)]


def test_asyncpg_binary_prepared_and_copy(dbgov):
    async def run() -> None:
        conn = await asyncpg.connect(
            host=dbgov.host,
            port=dbgov.port,
            user="carol",
            password=dbgov.token("carol"),
            database="staging",
            ssl=False,
        )
        try:
            stmt = await conn.prepare(
                "SELECT id, full_name, created_at FROM customers WHERE id = $1"
            )
            for i in (1, 2, 3):
                row = await stmt.fetchrow(i)
                assert row["id"] == i and isinstance(row["created_at"], datetime.datetime)
            assert await conn.fetchval("SELECT $1::numeric + 1", 41) == 42
            rows = await conn.fetch("SELECT g FROM generate_series(1, 1000) g")
            assert len(rows) == 1000
            await conn.execute("CREATE TEMP TABLE t_copy (a int, b text)")
            await conn.copy_records_to_table("t_copy", records=[(i, f"r{i}") for i in range(100)])
            assert await conn.fetchval("SELECT count(*) FROM t_copy") == 100
            out: list[bytes] = []

            async def sink(chunk: bytes) -> None:
                out.append(chunk)

            await conn.copy_from_query("SELECT a FROM t_copy WHERE a < 3 ORDER BY a", output=sink)
            assert b"".join(out) == b"0\n1\n2\n"
            async with conn.transaction():
                cur = await conn.cursor("SELECT g FROM generate_series(1, 10) g")
                assert [r[0] for r in await cur.fetch(4)] == [1, 2, 3, 4]
        finally:
            await conn.close()

    asyncio.run(run())


def test_asyncpg_over_tls(dbgov):
    import ssl

    async def run() -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = await asyncpg.connect(
            host=dbgov.host,
            port=dbgov.port,
            user="carol",
            password=dbgov.token("carol"),
            database="prod",
            ssl=ctx,
        )
        assert await conn.fetchval("SELECT 'tls'") == "tls"
        await conn.close()

    asyncio.run(run())


def test_statements_are_recorded_per_identity(dbgov):
    marker = uuid.uuid4().hex
    with psycopg.connect(dbgov.dsn("carol")) as conn:
        conn.execute(f"SELECT '{marker}'::text, %s::int", (5,))
    evs = dbgov.wait_events(lambda e: marker in e.get("sql", ""), types=["statement"])
    assert len(evs) == 1
    ev = evs[0]
    assert ev["user"] == "carol" and ev["target"] == "prod" and ev["params"] == ["5"]
    assert ev["kinds"] == ["select"] and ev["fingerprint"]
    done = dbgov.wait_events(lambda e: e.get("ref") == ev["id"], types=["statement.done"])
    assert done and done[0]["rows"] == [1] and done[0]["sqlstate"] == "00000"
    assert done[0]["duration_us"] >= 0


@pytest.mark.parametrize("user", ["carol", "etl"])
def test_session_open_and_close_events(dbgov, user):
    with psycopg.connect(dbgov.dsn(user, application_name="nb-42")):
        pass
    opens = dbgov.wait_events(
        lambda e: e["user"] == user and e.get("application_name") == "nb-42",
        types=["connection.open"],
    )
    assert opens
    sid = opens[-1]["session"]
    closes = dbgov.wait_events(lambda e: e.get("session") == sid, types=["connection.close"])
    assert closes and closes[0]["duration_us"] > 0


def test_secret_bind_parameters_never_enter_the_ledger(dbgov):
    # The demo policy marks parameters of statements on customers as secret.
    email = dbgov.app("SELECT email FROM customers WHERE id = 11")[0][0]
    with psycopg.connect(dbgov.dsn("carol")) as conn:
        for _ in range(2):
            conn.execute("SELECT id FROM customers WHERE email = %s", (email,))
    evs = dbgov.wait_events(
        lambda e: e.get("sql") == "SELECT id FROM customers WHERE email = $1",
        types=["statement"],
        count=2,
    )
    assert len(evs) >= 2
    params = [e["params"][0] for e in evs[-2:]]
    assert all(p.startswith("hmac:") for p in params) and params[0] == params[1]
    assert email not in json.dumps(evs)
