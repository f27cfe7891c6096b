"""Which run (and step) this thread is driving, for log lines and telemetry.

The orchestrator sets it around each drive, and the driver at each attempt; a
line logged anywhere in between (by sagaledger, a step, a connector) can say
which run and step it belongs to. Outside a drive it is None.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RunContext:
    """The run a drive works on, and the step and attempt it is at."""

    run_id: str
    saga: str
    version: int
    step: str
    phase: str
    attempt: int


_current: ContextVar[RunContext | None] = ContextVar("sagaledger_run", default=None)


def current_run() -> RunContext | None:
    """The run this thread is driving, at its current step; None outside a drive."""
    return _current.get()


def enter_run(context: RunContext) -> Token[RunContext | None]:
    """Make ``context`` the current run (until :func:`leave_run` with the token)."""
    return _current.set(context)


def leave_run(token: Token[RunContext | None]) -> None:
    """Restore what was current before :func:`enter_run` returned ``token``."""
    _current.reset(token)
