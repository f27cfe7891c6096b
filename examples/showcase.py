"""What the worked examples' ``run.py`` share: play scenarios on a real worker, then report.

An example starts the simulators in its own process and a ``sagaledger worker``
process on a SQLite saga log, plays its scenarios one after the other (faults
armed, a run started, its end awaited, its events printed), then prints every
effect the simulators applied, merged in time order, and the compensation
ledger's balance read from the saga log (the runs left unbalanced should be
exactly those whose scenario parks a compensation), and can write it all as
JSON. Each ``run.py`` keeps only what is its own: its scenarios and its header.

Imported as ``examples.showcase`` from the repository root, which each
``run.py`` puts on ``sys.path``; the worker imports the example apps from
there too (``examples.billing.app``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from sagaledger import EventType, Orchestrator, Registry, RunStatus, Saga, SagaLog
from sagaledger.audit import Ledger, compensation_ledger
from sagaledger.connectors.simulators import Effect, Endpoints, Fault, SimulatorSuite, Timeline
from sagaledger.store import EventRecord, RunRecord
from sagaledger.testing import WorkerProcess, WorkerProcessError

#: The repository root, where the worker imports the example apps from.
ROOT = Path(__file__).resolve().parents[1]
#: How long one run may take before the example calls it stuck.
RUN_TIMEOUT = 30.0
#: The runs are started here and no broker is shared with the worker, so it
#: finds them in the log: it looks this often.
RECOVERY_INTERVAL = timedelta(milliseconds=100)


InputT = TypeVar("InputT", bound=BaseModel)


@dataclass(frozen=True)
class Scenario(Generic[InputT]):
    """One input, the faults waiting for it, and how its run should end."""

    label: str
    title: str
    input: InputT
    expect: RunStatus
    #: (simulator, fault): injected just before the run starts.
    faults: tuple[tuple[str, Fault], ...] = ()


@dataclass(frozen=True)
class Example(Generic[InputT]):
    """A worked example: its saga, its scenarios, and how it shows them.

    Attributes:
        name: Its folder under ``examples/``; the worker runs ``examples.NAME.app:registry``.
        saga: The saga its scenarios start.
        scenarios: Played one after the other.
        key: An input's business key.
        items: What an input is for, in a few words (``2 x WIDGET-1``).
        amount_cents: What an input's run charges.
        header: Prints what the example runs on, given the simulators and the store.
    """

    name: str
    saga: Saga
    scenarios: Sequence[Scenario[InputT]]
    key: Callable[[InputT], str]
    items: Callable[[InputT], str]
    amount_cents: Callable[[InputT], int]
    header: Callable[[Endpoints, str], None]

    @property
    def app(self) -> str:
        """What the worker runs: the example's ``app.py``, imported from the repository root."""
        return f"examples.{self.name}.app:registry"


Played = list[tuple[Scenario[Any], RunRecord]]


def main(example: Example[Any], doc: str, argv: list[str] | None = None) -> int:
    """Run the example as its ``run.py`` documents; 0 if every run ended as expected."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(
        "--json", metavar="FILE", type=Path, help="also write the runs and the ledger to FILE"
    )
    parser.add_argument(
        "--store",
        metavar="URL",
        help="the saga log, kept afterwards for sagaledger runs / audit [default: a temporary one]",
    )
    args = parser.parse_args(argv)
    began = time.monotonic()
    with tempfile.TemporaryDirectory() as folder, SimulatorSuite() as suite:
        store = args.store or f"sqlite:///{folder}/{example.name}.db"
        log = SagaLog.open(store)  # creates the schema before the worker opens it
        try:
            example.header(suite.endpoints, store)
            since = datetime.now(UTC)  # a kept store may hold earlier runs: not this play's
            played = play_all(example, suite, log, store)
            results = report(example, played, suite, log)
            results["balance"] = report_balance(played, compensation_ledger(log, since))
        except (WorkerProcessError, TimeoutError) as exc:
            raise SystemExit(f"{example.name}: {exc}") from None
        finally:
            log.close()
    print(f"\nfinished in {time.monotonic() - began:.1f} s")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    runs_ok = all(r["as_expected"] for r in results["runs"])
    return 0 if runs_ok and results["balance"]["as_expected"] else 1


# -- playing the scenarios ----------------------------------------------------------------


def play_all(example: Example[Any], suite: SimulatorSuite, log: SagaLog, store: str) -> Played:
    """Start a worker process, then play every scenario on it."""
    # This process only starts runs; the worker process drives them.
    orchestrator = Orchestrator(log, Registry([example.saga]))
    with WorkerProcess(
        example.app,
        store=store,
        env=suite.endpoints.to_env(),
        recovery_interval=RECOVERY_INTERVAL,
        cwd=ROOT,
    ) as worker:
        print(f"worker:     sagaledger worker --app {example.app} (pid {worker.pid})\n")
        return [(s, play(example, s, suite, orchestrator, log, worker)) for s in example.scenarios]


def play(
    example: Example[InputT],
    scenario: Scenario[InputT],
    suite: SimulatorSuite,
    orchestrator: Orchestrator,
    log: SagaLog,
    worker: WorkerProcess,
) -> RunRecord:
    """Arm the scenario's faults, start its run, wait for it to settle and print it."""
    for simulator, fault in scenario.faults:
        getattr(suite, simulator).inject(fault)
    run = orchestrator.start(example.saga, scenario.input, key=example.key(scenario.input))
    run = worker.wait_for_run(log, run.id, timeout=RUN_TIMEOUT)
    for simulator, _ in scenario.faults:  # one that did not hit must not hit the next run
        getattr(suite, simulator).faults.clear()
    mark = "ok" if run.status is scenario.expect else f"EXPECTED {scenario.expect}"
    print(
        f"({scenario.label}) {scenario.title}\n"
        f"    {run.business_key}: {example.items(scenario.input)}, "
        f"${example.amount_cents(scenario.input) / 100:,.2f} -> {run.status} [{mark}]"
    )
    for event in log.events(run.id):
        if event.type is not EventType.ATTEMPT_STARTED:  # every step has one: skip the noise
            print("      " + describe_event(event))
    print()
    return run


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
    """A step's output or a compensation's result, in a few words."""
    if not isinstance(output, dict):
        return json.dumps(output)
    if "amount" in output and "id" in output:  # a payment or a refund
        return f"{output['id']} {output['amount'] / 100:.2f} {output['currency']}"
    if "record_type" in output:
        return f"{output['record_type'].removeprefix('customrecord_sl_')} {output['id']}"
    if "message_id" in output:
        return f"email {output['message_id']}"
    return ", ".join(f"{k} {v}" for k, v in output.items())


# -- the report ---------------------------------------------------------------------------


def report(
    example: Example[Any], played: Played, suite: SimulatorSuite, log: SagaLog
) -> dict[str, Any]:
    """Print the simulators' ledgers as one timeline; return everything as JSON."""
    timeline = Timeline(
        suite.ledgers(),
        business_keys={run.id: run.business_key for _, run in played if run.business_key},
        aliases=message_ids(log, [run for _, run in played]),
    )
    print("every effect the simulators applied, in the order they applied them:")
    width = max((len(entry.effect.ref) for entry in timeline), default=0)
    for entry in timeline:
        effect = entry.effect
        print(
            f"  {clock_time(effect.at)}  {entry.business_key or '?':<8} {entry.system:<9} "
            f"{effect.operation:<16} {effect.ref:<{width}} {what_moved(effect)}"
        )
    return {
        "runs": [
            {
                "scenario": s.label,
                "title": s.title,
                "business_key": run.business_key,
                "amount_cents": example.amount_cents(s.input),
                "run_id": run.id,
                "status": run.status.value,
                "expected": s.expect.value,
                "as_expected": run.status is s.expect,
                "events": [event_json(e) for e in log.events(run.id)],
            }
            for s, run in played
        ],
        "ledger": timeline.as_json(),
    }


def report_balance(played: Played, ledger: Ledger) -> dict[str, Any]:
    """Print the compensation ledger's balance, as ``sagaledger audit balance`` reads it.

    Every run should balance but those whose scenario parks: a compensation
    that could not run leaves what it should have undone outstanding.
    """
    parked = {run.id for s, run in played if s.expect is RunStatus.PARKED}
    unbalanced = ledger.unbalanced
    print("\nthe compensation ledger, from the saga log (sagaledger audit balance):")
    for (system, operation, measure), total in ledger.totals().items():
        print(f"  {system:<9} {operation:<21} {total:>10} {measure}")
    for run in unbalanced:
        left = ", ".join(f"{v} {k}" for k, v in run.open.items()) or "nothing netted"
        print(f"  unbalanced: {run.business_key} ({run.status}): {left} open; {run.why}")
    as_expected = {r.run_id for r in unbalanced} == parked
    mark = "as expected" if as_expected else "EXPECTED exactly the parked runs"
    print(
        f"  {len(ledger.runs)} runs with effects, {len(ledger.entries)} effects: "
        f"{len(unbalanced)} unbalanced [{mark}]"
    )
    return {
        "runs": len(ledger.runs),
        "effects": len(ledger.entries),
        "unbalanced": [
            {
                "run_id": r.run_id,
                "business_key": r.business_key,
                "status": r.status,
                "open": {k: str(v) for k, v in r.open.items()},
                "why": r.why,
            }
            for r in unbalanced
        ],
        "as_expected": as_expected,
    }


def message_ids(log: SagaLog, runs: Sequence[RunRecord]) -> dict[str, str]:
    """Message-ID -> run id, from the steps' outputs.

    An SMTP server keys what it received by Message-ID, which the connector
    derives from the step's key by a hash: only the log can tell whose it is.
    """
    found = {}
    for run in runs:
        for event in log.events(run.id, types=[EventType.STEP_COMPLETED]):
            output = event.payload.get("output")
            if isinstance(output, dict) and "message_id" in output:
                found[output["message_id"]] = run.id
    return found


def what_moved(effect: Effect) -> str:
    """Money as ``50.00 usd``, stock as ``4 x WIDGET-1``, an email as its recipients."""
    if effect.amount is None:
        return ", ".join(effect.detail.get("to", []))
    if effect.currency is None:
        return f"{effect.amount} x {effect.detail.get('item', '?')}"
    money = f"{effect.amount / 100:.2f} {effect.currency}"
    memo = effect.detail.get("credit_memo")
    return f"{money} by credit memo {memo}" if memo else money


def event_json(event: EventRecord) -> dict[str, Any]:
    """An event as the tests read it: its payload and its error, without the traceback."""
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
