"""The shapes the saga log stores: run states, event types and records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum, StrEnum
from typing import Any


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def parse_moment(value: str | None, what: str) -> datetime | None:
    """A date (midnight UTC) or an ISO time (UTC unless it says otherwise) typed by a person.

    Raises:
        ValueError: not a date or a time; the message names ``what`` was given.
    """
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not a date (YYYY-MM-DD) or an ISO time") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


class RunStatus(StrEnum):
    """Where a run stands. Only ``running`` and ``compensating`` runs are driven."""

    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    PARKED = "parked"
    #: Closed by an operator after a park, the rest done by hand (a manual refund).
    RESOLVED = "resolved"

    @property
    def active(self) -> bool:
        """True while the orchestrator still has work to do on the run."""
        return self in (RunStatus.RUNNING, RunStatus.COMPENSATING)


#: Statuses the recovery pass and workers drive.
ACTIVE_STATUSES = (RunStatus.RUNNING.value, RunStatus.COMPENSATING.value)
#: Statuses of runs that are not over: driven, or parked until a person acts.
UNFINISHED_STATUSES = (*ACTIVE_STATUSES, RunStatus.PARKED.value)


class Phase(StrEnum):
    """Which way a step is being run."""

    FORWARD = "forward"
    COMPENSATE = "compensate"


class EventType(StrEnum):
    """Every kind of event the log holds."""

    RUN_STARTED = "run_started"
    ATTEMPT_STARTED = "attempt_started"
    ATTEMPT_ABANDONED = "attempt_abandoned"  # the lease of an attempt expired (worker lost)
    STEP_COMPLETED = "step_completed"
    STEP_DEFERRED = "step_deferred"  # a rate limit said wait; no attempt used up
    STEP_FAILED = "step_failed"  # payload says what follows: retry, compensate or park
    COMPENSATION_STARTED = "compensation_started"  # the run turned to unwinding
    COMPENSATION_COMPLETED = "compensation_completed"
    COMPENSATION_FAILED = "compensation_failed"
    RUN_COMPLETED = "run_completed"
    RUN_COMPENSATED = "run_compensated"
    RUN_PARKED = "run_parked"
    VERSION_UNAVAILABLE = "version_unavailable"
    CANCEL_REQUESTED = "cancel_requested"  # by a person or a service; payload: by, reason
    TIMER_STARTED = "timer_started"  # a timer step began waiting; payload: until
    APPROVAL_REQUESTED = "approval_requested"  # payload: level, approvers, deadline, shown
    APPROVAL_ESCALATED = "approval_escalated"  # the deadline passed: a new level, as requested
    APPROVAL_DECIDED = "approval_decided"  # actor: the approver (or the worker, by default)
    EVENT_AWAITED = "event_awaited"  # payload: event, key, deadline
    EVENT_RECEIVED = "event_received"  # payload: event, key, payload, sender, received_at
    #: A person acted on the run (retry, resume, force-compensate, resolve); actor: who.
    #: Payload: action, reason, and what changed (status, step...).
    OPERATOR_ACTION = "operator_action"


@dataclass(frozen=True)
class RunRecord:
    """A run as the log holds it (a projection kept in step with its events)."""

    id: str
    saga_name: str
    saga_version: int
    fingerprint: str
    business_key: str
    status: RunStatus
    step_index: int
    step: str
    attempt: int
    input: dict[str, Any]
    lease_owner: str | None
    lease_token: int
    wake_at: datetime | None
    dispatched_at: datetime | None
    last_seq: int
    blocked_reason: str | None
    last_error: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    #: ``{"by": ..., "reason": ..., "at": ...}`` once someone asked to cancel the run.
    cancel_requested: dict[str, Any] | None = None
    #: What the run waits for while it waits at an approval or an external event.
    awaiting: str | None = None
    #: The hash of the run's last event (the head of its chain).
    last_hash: str | None = None


class Written(Enum):
    """What a fenced write did; true when it was written."""

    REFUSED = "refused"  # the token had moved: nothing was written
    DONE = "done"
    #: Written, and the run has a cancel request: its driver turns at this boundary.
    CANCEL_ASKED = "cancel_asked"

    def __bool__(self) -> bool:
        return self is not Written.REFUSED


@dataclass(frozen=True)
class NewEvent:
    """An event to append; the log assigns its sequence number."""

    type: EventType
    actor: str
    step: str | None = None
    phase: Phase | None = None
    attempt: int | None = None
    payload: Any = None
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class SignalRecord:
    """An external event (or an approval decision) as delivered, kept once per name and key."""

    name: str
    key: str
    payload: Any
    sender: str
    received_at: datetime


@dataclass(frozen=True)
class EventRecord:
    """One appended event. Events are never updated or deleted."""

    run_id: str
    seq: int
    type: EventType
    step: str | None
    phase: Phase | None
    attempt: int | None
    payload: Any
    error: dict[str, Any] | None
    actor: str
    token: int | None
    created_at: datetime
    #: Chained to the run's previous event (see ``sagaledger.store._chain``).
    hash: str | None = None
