"""Cancelling a run: asked for by a person or a service, carried out by the run's driver.

Cancelling turns a running run to compensation: the completed steps are undone
in reverse, as after a permanent failure. The request is written to the log
first (a ``cancel_requested`` event and the run's ``cancel_requested`` column),
fenced like every write, and the driver acts on it:

- a run that is waiting (a retry back-off, a rate limit, a message not yet
  delivered) is woken at once, and its driver compensates without running the
  pending attempt;
- a run whose step is in flight is not turned under its worker's feet: the
  worker finishes the step, checkpoints it, and turns at that step boundary
  (the checkpoint's own write reports the request, from whichever process);
- a run already compensating is left alone; the request is recorded as such.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sagaledger._errors import RunNotActiveError, StoreError
from sagaledger.sagas._dispatch import Dispatch
from sagaledger.store import EventType, NewEvent, RunStatus

if TYPE_CHECKING:
    from sagaledger.sagas._orchestrator import Orchestrator

#: Fenced writes retried when the run changed between its read and the write.
_TRIES = 5


class CancelOutcome(StrEnum):
    """What a cancel request did."""

    #: The run turns to compensation: now if it was waiting, else at its next step boundary.
    CANCELLING = "cancelling"
    #: The run was already compensating; the request is recorded and changes nothing.
    ALREADY_COMPENSATING = "already_compensating"


def request_cancel(o: Orchestrator, run_id: str, reason: str, by: str) -> CancelOutcome:
    """Ask for ``run_id`` to be cancelled; see :meth:`Orchestrator.cancel`."""
    if not reason.strip():
        raise ValueError(f"cancelling run {run_id!r} needs a reason")
    if not by.strip():
        raise ValueError(f"cancelling run {run_id!r} needs to say who asks (by=...)")
    for _ in range(_TRIES):
        run = o.log.get_run(run_id)
        if not run.status.active:
            raise RunNotActiveError(run_id, run.status.value, "cancel")
        now = o.clock()
        asked = {"by": by, "reason": reason, "at": now.isoformat()}
        if run.status is RunStatus.COMPENSATING:
            outcome = CancelOutcome.ALREADY_COMPENSATING
            event = _requested(asked, "ignored: the run is already compensating")
            if o.log.append(run.id, run.lease_token, [event], now):
                return outcome
            continue
        waiting = run.lease_owner is None
        changes: dict[str, Any] = {"cancel_requested": asked}
        if waiting:  # wake it now rather than when its back-off or wait would end
            changes.update(wake_at=now, dispatched_at=now if o.dispatching else None)
        event = _requested(
            asked, "cancelling" if waiting else "cancelling after the step in flight"
        )
        # Fenced by the run's token without taking it: a worker mid-step keeps its lease.
        if o.log.append(run.id, run.lease_token, [event], now, **changes):
            if waiting:
                o.dispatch(Dispatch(run.id, run.saga_name, run.saga_version))
            # Else the driver learns of it from its next checkpoint's write.
            return CancelOutcome.CANCELLING
    raise StoreError(f"run {run_id!r} kept changing while it was being cancelled; try again")


def _requested(asked: dict[str, str], outcome: str) -> NewEvent:
    return NewEvent(EventType.CANCEL_REQUESTED, asked["by"], payload={**asked, "outcome": outcome})
