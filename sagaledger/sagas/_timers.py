"""Durable timers: a step that waits until a time, for minutes or for weeks.

A timer step does nothing but wait. The first time a run reaches it, the time it
fires is computed once and written to the log (``timer_started``); the run then
gives its lease up with ``wake_at`` at that time, and holds no process, thread,
connection or broker message meanwhile: the recovery pass of any worker wakes
it when it is due (a short timer also gets a delayed message, to fire on time).
A crash, a restart or a deploy in between changes nothing: the time is in the log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sagaledger._errors import DefinitionError
from sagaledger.sagas._context import StepContext
from sagaledger.sagas._definition import Step
from sagaledger.sagas._policy import RetrySafety
from sagaledger.sagas._waits import parse_time
from sagaledger.store import EventType, NewEvent

if TYPE_CHECKING:
    from sagaledger.sagas._driver import RunDriver


@dataclass(frozen=True)
class TimerWait:
    """When a timer step fires: ``after`` its start, or at the time ``until`` computes."""

    after: timedelta | None = None
    until: Callable[[StepContext[Any]], datetime] | None = None

    def fires_at(self, ctx: StepContext[Any], now: datetime) -> datetime:
        """The time the timer fires, for a run that reaches it ``now``.

        Raises:
            DefinitionError: ``until`` returned something other than an aware datetime.
        """
        if self.after is not None:
            return now + self.after
        assert self.until is not None
        when = self.until(ctx)
        if not isinstance(when, datetime) or when.tzinfo is None:
            raise DefinitionError(
                f"until() must return a timezone-aware datetime, got {when!r}",
                saga=ctx.saga,
                step=ctx.step,
            )
        return when

    def resume(self, driver: RunDriver, step: Step) -> bool:
        """Start the timer once (its time goes to the log); complete the step once due."""
        now = driver.o.clock()
        started: list[NewEvent] = []
        record = driver.latest(step, [EventType.TIMER_STARTED])
        if record is not None:
            until = parse_time(record.payload["until"])
        else:
            try:
                until = self.fires_at(driver.context(step), now)
            except Exception as exc:  # a failing until(): a step failure like any other
                return driver.fail(step, exc)
            payload = {"until": until.isoformat()}
            started.append(driver.event(EventType.TIMER_STARTED, step, payload))
        if until > now:  # nothing runs meanwhile: the log's wake-up time is the timer
            return driver.wait_until(started, until)
        output = {"until": until.isoformat(), "fired_at": now.isoformat()}
        return driver.complete(step, output, started)


def _nothing(ctx: StepContext[Any]) -> None:
    """A timer's action: never called, the driver waits instead."""


def timer(
    name: str,
    *,
    after: timedelta | None = None,
    until: Callable[[StepContext[Any]], datetime] | None = None,
) -> Step:
    """A step that waits: ``after`` a duration from when the run reaches it, or ``until`` a time.

    Its output is ``{"until": ISO time, "fired_at": ISO time}``. A timer has
    nothing to undo; cancelling a run that waits on one wakes it at once.

    Args:
        name: The step's name.
        after: How long to wait (positive).
        until: Computes the time to wait until from the step's context (the run's
            input, earlier outputs), once; a time already past fires at once.

    Raises:
        DefinitionError: neither or both of ``after`` and ``until``, or a
            duration that is not positive.
    """
    if (after is None) == (until is None):
        raise DefinitionError(f"timer {name!r} needs exactly one of after= or until=", step=name)
    if after is not None and after <= timedelta(0):
        raise DefinitionError(f"timer {name!r}: after= must be positive, got {after}", step=name)
    return Step(
        name=name,
        action=_nothing,
        no_compensation="a timer has nothing to undo",
        retry_safety=RetrySafety.NATURAL,
        wait=TimerWait(after, until),
    )
