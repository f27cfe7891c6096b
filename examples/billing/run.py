"""The billing example, end to end, in one command.

    .venv/bin/python examples/billing/run.py [--json FILE]

Starts the ERP, payments and email API simulators in this process, a real
``sagaledger worker`` process on a SQLite saga log, and four bills one after the
other, each meeting a different fault; then prints how each run went and every
effect the simulators applied. Exits with status 1 if a run did not end as
expected.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from app import Bill, Line, billing, registry

from sagaledger import EventType, Orchestrator, RunStatus, SagaLog
from sagaledger.connectors.simulators import Endpoints, Fault, FaultKind, SimulatorSuite
from sagaledger.store import EventRecord, RunRecord

ROOT = Path(__file__).resolve().parents[2]
#: What the worker process runs: this folder's app.py, imported from the repository root.
APP = "examples.billing.app:registry"
#: How long one bill may take before the example calls it stuck.
RUN_TIMEOUT = 30.0
#: How long the worker process may take to start.
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Scenario:
    """One bill, the faults waiting for it, and how its run should end."""

    label: str
    title: str
    bill: Bill
    expect: RunStatus
    #: (simulator, fault): injected just before the bill starts.
    faults: tuple[tuple[str, Fault], ...] = ()


SCENARIOS = (
    Scenario(
        "a",
        "a bill paid and receipted",
        Bill(
            invoice_number="INV-2001",
            customer_id="C-ADA",
            email="ada@example.com",
            lines=[
                Line(item="WIDGET-1", quantity=2, unit_price_cents=1250),
                Line(item="GIZMO-3", quantity=1, unit_price_cents=800),
            ],
        ),
        RunStatus.COMPLETED,
    ),
    Scenario(
        "b",
        "the receipt is sent but the email API's response is lost",
        Bill(
            invoice_number="INV-2002",
            customer_id="C-ALAN",
            email="alan@example.com",
            lines=[Line(item="GADGET-2", quantity=1, unit_price_cents=4999)],
        ),
        RunStatus.COMPLETED,
        (("email_api", Fault(FaultKind.LOST_RESPONSE, operation="send")),),
    ),
    Scenario(
        "c",
        "the card is declined: the invoice is voided, nothing is refunded",
        Bill(
            invoice_number="INV-2003",
            customer_id="C-KATHERINE",
            email="katherine@example.com",
            lines=[Line(item="GIZMO-3", quantity=3, unit_price_cents=800)],
            payment_method="pm_card_chargeDeclined",  # Stripe's test card that is declined
        ),
        RunStatus.COMPENSATED,
    ),
    Scenario(
        "d",
        "the email API refuses the receipt: refunded, then voided",
        Bill(
            invoice_number="INV-2004",
            customer_id="C-GRACE",
            email="grace@localhost",  # no domain: the API answers 422
            lines=[Line(item="WIDGET-1", quantity=4, unit_price_cents=1250)],
        ),
        RunStatus.COMPENSATED,
    ),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--json", metavar="FILE", type=Path, help="also write the runs and the ledger to FILE"
    )
    args = parser.parse_args(argv)
    began = time.monotonic()
    with tempfile.TemporaryDirectory() as folder, SimulatorSuite() as suite:
        store = f"sqlite:///{folder}/billing.db"
        log = SagaLog.open(store)  # creates the schema before the worker opens it
        try:
            # This process only starts runs; the worker process drives them.
            orchestrator = Orchestrator(log, registry)
            print_header(suite.endpoints, store)
            with worker_process(store, suite.endpoints, Path(folder)):
                runs = [play(s, suite, orchestrator, log) for s in SCENARIOS]
            results = report(runs, suite, log)
        finally:
            log.close()
    print(f"\nfinished in {time.monotonic() - began:.1f} s")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0 if all(r["as_expected"] for r in results["runs"]) else 1


# -- the worker process -----------------------------------------------------------------


@contextmanager
def worker_process(store: str, endpoints: Endpoints, folder: Path) -> Iterator[None]:
    """``sagaledger worker --app ...`` on ``store``, told where the simulators are."""
    env = {
        **os.environ,
        **endpoints.to_env(),
        "SAGALEDGER_STORE": store,
        # The runs are started here, and this process shares no broker with the
        # worker (each has its own in-memory one), so the worker finds them in the
        # log: it looks every 0.1 s and takes a new run at once.
        "SAGALEDGER_RECOVERY_INTERVAL_SECONDS": "0.1",
        "SAGALEDGER_DISPATCH_GRACE_SECONDS": "0",
    }
    output = folder / "worker.log"
    with output.open("wb") as sink:
        worker = subprocess.Popen(
            [sys.executable, "-m", "sagaledger", "worker", "--app", APP],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while " ready: " not in output.read_text(errors="replace"):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the worker did not start:\n{output.read_text()}")
            time.sleep(0.05)
        print(f"worker:     sagaledger worker --app {APP} (pid {worker.pid})\n")
        yield
    except BaseException:
        print(f"the worker's output so far:\n{output.read_text()}", file=sys.stderr)
        raise
    finally:
        worker.terminate()  # SIGTERM: it finishes the steps in flight, then exits
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


# -- playing the bills ------------------------------------------------------------------


def play(
    scenario: Scenario, suite: SimulatorSuite, orchestrator: Orchestrator, log: SagaLog
) -> tuple[Scenario, RunRecord]:
    """Arm the scenario's faults, start its bill and wait for the run to settle."""
    for simulator, fault in scenario.faults:
        getattr(suite, simulator).inject(fault)
    run = orchestrator.start(billing, scenario.bill, key=scenario.bill.invoice_number)
    deadline = time.monotonic() + RUN_TIMEOUT
    while run.status.active:
        if time.monotonic() > deadline:
            raise SystemExit(
                f"{scenario.bill.invoice_number} is still {run.status} after {RUN_TIMEOUT:.0f} s"
            )
        time.sleep(0.05)
        run = log.get_run(run.id)
    for simulator, _ in scenario.faults:  # one that did not hit must not hit the next run
        getattr(suite, simulator).faults.clear()
    bill = scenario.bill
    items = ", ".join(f"{line.quantity} x {line.item}" for line in bill.lines)
    mark = "ok" if run.status is scenario.expect else f"EXPECTED {scenario.expect}"
    print(
        f"({scenario.label}) {scenario.title}\n"
        f"    {bill.invoice_number}: {items}, "
        f"${bill.amount_cents / 100:,.2f} -> {run.status} [{mark}]"
    )
    for event in log.events(run.id):
        if event.type is not EventType.ATTEMPT_STARTED:  # every step has one: skip the noise
            print("      " + describe_event(event))
    print()
    return scenario, run


def describe_event(event: EventRecord) -> str:
    """One line: what happened, to which step, and the detail worth reading."""
    where = f"{event.step or '':<19} {event.phase or '':<10} #{event.attempt or '-'}"
    payload = event.payload if isinstance(event.payload, dict) else {}
    error = event.error or {}
    if event.type is EventType.STEP_COMPLETED:
        note = describe_output(payload.get("output"))
        if payload.get("via_probe"):
            note = f"found by the probe: {note}"
    elif event.type is EventType.COMPENSATION_COMPLETED:
        note = describe_output(payload.get("result"))
    elif event.type in (EventType.STEP_FAILED, EventType.COMPENSATION_FAILED):
        kind = str(error.get("type", "")).rsplit(".", 1)[-1]
        note = f"{kind} ({payload.get('outcome')} next): {error.get('message', '')}"
    elif event.type is EventType.STEP_DEFERRED:
        note = f"until {clock_time(payload['until'])}: {error.get('message', '')}"
    else:
        note = str(payload.get("reason", ""))
        where = " " * len(where)
    text = f"{event.seq:>3} {event.type.value:<23} {where}  {note}"
    text = text.rstrip()
    return text if len(text) <= 150 else text[:147] + "..."


def describe_output(output: Any) -> str:
    if not isinstance(output, dict):
        return json.dumps(output)
    if "amount" in output and "id" in output:  # a payment or a refund
        return f"{output['id']} {output['amount'] / 100:.2f} {output['currency']}"
    if "record_type" in output:
        return f"{output['record_type'].removeprefix('customrecord_sl_')} {output['id']}"
    if "message_id" in output:
        return f"email {output['message_id']}"
    return ", ".join(f"{k} {v}" for k, v in output.items())


# -- the report -------------------------------------------------------------------------


def report(
    runs: list[tuple[Scenario, RunRecord]], suite: SimulatorSuite, log: SagaLog
) -> dict[str, Any]:
    """Print the simulators' ledgers as one timeline; return everything as JSON."""
    owners = {run.id: s.bill.invoice_number for s, run in runs}
    ledger = [
        {"system": system, "business_key": owner_of(effect.key, owners), **asdict(effect)}
        for system, effects in suite.ledgers().items()
        for effect in effects
    ]
    ledger.sort(key=lambda row: datetime.fromisoformat(row["at"]))
    print("every effect the simulators applied, in the order they applied them:")
    for row in ledger:
        if row["amount"] is not None:
            size = f"{row['amount'] / 100:.2f} {row['currency']}"
            if "credit_memo" in row["detail"]:
                size += f" by credit memo {row['detail']['credit_memo']}"
        else:
            size = ", ".join(row["detail"].get("to", []))
        print(
            f"  {clock_time(row['at'])}  {row['business_key'] or '?':<8} {row['system']:<9} "
            f"{row['operation']:<16} {row['ref']:<36} {size}"
        )
    return {
        "runs": [
            {
                "scenario": s.label,
                "title": s.title,
                "business_key": s.bill.invoice_number,
                "amount_cents": s.bill.amount_cents,
                "run_id": run.id,
                "status": run.status.value,
                "expected": s.expect.value,
                "as_expected": run.status is s.expect,
                "events": [event_json(e) for e in log.events(run.id)],
            }
            for s, run in runs
        ],
        "ledger": ledger,
    }


def owner_of(key: str | None, owners: dict[str, str]) -> str | None:
    """The bill an effect belongs to: keys and external ids start with the run id."""
    if key is None:
        return None
    return owners.get(key) or owners.get(key.split(":", 1)[0])


def event_json(event: EventRecord) -> dict[str, Any]:
    error = {k: v for k, v in (event.error or {}).items() if k != "traceback"}
    return {
        "seq": event.seq,
        "type": event.type.value,
        "step": event.step,
        "phase": event.phase.value if event.phase else None,
        "attempt": event.attempt,
        "payload": event.payload,
        "error": error or None,
    }


def clock_time(iso: str) -> str:
    """``HH:MM:SS.mmm`` of an ISO 8601 timestamp."""
    return datetime.fromisoformat(iso).strftime("%H:%M:%S.%f")[:-3]


def print_header(endpoints: Endpoints, store: str) -> None:
    print("billing: create_invoice -> charge_card -> send_receipt,")
    print("         on the ERP, payments and email API simulators\n")
    print(f"erp:        {endpoints.erp_url}  (NetSuite REST, OAuth 1.0a)")
    print(f"payments:   {endpoints.payments_url}  (Stripe API)")
    print(f"email api:  {endpoints.email_api_url}  (Resend-style)")
    print(f"saga log:   {store}")


if __name__ == "__main__":
    sys.exit(main())
