"""Web fixtures: real traffic through the session's `dbgov up`, then the app in-process.

The dashboard is driven with Starlette's TestClient over `build_app(config)` on the
same data dir as the running proxy, so pages and API read the very ledger the
proxy wrote. Logins go through the real login form with real tokens.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Dbgov

warnings.filterwarnings("ignore", message=".*httpx.*", category=DeprecationWarning)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

# Literals that must never reach alice's screen: they touch masked tables.
SECRET_EMAIL = "zelda.secret@example.com"
SECRET_ID = 4242
# "id = 4242" as its own words: pgbench's "aid = 42421" (other tests share this world)
# and "customer_id = 4242" are not our literal.
_SECRET_ID_SQL = re.compile(rf"\bid = {SECRET_ID}\b")


def names_secret_id(text: str) -> bool:
    return _SECRET_ID_SQL.search(text) is not None


@pytest.fixture(scope="session")
def traffic(dbgov: Dbgov) -> Dbgov:
    """A known mix of activity, integrated into the ledger before any test reads it."""
    dbgov.psql_run(
        "alice", f"SELECT full_name, email FROM customers WHERE id = {SECRET_ID}", check=True
    )
    dbgov.psql_run("alice", "SELECT count(*) FROM inference_log WHERE score > 0.5", check=True)
    dbgov.psql_run("alice", f"SELECT id FROM customers WHERE email = '{SECRET_EMAIL}'")  # denied
    dbgov.psql_run("alice", "DELETE FROM customers WHERE id = 1")  # denied: no grant
    dbgov.psql_run("bob", "SELECT phone FROM customers LIMIT 1", check=True)
    dbgov.psql_run(
        "bob",
        "INSERT INTO training_runs (model, started_at, rows_used) VALUES ('churn-v2', now(), 7)",
        check=True,
    )
    dbgov.psql_run("carol", f"SELECT ssn FROM customers WHERE id = {SECRET_ID}", check=True)
    dbgov.psql_run("alice", "SELECT 1", password="not-a-token")  # failed login
    assert dbgov.wait_events(
        lambda e: e.get("user") == "carol" and names_secret_id(e.get("sql", ""))
    )
    assert dbgov.wait_events(lambda e: e["type"] == "auth.failed")
    # statement.done events trail their statements; wait for carol's to land.
    assert dbgov.wait_events(lambda e: e["type"] == "statement.done" and e.get("user") == "carol")
    return dbgov


def config_of(d: Dbgov) -> Any:
    from dbgov.config import load_config

    return load_config(d.data_dir / "run" / "config.json")


@pytest.fixture(scope="session")
def web_app(traffic: Dbgov) -> Any:
    from dbgov.web.app import build_app

    return build_app(config_of(traffic))


def login(client: TestClient, token: str) -> None:
    page = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf, page.text
    r = client.post(
        "/login", data={"token": token, "csrf_token": csrf.group(1)}, follow_redirects=False
    )
    assert r.status_code == 303, r.text


@pytest.fixture
def client_for(web_app: Any, traffic: Dbgov) -> Iterator[Callable[..., TestClient]]:
    """`client_for("alice")`: a TestClient logged in as a demo identity."""
    clients: list[TestClient] = []

    def make(user: str, base_url: str = "http://127.0.0.1") -> TestClient:
        client = TestClient(web_app, base_url=base_url)
        client.__enter__()
        clients.append(client)
        login(client, traffic.token(user))
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def csrf_headers(client: TestClient) -> dict[str, str]:
    return {"X-CSRF-Token": client.cookies.get("dbgov_csrf") or ""}


@pytest.fixture
def data_dir(traffic: Dbgov) -> Path:
    return traffic.data_dir
