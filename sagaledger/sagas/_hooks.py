"""Hooks: a no-op base class that metrics, tracing, audit and tests plug into."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sagaledger.store import NewEvent, Phase


@dataclass(frozen=True)
class ActionCall:
    """Which action is about to run (or just ran)."""

    run_id: str
    saga: str
    version: int
    step: str
    phase: Phase
    attempt: int
    idempotency_key: str


@dataclass(frozen=True)
class DriveCall:
    """One drive of a run: a worker claimed it and runs its ready work under one lease.

    Attributes:
        token: The lease token the drive holds. Only claims change a run's token,
            so the run's first drive holds 1 and drive ``n`` follows drive ``n - 1``.
        created_at: When the run was started.
        started_ns: When the drive began (before its claim), in ``time.time_ns()``.
    """

    run_id: str
    saga: str
    version: int
    token: int
    created_at: datetime
    started_ns: int


class DriveOutcome(StrEnum):
    """How a drive ended."""

    COMPLETED = "completed"
    COMPENSATED = "compensated"
    PARKED = "parked"
    WAITING = "waiting"  # let go until a time or a delivery: a back-off, timer, approval, event
    LEASE_LOST = "lease_lost"  # a write was refused: another worker has the run
    ERROR = "error"  # the drive raised (the store went away; a simulated crash in tests)


class Hooks:
    """Override any method; the orchestrator calls each at the point it names.

    Hooks run in the worker thread, synchronously; an exception raised by a hook
    propagates (so a test can simulate a crash at that point).
    """

    def drive_started(self, drive: DriveCall) -> None:
        """A worker claimed the run; its steps are about to run."""

    def drive_finished(
        self, drive: DriveCall, outcome: DriveOutcome, error: BaseException | None
    ) -> None:
        """The drive let the run go (its lease is released); ``error`` if it raised."""

    def before_action(self, call: ActionCall) -> None:
        """An action or compensation is about to run."""

    def after_action(self, call: ActionCall, output: Any) -> None:
        """It returned; its outcome is not yet checkpointed."""

    def action_failed(self, call: ActionCall, error: BaseException) -> None:
        """It raised; the failure is not yet checkpointed."""

    def after_checkpoint(self, run_id: str, events: Sequence[NewEvent]) -> None:
        """Events were committed; nothing after them has been dispatched yet."""

    def write_refused(self, run_id: str, token: int, events: Sequence[NewEvent]) -> None:
        """A stale lease holder's write was refused (another attempt took over)."""
