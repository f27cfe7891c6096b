"""Prometheus metrics: counters and histograms from hooks, and the log's figures at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from sagaledger import RunStatus, SagaLog
from sagaledger.store import create_store_engine
from sagaledger.telemetry import MetricsHooks, SagaLogCollector
from sagaledger.testing import SagaHarness
from tests.telemetry.app import BACKOFF, COOLING_OFF, registry, trip_saga


@pytest.fixture
def metrics() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def harness(store_url: str, metrics: CollectorRegistry) -> Iterator[SagaHarness]:
    h = SagaHarness(registry, store_url=store_url, hooks=[MetricsHooks(metrics)])
    yield h
    h.close()


def value(metrics: CollectorRegistry, name: str, **labels: str) -> float:
    found = metrics.get_sample_value(name, labels)
    return 0.0 if found is None else found


def drive_all(harness: SagaHarness) -> None:
    """Through the retry's back-off and the three-day timer."""
    harness.run_until_idle()
    harness.advance(BACKOFF)
    harness.run_until_idle()
    harness.advance(COOLING_OFF)
    harness.run_until_idle()


def test_hooks_count_attempts_retries_compensations_and_finished_runs(
    harness: SagaHarness, metrics: CollectorRegistry
) -> None:
    # Given one trip that completes and one whose confirmation fails for good
    done = harness.start(trip_saga, {"traveller": "ada"})
    undone = harness.start(trip_saga, {"traveller": "bob", "refuse": True})

    # When both are driven to their ends
    drive_all(harness)
    assert harness.status(done.id) is RunStatus.COMPLETED
    assert harness.status(undone.id) is RunStatus.COMPENSATED

    # Then attempts: charge_card twice per run (a retry), the others once
    def attempts(step: str, phase: str = "forward") -> float:
        return value(metrics, "sagaledger_step_attempts_total", saga="trip", step=step, phase=phase)

    assert attempts("book_hotel") == 2
    assert attempts("charge_card") == 4
    assert attempts("confirm") == 2
    assert attempts("charge_card", "compensate") == attempts("book_hotel", "compensate") == 1
    step = {"saga": "trip", "step": "charge_card", "phase": "forward"}
    assert value(metrics, "sagaledger_step_retries_total", **step) == 2
    assert value(metrics, "sagaledger_step_failures_total", **step, outcome="retry") == 2
    confirm = {"saga": "trip", "step": "confirm", "phase": "forward"}
    assert value(metrics, "sagaledger_step_failures_total", **confirm, outcome="compensate") == 1
    assert value(metrics, "sagaledger_compensations_total", saga="trip", step="charge_card") == 1
    assert value(metrics, "sagaledger_compensations_total", saga="trip", step="book_hotel") == 1

    # ... each action's latency is observed once per attempt
    assert value(metrics, "sagaledger_step_duration_seconds_count", **step) == 4
    assert value(metrics, "sagaledger_step_duration_seconds_sum", **step) > 0
    assert value(metrics, "sagaledger_step_duration_seconds_bucket", **step, le="+Inf") == 4

    # ... runs: two started (first drives), one completed, one compensated
    assert value(metrics, "sagaledger_runs_started_total", saga="trip") == 2
    finished = "sagaledger_runs_finished_total"
    assert value(metrics, finished, saga="trip", status="completed") == 1
    assert value(metrics, finished, saga="trip", status="compensated") == 1
    assert value(metrics, finished, saga="trip", status="parked") == 0
    # ... and drives: each run waited twice (the back-off, the timer), then finished
    assert value(metrics, "sagaledger_drives_total", saga="trip", outcome="waiting") == 4
    assert value(metrics, "sagaledger_drives_total", saga="trip", outcome="completed") == 1
    assert value(metrics, "sagaledger_drives_total", saga="trip", outcome="compensated") == 1


def test_a_parked_run_is_counted(harness: SagaHarness, metrics: CollectorRegistry) -> None:
    # A refund that fails for good parks the run
    run = harness.start(
        trip_saga, {"traveller": "ada", "refuse": True, "stuck_refund": True, "flaky": False}
    )
    drive_all(harness)
    assert harness.status(run.id) is RunStatus.PARKED
    assert value(metrics, "sagaledger_runs_finished_total", saga="trip", status="parked") == 1
    compensate = {"saga": "trip", "step": "charge_card", "phase": "compensate"}
    assert value(metrics, "sagaledger_step_failures_total", **compensate, outcome="park") == 1
    assert value(metrics, "sagaledger_drives_total", saga="trip", outcome="parked") == 1


def test_the_collector_reports_runs_by_status_parked_and_the_oldest_wait(
    harness: SagaHarness,
) -> None:
    # Given a scrape registry with the collector on the harness's log and clock
    scraped = CollectorRegistry()
    scraped.register(SagaLogCollector(harness.log, clock=harness.clock))
    start = harness.clock()

    # When one run parks, one waits in its back-off and one, started an hour later, too
    parked = harness.start(
        trip_saga, {"traveller": "p", "refuse": True, "stuck_refund": True, "flaky": False}
    )
    harness.run_until_idle()
    harness.advance(COOLING_OFF)
    harness.run_until_idle()
    assert harness.status(parked.id) is RunStatus.PARKED
    harness.start(trip_saga, {"traveller": "a"})
    harness.run_until_idle()  # waits in charge_card's back-off
    harness.advance(BACKOFF)
    harness.run_until_idle()  # now waits on its three-day timer
    waiting_since = harness.clock()
    harness.advance(COOLING_OFF / 2)
    harness.start(trip_saga, {"traveller": "b"})
    harness.run_until_idle()  # waits in its back-off
    harness.advance(BACKOFF / 2)

    # Then the log's figures are as the runs stand
    def gauge(name: str, **labels: str) -> float | None:
        return scraped.get_sample_value(name, {"saga": "trip", **labels})

    assert scraped.get_sample_value("sagaledger_log_up") == 1
    assert gauge("sagaledger_runs", status="running") == 2
    assert gauge("sagaledger_runs", status="parked") == 1
    assert gauge("sagaledger_runs", status="completed") is None  # not counted by default
    assert gauge("sagaledger_parked_runs") == 1
    assert gauge("sagaledger_waiting_runs") == 2
    waited = (harness.clock() - waiting_since).total_seconds()
    assert gauge("sagaledger_oldest_waiting_run_age_seconds") == waited
    assert waited == (COOLING_OFF / 2 + BACKOFF / 2).total_seconds()
    assert harness.clock() - start > COOLING_OFF

    # And once the timer is up and the run is due, it no longer waits
    harness.advance(COOLING_OFF)
    assert gauge("sagaledger_waiting_runs") == 0
    assert gauge("sagaledger_oldest_waiting_run_age_seconds") == 0


def test_the_collector_counts_finished_runs_when_asked(harness: SagaHarness) -> None:
    run = harness.start(trip_saga, {"traveller": "a", "flaky": False})
    harness.run_until_idle()
    harness.advance(COOLING_OFF)
    harness.run_until_idle()
    assert harness.status(run.id) is RunStatus.COMPLETED
    scraped = CollectorRegistry()
    scraped.register(SagaLogCollector(harness.log, clock=harness.clock, finished=True))
    assert scraped.get_sample_value("sagaledger_runs", {"saga": "trip", "status": "completed"}) == 1


def test_an_unreachable_log_is_reported_not_raised(tmp_path: Path) -> None:
    # A log whose file cannot be opened: the scrape still answers, and says so
    log = SagaLog(create_store_engine(f"sqlite:///{tmp_path}/missing/dir/saga.db"))
    scraped = CollectorRegistry()
    scraped.register(SagaLogCollector(log))
    assert scraped.get_sample_value("sagaledger_log_up") == 0
    assert [m.name for m in scraped.collect()] == ["sagaledger_log_up"]
