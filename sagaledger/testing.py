"""Helpers for testing your own sagas: a synchronous runner, a manual clock, crashes, workers.

The runner drives runs with the same orchestrator code the Dramatiq actor calls,
one drive at a time, in the calling thread, so tests are deterministic::

    harness = SagaHarness(registry)
    run = harness.run(order_saga, {"order_id": "A1"})
    assert harness.status(run.id) == RunStatus.COMPLETED

Crashes: ``CrashAt(step, point=...)`` raises :class:`SimulatedCrash` (or sends
SIGKILL to the process) at a chosen point; after a simulated crash, advance the
clock past the lease and call :meth:`SagaHarness.run_until_idle` to recover.

Integration tests run a real ``sagaledger worker`` process with
:class:`WorkerProcess`, on a store they share with it.
"""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel

from sagaledger._worker_process import WorkerProcess, WorkerProcessError
from sagaledger.connectors import MemoryRateLimiter
from sagaledger.sagas import ActionCall, Hooks, Orchestrator, Registry, Saga
from sagaledger.sagas._dispatch import Dispatch
from sagaledger.sagas._leases import LeaseKeeper
from sagaledger.store import EventRecord, EventType, Phase, RunRecord, RunStatus, SagaLog

CrashPoint = Literal["before_action", "after_action", "after_checkpoint"]


class SimulatedCrash(BaseException):
    """Raised by :class:`CrashAt`: the worker "dies" with nothing more written.

    A BaseException, so that the orchestrator does not record it as a step failure.
    """


class ManualClock:
    """A clock that only moves when told to.

    Args:
        start: The initial time (UTC-aware); defaults to 2030-01-01T00:00Z.
    """

    def __init__(self, start: datetime | None = None):
        self.now = start or datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        """Move the clock forward by ``delta`` and return the new time."""
        self.now += delta
        return self.now


class CrashAt(Hooks):
    """Crash the worker at one point of one step.

    Args:
        step: The step's name.
        point: ``before_action`` (nothing done yet), ``after_action`` (the effect
            happened, its outcome is not checkpointed), or ``after_checkpoint``
            (the outcome is committed, the next step not yet dispatched).
        phase: The forward action or the compensation.
        attempt: Which attempt to crash (others pass).
        mode: ``raise`` a :class:`SimulatedCrash`, or ``sigkill`` this process.
        run_id: Only crash in this run (any run by default).
    """

    def __init__(
        self,
        step: str,
        *,
        point: CrashPoint = "before_action",
        phase: Phase | str = Phase.FORWARD,
        attempt: int = 1,
        mode: Literal["raise", "sigkill"] = "raise",
        run_id: str | None = None,
    ):
        if point not in ("before_action", "after_action", "after_checkpoint"):
            raise ValueError(f"unknown crash point {point!r}")
        self.step, self.point, self.phase = step, point, Phase(phase)
        self.attempt, self.mode, self.run_id = attempt, mode, run_id
        self.fired = False

    @classmethod
    def parse(cls, spec: str, mode: Literal["raise", "sigkill"] = "sigkill") -> CrashAt:
        """Build from ``STEP:POINT[:PHASE[:ATTEMPT]]``, e.g. ``charge:after_action``."""
        parts = spec.split(":")
        if not 2 <= len(parts) <= 4:
            raise ValueError(f"crash spec {spec!r}: expected STEP:POINT[:PHASE[:ATTEMPT]]")
        phase = parts[2] if len(parts) > 2 else "forward"
        attempt = int(parts[3]) if len(parts) > 3 else 1
        return cls(parts[0], point=parts[1], phase=phase, attempt=attempt, mode=mode)  # type: ignore[arg-type]

    def _crash(self) -> None:
        self.fired = True
        if self.mode == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise SimulatedCrash(f"simulated crash at {self.step}:{self.point}:{self.phase.value}")

    def _matches(self, call: ActionCall) -> bool:
        wanted = (self.step, self.phase, self.attempt)
        return (call.step, call.phase, call.attempt) == wanted and self.run_id in (
            None,
            call.run_id,
        )

    def before_action(self, call: ActionCall) -> None:
        if self.point == "before_action" and not self.fired and self._matches(call):
            self._crash()

    def after_action(self, call: ActionCall, output: Any) -> None:
        if self.point == "after_action" and not self.fired and self._matches(call):
            self._crash()

    def after_checkpoint(self, run_id: str, events: Any) -> None:
        if self.point != "after_checkpoint" or self.fired or self.run_id not in (None, run_id):
            return
        done = (
            EventType.STEP_COMPLETED
            if self.phase is Phase.FORWARD
            else EventType.COMPENSATION_COMPLETED
        )
        if any(
            e.type is done and e.step == self.step and e.attempt == self.attempt for e in events
        ):
            self._crash()


class SagaHarness:
    """Runs sagas synchronously against a real saga log, with a manual clock.

    Args:
        registry: The sagas under test.
        store_url: The log's URL; a fresh SQLite file by default.
        clock: The clock; a :class:`ManualClock` by default.
        hooks: Extra hooks (crash injection, recorders).
        lease: Lease length (advance the clock past it to recover a crashed run).
    """

    def __init__(
        self,
        registry: Registry | Iterable[Saga],
        *,
        store_url: str | None = None,
        clock: ManualClock | None = None,
        hooks: Iterable[Hooks] = (),
        lease: timedelta = timedelta(seconds=30),
    ):
        if not isinstance(registry, Registry):
            registry = Registry(registry)
        if store_url is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="sagaledger-test-")
            store_url = f"sqlite:///{self._tmp.name}/saga.db"
        self.clock = clock or ManualClock()
        self.log = SagaLog.open(store_url, upgrade=True)
        # Rate limits count on the manual clock, and waiting for one moves it.
        self.rate_limiter = MemoryRateLimiter(clock=lambda: self.clock().timestamp())
        self.orchestrator = Orchestrator(
            self.log,
            registry,
            clock=self.clock,
            hooks=hooks,
            lease=lease,
            worker_id="harness",
            rate_limiter=self.rate_limiter,
            sleep=self._sleep,
        )
        self.orchestrator.set_dispatcher(self._enqueue)
        self._queue: list[tuple[datetime, str]] = []

    def _sleep(self, seconds: float) -> None:
        self.clock.advance(timedelta(seconds=seconds))

    def _enqueue(self, request: Dispatch) -> None:
        self._queue.append((self.clock() + (request.delay or timedelta(0)), request.run_id))

    def start(
        self, saga: Saga | str, input: BaseModel | dict[str, Any], **options: Any
    ) -> RunRecord:
        """Start a run (see :meth:`Orchestrator.start`) without driving it."""
        return self.orchestrator.start(saga, input, **options)

    def run(self, saga: Saga | str, input: BaseModel | dict[str, Any], **options: Any) -> RunRecord:
        """Start a run and drive everything that is due; return the run as it then stands."""
        run = self.start(saga, input, **options)
        self.run_until_idle()
        return self.log.get_run(run.id)

    def run_until_idle(self, max_drives: int = 10_000) -> int:
        """Drive due messages, then whatever recovery finds due, until nothing is due.

        Returns:
            How many drives ran. A :class:`SimulatedCrash` propagates after the
            harness forgets the "dead" worker's leases, as a real crash would.
        """
        drives = 0
        while drives < max_drives:
            now = self.clock()
            due = [item for item in self._queue if item[0] <= now]
            if not due:
                if self.orchestrator.recover() == 0:
                    return drives
                continue
            self._queue.remove(due[0])
            drives += 1
            try:
                self.orchestrator.drive(due[0][1])
            except SimulatedCrash:
                self.orchestrator.leases = LeaseKeeper(
                    self.log, self.orchestrator.lease, self.clock
                )
                raise
        raise RuntimeError(f"still busy after {max_drives} drives; is a run looping?")

    def advance(self, delta: timedelta) -> None:
        """Move the clock forward (past a back-off, a lease, a timer)."""
        self.clock.advance(delta)

    def status(self, run_id: str) -> RunStatus:
        """The run's current status."""
        return self.log.get_run(run_id).status

    def events(self, run_id: str) -> list[EventRecord]:
        """The run's events, in order."""
        return self.log.events(run_id)

    def close(self) -> None:
        """Release the store."""
        self.log.close()


__all__ = [
    "CrashAt",
    "ManualClock",
    "SagaHarness",
    "SimulatedCrash",
    "WorkerProcess",
    "WorkerProcessError",
]
