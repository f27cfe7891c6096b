"""The dashboard's pages, actions and API through Starlette's test client, on both databases.

Runs of ``tests.dashboard.app`` are driven in this process by a harness (the
worker) on a real store; the dashboard reads and writes the same store, as
``sagaledger serve`` would.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from starlette.testclient import TestClient

from sagaledger._redact import REDACTED, Redactor
from sagaledger.dashboard import create_app
from sagaledger.store import EventType, RunStatus, utc_now
from sagaledger.testing import SagaHarness
from tests.dashboard import app
from tests.dashboard.conftest import AUDITOR, OPERATOR, Runs, Tokens

SECRETS = (app.API_KEY, app.CARD)


@pytest.fixture
def client(harness: SagaHarness) -> TestClient:
    dashboard = create_app(harness.log, redact=Redactor(["card_number"]))
    return TestClient(dashboard, follow_redirects=False)


def log_in(client: TestClient, token: str) -> str:
    """Log in with ``token``; return the session's CSRF token, read off a page."""
    response = client.post("/login", data={"token": token, "next": "/runs"})
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/runs"
    return csrf_of(client.get("/runs").text)


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def worker_runs(harness: SagaHarness) -> None:
    harness.advance(timedelta(minutes=1))
    harness.run_until_idle()


# -- authentication -------------------------------------------------------------


def test_without_a_token_pages_go_to_login_and_the_rest_is_refused(
    client: TestClient, runs: Runs, tokens: Tokens
) -> None:
    # A page redirects to the login form, remembering where it was going
    page = client.get(f"/runs/{runs.parked.id}")
    assert page.status_code == 303
    assert page.headers["location"] == f"/login?next=%2Fruns%2F{runs.parked.id}"
    # The API and every action answer 401
    assert client.get("/api/runs").status_code == 401
    post = client.post(f"/runs/{runs.parked.id}/retry-compensation", data={"reason": "x"})
    assert post.status_code == 401
    assert post.headers["www-authenticate"].startswith("Bearer")
    # A wrong bearer token is no better
    wrong = {"authorization": "Bearer sl_not-a-token"}
    assert client.get("/api/runs", headers=wrong).status_code == 401
    assert client.get("/login").status_code == 200


def test_an_unknown_token_does_not_log_in(client: TestClient, tokens: Tokens) -> None:
    response = client.post("/login", data={"token": tokens.operator + "x", "next": "/runs"})

    assert response.status_code == 401
    assert "unknown or revoked token" in response.text
    assert client.get("/runs").status_code == 303


def test_login_goes_back_to_this_site_only(client: TestClient, tokens: Tokens) -> None:
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        response = client.post("/login", data={"token": tokens.auditor, "next": target})
        assert response.headers["location"] == "/runs"


def test_a_revoked_token_ends_its_sessions(
    client: TestClient, harness: SagaHarness, tokens: Tokens
) -> None:
    log_in(client, tokens.operator)
    assert client.get("/runs").status_code == 200

    harness.log.tokens.revoke(OPERATOR, by="test", now=utc_now())

    assert client.get("/runs").status_code == 303
    assert client.get("/api/runs", headers=bearer(tokens.operator)).status_code == 401


def test_logging_out_ends_the_session(client: TestClient, tokens: Tokens) -> None:
    csrf = log_in(client, tokens.auditor)
    assert client.post("/logout", data={}).status_code == 403  # no CSRF token: refused

    assert client.post("/logout", data={"csrf": csrf}).status_code == 303

    assert client.get("/runs").status_code == 303


# -- pages ----------------------------------------------------------------------


def test_runs_list_filters_by_status_saga_key_and_time(
    client: TestClient, runs: Runs, tokens: Tokens
) -> None:
    log_in(client, tokens.auditor)

    def listed(query: str) -> set[str]:
        page = client.get(f"/runs?{query}")
        assert page.status_code == 200, page.text
        return set(re.findall(r'<tr data-run="([0-9a-f]+)"', page.text))

    everyone = {runs.parked.id, runs.waiting.id, runs.completed.id}
    assert listed("") == everyone
    assert listed("status=parked") == {runs.parked.id}
    assert listed("saga=dash_approval") == {runs.waiting.id}
    assert listed("key=O-DONE") == {runs.completed.id}
    assert listed("status=completed&saga=dash_approval") == set()
    tomorrow = (utc_now() + timedelta(days=1)).date().isoformat()
    yesterday = (utc_now() - timedelta(days=1)).date().isoformat()
    assert listed(f"from={yesterday}&to={tomorrow}") == everyone
    assert listed(f"from={tomorrow}") == set()
    bad = client.get("/runs?from=soon")
    assert bad.status_code == 400
    assert "from &#39;soon&#39; is not a date" in bad.text


def test_a_parked_run_shows_its_timeline_redacted_and_its_actions(
    client: TestClient, runs: Runs, tokens: Tokens
) -> None:
    log_in(client, tokens.operator)

    page = client.get(f"/runs/{runs.parked.id[:10]}")  # a prefix of the id will do

    assert page.status_code == 200
    text = page.text
    assert runs.parked.id in text and "O-PARKED" in text
    assert "payments refused the refund" in text  # why it is blocked
    for words in ("run started", "step completed", "compensation failed", "run parked"):
        assert words in text
    assert not any(secret in text for secret in SECRETS)
    assert text.count(REDACTED) >= 2  # the card number in the input, the charge's API key
    actions = re.findall(r'data-action="([a-z-]+)"', text)
    assert actions == ["retry-compensation", "resolve"]


def test_an_unknown_run_is_a_404(client: TestClient, tokens: Tokens) -> None:
    log_in(client, tokens.auditor)
    assert client.get("/runs/ffffffff").status_code == 404
    assert client.get("/api/runs/ffffffff", headers=bearer(tokens.auditor)).status_code == 404


def test_parked_runs_and_pending_approvals_are_listed_with_their_actions(
    client: TestClient, runs: Runs, tokens: Tokens
) -> None:
    log_in(client, tokens.operator)

    parked = client.get("/parked").text
    approvals = client.get("/approvals").text

    assert runs.parked.id in parked and runs.waiting.id not in parked
    assert "payments refused the refund" in parked
    assert 'data-action="retry-compensation"' in parked
    assert runs.waiting.id in approvals and OPERATOR in approvals
    assert re.findall(r'data-action="([a-z-]+)"', approvals) == ["approve", "reject"]
    assert app.CARD not in approvals


def test_the_ledger_highlights_the_runs_that_do_not_balance(
    client: TestClient, runs: Runs, tokens: Tokens
) -> None:
    log_in(client, tokens.auditor)

    page = client.get("/ledger").text

    unbalanced = re.findall(r'<tr class="unbalanced" data-run="([0-9a-f]+)"', page)
    assert unbalanced == [runs.parked.id]
    assert f'<tr class="" data-run="{runs.completed.id}"' in page
    assert "outstanding" in page and "ch-O-PARKED" in page
    assert client.get("/ledger?from=nope").status_code == 400


# -- actions --------------------------------------------------------------------


def test_an_operator_retries_a_parked_compensation_on_the_record(
    client: TestClient, harness: SagaHarness, runs: Runs, tokens: Tokens
) -> None:
    csrf = log_in(client, tokens.operator)

    response = client.post(
        f"/runs/{runs.parked.id}/retry-compensation",
        data={"csrf": csrf, "reason": "refunds work again"},
    )

    assert response.status_code == 303
    assert response.headers["location"] == f"/runs/{runs.parked.id}"
    page = client.get(response.headers["location"]).text
    assert "Retry compensation: a worker retries the compensation of step" in page
    action = [e for e in harness.events(runs.parked.id) if e.type is EventType.OPERATOR_ACTION]
    assert [(e.actor, e.payload["reason"]) for e in action] == [
        (f"{OPERATOR} (dashboard)", "refunds work again")
    ]
    worker_runs(harness)
    assert harness.status(runs.parked.id) is RunStatus.COMPENSATED


def test_an_operator_approves_a_pending_approval_as_themselves(
    client: TestClient, harness: SagaHarness, runs: Runs, tokens: Tokens
) -> None:
    csrf = log_in(client, tokens.operator)

    response = client.post(
        f"/runs/{runs.waiting.id}/approve", data={"csrf": csrf, "reason": "looks right"}
    )

    assert response.status_code == 303
    worker_runs(harness)
    assert harness.status(runs.waiting.id) is RunStatus.COMPLETED
    decided = [e for e in harness.events(runs.waiting.id) if e.type is EventType.APPROVAL_DECIDED]
    assert [(e.actor, e.payload["reason"]) for e in decided] == [(OPERATOR, "looks right")]


def test_a_refused_action_says_why_and_changes_nothing(
    client: TestClient, harness: SagaHarness, runs: Runs, tokens: Tokens
) -> None:
    csrf = log_in(client, tokens.operator)

    response = client.post(
        f"/runs/{runs.completed.id}/resolve", data={"csrf": csrf, "reason": "by hand"}
    )
    page = client.get(response.headers["location"]).text

    assert f"cannot resolve run &#39;{runs.completed.id}&#39;: it is completed" in page
    assert harness.status(runs.completed.id) is RunStatus.COMPLETED


def test_an_action_needs_a_reason_and_the_forms_csrf_token(
    client: TestClient, harness: SagaHarness, runs: Runs, tokens: Tokens
) -> None:
    csrf = log_in(client, tokens.operator)
    url = f"/runs/{runs.parked.id}/retry-compensation"

    no_reason = client.post(url, data={"csrf": csrf, "reason": "  "})
    no_csrf = client.post(url, data={"reason": "forged"})
    stale = client.post(url, data={"csrf": "guess", "reason": "forged"})

    assert no_reason.status_code == 303
    assert "a reason is required" in client.get(no_reason.headers["location"]).text
    assert (no_csrf.status_code, stale.status_code) == (403, 403)
    assert harness.status(runs.parked.id) is RunStatus.PARKED
    assert not [e for e in harness.events(runs.parked.id) if e.type is EventType.OPERATOR_ACTION]


def test_an_auditor_reads_everything_and_acts_on_nothing(
    client: TestClient, harness: SagaHarness, runs: Runs, tokens: Tokens
) -> None:
    csrf = log_in(client, tokens.auditor)

    for url in (f"/runs/{runs.parked.id}", "/parked", "/approvals", "/ledger", "/runs"):
        page = client.get(url)
        assert page.status_code == 200, url
        assert "data-action=" not in page.text, url
    forged = client.post(
        f"/runs/{runs.parked.id}/retry-compensation", data={"csrf": csrf, "reason": "sneaky"}
    )
    by_api = client.post(
        f"/api/runs/{runs.waiting.id}/approve",
        json={"reason": "sneaky"},
        headers=bearer(tokens.auditor),
    )

    assert (forged.status_code, by_api.status_code) == (403, 403)
    assert "auditor" in forged.json()["error"]
    assert harness.status(runs.parked.id) is RunStatus.PARKED
    assert not [e for e in harness.events(runs.parked.id) if e.type is EventType.OPERATOR_ACTION]


# -- the API --------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_the_api_serves_redacted_json_and_takes_actions_by_bearer_token(
    client: TestClient, harness: SagaHarness, runs: Runs, tokens: Tokens
) -> None:
    auditor = bearer(tokens.auditor)

    listed = client.get("/api/runs?status=parked", headers=auditor).json()
    shown = client.get(f"/api/runs/{runs.parked.id}", headers=auditor)
    approvals = client.get("/api/approvals", headers=auditor).json()
    ledger = client.get("/api/ledger", headers=auditor).json()
    acted = client.post(
        f"/api/runs/{runs.parked.id}/resolve",
        json={"reason": "refunded by hand, ticket 7"},
        headers=bearer(tokens.operator),
    )

    assert [r["id"] for r in listed["runs"]] == [runs.parked.id]
    assert listed["runs"][0]["input"]["card_number"] == REDACTED
    assert shown.status_code == 200
    assert not any(secret in shown.text for secret in SECRETS)
    charged = [e for e in shown.json()["events"] if e["type"] == "step_completed"]
    assert charged[1]["payload"]["output"]["api_key"] == REDACTED
    assert [a["run_id"] for a in approvals["approvals"]] == [runs.waiting.id]
    assert ledger["unbalanced"] == [runs.parked.id]
    assert acted.status_code == 200, acted.text
    assert "resolved" in acted.json()["note"]
    assert harness.status(runs.parked.id) is RunStatus.RESOLVED
    event = harness.events(runs.parked.id)[-1]
    assert (event.type, event.actor) == (EventType.OPERATOR_ACTION, f"{OPERATOR} (dashboard)")


def test_every_answer_carries_the_security_headers(client: TestClient, tokens: Tokens) -> None:
    log_in(client, tokens.auditor)
    headers = client.get("/runs").headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["cache-control"] == "no-store"
    cookie = client.post("/login", data={"token": tokens.auditor}).headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()


def test_the_auditor_fixture_names_who_holds_it(harness: SagaHarness, tokens: Tokens) -> None:
    assert [(t.name, t.role.value) for t in harness.log.tokens.list()] == [
        (OPERATOR, "operator"),
        (AUDITOR, "auditor"),
    ]
