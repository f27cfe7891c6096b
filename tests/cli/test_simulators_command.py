"""``sagaledger simulators`` as a user runs it: a process that serves until Ctrl-C."""

from __future__ import annotations

import json
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

from sagaledger.connectors.simulators import ENDPOINTS_ENV, Endpoints, LocalConnectors

ANY_PORTS = [
    "--payments-port=0",
    "--erp-port=0",
    "--email-api-port=0",
    "--smtp-port=0",
    "--control-port=0",
]


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sagaledger", "simulators", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_it_serves_until_interrupted_and_writes_the_ledgers(tmp_path: Path) -> None:
    ledgers = tmp_path / "ledgers.json"
    process = start(*ANY_PORTS, f"--ledgers={ledgers}")
    try:
        assert process.stdout is not None
        export = next(line for line in process.stdout if line.strip().startswith("export "))
        name, value = shlex.split(export.strip().removeprefix("export "))[0].split("=", 1)
        assert name == ENDPOINTS_ENV
        connectors = LocalConnectors.for_endpoints(Endpoints.from_env({name: value}))
        try:
            connectors.payments.create_payment(
                amount=700, currency="usd", payment_method="pm_card_visa", idempotency_key="k"
            )
        finally:
            connectors.close()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "effects applied: payments 1, erp 0, smtp 0, email_api 0" in out
    written = json.loads(ledgers.read_text())
    assert [(e["operation"], e["amount"]) for e in written["payments"]] == [("charge", 700)]


def test_a_taken_port_is_one_error_line_naming_the_simulator() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = start(*ANY_PORTS, f"--erp-port={port}")
        _, err = process.communicate(timeout=20)
    assert process.returncode == 1
    assert err.strip().splitlines() == [
        f"error: cannot start the simulators: erp simulator, port {port}: "
        "Address already in use (pick other ports, or 0)"
    ]
