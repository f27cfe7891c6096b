"""``sagaledger simulators``' service: reachable from its printed line, driven over HTTP."""

from __future__ import annotations

import re
import shlex
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sagaledger import OutcomeUnknownError, PermanentError
from sagaledger.connectors.simulators import ENDPOINTS_ENV, Endpoints, LocalConnectors
from sagaledger.connectors.simulators._serve import serve

ANY_PORT = {"payments": 0, "erp": 0, "email_api": 0, "smtp": 0, "smtp_control": 0}


class Running:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.stop = threading.Event()
        self.ledgers: dict[str, Any] = {}
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self.ledgers = serve(ANY_PORT, say=self.lines.append, stop=self.stop)

    def line_with(self, text: str) -> str:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = [line for line in self.lines if text in line]
            if found:
                return found[0]
            time.sleep(0.01)
        raise AssertionError(f"no line with {text!r} in {self.lines}")


@pytest.fixture
def running() -> Iterator[Running]:
    service = Running()
    service.thread.start()
    yield service
    service.stop.set()
    service.thread.join(10)
    assert not service.thread.is_alive()


def test_a_worker_finds_the_simulators_from_the_printed_export_line(running: Running) -> None:
    # Given the line a developer pastes into another shell
    export = running.line_with(f"export {ENDPOINTS_ENV}=")
    name, value = shlex.split(export.strip().removeprefix("export "))[0].split("=", 1)
    endpoints = Endpoints.from_env({name: value})

    # Then connectors built from it reach every simulator
    connectors = LocalConnectors.for_endpoints(endpoints)
    try:
        paid = connectors.payments.create_payment(
            amount=1250, currency="usd", payment_method="pm_card_visa", idempotency_key="k-1"
        )
        connectors.mailer.send_email(
            sender="shop@example.com",
            to=["ada@example.com"],
            subject="Receipt",
            text="Thanks",
            idempotency_key="k-2",
        )
    finally:
        connectors.close()
    assert paid.amount_received == 1250

    # And the ledgers come back when the service stops
    running.stop.set()
    running.thread.join(10)
    assert [e["operation"] for e in running.ledgers["payments"]] == ["charge"]
    assert [e["operation"] for e in running.ledgers["smtp"]] == ["email_sent"]


def test_faults_are_injected_over_http_including_smtps(running: Running) -> None:
    export = running.line_with(f"export {ENDPOINTS_ENV}=")
    name, value = shlex.split(export.strip().removeprefix("export "))[0].split("=", 1)
    endpoints = Endpoints.from_env({name: value})
    match = re.search(r"control API (http://\S+)", running.line_with("control API"))
    assert match is not None
    smtp_control = match.group(1)

    lost = {"kind": "lost_response", "operation": "create_payment_intent"}
    assert httpx.post(f"{endpoints.payments_url}/_simulator/faults", json=lost).status_code == 201
    refused = {"kind": "decline", "operation": "send"}
    assert httpx.post(f"{smtp_control}/_simulator/faults", json=refused).status_code == 201
    bad = httpx.post(f"{smtp_control}/_simulator/faults", json={"kind": "meteor"})
    assert bad.status_code == 400 and "meteor" in bad.text

    connectors = LocalConnectors.for_endpoints(endpoints)
    try:
        with pytest.raises(OutcomeUnknownError):
            connectors.payments.create_payment(
                amount=900, currency="eur", payment_method="pm_card_visa", idempotency_key="k-3"
            )
        with pytest.raises(PermanentError):
            connectors.mailer.send_email(
                sender="shop@example.com",
                to=["ada@example.com"],
                subject="Receipt",
                text="Thanks",
                idempotency_key="k-4",
            )
    finally:
        connectors.close()

    # The lost response's charge landed; the refused email did not
    payments = httpx.get(f"{endpoints.payments_url}/_simulator/ledger").json()
    assert [(e["operation"], e["amount"]) for e in payments] == [("charge", 900)]
    assert httpx.get(f"{smtp_control}/_simulator/ledger").json() == []
