"""What the steps that wait have in common: timers, approvals and external events.

A waiting step does not act: when a run reaches it, the driver hands the step
to its :class:`Wait`, which records what the run waits for and until when, and
lets the run go (``RunDriver.wait_until``). While it waits the run holds no
process, thread, connection or broker message: its ``wake_at`` in the log is
its deadline, and its ``awaiting`` column names what it waits for, so that
delivering that (an event, a decision) wakes exactly the runs that wait for it.

Deliveries are kept in the signals table whether or not a run waits yet, once
per name and key, and a waiting step looks there first: an event sent before
its run waits is not lost, and one sent twice counts once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from sagaledger.store import EventRecord, EventType, RunRecord, SagaLog, SignalRecord

if TYPE_CHECKING:
    from sagaledger.sagas._definition import Step
    from sagaledger.sagas._driver import RunDriver

#: The signal name approval decisions are kept under; ":" is never in an event's name.
APPROVAL_SIGNAL = "sagaledger:approval"


class Wait(Protocol):
    """How a waiting step waits (see :func:`timer`, :func:`approval`, :func:`wait_for_event`)."""

    def resume(self, driver: RunDriver, step: Step) -> bool:
        """Go on with the run at ``step``: start the wait, or end it; True to keep driving."""
        ...


def event_awaiting(name: str, key: str) -> str:
    """The ``awaiting`` value of a run waiting for event ``name`` with correlation ``key``."""
    return f"event:{name}/{key}"


def approval_key(run_id: str, step: str) -> str:
    """The signal key of the decision on approval ``step`` of ``run_id``."""
    return f"{run_id}/{step}"


#: The ``awaiting`` values of runs waiting for an approval start with this.
APPROVAL_AWAITING = "approval:"


def approval_awaiting(run_id: str, step: str) -> str:
    """The ``awaiting`` value of a run waiting for a decision on approval ``step``."""
    return APPROVAL_AWAITING + approval_key(run_id, step)


def parse_time(value: Any) -> datetime:
    """A time the log holds as ISO text."""
    return datetime.fromisoformat(str(value))


def kept_delivery(
    log: SagaLog, run: RunRecord, events: Sequence[EventRecord]
) -> SignalRecord | None:
    """What a waiting run's wait received that no worker has taken yet, if anything.

    Args:
        log: The saga log.
        run: The run.
        events: Its events (the latest awaited event names the event and key).
    """
    if run.awaiting is None or not run.status.active:
        return None
    if run.awaiting.startswith(APPROVAL_AWAITING):
        return log.find_signal(APPROVAL_SIGNAL, approval_key(run.id, run.step))
    awaited = [e for e in events if e.type is EventType.EVENT_AWAITED and e.step == run.step]
    if not awaited:
        return None
    wanted = awaited[-1].payload
    return log.find_signal(str(wanted["event"]), str(wanted["key"]))
