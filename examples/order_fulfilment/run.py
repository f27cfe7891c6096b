"""The order-fulfilment example, end to end, in one command.

    .venv/bin/python examples/order_fulfilment/run.py [--json FILE]

Starts the payments, ERP and email simulators in this process, a real
``sagaledger worker`` process on a SQLite saga log, and four orders one after
the other, each meeting a different fault; then prints how each run went and
every effect the simulators applied. Exits with status 1 if a run did not end
as expected.
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

from app import Order, orders, registry

from sagaledger import EventType, Orchestrator, RunStatus, SagaLog
from sagaledger.connectors.simulators import Endpoints, Fault, FaultKind, SimulatorSuite
from sagaledger.store import EventRecord, RunRecord

ROOT = Path(__file__).resolve().parents[2]
#: What the worker process runs: this folder's app.py, imported from the repository root.
APP = "examples.order_fulfilment.app:registry"
#: How long one order may take before the example calls it stuck.
RUN_TIMEOUT = 30.0
#: How long the worker process may take to start.
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Scenario:
    """One order, the faults waiting for it, and how its run should end."""

    label: str
    title: str
    order: Order
    expect: RunStatus
    #: (simulator, fault): injected just before the order starts.
    faults: tuple[tuple[str, Fault], ...] = ()


SCENARIOS = (
    Scenario(
        "a",
        "a happy order",
        Order(
            order_id="SO-1001",
            customer_id="C-ADA",
            email="ada@example.com",
            sku="WIDGET-1",
            quantity=2,
            unit_price_cents=1250,
        ),
        RunStatus.COMPLETED,
    ),
    Scenario(
        "b",
        "the charge lands but its response is lost",
        Order(
            order_id="SO-1002",
            customer_id="C-ALAN",
            email="alan@example.com",
            sku="GADGET-2",
            quantity=1,
            unit_price_cents=4999,
        ),
        RunStatus.COMPLETED,
        (("payments", Fault(FaultKind.LOST_RESPONSE, operation="create_payment_intent")),),
    ),
    Scenario(
        "c",
        "the charge is rate limited: 429 with Retry-After: 1",
        Order(
            order_id="SO-1003",
            customer_id="C-KATHERINE",
            email="katherine@example.com",
            sku="GIZMO-3",
            quantity=3,
            unit_price_cents=800,
        ),
        RunStatus.COMPLETED,
        (
            (
                "payments",
                Fault(FaultKind.RATE_LIMIT, operation="create_payment_intent", retry_after=1),
            ),
        ),
    ),
    Scenario(
        "d",
        "the mail server refuses the confirmation: undone in reverse",
        Order(
            order_id="SO-1004",
            customer_id="C-GRACE",
            email="grace@hopper.invalid",  # the SMTP server answers 550 at RCPT
            sku="WIDGET-1",
            quantity=4,
            unit_price_cents=1250,
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
        store = f"sqlite:///{folder}/orders.db"
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


# -- playing the orders -----------------------------------------------------------------


def play(
    scenario: Scenario, suite: SimulatorSuite, orchestrator: Orchestrator, log: SagaLog
) -> tuple[Scenario, RunRecord]:
    """Arm the scenario's faults, start its order and wait for the run to settle."""
    for simulator, fault in scenario.faults:
        getattr(suite, simulator).inject(fault)
    run = orchestrator.start(orders, scenario.order, key=scenario.order.order_id)
    deadline = time.monotonic() + RUN_TIMEOUT
    while run.status.active:
        if time.monotonic() > deadline:
            raise SystemExit(
                f"order {scenario.order.order_id} is still {run.status} after {RUN_TIMEOUT:.0f} s"
            )
        time.sleep(0.05)
        run = log.get_run(run.id)
    for simulator, _ in scenario.faults:  # one that did not hit must not hit the next run
        getattr(suite, simulator).faults.clear()
    order = scenario.order
    mark = "ok" if run.status is scenario.expect else f"EXPECTED {scenario.expect}"
    print(
        f"({scenario.label}) {scenario.title}\n"
        f"    {order.order_id}: {order.quantity} x {order.sku}, "
        f"${order.amount_cents / 100:,.2f} -> {run.status} [{mark}]"
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
    owners = {run.id: s.order.order_id for s, run in runs}
    for scenario, run in runs:  # emails are keyed by Message-ID: learn them from the log
        for event in log.events(run.id, types=[EventType.STEP_COMPLETED]):
            output = event.payload.get("output")
            if isinstance(output, dict) and "message_id" in output:
                owners[output["message_id"]] = scenario.order.order_id
    ledger = [
        {"system": system, "business_key": owner_of(effect.key, owners), **asdict(effect)}
        for system, effects in suite.ledgers().items()
        for effect in effects
    ]
    ledger.sort(key=lambda row: datetime.fromisoformat(row["at"]))
    print("every effect the simulators applied, in the order they applied them:")
    for row in ledger:
        if row["operation"] in ("reserve", "release"):
            size = f"{row['amount']} x {row['detail']['item']}"
        elif row["amount"] is not None:
            size = f"{row['amount'] / 100:.2f} {row['currency']}"
        else:
            size = ", ".join(row["detail"].get("to", []))
        print(
            f"  {clock_time(row['at'])}  {row['business_key'] or '?':<8} {row['system']:<9} "
            f"{row['operation']:<16} {row['ref']:<22} {size}"
        )
    return {
        "runs": [
            {
                "scenario": s.label,
                "title": s.title,
                "business_key": s.order.order_id,
                "amount_cents": s.order.amount_cents,
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
    """The order an effect belongs to: keys and external ids start with the run id."""
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
    print("order fulfilment: reserve_inventory -> charge_card -> create_sales_order ->")
    print("                  send_confirmation, on the payments, ERP and SMTP simulators\n")
    print(f"payments:   {endpoints.payments_url}  (Stripe API)")
    print(f"erp:        {endpoints.erp_url}  (NetSuite REST, OAuth 1.0a)")
    print(f"smtp:       {endpoints.smtp_host}:{endpoints.smtp_port}")
    print(f"saga log:   {store}")


if __name__ == "__main__":
    sys.exit(main())
