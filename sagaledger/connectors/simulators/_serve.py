"""``sagaledger simulators``: the simulator suite as a long-running local service.

Developers point their own application (or an example, or a worker) at it
through the ``SAGALEDGER_SIMULATORS`` line it prints, and drive faults and read
ledgers over HTTP from another terminal or a test. SMTP has no HTTP side of its
own, so its faults and ledger are served by a small control server beside it.
"""

from __future__ import annotations

import json
import shlex
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

from sagaledger.connectors.simulators._faults import Fault
from sagaledger.connectors.simulators._http import HttpSimulator, SimRequest, SimResponse
from sagaledger.connectors.simulators._suite import (
    EMAIL_API_KEY,
    ENDPOINTS_ENV,
    ERP_CREDENTIALS,
    PAYMENTS_API_KEY,
    SMTP_PASSWORD,
    SMTP_USERNAME,
    SimulatorSuite,
)
from sagaledger.connectors.simulators.smtp import SmtpSimulator

#: The ports ``sagaledger simulators`` listens on by default, by simulator.
DEFAULT_PORTS: Mapping[str, int] = {
    "payments": 4010,
    "erp": 4020,
    "email_api": 4030,
    "smtp": 2525,
    "smtp_control": 4040,
}


class SmtpControl(HttpSimulator):
    """The control API (faults, ledger) of an SMTP simulator, over HTTP."""

    system = "smtp-control"

    def __init__(self, smtp: SmtpSimulator, port: int = 0):
        super().__init__(port)
        self.faults = smtp.faults  # the SMTP sessions take their faults from this plan
        self.ledger = smtp.ledger

    def authenticate(self, request: SimRequest) -> SimResponse | None:
        return None

    def route(self, request: SimRequest) -> SimResponse:
        return self.error(404, "not_found", "only /_simulator/ledger and /_simulator/faults")

    def error(self, status: int, code: str, message: str) -> SimResponse:
        return SimResponse(status, {"error": {"code": code, "message": message}})

    def decline(self, operation: str, fault: Fault) -> SimResponse:
        return self.error(400, "no_operations", "the control API has no operations")


def serve(
    ports: Mapping[str, int],
    say: Callable[[str], None] = print,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Run the suite until SIGINT/SIGTERM (or ``stop``), then return its ledgers as JSON.

    Args:
        ports: Port per simulator (``payments``, ``erp``, ``email_api``, ``smtp``,
            ``smtp_control``); 0 for any free port.
        say: Prints a line for people.
        stop: Set to stop (tests); signals set it too when called from the main thread.

    Raises:
        OSError: a port is taken (the message names it).
    """
    stop = stop or threading.Event()
    suite_ports = {k: v for k, v in ports.items() if k != "smtp_control"}
    with (
        SimulatorSuite(ports=suite_ports) as suite,
        SmtpControl(suite.smtp, port=ports.get("smtp_control", 0)) as control,
    ):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, lambda *_: stop.set())
        for line in describe(suite, control):
            say(line)
        stop.wait()
        say("simulators stopping")
        ledgers = suite.ledgers().items()
        return {name: [asdict(e) for e in effects] for name, effects in ledgers}


def describe(suite: SimulatorSuite, control: SmtpControl) -> list[str]:
    """What a developer needs: where each simulator is, how to log in, how to drive it."""
    endpoints = suite.endpoints
    erp = ERP_CREDENTIALS
    return [
        f"payments (Stripe-style)    {endpoints.payments_url}   api key {PAYMENTS_API_KEY}",
        f"ERP (NetSuite-style)       {endpoints.erp_url}   account {erp.realm}, "
        f"consumer {erp.consumer_key} / {erp.consumer_secret.get_secret_value()}, "
        f"token {erp.token_id} / {erp.token_secret.get_secret_value()}",
        f"email API (Resend-style)   {endpoints.email_api_url}   api key {EMAIL_API_KEY}",
        f"SMTP                       {endpoints.smtp_host}:{endpoints.smtp_port}   "
        f"user {SMTP_USERNAME} / {SMTP_PASSWORD}, no TLS; control API {control.url}",
        "",
        "For workers and examples in another shell:",
        f"  export {ENDPOINTS_ENV}={shlex.quote(json.dumps(endpoints.as_json()))}",
        "Faults and ledgers, on every HTTP simulator (and SMTP's control API):",
        f"  curl {endpoints.payments_url}/_simulator/ledger",
        f"  curl -X POST {endpoints.payments_url}/_simulator/faults "
        """-d '{"kind": "lost_response", "operation": "create_payment_intent"}'""",
        "Local test credentials only: no real service accepts them. Ctrl-C stops.",
    ]
