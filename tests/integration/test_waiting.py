"""Runs waiting on a durable timer, and cancels, with real worker processes.

A waiting run holds no lease, thread or message that must survive: the log's
``wake_at`` wakes it through any worker's recovery pass. These tests kill and
stop real ``sagaledger worker`` processes while runs wait, cancel runs from the
command line and from this process, and read what happened in the saga log and
in the ledger the steps write (``tests.integration.waiting_app``). Every test
runs on SQLite and on a real PostgreSQL server.
"""

from __future__ import annotations

import os
import signal
from datetime import datetime, timedelta
from pathlib import Path

from sagaledger import Orchestrator, RunStatus, SagaLog
from sagaledger.sagas import CancelOutcome
from sagaledger.store import EventType, RunRecord, utc_now
from sagaledger.testing import WorkerProcess
from tests.integration import waiting_app
from tests.integration._processes import PATIENCE, sagaledger, wait_until
from tests.integration._processes import worker as worker_on
from tests.integration.waiting_app import errand_saga, registry

APP = "tests.integration.waiting_app:registry"
#: How far ahead the timers fire: time for every run to reach its timer, and for
#: the test to look and kill its worker, before any timer is due.
AHEAD = timedelta(seconds=4)


def worker(store_url: str, lease: timedelta | None = None) -> WorkerProcess:
    """A ``sagaledger worker`` process on the waiting app."""
    return worker_on(APP, store_url, lease)


def errand(ledger: Path, fire_at: datetime, gate: Path | None = None) -> dict[str, object]:
    return {"ledger": str(ledger), "fire_at": fire_at, "gate": None if gate is None else str(gate)}


def is_waiting(run: RunRecord) -> bool:
    """At its timer, holding no lease: only the log's wake-up time will take it on."""
    return (run.status, run.step, run.lease_owner) == (RunStatus.RUNNING, "cool_off", None)


def all_waiting(log: SagaLog, runs: list[RunRecord]) -> bool:
    return all(is_waiting(log.get_run(run.id)) for run in runs)


def forward_and_undo(ledger: Path, run_id: str) -> list[tuple[str, str]]:
    return [(c.step, c.phase) for c in waiting_app.calls(str(ledger), run_id)]


def timer_fired(log: SagaLog, run_id: str) -> dict[str, str]:
    """The output of the run's timer step: when it was due and when it fired."""
    (fired,) = [
        e for e in log.events(run_id, types=[EventType.STEP_COMPLETED]) if e.step == "cool_off"
    ]
    output: dict[str, str] = fired.payload["output"]
    return output


def test_a_worker_sigkilled_while_runs_wait_loses_none_of_them(
    store_url: str, saga_log: SagaLog, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.db"
    starter = Orchestrator(saga_log, registry)

    # Given a worker that has taken 50 runs through their first two steps to their timer
    with worker(store_url) as doomed:
        fire_at = utc_now() + AHEAD
        runs = [starter.start(errand_saga, errand(ledger, fire_at)) for _ in range(50)]
        wait_until(lambda: all_waiting(saga_log, runs), "all 50 runs waiting on their timer")
        assert utc_now() < fire_at, "the runs reached their timer only after it was due"

        # Then they wait in the log alone: no lease, woken at the timer's time
        for run in runs:
            waiting = saga_log.get_run(run.id)
            assert is_waiting(waiting)
            assert waiting.wake_at is not None
            # (the clock is read twice on the way: the wake-up can be microseconds later)
            assert fire_at <= waiting.wake_at < fire_at + timedelta(seconds=1)

        # When the worker is SIGKILLed while they wait
        os.kill(doomed.pid, signal.SIGKILL)
        assert doomed.wait(timeout=PATIENCE) == -signal.SIGKILL
    assert utc_now() < fire_at, "the worker was killed only after the timers were due"

    # And a new worker starts (its in-memory delayed messages died with the old one)
    with worker(store_url) as survivor:
        finished = [survivor.wait_for_run(saga_log, run.id, timeout=PATIENCE) for run in runs]
    assert survivor.returncode == 0

    # Then every run completed, each step ran exactly once, and the step after the
    # timer ran in the new worker, after the timer's time
    assert [run.status for run in finished] == [RunStatus.COMPLETED] * 50
    for run in runs:
        before, during, after = waiting_app.calls(str(ledger), run.id)
        assert [(c.step, c.phase) for c in (before, during, after)] == [
            ("reserve", "forward"),
            ("charge", "forward"),
            ("ship", "forward"),
        ]
        assert before.pid == during.pid == doomed.pid
        assert after.pid == survivor.pid
        assert after.at >= fire_at.timestamp()
        fired = timer_fired(saga_log, run.id)
        assert datetime.fromisoformat(fired["until"]) == fire_at
        assert datetime.fromisoformat(fired["fired_at"]) >= fire_at
        events = saga_log.events(run.id)
        assert sum(e.type is EventType.TIMER_STARTED for e in events) == 1
        assert not any(e.type is EventType.ATTEMPT_ABANDONED for e in events)


def test_a_cancel_sent_while_no_worker_runs_is_applied_when_one_starts(
    store_url: str, saga_log: SagaLog, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.db"
    starter = Orchestrator(saga_log, registry)

    # Given runs waiting on their timers, and every worker stopped. The runs to be
    # cancelled wait an hour: only the cancel can end their wait during this test.
    with worker(store_url) as first:
        soon, later = utc_now() + AHEAD, utc_now() + timedelta(hours=1)
        kept = [starter.start(errand_saga, errand(ledger, soon)) for _ in range(4)]
        cancelled = [starter.start(errand_saga, errand(ledger, later)) for _ in range(3)]
        wait_until(lambda: all_waiting(saga_log, kept + cancelled), "all runs at their timer")
    assert first.returncode == 0

    # When an operator cancels three of them with the CLI (a short id each)
    for run in cancelled:
        done = sagaledger(
            "cancel", run.id[:12], "--reason", "customer withdrew", "--as", "ops:alice",
            "--store", store_url,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"run {run.id} is cancelling" in done.stdout

    # Then nothing is undone yet: the request waits in the log for a worker
    for run in cancelled:
        noted = saga_log.get_run(run.id)
        assert noted.status is RunStatus.RUNNING
        assert noted.cancel_requested is not None and noted.cancel_requested["by"] == "ops:alice"
        assert forward_and_undo(ledger, run.id) == [("reserve", "forward"), ("charge", "forward")]

    # When a worker starts
    with worker(store_url) as second:
        undone = [second.wait_for_run(saga_log, run.id, timeout=PATIENCE) for run in cancelled]
        completed = [second.wait_for_run(saga_log, run.id, timeout=PATIENCE) for run in kept]
    assert second.returncode == 0

    # Then the cancelled runs were compensated in reverse, long before their timers,
    # and nothing after the timer ran
    assert [run.status for run in undone] == [RunStatus.COMPENSATED] * 3
    for run in cancelled:
        assert forward_and_undo(ledger, run.id) == [
            ("reserve", "forward"),
            ("charge", "forward"),
            ("charge", "compensate"),
            ("reserve", "compensate"),
        ]
        assert all(c.pid == second.pid for c in waiting_app.calls(str(ledger), run.id)[2:])
        events = saga_log.events(run.id)
        asked = next(e for e in events if e.type is EventType.CANCEL_REQUESTED)
        assert (asked.actor, asked.payload["reason"], asked.payload["outcome"]) == (
            "ops:alice",
            "customer withdrew",
            "cancelling",
        )
        turned = next(e for e in events if e.type is EventType.COMPENSATION_STARTED)
        assert turned.payload["reason"] == "cancelled by ops:alice: customer withdrew"
        assert not any(e.step == "cool_off" and e.type is EventType.STEP_COMPLETED for e in events)
        assert saga_log.get_run(run.id).updated_at < later

    # And the others completed after their timers, each step once
    assert [run.status for run in completed] == [RunStatus.COMPLETED] * 4
    for run in kept:
        assert forward_and_undo(ledger, run.id) == [(s, "forward") for s in waiting_app.STEPS]
        assert waiting_app.calls(str(ledger), run.id)[-1].at >= soon.timestamp()
        assert datetime.fromisoformat(timer_fired(saga_log, run.id)["fired_at"]) >= soon


def test_a_cancel_while_a_step_is_in_flight_in_another_process_turns_after_that_step(
    store_url: str, saga_log: SagaLog, tmp_path: Path
) -> None:
    ledger, gate = tmp_path / "ledger.db", tmp_path / "gate"
    # Short leases: the worker renews them every 0.5 s, and a renewal reports a cancel
    with worker(store_url, lease=timedelta(seconds=1.5)) as busy:
        # Given a run whose first step is in flight in the worker (it holds until the gate opens)
        run = Orchestrator(saga_log, registry).start(
            errand_saga, errand(ledger, utc_now() + timedelta(hours=1), gate)
        )
        wait_until(lambda: waiting_app.entered(str(ledger), run.id) == ["reserve"], "step begun")

        # When this process cancels it
        outcome = Orchestrator(saga_log, registry).cancel(run.id, "fraud suspected", by="risk")
        assert outcome is CancelOutcome.CANCELLING

        # And the step goes on until a lease renewal of the worker has read the request,
        # which is how a worker learns of a cancel asked in another process (a renewal
        # moves the lease's wake_at; the gate holds the step, and its checkpoint, meanwhile)
        held = saga_log.get_run(run.id)
        assert held.lease_owner is not None and held.step == "reserve"
        assert held.wake_at is not None
        renewed_from = held.wake_at
        wait_until(
            lambda: (saga_log.get_run(run.id).wake_at or renewed_from) > renewed_from,
            "a lease renewal after the cancel",
        )
        gate.touch()
        done = busy.wait_for_run(saga_log, run.id, timeout=PATIENCE)
    assert busy.returncode == 0

    # Then the worker finished the step in flight, checkpointed it, and undid it;
    # the step after it never ran
    assert done.status is RunStatus.COMPENSATED
    assert forward_and_undo(ledger, run.id) == [("reserve", "forward"), ("reserve", "compensate")]
    assert {c.pid for c in waiting_app.calls(str(ledger), run.id)} == {busy.pid}
    events = saga_log.events(run.id)
    kinds = [(e.type, e.step) for e in events]
    asked = kinds.index((EventType.CANCEL_REQUESTED, None))
    assert kinds.index((EventType.STEP_COMPLETED, "reserve")) > asked  # landed mid-step
    assert (EventType.STEP_COMPLETED, "charge") not in kinds
    request = events[asked]
    assert (request.actor, request.payload["outcome"]) == (
        "risk",
        "cancelling after the step in flight",
    )
    turned = next(e for e in events if e.type is EventType.COMPENSATION_STARTED)
    assert turned.payload["reason"] == "cancelled by risk: fraud suspected"
