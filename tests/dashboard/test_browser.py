"""The dashboard in a real headless Chromium, driven by Playwright, against ``sagaledger serve``.

``sagaledger serve`` runs as a subprocess on a free loopback port over a store
holding a run parked while compensating (its refund was refused; mended
since), a run waiting for an approval, and a finished one. This process plays
the worker (a :class:`SagaHarness` on the same store) and the people: an
operator logs in, finds the parked run by its status, reads its timeline,
retries its compensation and approves the pending approval; an auditor reads
but cannot act; a browser without a token is sent to the login form, and its
POSTs are refused.

Debian's Chromium (``/usr/bin/chromium``, installed by ``.ci/run``) is used,
never a downloaded one. Both tests run on SQLite and on PostgreSQL.

The operator's test takes a screenshot of the run's timeline; with
``DASHBOARD_SCREENSHOT=docs/dashboard-timeline.png`` it writes the one the docs show.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from sagaledger.store import EventType, RunStatus, utc_now
from sagaledger.testing import ManualClock, SagaHarness
from tests.dashboard import app
from tests.dashboard.conftest import OPERATOR, Runs, Tokens, add_tokens, prepare_runs

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
#: The flags that work on these machines: no sandbox as root, no network but loopback.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Where the docs' screenshot is written, when asked for (else the test's own directory).
SCREENSHOT = os.environ.get("DASHBOARD_SCREENSHOT")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[str]


def serve(store: str, tmp_path: Path) -> Server:
    """``sagaledger serve`` on a free port, once it answers; one retry on another port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGALEDGER_")}
    env["SAGALEDGER_REDACT"] = "card_number"
    for _ in range(2):
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "sagaledger", "serve", "--port", str(port), "--store", store],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / f"serve-{port}.log", "w"),  # noqa: SIM115
            text=True,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{url}/login", timeout=1).status_code == 200:
                    return Server(url, process)
            except httpx.TransportError:
                time.sleep(0.1)
        process.kill()
        process.wait()
    raise AssertionError((tmp_path / f"serve-{port}.log").read_text())


@pytest.fixture
def harness(store_url: str) -> Iterator[SagaHarness]:
    """The worker, driven by hand, on a fresh store (SQLite, then PostgreSQL)."""
    app.BROKEN.clear()
    harness = SagaHarness(app.registry, store_url=store_url, clock=ManualClock(utc_now()))
    yield harness
    harness.close()
    app.BROKEN.clear()


@pytest.fixture
def server(harness: SagaHarness, tmp_path: Path) -> Iterator[Server]:
    store = harness.log.engine.url.render_as_string(hide_password=False)
    running = serve(store, tmp_path)
    yield running
    running.process.terminate()
    try:
        running.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        running.process.kill()
        running.process.wait()


@pytest.fixture
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium (apt)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


def worker_runs(harness: SagaHarness) -> None:
    """The worker wakes (a minute later, past the wake-up the dashboard wrote) and drives."""
    harness.advance(timedelta(minutes=1))
    harness.run_until_idle()


def log_in(context: BrowserContext, server: Server, token: str) -> Page:
    page = context.new_page()
    page.goto(f"{server.url}/runs")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fruns$"))
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{server.url}/runs")
    return page


def test_an_operator_finds_a_parked_run_retries_it_and_approves_an_approval(
    harness: SagaHarness, server: Server, browser: Browser, tmp_path: Path
) -> None:
    runs: Runs = prepare_runs(harness)
    tokens: Tokens = add_tokens(harness.log)
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = log_in(context, server, tokens.operator)

    # The operator finds the parked run by filtering the runs by status
    page.get_by_label("Status").select_option("parked")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("#runs tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("O-PARKED")
    rows.first.get_by_role("link").click()

    # Its page shows why it is blocked and its timeline, secrets redacted
    expect(page).to_have_url(f"{server.url}/runs/{runs.parked.id}")
    expect(page.locator("#blocked")).to_contain_text("payments refused the refund")
    timeline = page.locator("#timeline")
    expect(timeline).to_contain_text("compensation failed")
    expect(timeline).to_contain_text("run parked")
    expect(page.locator("#run-input")).to_contain_text("[redacted]")
    assert app.CARD not in page.content() and app.API_KEY not in page.content()

    # It retries the compensation with a reason; a worker unwinds the run
    retry = page.locator('form[data-action="retry-compensation"]')
    retry.get_by_placeholder("reason (required)").fill("payments mended, INC-42")
    retry.get_by_role("button", name="Retry compensation").click()
    expect(page.get_by_role("status")).to_contain_text("a worker retries the compensation")
    worker_runs(harness)
    page.reload()
    expect(page.locator("#run-header")).to_contain_text("compensated")
    expect(timeline).to_contain_text("operator action")
    expect(timeline).to_contain_text(f"retry-compensation by {OPERATOR} (dashboard)")
    expect(page.locator("#actions")).to_have_count(0)
    shot = Path(SCREENSHOT) if SCREENSHOT else tmp_path / "timeline.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes().startswith(b"\x89PNG")
    acted = [e for e in harness.events(runs.parked.id) if e.type is EventType.OPERATOR_ACTION]
    assert [(e.actor, e.payload["reason"]) for e in acted] == [
        (f"{OPERATOR} (dashboard)", "payments mended, INC-42")
    ]
    assert harness.status(runs.parked.id) is RunStatus.COMPENSATED

    # It approves the pending approval from the approvals page
    page.get_by_role("link", name="Approvals").click()
    pending = page.locator(f'#approvals tr[data-run="{runs.waiting.id}"]')
    approve = pending.locator('form[data-action="approve"]')
    approve.get_by_placeholder("reason (required)").fill("within budget")
    approve.get_by_role("button", name="Approve").click()
    expect(page).to_have_url(f"{server.url}/runs/{runs.waiting.id}")
    expect(page.get_by_role("status")).to_contain_text("approved: a worker carries the run on")
    worker_runs(harness)
    assert harness.status(runs.waiting.id) is RunStatus.COMPLETED
    decided = [e for e in harness.events(runs.waiting.id) if e.type is EventType.APPROVAL_DECIDED]
    assert [(e.actor, e.payload["reason"]) for e in decided] == [(OPERATOR, "within budget")]
    context.close()


def test_an_auditor_cannot_act_and_a_browser_without_a_token_is_refused(
    harness: SagaHarness, server: Server, browser: Browser
) -> None:
    runs: Runs = prepare_runs(harness)
    tokens: Tokens = add_tokens(harness.log)
    retry_url = f"{server.url}/runs/{runs.parked.id}/retry-compensation"

    # An auditor reads every page, and sees no action on any
    auditor = browser.new_context()
    page = log_in(auditor, server, tokens.auditor)
    for path in (f"/runs/{runs.parked.id}", "/parked", "/approvals", "/ledger"):
        page.goto(server.url + path)
        expect(page.locator("h1")).to_be_visible()
        expect(page.locator("form[data-action]")).to_have_count(0)
    expect(page.locator("#timeline")).to_have_count(0)  # the ledger page is the last shown
    page.goto(f"{server.url}/runs/{runs.parked.id}")
    expect(page.locator("#timeline")).to_contain_text("run parked")

    # A forged POST, with the auditor's session and its CSRF token, is refused
    csrf = page.locator('header input[name="csrf"]').get_attribute("value")
    assert csrf
    forged = auditor.request.post(retry_url, form={"csrf": csrf, "reason": "sneaky"})
    assert forged.status == 403, forged.text()
    auditor.close()

    # Without a token, a page goes to the login form and a POST gets 401
    stranger = browser.new_context()
    page = stranger.new_page()
    page.goto(f"{server.url}/runs/{runs.parked.id}")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    expect(page.get_by_label("Token")).to_be_visible()
    refused = stranger.request.post(retry_url, form={"reason": "anonymous"})
    assert refused.status == 401
    stranger.close()

    assert harness.status(runs.parked.id) is RunStatus.PARKED
    assert not [e for e in harness.events(runs.parked.id) if e.type is EventType.OPERATOR_ACTION]
