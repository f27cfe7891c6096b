"""The orchestrator: starts runs, drives them from the log, re-drives what is due."""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import SQLAlchemyError

from sagaledger._errors import InputValidationError, UnknownRunError
from sagaledger.connectors._ratelimit import MemoryRateLimiter, RateLimit, RateLimiter
from sagaledger.sagas import _operator
from sagaledger.sagas._approvals import Decision, PendingApproval, decide, pending_approval
from sagaledger.sagas._cancel import CancelOutcome, request_cancel
from sagaledger.sagas._definition import Saga
from sagaledger.sagas._dispatch import Dispatch, Dispatcher
from sagaledger.sagas._driver import RunDriver
from sagaledger.sagas._external_events import SignalReceipt, deliver
from sagaledger.sagas._hooks import ActionCall, DriveCall, DriveOutcome, Hooks
from sagaledger.sagas._leases import LeaseKeeper
from sagaledger.sagas._liveness import host_key, is_running
from sagaledger.sagas._operator import OperatorReceipt
from sagaledger.sagas._registry import Registry
from sagaledger.sagas._waits import APPROVAL_AWAITING, APPROVAL_SIGNAL, approval_key
from sagaledger.store import (
    EventRecord,
    EventType,
    NewEvent,
    RunRecord,
    RunStatus,
    SagaLog,
    utc_now,
)
from sagaledger.store._log import Definition
from sagaledger.telemetry._context import enter_run, leave_run

logger = logging.getLogger("sagaledger.orchestrator")


def default_worker_id() -> str:
    """host:pid, so the log says which process held a lease."""
    return f"{socket.gethostname()}:{os.getpid()}"


class _HookChain(Hooks):
    """Calls each hook in the order given."""

    def __init__(self, hooks: Iterable[Hooks]):
        self.hooks = list(hooks)

    def drive_started(self, drive: DriveCall) -> None:
        for hook in self.hooks:
            hook.drive_started(drive)

    def drive_finished(
        self, drive: DriveCall, outcome: DriveOutcome, error: BaseException | None
    ) -> None:
        for hook in self.hooks:
            hook.drive_finished(drive, outcome, error)

    def before_action(self, call: ActionCall) -> None:
        for hook in self.hooks:
            hook.before_action(call)

    def after_action(self, call: ActionCall, output: Any) -> None:
        for hook in self.hooks:
            hook.after_action(call, output)

    def action_failed(self, call: ActionCall, error: BaseException) -> None:
        for hook in self.hooks:
            hook.action_failed(call, error)

    def after_checkpoint(self, run_id: str, events: Sequence[NewEvent]) -> None:
        for hook in self.hooks:
            hook.after_checkpoint(run_id, events)

    def write_refused(self, run_id: str, token: int, events: Sequence[NewEvent]) -> None:
        for hook in self.hooks:
            hook.write_refused(run_id, token, events)


#: Due runs one recovery pass takes at most; a full pass is followed by another at once.
RECOVERY_BATCH = 500


class Orchestrator:
    """Starts and drives saga runs; the saga log holds all of their state.

    Args:
        log: The saga log.
        registry: The sagas this process can run.
        clock: Returns the current UTC time (inject one in tests).
        hooks: Called at each point of execution (metrics, tracing, crash tests).
        worker_id: Names this process in leases and events.
        lease: How long a lease lasts without renewal; a crashed worker's runs
            are re-driven this long after its last renewal.
        dispatch_grace: How long a run dispatched by message may wait for it
            before the recovery pass sends another.
        version_recheck: How often a run whose saga version is missing here is
            looked at again.
        worker_liveness: A worker not heard from for this long no longer counts
            as able to run its saga versions.
        rng: Randomness for back-off jitter.
        rate_limiter: Where steps' rate limits are counted; in memory (this
            process only) by default, Redis to share them across workers.
        sleep: How to wait for a rate limit's next slot (inject one in tests).
        max_inline_wait: A step whose rate limit frees up within this long waits
            in its thread; a longer wait is recorded and the thread moves on.
        max_message_delay: A run waiting up to this long (a retry back-off, a
            rate limit) is woken by a delayed broker message; a longer wait holds
            no message anywhere, and the recovery pass wakes the run (up to a
            recovery interval late).
    """

    def __init__(
        self,
        log: SagaLog,
        registry: Registry,
        *,
        clock: Callable[[], datetime] = utc_now,
        hooks: Iterable[Hooks] = (),
        worker_id: str | None = None,
        lease: timedelta = timedelta(seconds=30),
        dispatch_grace: timedelta = timedelta(seconds=10),
        version_recheck: timedelta = timedelta(seconds=30),
        worker_liveness: timedelta = timedelta(seconds=30),
        rng: random.Random | None = None,
        rate_limiter: RateLimiter | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_inline_wait: timedelta = timedelta(seconds=1),
        max_message_delay: timedelta = timedelta(seconds=30),
    ):
        self.log = log
        self.registry = registry
        self.clock = clock
        self.hooks: Hooks = _HookChain(hooks)
        self.worker_id = worker_id or default_worker_id()
        self.lease = lease
        self.dispatch_grace = dispatch_grace
        self.version_recheck = version_recheck
        self.worker_liveness = worker_liveness
        self.rng = rng or random.Random()
        self.rate_limiter: RateLimiter = rate_limiter or MemoryRateLimiter()
        self.sleep = sleep
        self.max_inline_wait = max_inline_wait
        self.max_message_delay = max_message_delay
        self.leases = LeaseKeeper(log, lease, clock)
        self.host_key = host_key()
        self._dispatcher: Dispatcher | None = None
        self._shapes_recorded = False  # see _record_shapes

    @property
    def actor(self) -> str:
        """Who events written by this process name as their cause."""
        return f"worker:{self.worker_id}"

    def set_dispatcher(self, dispatcher: Dispatcher | None) -> None:
        """Route "drive this run" messages (the runtime sets a Dramatiq sender here)."""
        self._dispatcher = dispatcher

    @property
    def dispatching(self) -> bool:
        """True when this orchestrator sends messages (a runtime set its dispatcher)."""
        return self._dispatcher is not None

    def dispatch(self, request: Dispatch) -> None:
        """Ask a worker to drive a run; without a dispatcher, recovery will."""
        if self._dispatcher is not None:
            try:
                self._dispatcher(request)
            except Exception:
                # The log still has the run; the recovery pass re-drives it.
                logger.exception("could not dispatch run %s; recovery will", request.run_id)

    def wake(self, awaiting: str, *, run_id: str | None = None) -> list[str]:
        """Wake the runs waiting for ``awaiting`` (only ``run_id``, if given); return their ids."""
        woken = self.log.wake_awaiting(
            awaiting, self.clock(), dispatched=self.dispatching, run_id=run_id
        )
        for run in woken:
            self.dispatch(Dispatch(run.id, run.saga_name, run.saga_version))
        return [run.id for run in woken]

    def acquire(self, limit: RateLimit, holder: str) -> timedelta | None:
        """Take a slot of ``limit``, waiting in this thread if one frees up soon.

        Returns:
            None once granted, or how long to wait when that is longer than
            ``max_inline_wait`` (the caller then waits durably).
        """
        waited = timedelta(0)
        while True:
            wait = self.rate_limiter.acquire(limit, holder)
            if wait is None:
                return None
            if waited + wait > self.max_inline_wait:
                return wait
            self.sleep(wait.total_seconds())
            waited += wait

    # -- starting -------------------------------------------------------------

    def start(
        self,
        saga: Saga | str,
        input: BaseModel | dict[str, Any],
        *,
        key: str | None = None,
        version: int | None = None,
        actor: str = "api",
    ) -> RunRecord:
        """Start a run, or return the run already started with this business key.

        Args:
            saga: A registered saga, or its name.
            input: The run's input: the saga's model or a dict to validate into it.
            key: Business key (an order number, say); starting twice with the same
                key returns the same run. Defaults to a fresh unique key.
            version: The version to start (the newest registered by default).
            actor: Who is starting the run, for the log.

        Raises:
            UnknownSagaError: the saga (or version) is not registered here.
            InputValidationError: the input does not validate; nothing is written.
        """
        name = saga.name if isinstance(saga, Saga) else saga
        if isinstance(saga, Saga) and version is None:
            version = saga.version
        definition = self.registry.get(name, version)
        self._record_shapes()
        try:
            raw = input.model_dump(mode="json") if isinstance(input, BaseModel) else input
            validated = definition.input.model_validate(raw)
        except ValidationError as exc:
            raise InputValidationError(
                definition.name, [dict(e) for e in exc.errors(include_url=False)]
            ) from None
        run_id = uuid.uuid4().hex
        now = self.clock()
        data = validated.model_dump(mode="json")
        first_step = definition.steps[0]
        row = {
            "id": run_id,
            "saga_name": definition.name,
            "saga_version": definition.version,
            "fingerprint": definition.fingerprint,
            "business_key": key if key is not None else run_id,
            "status": RunStatus.RUNNING.value,
            "step_index": 0,
            "step": first_step.name,
            "attempt": 1,
            "input": data,
            "lease_owner": None,
            "lease_token": 0,
            "wake_at": now,
            # Without a dispatcher no message goes out: the next recovery pass of any
            # worker takes the run, instead of waiting out the dispatch grace.
            "dispatched_at": now if self.dispatching else None,
            "blocked_reason": None,
            "cancel_requested": None,
            "awaiting": None,
            "last_error": None,
        }
        started = NewEvent(
            EventType.RUN_STARTED,
            actor,
            payload={
                "input": data,
                "business_key": row["business_key"],
                "version": definition.version,
                "fingerprint": definition.fingerprint,
                "first_step": first_step.name,
            },
        )
        run, created = self.log.create_run(row, [started], now)
        if created:
            self.dispatch(Dispatch(run.id, run.saga_name, run.saga_version))
        elif run.input != data:
            logger.warning(
                "saga %r key %r: run %s already exists with a different input; returning it",
                definition.name,
                run.business_key,
                run.id,
            )
        return run

    # -- driving --------------------------------------------------------------

    def drive(self, run_id: str) -> None:
        """Claim ``run_id`` if it is due and run its ready work (the actors' body).

        A message for a run that is not due (a duplicate, or one that arrived
        while another worker holds the lease) is dropped: the log decides. One
        that arrives a little before a back-off ends (clocks of two machines
        differ) is sent again for the remaining time.
        """
        try:
            run = self.log.get_run(run_id)
        except UnknownRunError:
            logger.warning("asked to drive unknown run %s; ignored", run_id)
            return
        now = self.clock()
        if not run.status.active or run.wake_at is None:
            return
        if run.wake_at > now:
            early = run.wake_at - now
            if run.lease_owner is None and early <= self.dispatch_grace:
                self.dispatch(Dispatch(run.id, run.saga_name, run.saga_version, early))
            return
        saga = self.registry.find(run.saga_name, run.saga_version)
        if saga is None or saga.fingerprint != run.fingerprint:
            self._wait_for_version(run, saga, now)
            return
        started_ns = time.time_ns()
        driver = RunDriver(self, saga, run)
        # Every line logged from here to the release names the run (and, later, the step).
        context = enter_run(driver.run_context())
        try:
            if not driver.claim():
                return
            call = DriveCall(
                run.id, run.saga_name, run.saga_version, driver.token, run.created_at, started_ns
            )
            self.hooks.drive_started(call)
            try:
                driver.run()
            except BaseException as exc:
                self.hooks.drive_finished(call, DriveOutcome.ERROR, exc)
                raise
            self.hooks.drive_finished(call, driver.outcome, None)
        finally:
            leave_run(context)

    def _wait_for_version(self, run: RunRecord, here: Saga | None, now: datetime) -> None:
        wanted = (
            f"saga {run.saga_name!r} version {run.saga_version} (fingerprint {run.fingerprint})"
        )
        if here is None:
            known = self.registry.describe() or "none"
            reason = f"{wanted} is not registered on {self.worker_id}; it has: {known}"
        else:
            reason = f"{wanted} differs here (fingerprint {here.fingerprint}) on {self.worker_id}"
        self._mark_waiting(
            run.id,
            run.lease_token,
            reason,
            now,
            said=run.blocked_reason == reason,
            wake_at=now + self.version_recheck,
            dispatched_at=None,
        )

    # -- cancelling -----------------------------------------------------------

    def cancel(self, run_id: str, reason: str, *, by: str) -> CancelOutcome:
        """Cancel a run: its completed steps are compensated in reverse.

        A waiting run (a retry back-off, a rate limit) turns at once, without
        running its pending attempt; a run with a step in flight turns once
        that step is checkpointed; a run already compensating is left alone
        and the request recorded. Past a completed pivot the run can only go
        forward: its driver refuses the cancel, in the log.

        Args:
            run_id: The run.
            reason: Why, kept in the log.
            by: Who asks (``alice@example.com``, ``service:checkout``), kept as
                the event's actor.

        Raises:
            UnknownRunError: no such run.
            RunNotActiveError: the run has completed, been compensated or parked.
            ValueError: an empty reason or ``by``.
        """
        return request_cancel(self, run_id, reason, by)

    # -- approvals and external events ----------------------------------------

    def approve(self, run_id: str, *, by: str, reason: str = "") -> EventRecord:
        """Approve the approval ``run_id`` waits for; the run goes on.

        The decision is kept at once and applied by a worker (when one starts,
        if none runs): the log then records it as ``approval_decided``, with
        ``by`` as the actor, the time, the reason and what was shown.

        Args:
            run_id: The run.
            by: Who decides; must be among the approvers the request names.
            reason: Why (optional for an approval).

        Returns:
            The request decided on (who could decide, the deadline, what was shown).

        Raises:
            UnknownRunError: no such run.
            RunNotActiveError: the run has finished.
            RunNotWaitingError: it does not wait for an approval, the deadline has
                passed, or someone has already decided.
            NotAllowedToDecideError: ``by`` is not among the approvers.
            ValueError: an empty ``by``.
        """
        return decide(self, run_id, Decision.APPROVE, by, reason)

    def reject(self, run_id: str, *, by: str, reason: str) -> EventRecord:
        """Reject the approval ``run_id`` waits for: its completed steps are compensated.

        See :meth:`approve` for the arguments and errors; a rejection needs a reason.
        """
        return decide(self, run_id, Decision.REJECT, by, reason)

    def pending_approvals(self, limit: int = 100) -> list[PendingApproval]:
        """The approvals runs wait for and nobody has decided yet, newest runs first."""
        waiting = self.log.list_runs(awaiting=APPROVAL_AWAITING, limit=limit)
        return [
            PendingApproval.of(run, pending_approval(self, run)[1])
            for run in waiting
            if run.cancel_requested is None
            and self.log.find_signal(APPROVAL_SIGNAL, approval_key(run.id, run.step)) is None
        ]

    def signal(self, name: str, key: str, payload: Any = None, *, by: str = "api") -> SignalReceipt:
        """Deliver the external event ``name`` with correlation ``key``.

        The event is kept whether or not a run waits for it yet, once per name
        and key: a run that reaches its wait later finds it, and a second
        delivery is ignored (the receipt says so). Every run waiting for it is
        woken.

        Args:
            name: The event's name, as steps wait for it (``payment.settled``).
            key: The correlation key (the order number).
            payload: What the waiting step returns as the event's payload (JSON).
            by: Who sends it, kept as the actor.

        Raises:
            UnknownEventError: no saga registered here, or run by a worker seen
                in the last day, waits for an event of this name.
            ValueError: an empty or over-long key, or a payload that is not JSON.
        """
        return deliver(self, name, key, payload, by)

    # -- recovery -------------------------------------------------------------

    def recover(self, limit: int = RECOVERY_BATCH) -> int:
        """Dispatch every run the log says is due; return how many.

        This is the one mechanism that re-drives work the broker lost: expired
        leases, ended back-offs and runs whose message never arrived.
        """
        now = self.clock()
        mine = self.registry.definitions()
        self._record_shapes()
        self.log.heartbeat(
            self.worker_id,
            mine,
            now,
            host_key=self.host_key,
            pid=os.getpid(),
            events=self.registry.event_names(),
        )
        # A dead process may also have held the messages of runs it dispatched (an
        # in-memory queue dies with it, prefetched broker messages come back late):
        # then take every due run now, not a dispatch grace later. A run whose
        # message is still alive gets two; the later one finds it claimed and is dropped.
        grace = timedelta(0) if self._release_dead_neighbours(now) else self.dispatch_grace
        due = self.log.claim_due(now, grace, mine, limit)
        for run in due:
            self.dispatch(Dispatch(run.id, run.saga_name, run.saga_version))
        self._flag_unserved(now, mine, limit)
        return len(due)

    def _release_dead_neighbours(self, now: datetime) -> bool:
        """Make the runs of a worker whose process died on this host due at once.

        Without this, they wait for the dead worker's leases to expire.

        Returns:
            True if a dead worker was found.
        """
        found = False
        for worker, pid in self.log.workers_on(self.host_key):
            if worker != self.worker_id and not is_running(pid):
                released = self.log.release_worker(worker, now)
                logger.warning(
                    "worker %s (pid %d) is gone; %d runs it held are due now", worker, pid, released
                )
                found = True
        return found

    def _flag_unserved(self, now: datetime, mine: set[Definition], limit: int) -> None:
        """Mark due runs whose definition no live worker has, once, where people look."""
        unserved = self.log.unserved_due(now, self.dispatch_grace, mine, limit)
        if not unserved:
            return
        live = self.log.live_definitions(now - self.worker_liveness)
        for run in unserved:
            wanted = (run.saga_name, run.saga_version, run.fingerprint)
            if wanted in live:
                continue  # a live worker has it and will take it
            reason = (
                f"waiting for a worker with saga {run.saga_name!r} version {run.saga_version} "
                f"(fingerprint {run.fingerprint}); no live worker has it"
            )
            self._mark_waiting(run.id, run.lease_token, reason, now, said=False)

    def _mark_waiting(
        self, run_id: str, token: int, reason: str, now: datetime, *, said: bool, **changes: Any
    ) -> None:
        """Record why a run waits for its version: in the run, and once in the log."""
        events = []
        if not said:
            logger.warning("run %s waits: %s", run_id, reason)
            events.append(
                NewEvent(EventType.VERSION_UNAVAILABLE, self.actor, payload={"reason": reason})
            )
        self.log.append(run_id, token, events, now, blocked_reason=reason, **changes)

    # -- operator actions -----------------------------------------------------

    def retry_compensation(self, run_id: str, *, by: str, reason: str) -> OperatorReceipt:
        """Retry the compensation a run parked on, from attempt 1; then it unwinds on.

        For a run parked while compensating (a compensation that failed through
        its attempts, or permanently), once its cause is fixed. The run is woken
        at once; the log records an ``operator_action`` event with ``by`` as its actor.

        Args:
            run_id: The run.
            by: Who acts (``alice@example.com``), kept as the event's actor.
            reason: Why, kept in the log.

        Raises:
            UnknownRunError: no such run.
            RunNotActiveError: the run has finished (or been resolved).
            ActionRefusedError: it is not parked, or parked going forward (resume it).
            ValueError: an empty ``by`` or reason.
        """
        return _operator.retry_compensation(self, run_id, by, reason)

    def resume(self, run_id: str, *, by: str, reason: str) -> OperatorReceipt:
        """Retry the step a run parked on going forward, from attempt 1.

        For a run parked by a failure past a completed pivot, or by a step whose
        outcome is unknown and that has no probe (the retry sends the same
        idempotency key). See :meth:`retry_compensation` for the arguments.

        Raises:
            UnknownRunError: no such run.
            RunNotActiveError: the run has finished (or been resolved).
            ActionRefusedError: it is not parked, it parked compensating (retry the
                compensation), or it parked while being cancelled (force-compensate it).
            ValueError: an empty ``by`` or reason.
        """
        return _operator.resume(self, run_id, by, reason)

    def force_compensate(self, run_id: str, *, by: str, reason: str) -> OperatorReceipt:
        """Compensate a running, waiting or forward-parked run now, as a cancel would.

        A waiting run (a back-off, a timer, an approval, an event) and a parked
        one turn at once; a run with a step in flight turns once that step is
        checkpointed. Never past a completed pivot: that is refused, naming the
        pivot. A parked step whose outcome is unknown is left alone, and the
        event and the receipt say so (check it in the remote system). See
        :meth:`retry_compensation` for the arguments.

        Raises:
            UnknownRunError: no such run.
            RunNotActiveError: the run has finished (or been resolved).
            ActionRefusedError: it is compensating already, parked compensating, past
                a completed pivot, or parked on a saga whose shape is unknown here.
            ValueError: an empty ``by`` or reason.
        """
        return _operator.force_compensate(self, run_id, by, reason)

    def resolve(self, run_id: str, *, by: str, reason: str) -> OperatorReceipt:
        """Close a parked run as ``resolved``: what it still needed was done by hand.

        The reason says what (``refunded by hand, ticket 123``). No worker acts on
        the run again. See :meth:`retry_compensation` for the arguments.

        Raises:
            UnknownRunError: no such run.
            RunNotActiveError: the run has finished (or been resolved already).
            ActionRefusedError: it is running or compensating (force-compensate or
                cancel it first, or let it finish).
            ValueError: an empty ``by`` or reason.
        """
        return _operator.resolve(self, run_id, by, reason)

    def _record_shapes(self) -> None:
        """Record the registered definitions' shapes, once per orchestrator (for check-deploy)."""
        if self._shapes_recorded or not len(self.registry):
            return
        shapes = [((s.name, s.version, s.fingerprint), s.shape) for s in self.registry]
        try:
            self.log.record_definitions(shapes, self.clock())
        except SQLAlchemyError:
            # Only check-deploy reads them: try again on the next start or recovery pass.
            logger.exception("could not record the saga definitions; will try again")
            return
        self._shapes_recorded = True
