"""The embedded runtime: the real Dramatiq actors and worker threads, in process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from sagaledger import EmbeddedWorker, Orchestrator, RunStatus, SagaLog
from sagaledger.sagas import build_broker, declare_actors
from sagaledger.store import EventType
from tests import ledger_app
from tests.helpers import wait_finished
from tests.ledger_app import STEPS, registry


class DeliverTwice(dramatiq.Middleware):
    """Enqueues every message a second time: each run is driven by two deliveries."""

    def after_enqueue(self, broker: dramatiq.Broker, message: Any, delay: int | None) -> None:
        if not message.options.get("duplicate"):
            broker.enqueue(
                message.copy(options={**message.options, "duplicate": True}), delay=delay
            )


@pytest.fixture
def orchestrator(store_url: str) -> Iterator[Orchestrator]:
    log = SagaLog.open(store_url)
    yield Orchestrator(log, registry, lease=timedelta(seconds=5))
    log.close()


def test_concurrent_runs_on_worker_threads_each_finish_once(
    orchestrator: Orchestrator, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger.db")
    with EmbeddedWorker(orchestrator, threads=4):
        runs = [
            orchestrator.start(
                "order",
                {
                    "order_id": str(i),
                    "ledger": ledger,
                    "fail_at": "send_email" if i % 3 == 0 else None,
                },
            )
            for i in range(24)
        ]
        wait_finished(orchestrator.log, [r.id for r in runs])
    statuses = [orchestrator.log.get_run(r.id).status for r in runs]
    assert statuses.count(RunStatus.COMPENSATED) == 8 and statuses.count(RunStatus.COMPLETED) == 16
    calls = ledger_app.calls(ledger)
    assert len(calls) == len({c[2] for c in calls})  # no key called twice
    assert len(calls) == 16 * 4 + 8 * (4 + 3)


def test_every_message_delivered_twice_changes_nothing(
    orchestrator: Orchestrator, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger.db")
    worker = EmbeddedWorker(orchestrator, threads=4)
    worker.broker.add_middleware(DeliverTwice())
    with worker:
        runs = [
            orchestrator.start("order", {"order_id": str(i), "ledger": ledger}) for i in range(10)
        ]
        wait_finished(orchestrator.log, [r.id for r in runs])
        time.sleep(0.3)  # let the duplicates arrive and be dropped
    for run in runs:
        events = orchestrator.log.events(run.id)
        assert [e.step for e in events if e.type is EventType.STEP_COMPLETED] == list(STEPS)
    assert len(ledger_app.calls(ledger)) == 40


def test_a_run_whose_message_is_lost_is_recovered_from_the_log(
    orchestrator: Orchestrator, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger.db")
    # Given a run started while no worker was listening (its message went nowhere)
    run = orchestrator.start("order", {"order_id": "lost", "ledger": ledger})
    orchestrator.dispatch_grace = timedelta(0)
    # When a worker starts, its recovery pass finds the run in the log
    with EmbeddedWorker(
        orchestrator, threads=2, recovery_interval=timedelta(milliseconds=100)
    ) as worker:
        assert worker.wait(run.id).status is RunStatus.COMPLETED


@pytest.mark.parametrize("broker_url", [None, "redis"])
def test_our_brokers_carry_no_default_middleware_and_a_users_broker_is_tamed(
    orchestrator: Orchestrator, broker_url: str | None, request: pytest.FixtureRequest
) -> None:
    # Ours, in memory and on Redis: no retries from messages, no 10-minute time
    # limit, no unused hooks.
    url = request.getfixturevalue("redis_url") if broker_url == "redis" else None
    lean = build_broker(url)
    assert lean.middleware == []
    assert declare_actors(lean, orchestrator).options == {}
    lean.close()
    # A broker of the user's own, with Dramatiq's defaults: retries and time limit off.
    theirs = StubBroker()
    options = declare_actors(theirs, orchestrator).options
    assert options["max_retries"] == 0
    assert options["time_limit"] >= 7 * 24 * 3600 * 1000
