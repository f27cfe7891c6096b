"""Hooks: a no-op base class that metrics, tracing, audit and tests plug into."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


class Hooks:
    """Override any method; the orchestrator calls each at the point it names.

    Hooks run in the worker thread, synchronously; an exception raised by a hook
    propagates (so a test can simulate a crash at that point).
    """

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
