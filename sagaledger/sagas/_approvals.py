"""Approval steps: a run waits for a person's decision, with a deadline and escalation.

When a run reaches an approval step, the people who may decide, the deadline
and what they are shown are computed once and written to the log
(``approval_requested``). The run then waits (see ``_waits``) until a decision
arrives or the deadline passes. At the deadline, with no decision, the approval
escalates to the next group with its own deadline (``approval_escalated``), or,
past the last escalation, is approved or rejected by default.

A decision is checked where it is made (the run waits for it, the person may
decide, the deadline has not passed) and kept in the signals table, once per
run and step, until the run's driver takes it: a decision made while no worker
runs is applied when one starts. The driver records it as ``approval_decided``,
with the approver as the event's actor, the time, the reason and what was
shown. An approval completes the step; a rejection fails it for good, so the
run compensates its completed steps in reverse.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from sagaledger._errors import (
    DefinitionError,
    NotAllowedToDecideError,
    PermanentError,
    RunNotActiveError,
    RunNotWaitingError,
)
from sagaledger.sagas._context import StepContext
from sagaledger.sagas._definition import Step
from sagaledger.sagas._driver import to_json
from sagaledger.sagas._policy import RetrySafety
from sagaledger.sagas._waits import (
    APPROVAL_SIGNAL,
    approval_awaiting,
    approval_key,
    parse_time,
)
from sagaledger.store import EventRecord, EventType, RunRecord, SignalRecord

if TYPE_CHECKING:
    from sagaledger.sagas._driver import RunDriver
    from sagaledger.sagas._orchestrator import Orchestrator

Approvers = Sequence[str] | Callable[[StepContext[Any]], Sequence[str]]

_ASKED = (EventType.APPROVAL_REQUESTED, EventType.APPROVAL_ESCALATED)


class Decision(StrEnum):
    """What an approver (or a deadline) decides."""

    APPROVE = "approve"
    REJECT = "reject"


@dataclass(frozen=True)
class Escalate:
    """At the deadline, hand the decision to another group, with a deadline of its own.

    Attributes:
        to: Who may decide from then on (names, or ``fnmatch`` patterns such as
            ``*@finance.example.com``); the earlier group no longer may.
        within: How long they have, from the escalation.
        then: What happens at their deadline: escalate again, or decide by default.
    """

    to: Sequence[str]
    within: timedelta
    then: Escalate | Decision = Decision.REJECT


class ApprovalRejectedError(PermanentError):
    """The approval was rejected (by a person, or at its deadline): the run compensates."""


@dataclass(frozen=True)
class ApprovalWait:
    """Who may decide, by when, and what happens at the deadline (see :func:`approval`)."""

    approvers: Approvers
    deadline: timedelta
    on_deadline: Escalate | Decision
    show: Callable[[StepContext[Any]], Any] | None = None

    @property
    def escalations(self) -> list[Escalate]:
        """The escalations, in order, from the first deadline on."""
        chain, then = [], self.on_deadline
        while isinstance(then, Escalate):
            chain.append(then)
            then = then.then
        return chain

    @property
    def by_default(self) -> Decision:
        """The decision taken when the last deadline passes with none."""
        chain = self.escalations
        then = chain[-1].then if chain else self.on_deadline
        assert isinstance(then, Decision)  # approval() checks the chain ends in one
        return then

    def resume(self, driver: RunDriver, step: Step) -> bool:
        """Ask for the decision, or apply it, or act on the deadline."""
        now = driver.o.clock()
        asked = driver.latest(step, _ASKED)
        if asked is None:
            ctx = driver.context(step)
            try:
                named = self.approvers(ctx) if callable(self.approvers) else self.approvers
                approvers = _names(named)
                shown = to_json(self.show(ctx)) if self.show is not None else None
            except Exception as exc:  # a failing approvers() or show(): a step failure
                return driver.fail(step, exc)
            request = {
                "level": 0,
                "approvers": approvers,
                "deadline": (now + self.deadline).isoformat(),
                "shown": shown,
            }
            return self._wait(driver, step, request, EventType.APPROVAL_REQUESTED)
        request = asked.payload
        key = approval_key(driver.run_id, step.name)
        decision = driver.o.log.find_signal(APPROVAL_SIGNAL, key)
        if decision is not None:
            return self._decided(driver, step, request, decision)
        deadline = parse_time(request["deadline"])
        if now < deadline:  # woken early (a restart): wait on
            return self._wait(driver, step, request, None)
        level = int(request["level"])
        escalations = self.escalations
        if level < len(escalations):
            to = escalations[level]
            escalated = {
                "level": level + 1,
                "approvers": list(to.to),
                "deadline": (now + to.within).isoformat(),
                "shown": request["shown"],
                "missed_deadline": request["deadline"],
            }
            return self._wait(driver, step, escalated, EventType.APPROVAL_ESCALATED)
        default = self.by_default
        outcome = "approved" if default is Decision.APPROVE else "rejected"
        made = {
            "decision": default.value,
            "by": None,
            "reason": f"no decision by the deadline ({request['deadline']}): {outcome} by default",
            "level": level,
            "shown": request["shown"],
            "decided_at": now.isoformat(),
        }
        return _apply(driver, step, made, driver.o.actor)

    def _wait(
        self, driver: RunDriver, step: Step, request: dict[str, Any], kind: EventType | None
    ) -> bool:
        events = [] if kind is None else [driver.event(kind, step, request)]
        key = approval_key(driver.run_id, step.name)
        return driver.wait_until(
            events,
            parse_time(request["deadline"]),
            awaiting=approval_awaiting(driver.run_id, step.name),
            arrived=lambda: driver.o.log.find_signal(APPROVAL_SIGNAL, key) is not None,
        )

    def _decided(
        self, driver: RunDriver, step: Step, request: dict[str, Any], decision: SignalRecord
    ) -> bool:
        made = {
            "decision": decision.payload["decision"],
            "by": decision.sender,
            "reason": decision.payload["reason"],
            "level": decision.payload["level"],
            "shown": request["shown"],
            "decided_at": decision.received_at.isoformat(),
        }
        return _apply(driver, step, made, decision.sender)


def _apply(driver: RunDriver, step: Step, made: dict[str, Any], actor: str) -> bool:
    """Record the decision and go on: forward when approved, compensating when rejected."""
    decided = driver.event(EventType.APPROVAL_DECIDED, step, made, actor=actor)
    if made["decision"] == Decision.APPROVE.value:
        output = {k: made[k] for k in ("decision", "by", "reason", "level", "decided_at")}
        return driver.complete(step, output, [decided])
    who = made["by"] or "its deadline"
    rejected = ApprovalRejectedError(f"approval {step.name!r} rejected by {who}: {made['reason']}")
    return driver.fail(step, rejected, [decided])


def _names(approvers: Any) -> list[str]:
    """The approvers as a list of non-empty strings."""
    if isinstance(approvers, str) or not all(isinstance(a, str) and a.strip() for a in approvers):
        raise DefinitionError(f"approvers must be a list of names or patterns, got {approvers!r}")
    names = [a.strip() for a in approvers]
    if not names:
        raise DefinitionError("approvers is empty: nobody could decide")
    return names


def _check_levels(
    approvers: Approvers, deadline: timedelta, on_deadline: Escalate | Decision
) -> None:
    """Check each level of an approval: who may decide, a positive deadline, a final default."""
    if not callable(approvers):
        _names(approvers)
    then: Escalate | Decision = on_deadline
    while True:
        if deadline <= timedelta(0):
            raise DefinitionError(f"deadlines must be positive, got {deadline}")
        if not isinstance(then, Escalate):
            break
        try:
            _names(then.to)
        except DefinitionError as exc:
            raise DefinitionError(f"escalation: {exc}") from None
        deadline, then = then.within, then.then
    if not isinstance(then, Decision):
        raise DefinitionError(
            f"on_deadline must end in Decision.APPROVE or Decision.REJECT, got {then!r}"
        )


def _nothing(ctx: StepContext[Any]) -> None:
    """An approval's action: never called, the driver waits instead."""


def approval(
    name: str,
    *,
    approvers: Approvers,
    deadline: timedelta,
    on_deadline: Escalate | Decision = Decision.REJECT,
    show: Callable[[StepContext[Any]], Any] | None = None,
) -> Step:
    """A step that waits for a person to approve or reject the run.

    Its output, once approved, is ``{"decision", "by", "reason", "level",
    "decided_at"}``. A rejection fails the step for good: the run compensates
    its completed steps in reverse (or parks, past a completed pivot).

    Args:
        name: The step's name.
        approvers: Who may decide: names or ``fnmatch`` patterns (compared
            without regard to case), or a function of the step's context that
            returns them; computed once, when the run reaches the step.
        deadline: How long they have, from then.
        on_deadline: What happens when it passes with no decision:
            :class:`Escalate` to another group, or approve or reject by default.
        show: Computes what approvers are shown (plain JSON, or a pydantic
            model): recorded with the request and with the decision.

    Raises:
        DefinitionError: no approvers, or a deadline that is not positive.
    """
    try:
        _check_levels(approvers, deadline, on_deadline)
    except DefinitionError as exc:
        raise DefinitionError(f"approval {name!r}: {exc}", step=name) from None
    return Step(
        name=name,
        action=_nothing,
        no_compensation="an approval has nothing to undo",
        retry_safety=RetrySafety.NATURAL,
        wait=ApprovalWait(approvers, deadline, on_deadline, show),
    )


@dataclass(frozen=True)
class PendingApproval:
    """An approval a run waits for, as its latest request put it."""

    run_id: str
    saga: str
    step: str
    level: int
    approvers: list[str]
    deadline: datetime
    shown: Any
    requested_at: datetime

    @classmethod
    def of(cls, run: RunRecord, request: EventRecord) -> PendingApproval:
        asked = request.payload
        return cls(
            run.id,
            run.saga_name,
            run.step,
            int(asked["level"]),
            list(asked["approvers"]),
            parse_time(asked["deadline"]),
            asked["shown"],
            request.created_at,
        )


# -- deciding ---------------------------------------------------------------------


def decide(o: Orchestrator, run_id: str, decision: Decision, by: str, reason: str) -> EventRecord:
    """Decide ``run_id``'s pending approval; see :meth:`Orchestrator.approve`.

    Returns:
        The request the decision answers (its payload says who could decide,
        the deadline and what was shown).
    """
    if not by.strip():
        raise ValueError(f"deciding run {run_id!r} needs to say who decides (by=...)")
    if decision is Decision.REJECT and not reason.strip():
        raise ValueError(f"rejecting run {run_id!r} needs a reason")
    run = o.log.get_run(run_id)
    step, request = pending_approval(o, run)
    if run.cancel_requested is not None:
        asked = run.cancel_requested
        raise RunNotWaitingError(
            run.id,
            f"is being cancelled (by {asked['by']}: {asked['reason']}); it takes no decision",
        )
    if not may_decide(by, request.payload["approvers"]):
        raise NotAllowedToDecideError(run.id, step, by, request.payload["approvers"])
    now = o.clock()
    deadline = parse_time(request.payload["deadline"])
    if now >= deadline:
        raise RunNotWaitingError(
            run.id,
            f"approval {step!r}: its deadline ({deadline.isoformat()}) has passed; "
            "the run escalates or decides by default",
        )
    key = approval_key(run.id, step)
    payload = {"decision": decision.value, "reason": reason, "level": request.payload["level"]}
    kept, new = o.log.record_signal(APPROVAL_SIGNAL, key, payload, by, now)
    if not new:
        raise RunNotWaitingError(
            run.id,
            f"approval {step!r} was already decided: {kept.payload['decision']} by "
            f"{kept.sender} at {kept.received_at.isoformat()}",
        )
    o.wake(approval_awaiting(run.id, step), run_id=run.id)
    return request


def pending_approval(o: Orchestrator, run: RunRecord) -> tuple[str, EventRecord]:
    """The approval step ``run`` waits at, and its latest request.

    Raises:
        RunNotActiveError: the run has finished.
        RunNotWaitingError: it does not wait for an approval.
    """
    if not run.status.active:
        raise RunNotActiveError(run.id, run.status.value, "decide an approval of")
    expected = approval_awaiting(run.id, run.step)
    if run.awaiting != expected:
        doing = f"is {run.status.value}, at step {run.step!r}"
        raise RunNotWaitingError(run.id, f"is not waiting for an approval: it {doing}")
    requests = [e for e in o.log.events(run.id, types=_ASKED) if e.step == run.step]
    return run.step, requests[-1]


def may_decide(who: str, approvers: Sequence[str]) -> bool:
    """True when ``who`` is one of ``approvers`` (names or patterns, any case)."""
    person = who.strip().casefold()
    return any(fnmatchcase(person, pattern.casefold()) for pattern in approvers)
