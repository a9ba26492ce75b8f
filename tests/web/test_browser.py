"""In a real browser: carol watches bob's held ALTER appear live, approves it, sees it run.

Headless Chromium from Debian (`apt-get install chromium`), driven by Playwright's
Python API; never a downloaded browser. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import secrets
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Dbgov

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def browser_page() -> Any:
    # `make test` installs Debian's chromium first: a missing browser is a failure,
    # not a reason to skip the only end-to-end check of the dashboard.
    assert Path(CHROMIUM).exists(), (
        f"{CHROMIUM} not found: apt-get install chromium chromium-driver (make test does)"
    )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.errors = errors  # type: ignore[attr-defined]
        try:
            yield page
        finally:
            context.close()
            browser.close()


def test_carol_approves_bobs_alter_live(traffic: Dbgov, browser_page: Any) -> None:
    page = browser_page
    ARTIFACTS.mkdir(exist_ok=True)
    base = f"http://127.0.0.1:{traffic.web_port}"
    column = f"note_{secrets.token_hex(3)}"
    sql = f"ALTER TABLE feature_store ADD COLUMN {column} text"

    page.goto(f"{base}/login")
    page.fill("textarea[name=token]", traffic.token("carol"))
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/live")
    page.wait_for_selector("#live-state:has-text('live')", timeout=10_000)
    page.screenshot(path=str(ARTIFACTS / "live-before.png"), full_page=True)

    result: dict[str, Any] = {}
    bob = threading.Thread(target=lambda: result.update(res=traffic.psql_run("bob", sql)))
    bob.start()
    try:
        seen = traffic.wait_events(
            lambda e: (
                column in e.get("sql", "")
                and (e["type"] == "approval.requested" or e["type"] == "statement")
            ),
            timeout=15,
        )
        assert seen, "bob's ALTER never reached the ledger"
        pending = page.wait_for_selector(f"tr.st.pending:has-text('{column}')", timeout=15_000)
        assert pending is not None
        page.screenshot(path=str(ARTIFACTS / "live-pending.png"), full_page=True)

        page.goto(f"{base}/approvals")
        row = page.wait_for_selector(f"tr:has-text('{column}')", timeout=10_000)
        assert row is not None
        page.fill(f"tr:has-text('{column}') input[name=reason]", "reviewed in the browser test")
        page.screenshot(path=str(ARTIFACTS / "approvals.png"), full_page=True)
        page.click(f"tr:has-text('{column}') button.approve")
        page.wait_for_selector("text=approved", timeout=10_000)

        page.goto(f"{base}/live")
        done = page.wait_for_selector(
            f"tr.st.allowed:has-text('{column}'), tr.st.masked:has-text('{column}')", timeout=20_000
        )
        assert done is not None and "ALTER TABLE" in done.inner_text()
        page.screenshot(path=str(ARTIFACTS / "live-approved.png"), full_page=True)
    finally:
        bob.join(60)
    assert result["res"].returncode == 0, result["res"].stderr
    cols = traffic.app(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'feature_store'"
    )
    assert (column,) in cols
    assert not [e for e in page.errors if "Content Security Policy" in e], page.errors


def test_live_page_streams_new_statements(traffic: Dbgov, browser_page: Any) -> None:
    """The Live page, served by the real `dbgov up`: a new statement arrives over SSE,
    the charts draw, and the strict CSP holds (no violations in the console)."""
    page = browser_page
    ARTIFACTS.mkdir(exist_ok=True)
    base = f"http://127.0.0.1:{traffic.web_port}"
    page.goto(f"{base}/login")
    page.fill("textarea[name=token]", traffic.token("dave"))
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/live")
    page.wait_for_selector("#live-state:has-text('live')", timeout=10_000)
    marker = secrets.randbelow(10**9)
    traffic.psql_run(
        "bob", f"SELECT count(*) FROM training_runs WHERE rows_used > {marker}", check=True
    )
    row = page.wait_for_selector(f"tr.st:has-text('{marker}')", timeout=15_000)
    assert row is not None and "bob" in row.inner_text()
    page.wait_for_selector(".chart .uplot", timeout=10_000)
    page.wait_for_selector(".meters .meter-row", timeout=10_000)
    page.screenshot(path=str(ARTIFACTS / "live-stream.png"), full_page=True)
    assert not [e for e in page.errors if "Content Security Policy" in e], page.errors
