"""Durable timers: a run waits for days in the log alone, and resumes when its time comes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from sagaledger import (
    DefinitionError,
    EmbeddedWorker,
    Orchestrator,
    Registry,
    RetryPolicy,
    RetrySafety,
    RunStatus,
    Saga,
    SagaLog,
    StepContext,
    step,
    timer,
)
from sagaledger.store import EventType
from sagaledger.testing import ManualClock, SagaHarness

QUICK = RetryPolicy(max_attempts=2, initial_backoff=timedelta(seconds=1), jitter=0)


class Dunning(BaseModel):
    invoice: str
    second_notice_at: datetime | None = None


def dunning_saga(sent: list[tuple[str, str]], **wait: Any) -> Saga:
    """First notice, a timer, second notice: a dunning sequence."""

    def unsend(ctx: Any) -> None:
        sent.append(("withdrawn", ctx.input.invoice))

    @step(retry_safety=RetrySafety.NATURAL, compensate=unsend)
    def first_notice(ctx: StepContext[Dunning]) -> None:
        sent.append(("first", ctx.input.invoice))

    @step(retry_safety=RetrySafety.NATURAL, no_compensation="a notice cannot be unsent")
    def second_notice(ctx: StepContext[Dunning]) -> None:
        sent.append(("second", ctx.input.invoice))

    # A quick retry policy, for the test of an until() that fails
    waiting = replace(timer("grace_period", **(wait or {"after": timedelta(days=3)})), retry=QUICK)
    return Saga("dunning", 1, Dunning, [first_notice, waiting, second_notice])


def test_a_run_waits_three_days_in_the_log_and_goes_on_when_they_are_up(store_url: str) -> None:
    sent: list[tuple[str, str]] = []
    saga = dunning_saga(sent)
    harness = SagaHarness([saga], store_url=store_url)
    start = harness.clock()

    run = harness.start(saga, {"invoice": "INV-1"})
    harness.run_until_idle()

    # The run waits with no lease and no message: its wake-up time is the timer
    waiting = harness.log.get_run(run.id)
    assert (waiting.status, waiting.step, waiting.lease_owner) == (
        RunStatus.RUNNING,
        "grace_period",
        None,
    )
    assert waiting.wake_at == start + timedelta(days=3)
    assert waiting.dispatched_at is None  # longer than a delayed message may wait
    started = [e for e in harness.events(run.id) if e.type is EventType.TIMER_STARTED]
    assert [e.payload["until"] for e in started] == [(start + timedelta(days=3)).isoformat()]

    # Two days on, nothing happens; three days on, the second notice goes out once
    harness.advance(timedelta(days=2))
    harness.run_until_idle()
    assert sent == [("first", "INV-1")]
    harness.advance(timedelta(days=1))
    harness.run_until_idle()
    assert sent == [("first", "INV-1"), ("second", "INV-1")]
    assert harness.status(run.id) is RunStatus.COMPLETED
    fired = next(
        e
        for e in harness.events(run.id)
        if e.type is EventType.STEP_COMPLETED and e.step == "grace_period"
    )
    assert fired.payload["output"]["fired_at"] == (start + timedelta(days=3)).isoformat()
    harness.close()


def test_a_timer_is_kept_by_the_log_across_a_restart(store_url: str) -> None:
    sent: list[tuple[str, str]] = []
    saga = dunning_saga(sent)
    clock = ManualClock()
    first = SagaHarness([saga], store_url=store_url, clock=clock)
    run = first.start(saga, {"invoice": "INV-2"})
    first.run_until_idle()
    first.close()  # every worker goes away while the run waits

    clock.advance(timedelta(days=3, seconds=1))
    second = SagaHarness([saga], store_url=store_url, clock=clock)
    second.run_until_idle()
    assert second.status(run.id) is RunStatus.COMPLETED
    assert sent == [("first", "INV-2"), ("second", "INV-2")]
    second.close()


def test_a_timer_until_a_time_computed_from_the_input(store_url: str) -> None:
    sent: list[tuple[str, str]] = []
    saga = dunning_saga(sent, until=lambda ctx: ctx.input.second_notice_at)
    harness = SagaHarness([saga], store_url=store_url)
    at = harness.clock() + timedelta(hours=5)
    run = harness.start(saga, {"invoice": "INV-3", "second_notice_at": at.isoformat()})
    harness.run_until_idle()
    assert harness.log.get_run(run.id).wake_at == at

    # A time already past fires at once
    late = harness.start(
        saga, {"invoice": "INV-4", "second_notice_at": datetime(2000, 1, 1, tzinfo=UTC)}
    )
    harness.run_until_idle()
    assert harness.status(late.id) is RunStatus.COMPLETED
    assert harness.status(run.id) is RunStatus.RUNNING
    harness.close()


def test_an_until_without_a_timezone_fails_the_step_clearly(store_url: str) -> None:
    sent: list[tuple[str, str]] = []
    saga = dunning_saga(sent, until=lambda ctx: datetime(2030, 1, 2))  # noqa: DTZ001 - the bug
    harness = SagaHarness([saga], store_url=store_url)
    run = harness.start(saga, {"invoice": "INV-5"})
    for _ in range(3):
        harness.run_until_idle()
        harness.advance(timedelta(seconds=2))

    # Retried, then the first notice was withdrawn: the run did not wait on a bad time
    assert harness.status(run.id) is RunStatus.COMPENSATED
    assert sent == [("first", "INV-5"), ("withdrawn", "INV-5")]
    failed = [e for e in harness.events(run.id) if e.type is EventType.STEP_FAILED]
    assert failed[-1].error is not None
    assert "saga 'dunning' step 'grace_period'" in failed[-1].error["message"]
    assert "timezone-aware" in failed[-1].error["message"]
    harness.close()


def test_cancelling_a_run_that_waits_on_a_timer_undoes_it_at_once(store_url: str) -> None:
    sent: list[tuple[str, str]] = []
    saga = dunning_saga(sent)
    harness = SagaHarness([saga], store_url=store_url)
    run = harness.start(saga, {"invoice": "INV-6"})
    harness.run_until_idle()

    harness.orchestrator.cancel(run.id, "paid by bank transfer", by="finance")
    harness.run_until_idle()  # no time has passed

    assert harness.status(run.id) is RunStatus.COMPENSATED
    assert sent == [("first", "INV-6"), ("withdrawn", "INV-6")]
    harness.close()


def test_a_timer_needs_exactly_one_positive_wait() -> None:
    with pytest.raises(DefinitionError, match="timer 'pause' needs exactly one of"):
        timer("pause")
    with pytest.raises(DefinitionError, match="timer 'pause' needs exactly one of"):
        timer("pause", after=timedelta(hours=1), until=lambda ctx: datetime.now(UTC))
    with pytest.raises(DefinitionError, match="after= must be positive"):
        timer("pause", after=timedelta(0))


def test_two_hundred_runs_waiting_on_timers_all_resume_from_the_log(tmp_path: Any) -> None:
    # Real time and a real worker: no delayed message is sent for any wait, so only
    # the log's wake-up times (read by the recovery pass) can resume the runs
    sent: list[tuple[str, str]] = []
    saga = dunning_saga(sent, after=timedelta(seconds=1))
    log = SagaLog.open(f"sqlite:///{tmp_path}/timers.db")
    orchestrator = Orchestrator(log, Registry([saga]), max_message_delay=timedelta(0))
    with EmbeddedWorker(orchestrator, recovery_interval=timedelta(milliseconds=200)) as worker:
        runs = [orchestrator.start(saga, {"invoice": f"INV-{i}"}) for i in range(200)]
        finished = [worker.wait(run.id, timeout=60) for run in runs]
    log.close()

    assert [run.status for run in finished] == [RunStatus.COMPLETED] * 200
    assert sorted(sent) == sorted(
        [("first", f"INV-{i}") for i in range(200)] + [("second", f"INV-{i}") for i in range(200)]
    )
