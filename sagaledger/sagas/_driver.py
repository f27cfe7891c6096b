"""Driving one claimed run: steps forward, compensations backward, one commit each.

A driver holds a run's lease (its fencing token) for one actor invocation and
runs every step that is ready, checkpointing each outcome before it moves on.
It stops when the run finishes, waits (a retry back-off), or a write is refused
because another worker has taken the run over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, TypeAdapter

from sagaledger._errors import OutcomeUnknownError
from sagaledger.audit._effects import Collecting, Effect, collecting
from sagaledger.compensation._plan import completed_pivot, next_compensation
from sagaledger.sagas._context import CompensationContext, StepContext, idempotency_key
from sagaledger.sagas._definition import Saga, Step
from sagaledger.sagas._dispatch import Dispatch
from sagaledger.sagas._failures import (
    Unknowable,
    describe_error,
    is_non_retryable,
    lost_attempt,
    may_have_landed,
)
from sagaledger.sagas._hooks import ActionCall, DriveOutcome
from sagaledger.sagas._policy import RetryPolicy
from sagaledger.store import (
    EventRecord,
    EventType,
    NewEvent,
    Phase,
    RunRecord,
    RunStatus,
    Written,
)
from sagaledger.telemetry._context import RunContext, enter_run

if TYPE_CHECKING:
    from sagaledger.sagas._orchestrator import Orchestrator

logger = logging.getLogger("sagaledger.driver")

_json = TypeAdapter(Any)


def to_json(value: Any) -> Any:
    """Turn a step's output into plain JSON (pydantic models and dates included)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return _json.dump_python(value, mode="json")


class RunDriver:
    """Runs the ready work of one run under one lease.

    Args:
        orchestrator: Supplies the log, clock, hooks and dispatcher.
        saga: The definition the run started on.
        run: The run as read before claiming it.
    """

    def __init__(self, orchestrator: Orchestrator, saga: Saga, run: RunRecord):
        self.o = orchestrator
        self.saga = saga
        self.run_id = run.id
        self.token = run.lease_token
        self.status = run.status
        self.index = run.step_index
        self.attempt = run.attempt
        self.input = saga.input.model_validate(run.input)
        self.outputs: dict[str, Any] = {}  # completed forward steps, in log order
        self.compensated: set[str] = set()
        self.reason = ""
        self._claimed_from = run
        # The current step's last attempt may have landed: it was cut short by a
        # crash, or its answer was lost. Undoing the run must then ask its probe.
        self._in_doubt = run.lease_owner is not None or bool(
            (run.last_error or {}).get("outcome_unknown")
        )
        self._unmarked_attempt = False
        # Someone asked to cancel: read at the claim, or reported by a checkpoint's write.
        self._cancel_seen = run.cancel_requested is not None
        # What the run waited for (an approval, an event); cleared when it moves on.
        self._awaiting = run.awaiting
        self._released = False  # the last write let the run go (a wait)
        self._refused = False  # a write was refused: another worker has the run

    # -- claiming -------------------------------------------------------------

    def claim(self) -> bool:
        """Take the run's lease with a new fencing token. False if another worker won."""
        run, now = self._claimed_from, self.o.clock()
        step, phase = self.saga.steps[self.index], self.phase
        first: list[NewEvent] = []
        if run.lease_owner is not None:
            # The previous holder's lease expired mid-attempt: that attempt counts.
            first.append(
                NewEvent(
                    EventType.ATTEMPT_ABANDONED,
                    self.o.actor,
                    step.name,
                    phase,
                    run.attempt,
                    {"worker": run.lease_owner, "lease_expired_at": _iso(run.wake_at)},
                )
            )
            self.attempt = run.attempt + 1
        if self.attempt <= self._policy(step).max_attempts and step.wait is None:
            if self._cancel_asked():
                self._unmarked_attempt = True  # started only if the cancel is refused
            else:
                first.append(self.event(EventType.ATTEMPT_STARTED, step))
        new_token = run.lease_token + 1
        claimed = self.o.log.append(
            self.run_id,
            run.lease_token,
            first,
            now,
            new_token=new_token,
            lease_owner=self.o.worker_id,
            wake_at=now + self.o.lease,
            dispatched_at=None,
            attempt=self.attempt,
            blocked_reason=None,
        )
        if not claimed:
            return False
        self.token = new_token
        self.o.leases.hold(self.run_id, self.token, now, step.timeout)
        if run.last_seq > 1:  # beyond run_started there may be outputs to load
            self._load_history()
        return True

    def _load_history(self) -> None:
        wanted = (
            EventType.STEP_COMPLETED,
            EventType.COMPENSATION_STARTED,
            EventType.COMPENSATION_COMPLETED,
        )
        for e in self.o.log.events(self.run_id, types=wanted):
            if e.type is EventType.STEP_COMPLETED and e.step is not None:
                self.outputs[e.step] = e.payload["output"]
            elif e.type is EventType.COMPENSATION_COMPLETED and e.step is not None:
                self.compensated.add(e.step)
            else:
                self.reason = e.payload["reason"]

    # -- the loop -------------------------------------------------------------

    def run(self) -> None:
        """Run ready steps until the run finishes, waits, or the lease is lost."""
        try:
            while self.status.active and self._attempt():
                pass
        finally:
            self.o.leases.release(self.run_id, self.token)

    @property
    def outcome(self) -> DriveOutcome:
        """How the drive ended (once :meth:`run` has returned)."""
        if self._refused:
            return DriveOutcome.LEASE_LOST
        if not self.status.active:
            return DriveOutcome(self.status.value)
        return DriveOutcome.WAITING

    def run_context(self) -> RunContext:
        """The run, at its current step and attempt, for log lines (see ``telemetry``)."""
        step = self.saga.steps[self.index].name
        return RunContext(
            self.run_id, self.saga.name, self.saga.version, step, self.phase.value, self.attempt
        )

    @property
    def phase(self) -> Phase:
        return Phase.FORWARD if self.status is RunStatus.RUNNING else Phase.COMPENSATE

    def _policy(self, step: Step) -> RetryPolicy:
        return step.retry if self.phase is Phase.FORWARD else step.compensation_retry

    def _call(self, step: Step) -> ActionCall:
        return ActionCall(
            self.run_id,
            self.saga.name,
            self.saga.version,
            step.name,
            self.phase,
            self.attempt,
            idempotency_key(self.run_id, step.name, self.phase.value),
        )

    def _attempt(self) -> bool:
        """Run one attempt of the current action or compensation; True to go on."""
        step = self.saga.steps[self.index]
        enter_run(self.run_context())  # reset with the drive's, by the orchestrator
        if self._cancel_asked():
            return self._cancel(step)
        if step.wait is not None and self.phase is Phase.FORWARD:
            return bool(step.wait.resume(self, step))
        if self.attempt > self._policy(step).max_attempts:
            return self._failed(step, lost_attempt(self.attempt - 1))
        call = self._call(step)
        limit = step.rate_limit
        if limit is not None:
            wait = self.o.acquire(limit, call.idempotency_key)
            if wait is not None:
                return self._defer(step, wait, f"rate limit {limit.name!r} reached")
        started = time.perf_counter()
        effects: list[Effect] = []  # what the attempt did elsewhere, for the ledger
        try:
            self.o.hooks.before_action(call)
            if self.phase is Phase.FORWARD:
                result, via_probe = self._act(step, call, effects)
            else:
                with collecting(Collecting.ACTION, effects):
                    result, via_probe = self._compensate(step, call), False
        except Exception as exc:
            self.o.hooks.action_failed(call, exc)
            return self._failed(step, exc, effects=effects)
        finally:
            if limit is not None:
                self.o.rate_limiter.release(limit, call.idempotency_key)
        self.o.hooks.after_action(call, result)
        took = _ms_since(started)
        if self.phase is Phase.COMPENSATE:
            payload = {"result": result, "duration_ms": took}
            payload |= _effects(step, effects, Phase.COMPENSATE)
            self.compensated.add(step.name)
            done = self.event(EventType.COMPENSATION_COMPLETED, step, payload)
            return self._unwind([done])
        completed = {"output": result, "duration_ms": took, "via_probe": via_probe}
        return self._completed(step, completed | _effects(step, effects, Phase.FORWARD))

    def _completed(
        self, step: Step, payload: dict[str, Any], before: Sequence[NewEvent] = ()
    ) -> bool:
        """Checkpoint ``step``'s completion (``payload`` holds its output) and move on."""
        events = [*before, self.event(EventType.STEP_COMPLETED, step, payload)]
        self.outputs[step.name] = payload["output"]
        self._in_doubt = False
        if self.index + 1 == len(self.saga.steps):
            events.append(NewEvent(EventType.RUN_COMPLETED, self.o.actor))
            return self._finish(events, RunStatus.COMPLETED, last_error=None)
        return self._advance(events, RunStatus.RUNNING, self.index + 1, last_error=None)

    # -- for waiting steps (timers, approvals, external events) --------------------

    def context(self, step: Step) -> StepContext[Any]:
        """The context ``step``'s functions see (the input, earlier outputs)."""
        return StepContext(**self._context_fields(self._call(step)), outputs=dict(self.outputs))

    def latest(self, step: Step, types: Sequence[EventType]) -> EventRecord | None:
        """The last event of ``types`` this run wrote at ``step`` before this drive, if any."""
        if self._claimed_from.step_index != self.index:
            return None  # reached in this drive: nothing of it can be in the log yet
        found = [e for e in self.o.log.events(self.run_id, types=types) if e.step == step.name]
        return found[-1] if found else None

    def complete(self, step: Step, output: Any, before: Sequence[NewEvent] = ()) -> bool:
        """Checkpoint a waiting step as completed with ``output`` (after ``before``)."""
        return self._completed(
            step, {"output": output, "duration_ms": 0.0, "via_probe": False}, before
        )

    def fail(self, step: Step, exc: BaseException, before: Sequence[NewEvent] = ()) -> bool:
        """Fail ``step`` with ``exc`` as if its action had raised it (after ``before``)."""
        return self._failed(step, exc, before)

    def wait_until(
        self,
        events: list[NewEvent],
        until: datetime,
        *,
        awaiting: str | None = None,
        arrived: Callable[[], bool] | None = None,
    ) -> bool:
        """Give the run up until ``until``, or until what it awaits is delivered.

        Args:
            awaiting: What the run waits for (see ``_waits``): delivering it wakes the run.
            arrived: Whether it was delivered meanwhile. Asked once the run is let
                go: a delivery made while this drive held the run could not wake
                it, and would otherwise wait for ``until``.
        """
        changes = {} if awaiting is None else {"awaiting": awaiting}
        now = self.o.clock()
        self._wait(events, max(until - now, timedelta(0)), until=until, **changes)
        if self._released and awaiting is not None and arrived is not None and arrived():
            self.o.wake(awaiting, run_id=self.run_id)
        return False

    def _act(self, step: Step, call: ActionCall, effects: list[Effect]) -> tuple[Any, bool]:
        """Run the forward action (or find, by probe, that it already landed)."""
        ctx = StepContext(**self._context_fields(call), outputs=dict(self.outputs))
        safety = step.retry_safety
        if self.attempt > 1 and safety is not None and safety.probe_fn is not None:
            try:
                with collecting(Collecting.PROBE, effects):
                    landed = safety.probe_fn(ctx)
            except Exception as exc:
                # Whether an earlier attempt landed is still unknown: say so, so that
                # giving up on the step asks again rather than assuming it did not.
                raise OutcomeUnknownError(f"probe of step {step.name!r} failed: {exc}") from exc
            if landed is not None:
                return to_json(landed), True
        with collecting(Collecting.ACTION, effects):
            return to_json(step.action(ctx)), False

    def _landed_anyway(self, step: Step) -> NewEvent | None:
        """Giving up on a step whose last attempt may have landed: did it?

        Returns:
            The event that records the step as completed (its probe found the
            effect), which puts it among the compensations; None if it did not land.

        Raises:
            Unknowable: the step has no probe, or its probe failed.
        """
        safety = step.retry_safety
        if safety is None or safety.probe_fn is None:
            raise Unknowable(
                f"its outcome is unknown and it has no probe: check step {step.name!r} "
                "in the remote system before resolving the run"
            )
        ctx = self.context(step)
        effects: list[Effect] = []
        try:
            with collecting(Collecting.PROBE, effects):
                found = safety.probe_fn(ctx)
        except Exception as exc:
            raise Unknowable(f"its outcome is unknown and its probe failed: {exc}") from exc
        if found is None:
            return None
        output = to_json(found)
        self.outputs[step.name] = output
        payload = {"output": output, "duration_ms": 0.0, "via_probe": True}
        payload |= _effects(step, effects, Phase.FORWARD)
        return self.event(EventType.STEP_COMPLETED, step, payload)

    def _compensate(self, step: Step, call: ActionCall) -> Any:
        """Run the compensation with the output its forward step recorded."""
        assert step.compensate is not None
        output = self.outputs.get(step.name)
        ctx = CompensationContext(**self._context_fields(call), output=output, reason=self.reason)
        return to_json(step.compensate(ctx))

    def _context_fields(self, call: ActionCall) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "saga": self.saga.name,
            "version": self.saga.version,
            "step": call.step,
            "attempt": self.attempt,
            "idempotency_key": call.idempotency_key,
            "input": self.input,
        }

    def event(
        self,
        kind: EventType,
        step: Step,
        payload: Any = None,
        error: dict[str, Any] | None = None,
        *,
        actor: str | None = None,
    ) -> NewEvent:
        """An event of ``step`` at this attempt, by this worker unless ``actor`` says who."""
        return NewEvent(
            kind, actor or self.o.actor, step.name, self.phase, self.attempt, payload, error
        )

    # -- outcomes -------------------------------------------------------------

    def _delay(self, exc: BaseException, policy: RetryPolicy, attempt: int) -> timedelta:
        """The remote side's ``retry_after`` when the error carries one, else the back-off."""
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, timedelta):
            return retry_after
        return policy.backoff(attempt, self.o.rng)

    def _failed(
        self,
        step: Step,
        exc: BaseException,
        before: Sequence[NewEvent] = (),
        effects: Sequence[Effect] = (),
    ) -> bool:
        policy = self._policy(step)
        if getattr(exc, "rate_limited", False) is True:
            wait = self._delay(exc, policy, 1)
            if step.rate_limit is not None:  # hold every worker off this connector
                self.o.rate_limiter.block(step.rate_limit.name, wait.total_seconds())
            error = describe_error(exc, retryable=True)
            reason = f"the remote side is rate limiting: {exc}"
            return self._defer(step, wait, reason, error, before)
        permanent = is_non_retryable(exc, policy)
        error = describe_error(exc, retryable=not permanent)
        phase = self.phase
        failed_type = (
            EventType.STEP_FAILED if phase is Phase.FORWARD else EventType.COMPENSATION_FAILED
        )

        def failure(outcome: str, **extra: Any) -> list[NewEvent]:
            payload = {"outcome": outcome, **extra, **_effects(step, effects, phase)}
            return [*before, self.event(failed_type, step, payload, error)]

        exhausted = self.attempt >= policy.max_attempts
        if not permanent and not exhausted:
            delay = self._delay(exc, policy, self.attempt)
            retry_at = self.o.clock() + delay
            retry = failure("retry", retry_at=_iso(retry_at))
            return self._wait(retry, delay, attempt=self.attempt + 1, last_error=error)
        why = "failed permanently" if permanent else f"failed after {self.attempt} attempts"
        summary = f"step {step.name!r} {why}: {error['message']}"
        if phase is Phase.COMPENSATE:
            return self._park(failure("park"), f"compensation of {summary}", error)
        events = failure("compensate")  # before the turn, which changes self.phase
        if may_have_landed(exc) and step.compensable:
            try:
                landed = self._landed_anyway(step)
            except Unknowable as why:
                return self._park(failure("park"), f"{summary}; {why}", error)
            if landed is not None:
                events.append(landed)
        pivot = completed_pivot(self.saga, list(self.outputs))
        if pivot is not None:
            reason = (
                f"{summary}; pivot {pivot.name!r} has completed, so the run cannot be compensated"
            )
            return self._park(failure("park"), reason, error)
        self.reason = summary
        turned = NewEvent(EventType.COMPENSATION_STARTED, self.o.actor, payload={"reason": summary})
        self.status = RunStatus.COMPENSATING
        return self._unwind([*events, turned], last_error=error)

    # -- cancelling -------------------------------------------------------------

    def _cancel_asked(self) -> bool:
        """True when someone asked to cancel this run and it is still going forward."""
        return self._cancel_seen and self.status is RunStatus.RUNNING

    def _cancel(self, step: Step) -> bool:
        """Turn the run to compensation, as asked, instead of running ``step``."""
        asked = (
            self._claimed_from.cancel_requested or self.o.log.get_run(self.run_id).cancel_requested
        )
        assert asked is not None  # seen only once it was written
        # An operator's force-compensate travels as a cancel request that says so.
        verb = "force-compensated" if asked.get("action") == "force_compensate" else "cancelled"
        reason = f"{verb} by {asked['by']}: {asked['reason']}"
        pivot = completed_pivot(self.saga, list(self.outputs))
        if pivot is not None:
            # Past a pivot the run can only go forward: refuse, in the log, and go on.
            refused = NewEvent(
                EventType.CANCEL_REQUESTED,
                self.o.actor,
                payload={**asked, "outcome": f"refused: pivot {pivot.name!r} has completed"},
            )
            self._claimed_from = replace(self._claimed_from, cancel_requested=None)
            self._cancel_seen = False
            going_on = [refused]
            if self._unmarked_attempt:
                going_on.append(self.event(EventType.ATTEMPT_STARTED, step))
            return bool(self._commit(going_on, cancel_requested=None))
        events: list[NewEvent] = []
        if self._in_doubt and step.compensable:
            try:
                landed = self._landed_anyway(step)
            except Unknowable as why:
                return self._park([], f"{reason}; step {step.name!r}: {why}", None)
            if landed is not None:
                events.append(landed)
        self.reason = reason
        payload = {"reason": reason, "cancelled_by": asked["by"]}
        events.append(NewEvent(EventType.COMPENSATION_STARTED, self.o.actor, payload=payload))
        self.status = RunStatus.COMPENSATING
        return self._unwind(events)

    def _unwind(self, events: list[NewEvent], **changes: Any) -> bool:
        """Go on with the next compensation the log calls for, or finish the run."""
        nxt = next_compensation(self.saga, list(self.outputs), self.compensated)
        if nxt is None:
            done = NewEvent(
                EventType.RUN_COMPENSATED, self.o.actor, payload={"reason": self.reason}
            )
            return self._finish([*events, done], RunStatus.COMPENSATED, **changes)
        index = self.saga.position(nxt.name)
        return self._advance(events, RunStatus.COMPENSATING, index, **changes)

    def _advance(
        self, events: list[NewEvent], status: RunStatus, index: int, **changes: Any
    ) -> bool:
        self.status, self.index, self.attempt = status, index, 1
        step = self.saga.steps[index]
        events.append(self.event(EventType.ATTEMPT_STARTED, step))
        now = self.o.clock()
        written = self._commit(
            events,
            status=status.value,
            step_index=index,
            step=step.name,
            attempt=1,
            wake_at=now + self.o.lease,
            **self._moving_on(changes),
        )
        if written:
            self.o.leases.hold(self.run_id, self.token, now, step.timeout)
        return bool(written)

    def _moving_on(self, changes: dict[str, Any]) -> dict[str, Any]:
        """``changes``, plus clearing what the run awaited: it awaits it no longer."""
        if self._awaiting is not None:
            self._awaiting = None
            return {**changes, "awaiting": None}
        return changes

    def _finish(self, events: list[NewEvent], status: RunStatus, **changes: Any) -> bool:
        self.status = status
        written = self._commit(
            events, status=status.value, lease_owner=None, wake_at=None, **self._moving_on(changes)
        )
        if written is Written.CANCEL_ASKED and status is RunStatus.COMPLETED:
            # The cancel came during the last step, too late to undo the run: say so.
            late = {"outcome": "too late: the run completed first"}
            refused = NewEvent(EventType.CANCEL_REQUESTED, self.o.actor, payload=late)
            self._commit([refused], cancel_requested=None)
        return False

    def _park(self, events: list[NewEvent], reason: str, error: dict[str, Any] | None) -> bool:
        events.append(NewEvent(EventType.RUN_PARKED, self.o.actor, payload={"reason": reason}))
        logger.error("run %s parked: %s", self.run_id, reason)
        return self._finish(events, RunStatus.PARKED, blocked_reason=reason, last_error=error)

    def _defer(
        self,
        step: Step,
        wait: timedelta,
        reason: str,
        error: dict[str, Any] | None = None,
        before: Sequence[NewEvent] = (),
    ) -> bool:
        """Wait durably, then run the same attempt again (no attempt is used up)."""
        payload = {"reason": reason, "until": _iso(self.o.clock() + wait)}
        deferred = self.event(EventType.STEP_DEFERRED, step, payload, error)
        changes: dict[str, Any] = {"last_error": error} if error is not None else {}
        return self._wait([*before, deferred], wait, **changes)

    def _wait(
        self,
        events: list[NewEvent],
        wait: timedelta,
        *,
        until: datetime | None = None,
        **changes: Any,
    ) -> bool:
        """Give the lease up until ``wait`` has passed; a short wait also sends the message.

        A delayed message is held by the broker (in the worker's memory, for
        Dramatiq's delays) until it is due: a long wait sends none, and the
        recovery pass takes the run when its time comes.

        Args:
            until: The time the wait ends, when the caller fixed it (a timer's).
        """
        until = until or self.o.clock() + wait
        message = wait <= self.o.max_message_delay
        # dispatched_at: the delayed message is due then; recovery steps in only if lost.
        dispatched_at = until if message else None
        written = self._commit(
            events, lease_owner=None, wake_at=until, dispatched_at=dispatched_at, **changes
        )
        self._released = bool(written)
        if written and message:
            self.o.dispatch(Dispatch(self.run_id, self.saga.name, self.saga.version, wait))
        return False

    def _commit(self, events: Sequence[NewEvent], **changes: Any) -> Written:
        written = self.o.log.append(self.run_id, self.token, events, self.o.clock(), **changes)
        if not written:
            logger.warning(
                "run %s: write by stale lease token %d refused (%s); another attempt took over",
                self.run_id,
                self.token,
                ", ".join(e.type.value for e in events),
            )
            self._refused = True
            self.o.hooks.write_refused(self.run_id, self.token, events)
            return written
        if written is Written.CANCEL_ASKED and self.status is RunStatus.RUNNING:
            # Asked while this drive held the run (from any process): turn at this boundary.
            self._cancel_seen = True
        self.o.hooks.after_checkpoint(self.run_id, events)
        return written


def _effects(step: Step, effects: Sequence[Effect], phase: Phase) -> dict[str, Any]:
    """The ``effects`` an attempt recorded, for its event's payload (nothing if none).

    With a forward step's goes how it is undone, which the ledger reports for
    effects that stand: ``compensate``, ``pivot``, or ``none: <why not>``.
    """
    if not effects:
        return {}
    kept: dict[str, Any] = {"effects": [e.to_json() for e in effects]}
    if phase is Phase.FORWARD:
        kept["undo"] = (
            "compensate"
            if step.compensable
            else "pivot"
            if step.pivot
            else f"none: {step.no_compensation}"
        )
    return kept


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
