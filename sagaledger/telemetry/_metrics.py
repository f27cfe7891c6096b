"""Prometheus metrics of drives, step attempts and runs, counted by hooks as they happen."""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from sagaledger.sagas._hooks import ActionCall, DriveCall, DriveOutcome, Hooks
from sagaledger.store import EventType, NewEvent, Phase
from sagaledger.telemetry._context import current_run

#: Step latencies (s): from a cache hit to a slow remote system.
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

_FINISHED = {
    EventType.RUN_COMPLETED: "completed",
    EventType.RUN_COMPENSATED: "compensated",
    EventType.RUN_PARKED: "parked",
}
_FAILED = {EventType.STEP_FAILED: Phase.FORWARD, EventType.COMPENSATION_FAILED: Phase.COMPENSATE}


class MetricsHooks(Hooks):
    """Hooks that count drives, step attempts, retries, compensations and finished runs.

    Metric names start with ``sagaledger_`` (see docs/telemetry.md for each). For
    the runs that wait, are parked or are unfinished, add a
    :class:`~sagaledger.telemetry.SagaLogCollector`: those are read from the log.

    Args:
        registry: Where the metrics are registered; prometheus_client's default
            registry unless given (tests pass a fresh ``CollectorRegistry``).
    """

    def __init__(self, registry: CollectorRegistry | None = None):
        registry = REGISTRY if registry is None else registry
        step = ["saga", "step", "phase"]
        self.step_seconds = Histogram(
            "sagaledger_step_duration_seconds",
            "Time an action or compensation took to return or raise",
            step,
            registry=registry,
            buckets=STEP_BUCKETS,
        )
        self.attempts = Counter(
            "sagaledger_step_attempts", "Actions and compensations run", step, registry=registry
        )
        self.failures = Counter(
            "sagaledger_step_failures",
            "Failed attempts, by what follows: retry, compensate or park",
            [*step, "outcome"],
            registry=registry,
        )
        self.retries = Counter(
            "sagaledger_step_retries",
            "Failed attempts that will be retried after a back-off",
            step,
            registry=registry,
        )
        self.compensations = Counter(
            "sagaledger_compensations",
            "Compensations completed",
            ["saga", "step"],
            registry=registry,
        )
        self.runs_started = Counter(
            "sagaledger_runs_started", "Runs driven for the first time", ["saga"], registry=registry
        )
        self.runs_finished = Counter(
            "sagaledger_runs_finished",
            "Runs that completed, were compensated or were parked",
            ["saga", "status"],
            registry=registry,
        )
        self.drives = Counter(
            "sagaledger_drives",
            "Drives (claim to release), by how they ended",
            ["saga", "outcome"],
            registry=registry,
        )
        self.refused = Counter(
            "sagaledger_writes_refused",
            "Writes of a stale lease holder refused (another worker took the run over)",
            ["saga"],
            registry=registry,
        )
        self._started: ContextVar[float | None] = ContextVar("sagaledger_step_t0", default=None)

    def drive_started(self, drive: DriveCall) -> None:
        if drive.token == 1:  # only claims change the token: the run's first drive
            self.runs_started.labels(drive.saga).inc()

    def drive_finished(
        self, drive: DriveCall, outcome: DriveOutcome, error: BaseException | None
    ) -> None:
        self.drives.labels(drive.saga, outcome.value).inc()

    def before_action(self, call: ActionCall) -> None:
        self.attempts.labels(call.saga, call.step, call.phase.value).inc()
        self._started.set(time.perf_counter())

    def after_action(self, call: ActionCall, output: Any) -> None:
        self._observe(call)

    def action_failed(self, call: ActionCall, error: BaseException) -> None:
        self._observe(call)

    def _observe(self, call: ActionCall) -> None:
        started = self._started.get()
        if started is not None:
            self._started.set(None)
            took = time.perf_counter() - started
            self.step_seconds.labels(call.saga, call.step, call.phase.value).observe(took)

    def after_checkpoint(self, run_id: str, events: Sequence[NewEvent]) -> None:
        run = current_run()
        if run is None:
            return  # checkpoints are written by drives, which always set it
        for e in events:
            if e.type is EventType.COMPENSATION_COMPLETED:
                self.compensations.labels(run.saga, e.step).inc()
            elif e.type in _FAILED:
                outcome = str((e.payload or {}).get("outcome", "unknown"))
                phase = _FAILED[e.type].value
                self.failures.labels(run.saga, e.step, phase, outcome).inc()
                if outcome == "retry":
                    self.retries.labels(run.saga, e.step, phase).inc()
            elif e.type in _FINISHED:
                self.runs_finished.labels(run.saga, _FINISHED[e.type]).inc()

    def write_refused(self, run_id: str, token: int, events: Sequence[NewEvent]) -> None:
        run = current_run()
        self.refused.labels(run.saga if run is not None else "").inc()
