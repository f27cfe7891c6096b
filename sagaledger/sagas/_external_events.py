"""External events: a run waits for a named event with a correlation key, up to a deadline.

A service tells the orchestrator that something happened elsewhere (a payment
settled, a parcel was delivered) with :meth:`Orchestrator.signal`: the event's
name, a correlation key (the order number) and a JSON payload. The event is
kept in the signals table once per name and key, so:

- an event sent before its run waits for it is found when the run gets there;
- an event sent twice (a webhook retried) counts once: the second is ignored
  and the sender is told so;
- every run waiting for that name and key is woken at once.

The step's output is the event: ``{"received": True, "event", "key",
"payload", "sender", "received_at"}``. At the deadline with no event, the step
fails for good (the run compensates), or, with ``on_deadline="continue"``, it
completes with ``{"received": False, ...}`` and later steps decide.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from sagaledger._errors import DefinitionError, PermanentError, UnknownEventError
from sagaledger.sagas._context import StepContext
from sagaledger.sagas._definition import Step
from sagaledger.sagas._driver import to_json
from sagaledger.sagas._policy import RetrySafety
from sagaledger.sagas._waits import event_awaiting, parse_time
from sagaledger.store import EventType, NewEvent, SignalRecord

if TYPE_CHECKING:
    from sagaledger.sagas._driver import RunDriver
    from sagaledger.sagas._orchestrator import Orchestrator

#: An event's name: like a step's, with dots for namespaces (``payment.settled``).
_EVENT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,99}$")
#: Correlation keys are stored and compared as given, up to this length.
MAX_KEY = 200
#: How long a worker counts, for the events its sagas wait for, after it was last seen.
KNOWN_FOR = timedelta(days=1)


class EventDeadlineError(PermanentError):
    """The awaited event did not arrive by its deadline: the run compensates."""


@dataclass(frozen=True)
class SignalReceipt:
    """What delivering an event did.

    Attributes:
        new: False when the same name and key had been delivered before: this
            one was ignored (and its payload with it).
        received_at: When the kept delivery arrived.
        sender: Who sent the kept delivery.
        woken: The runs that were waiting for it and were woken now.
    """

    new: bool
    received_at: datetime
    sender: str
    woken: list[str]


@dataclass(frozen=True)
class EventWait:
    """The event a step waits for (see :func:`wait_for_event`)."""

    event: str
    key: Callable[[StepContext[Any]], str]
    within: timedelta
    on_deadline: Literal["fail", "continue"] = "fail"

    def resume(self, driver: RunDriver, step: Step) -> bool:
        """Start waiting (the key and deadline go to the log), or take the event, or give up."""
        now = driver.o.clock()
        first: list[NewEvent] = []
        awaited = driver.latest(step, [EventType.EVENT_AWAITED])
        if awaited is not None:
            wanted = awaited.payload
        else:
            try:
                key = check_key(self.key(driver.context(step)))
            except Exception as exc:  # a failing key(): a step failure like any other
                return driver.fail(step, exc)
            wanted = {"event": self.event, "key": key, "deadline": (now + self.within).isoformat()}
            first.append(driver.event(EventType.EVENT_AWAITED, step, wanted))
        # As the log says: a run started before a deploy waits for what it was told to.
        name, key = wanted["event"], wanted["key"]
        signal = driver.o.log.find_signal(name, key)
        if signal is not None:
            received = _received(signal)
            taken = driver.event(EventType.EVENT_RECEIVED, step, received, actor=signal.sender)
            return driver.complete(step, {"received": True, **received}, [*first, taken])
        deadline = parse_time(wanted["deadline"])
        if now >= deadline:
            if self.on_deadline == "continue":
                missed = {"received": False, "event": name, "key": key}
                return driver.complete(step, {**missed, "deadline": wanted["deadline"]}, first)
            late = EventDeadlineError(
                f"event {name!r} with key {key!r} did not arrive by {wanted['deadline']}"
            )
            return driver.fail(step, late, first)
        return driver.wait_until(
            first,
            deadline,
            awaiting=event_awaiting(name, key),
            arrived=lambda: driver.o.log.find_signal(name, key) is not None,
        )


def _received(signal: SignalRecord) -> dict[str, Any]:
    return {
        "event": signal.name,
        "key": signal.key,
        "payload": signal.payload,
        "sender": signal.sender,
        "received_at": signal.received_at.isoformat(),
    }


def check_key(key: Any) -> str:
    """A correlation key as stored: a non-empty string of at most ``MAX_KEY`` characters."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY:
        raise ValueError(
            f"an event's correlation key must be a non-empty string of at most {MAX_KEY} "
            f"characters, got {key!r}"
        )
    return key


def _nothing(ctx: StepContext[Any]) -> None:
    """A waiting step's action: never called, the driver waits instead."""


def wait_for_event(
    name: str,
    *,
    event: str,
    key: Callable[[StepContext[Any]], str],
    within: timedelta,
    on_deadline: Literal["fail", "continue"] = "fail",
) -> Step:
    """A step that waits for the external event ``event`` with the correlation key ``key``.

    Args:
        name: The step's name.
        event: The event's name (``payment.settled``).
        key: Computes the correlation key from the step's context (the order
            number in the input, an id an earlier step returned); once.
        within: The deadline, from when the run reaches the step.
        on_deadline: ``"fail"``: the step fails for good and the run
            compensates; ``"continue"``: it completes with ``received: False``.

    Raises:
        DefinitionError: a bad event name, a key that is not a function, a
            deadline that is not positive, or an unknown ``on_deadline``.
    """
    problem = None
    if not isinstance(event, str) or not _EVENT_NAME.match(event):
        problem = f"invalid event name {event!r} (letters, digits, _ . -)"
    elif not callable(key):
        problem = "key must be a function of the step's context"
    elif within <= timedelta(0):
        problem = f"within= must be positive, got {within}"
    elif on_deadline not in ("fail", "continue"):
        problem = f"on_deadline must be 'fail' or 'continue', got {on_deadline!r}"
    if problem is not None:
        raise DefinitionError(f"event wait {name!r}: {problem}", step=name)
    return Step(
        name=name,
        action=_nothing,
        no_compensation="waiting for an event has nothing to undo",
        retry_safety=RetrySafety.NATURAL,
        wait=EventWait(event, key, within, on_deadline),
    )


# -- delivering -------------------------------------------------------------------


def deliver(o: Orchestrator, name: str, key: str, payload: Any, by: str) -> SignalReceipt:
    """Deliver event ``name`` with ``key``; see :meth:`Orchestrator.signal`."""
    if not by.strip():
        raise ValueError(f"event {name!r} needs to say who sends it (by=...)")
    key = check_key(key)
    now = o.clock()
    known = o.registry.event_names()
    if name not in known:  # only then ask the log what live workers wait for
        known |= o.log.known_events(now - KNOWN_FOR)
        if name not in known:
            raise UnknownEventError(name, sorted(known))
    try:
        data = to_json(payload)
    except Exception as exc:
        raise ValueError(f"event {name!r} key {key!r}: the payload is not JSON: {exc}") from None
    signal, new = o.log.record_signal(name, key, data, by, now)
    woken = o.wake(event_awaiting(name, key))
    return SignalReceipt(new, signal.received_at, signal.sender, woken)
