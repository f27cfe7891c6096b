"""Operator actions: a person moves a stuck run on, or closes it, on the record.

Each action is one fenced write: the run's new state and an ``operator_action``
event (actor: the operator; payload: the action, the reason and what changed)
commit together, or neither does. A run that must run again is woken at once
and dispatched; a worker carries the action out, as it would any run.

- ``retry_compensation``: a run parked while compensating goes back to that
  compensation, from attempt 1, and unwinds on from there.
- ``resume``: a run parked going forward (a failure past a completed pivot, an
  unknown outcome with no probe) retries its parked step forward, from attempt 1.
- ``force_compensate``: a running or waiting run, or one parked going forward,
  is compensated now, as a cancel would do it. Never past a completed pivot:
  that is refused, naming the pivot (the steps before it can no longer be undone
  by the orchestrator; resume the run, or resolve it by hand). A parked step
  whose outcome is unknown is not compensated: the event says so, for a person
  to check it in the remote system.
- ``resolve``: a parked run is closed as ``resolved``, what was left done by hand
  (a manual refund). No worker touches it again.

Parked runs take a new fencing token with the action, so of two operators acting
at once, one acts and the other is told the run's new state. A running run's
token is left as it is: its worker keeps its lease and checkpoints its step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sagaledger._errors import ActionRefusedError, RunNotActiveError, StoreError
from sagaledger.sagas._dispatch import Dispatch
from sagaledger.store import EventRecord, EventType, NewEvent, Phase, RunRecord, RunStatus

if TYPE_CHECKING:
    from sagaledger.sagas._orchestrator import Orchestrator

#: Fenced writes retried when the run changed between its read and the write.
_TRIES = 5

#: Statuses no action changes (a resolved run is closed for good).
_FINISHED = (RunStatus.COMPLETED, RunStatus.COMPENSATED, RunStatus.RESOLVED)


@dataclass(frozen=True)
class OperatorReceipt:
    """What an operator action did.

    Attributes:
        run_id: The run.
        action: ``retry_compensation``, ``resume``, ``force_compensate`` or ``resolve``.
        by: Who acted (the event's actor).
        reason: Why, as recorded.
        status: The run's status as the action left it.
        step: The step it stood at.
        note: What happens next, in a sentence for people.
        not_compensated: A step that force-compensating leaves alone: its outcome is
            unknown, so someone must check it in the remote system.
    """

    run_id: str
    action: str
    by: str
    reason: str
    status: RunStatus
    step: str
    note: str
    not_compensated: str | None = None


def retry_compensation(o: Orchestrator, run_id: str, by: str, reason: str) -> OperatorReceipt:
    """See :meth:`Orchestrator.retry_compensation`."""
    action = "retry the compensation of"
    _require(run_id, by, reason, "retrying the compensation of")
    for _ in range(_TRIES):
        run = _parked(o, run_id, action)
        events = o.log.events(run.id)
        if parked_phase(events) is not Phase.COMPENSATE:
            raise ActionRefusedError(
                run.id,
                action,
                f"it is parked going forward at step {run.step!r}, not compensating; "
                "resume it, force-compensate it or resolve it",
            )
        receipt = OperatorReceipt(
            run.id,
            "retry_compensation",
            by,
            reason,
            RunStatus.COMPENSATING,
            run.step,
            f"a worker retries the compensation of step {run.step!r}, then unwinds on",
        )
        if _act(o, run, receipt, wake=True, status=RunStatus.COMPENSATING.value, last_error=None):
            return receipt
    raise _kept_changing(run_id, "retried")


def resume(o: Orchestrator, run_id: str, by: str, reason: str) -> OperatorReceipt:
    """See :meth:`Orchestrator.resume`."""
    _require(run_id, by, reason, "resuming")
    for _ in range(_TRIES):
        run = _parked(o, run_id, "resume")
        events = o.log.events(run.id)
        if parked_phase(events) is Phase.COMPENSATE:
            raise ActionRefusedError(
                run.id,
                "resume",
                f"it is parked compensating step {run.step!r}; "
                "retry the compensation (retry-compensation) or resolve it",
            )
        if run.cancel_requested is not None:
            _, pivot = _completed_pivot(o, run, events)
            if pivot is None:  # else its driver refuses the cancel, in the log, and goes on
                asked = run.cancel_requested
                raise ActionRefusedError(
                    run.id,
                    "resume",
                    f"it was parked while being cancelled (by {asked.get('by')}: "
                    f"{asked.get('reason')}); force-compensate it or resolve it",
                )
        receipt = OperatorReceipt(
            run.id,
            "resume",
            by,
            reason,
            RunStatus.RUNNING,
            run.step,
            f"a worker retries step {run.step!r} forward, from attempt 1",
        )
        # last_error stays: an outcome still unknown is asked about if the run is cancelled.
        if _act(o, run, receipt, wake=True, status=RunStatus.RUNNING.value):
            return receipt
    raise _kept_changing(run_id, "resumed")


def force_compensate(o: Orchestrator, run_id: str, by: str, reason: str) -> OperatorReceipt:
    """See :meth:`Orchestrator.force_compensate`."""
    action = "force-compensate"
    _require(run_id, by, reason, "force-compensating")
    for _ in range(_TRIES):
        run = o.log.get_run(run_id)
        if run.status in _FINISHED:
            raise RunNotActiveError(run.id, run.status.value, action)
        if run.status is RunStatus.COMPENSATING:
            raise ActionRefusedError(run.id, action, "it is already compensating")
        events = o.log.events(run.id)
        parked = run.status is RunStatus.PARKED
        if parked and parked_phase(events) is Phase.COMPENSATE:
            raise ActionRefusedError(
                run.id,
                action,
                f"it is parked compensating step {run.step!r}; "
                "retry the compensation (retry-compensation) or resolve it",
            )
        known, pivot = _completed_pivot(o, run, events)
        if pivot is not None:
            raise ActionRefusedError(
                run.id,
                action,
                f"pivot {pivot!r} has completed, so the steps before it cannot be undone; "
                "resume it, or resolve it by hand",
            )
        if parked and not known:
            # A running run's driver checks for a pivot itself; a parked one has none.
            raise ActionRefusedError(
                run.id,
                action,
                f"whether it has passed a pivot is unknown here: saga {run.saga_name!r} "
                f"version {run.saga_version} (fingerprint {run.fingerprint}) is not "
                "registered in this process and no worker has recorded its shape "
                "(give the sagas: --app MODULE:ATTR)",
            )
        now = o.clock()
        asked = {"by": by, "reason": reason, "at": now.isoformat(), "action": "force_compensate"}
        changes: dict[str, Any] = {"cancel_requested": asked}
        in_flight = run.lease_owner is not None and not parked
        in_doubt = parked and _in_doubt(run, events)
        if parked:
            # Its driver then turns at once (the request), from the completed steps only:
            # with last_error cleared, a step in doubt is not probed again, and not undone.
            changes.update(status=RunStatus.RUNNING.value, last_error=None)
        note = "a worker compensates its completed steps, last first"
        if in_flight:
            note += ", once the step in flight is checkpointed"
        not_compensated = run.step if in_doubt else None
        if not_compensated is not None:
            note += (
                f"; step {run.step!r} is not compensated: its outcome is unknown, "
                "check it in the remote system"
            )
        receipt = OperatorReceipt(
            run.id,
            "force_compensate",
            by,
            reason,
            RunStatus.RUNNING if parked else run.status,
            run.step,
            note,
            not_compensated,
        )
        if _act(o, run, receipt, wake=not in_flight, **changes):
            return receipt
    raise _kept_changing(run_id, "force-compensated")


def resolve(o: Orchestrator, run_id: str, by: str, reason: str) -> OperatorReceipt:
    """See :meth:`Orchestrator.resolve`."""
    _require(run_id, by, reason, "resolving")
    for _ in range(_TRIES):
        run = _parked(o, run_id, "resolve", "force-compensate or cancel it first")
        receipt = OperatorReceipt(
            run.id,
            "resolve",
            by,
            reason,
            RunStatus.RESOLVED,
            run.step,
            "resolved by hand: no worker acts on it again",
        )
        closed = _act(
            o,
            run,
            receipt,
            wake=False,
            status=RunStatus.RESOLVED.value,
            wake_at=None,
            dispatched_at=None,
            awaiting=None,
            cancel_requested=None,
        )
        if closed:
            return receipt
    raise _kept_changing(run_id, "resolved")


# -- shared --------------------------------------------------------------------------


def _require(run_id: str, by: str, reason: str, doing: str) -> None:
    if not reason.strip():
        raise ValueError(f"{doing} run {run_id!r} needs a reason")
    if not by.strip():
        raise ValueError(f"{doing} run {run_id!r} needs to say who acts (by=...)")


def _parked(o: Orchestrator, run_id: str, action: str, if_running: str = "") -> RunRecord:
    """The run, which must be parked; else the refusal says what to do instead.

    Args:
        if_running: Advice for a running run, appended to the refusal.
    """
    run = o.log.get_run(run_id)
    if run.status is RunStatus.PARKED:
        return run
    if run.status in _FINISHED:
        raise RunNotActiveError(run.id, run.status.value, action)
    if run.status is RunStatus.COMPENSATING:
        why = (
            "it is compensating, not parked; let it finish "
            "(a compensation that keeps failing parks it)"
        )
    else:
        why = "it is running, not parked" + (f"; {if_running}" if if_running else "")
    raise ActionRefusedError(run.id, action, why)


def parked_phase(events: Sequence[EventRecord]) -> Phase:
    """Whether the run was going forward or compensating when it last parked.

    The park is written with the failure that caused it (``step_failed`` or
    ``compensation_failed``), or after the attempt a cancel found in doubt: the
    last event with a phase before the last ``run_parked`` says which.
    """
    parks = [i for i, e in enumerate(events) if e.type is EventType.RUN_PARKED]
    before = events[: parks[-1]] if parks else events
    phased = [e.phase for e in before if e.phase is not None]
    return phased[-1] if phased else Phase.FORWARD


def _completed_pivot(
    o: Orchestrator, run: RunRecord, events: Sequence[EventRecord]
) -> tuple[bool, str | None]:
    """Whether the run's definition is known here, and the pivot it has completed, if any.

    The definition's shape comes from this process's registry, or else from what a
    worker recorded (``sagaledger_definitions``): an operator's command has no sagas.
    """
    saga = o.registry.find(run.saga_name, run.saga_version)
    if saga is not None and saga.fingerprint == run.fingerprint:
        shape: dict[str, Any] | None = saga.shape
    else:
        shape = o.log.definition_shape((run.saga_name, run.saga_version, run.fingerprint))
    if shape is None:
        return False, None
    pivots = {s["name"] for s in shape["steps"] if s.get("pivot")}
    completed = [e.step for e in events if e.type is EventType.STEP_COMPLETED]
    return True, next((s for s in completed if s in pivots), None)


def _in_doubt(run: RunRecord, events: Sequence[EventRecord]) -> bool:
    """A parked run's step may have landed: its answer was lost, or a crash cut it short."""
    if any(e.type is EventType.STEP_COMPLETED and e.step == run.step for e in events):
        return False
    unknown = bool((run.last_error or {}).get("outcome_unknown"))
    # The driver's words when it parks a run for a step it cannot settle (see _driver).
    return unknown or "its outcome is unknown" in (run.blocked_reason or "")


def _act(
    o: Orchestrator, run: RunRecord, receipt: OperatorReceipt, *, wake: bool, **changes: Any
) -> bool:
    """Write the action's event with ``changes``, fenced; wake and dispatch the run if asked."""
    now = o.clock()
    payload: dict[str, Any] = {
        "action": receipt.action,
        "reason": receipt.reason,
        "status": {"from": run.status.value, "to": receipt.status.value},
        "step": run.step,
    }
    if run.blocked_reason:
        payload["parked_reason"] = run.blocked_reason
    if receipt.not_compensated is not None:
        payload["not_compensated"] = {
            "step": receipt.not_compensated,
            "why": "its outcome is unknown: check it in the remote system, undo it by hand",
        }
    parked = run.status is RunStatus.PARKED
    if parked:
        changes.update(blocked_reason=None)
        if wake:
            changes.setdefault("attempt", 1)
    if wake:
        changes.update(wake_at=now, dispatched_at=now if o.dispatching else None)
    event = NewEvent(EventType.OPERATOR_ACTION, receipt.by, run.step, payload=payload)
    # A parked run takes a new token: of two operators acting at once, one wins.
    new_token = run.lease_token + 1 if parked else None
    written = o.log.append(run.id, run.lease_token, [event], now, new_token=new_token, **changes)
    if written and wake:
        o.dispatch(Dispatch(run.id, run.saga_name, run.saga_version))
    return bool(written)


def _kept_changing(run_id: str, done: str) -> StoreError:
    return StoreError(f"run {run_id!r} kept changing while it was being {done}; try again")
