"""Operator actions end to end: park a run, act on it, let a worker drive it, read the log.

Every test runs on SQLite and on a real PostgreSQL server. The sagas record
each effect they apply in a shared ledger (``World.effects``), which is what a
finance reader would check: what was charged, what was refunded.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import delete

from sagaledger import (
    ActionRefusedError,
    CompensationContext,
    Orchestrator,
    OutcomeUnknownError,
    PermanentError,
    Registry,
    RetryableError,
    RetryPolicy,
    RetrySafety,
    RunNotActiveError,
    RunStatus,
    Saga,
    StepContext,
    UnknownRunError,
    approval,
    step,
    timer,
    wait_for_event,
)
from sagaledger.sagas import ActionCall, Hooks
from sagaledger.store import EventRecord, EventType, RunRecord
from sagaledger.store._schema import definitions
from sagaledger.testing import CrashAt, SagaHarness, SimulatedCrash

#: One attempt: a failure parks or turns the run at once.
ONCE = RetryPolicy(max_attempts=1)
#: A retry an hour later: the run waits in a back-off meanwhile.
HOURLY = RetryPolicy(
    max_attempts=3, initial_backoff=timedelta(hours=1), max_backoff=timedelta(hours=1), jitter=0
)


class Order(BaseModel):
    order_id: str


class World:
    """The remote systems: what they applied, and what is broken now."""

    def __init__(self) -> None:
        self.effects: list[tuple[str, str]] = []
        self.refund: str | None = None  # "permanent" or "retry": the refund fails so
        self.email: str | None = None  # "permanent" or "retry": the email fails so
        self.charge_unknown = False  # the charge's answer is lost (it landed)

    def sagas(self) -> list[Saga]:
        def reserve(ctx: StepContext[Order]) -> dict[str, str]:
            self.effects.append(("reserve", "forward"))
            return {"hold": f"h-{ctx.input.order_id}"}

        def release(ctx: CompensationContext[Order]) -> None:
            self.effects.append(("reserve", "compensate"))

        def charge(ctx: StepContext[Order]) -> dict[str, str]:
            self.effects.append(("charge", "forward"))
            if self.charge_unknown:
                raise OutcomeUnknownError("payments timed out after sending")
            return {"charge": f"ch-{ctx.input.order_id}"}

        def refund(ctx: CompensationContext[Order]) -> None:
            if self.refund == "permanent":
                raise PermanentError("payments refused the refund")
            if self.refund == "retry":
                raise RetryableError("payments busy")
            self.effects.append(("charge", "compensate"))

        def ship(ctx: StepContext[Order]) -> None:
            self.effects.append(("ship", "forward"))

        def email(ctx: StepContext[Order]) -> None:
            if self.email == "permanent":
                raise PermanentError("mailbox does not exist")
            if self.email == "retry":
                raise RetryableError("mail server busy")
            self.effects.append(("email", "forward"))

        def steps(*, pivot: bool) -> list[Any]:
            found = [
                step("reserve", compensate=release, retry_safety=RetrySafety.NATURAL)(reserve),
                step(
                    "charge",
                    compensate=refund,
                    retry_safety=RetrySafety.IDEMPOTENCY_KEY,
                    retry=ONCE,
                    compensation_retry=HOURLY,
                )(charge),
            ]
            if pivot:
                found.append(step("ship", pivot=True, retry_safety=RetrySafety.NATURAL)(ship))
            found.append(
                step(
                    "email",
                    no_compensation="an email cannot be unsent",
                    retry_safety=RetrySafety.IDEMPOTENCY_KEY,
                    retry=HOURLY,
                )(email)
            )
            return found

        waits = [
            *steps(pivot=False)[:2],
            approval("approve", approvers=["boss@x.example"], deadline=timedelta(days=1)),
            timer("cool_off", after=timedelta(days=1)),
            wait_for_event(
                "settled", event="payment.settled", key=lambda c: c.input.order_id, within=DAY
            ),
        ]
        return [
            Saga("shop", 1, Order, steps(pivot=False)),
            Saga("parcel", 1, Order, steps(pivot=True)),
            Saga("waiting", 1, Order, waits),
        ]


DAY = timedelta(days=1)


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def h(store_url: str, world: World) -> Iterator[SagaHarness]:
    """The world's sagas in a harness (the worker), on each backend."""
    harness = SagaHarness(world.sagas(), store_url=store_url, lease=timedelta(seconds=5))
    yield harness
    harness.close()


def start(h: SagaHarness, saga: str, order_id: str = "A1") -> RunRecord:
    run = h.run(saga, {"order_id": order_id})
    return run


def acted(h: SagaHarness, run_id: str) -> EventRecord:
    """The run's latest operator_action event."""
    return [e for e in h.events(run_id) if e.type is EventType.OPERATOR_ACTION][-1]


def parked_compensating(h: SagaHarness, world: World) -> RunRecord:
    """A run whose email failed for good and whose refund was refused: parked at the refund."""
    world.email, world.refund = "permanent", "permanent"
    run = start(h, "shop")
    assert run.status is RunStatus.PARKED, run
    assert run.step == "charge"
    return run


def parked_past_pivot(h: SagaHarness, world: World) -> RunRecord:
    """A run whose email failed for good after the parcel shipped: parked going forward."""
    world.email = "permanent"
    run = start(h, "parcel")
    assert run.status is RunStatus.PARKED, run
    assert run.step == "email"
    return run


def parked_unknown(h: SagaHarness, world: World) -> RunRecord:
    """A run whose charge landed but its answer was lost; the charge has no probe."""
    world.charge_unknown = True
    run = start(h, "shop")
    assert run.status is RunStatus.PARKED, run
    assert run.step == "charge"
    assert "its outcome is unknown and it has no probe" in (run.blocked_reason or "")
    return run


# -- retry-compensation --------------------------------------------------------------


def test_a_parked_compensation_is_retried_and_the_run_unwinds_to_the_end(
    h: SagaHarness, world: World
) -> None:
    # Given a run parked because payments refused the refund
    run = parked_compensating(h, world)
    assert world.effects == [("reserve", "forward"), ("charge", "forward")]

    # When payments is fixed and an operator retries the compensation
    world.refund = None
    receipt = h.orchestrator.retry_compensation(
        run.id, by="alice@ops.example", reason="payments fixed the refund endpoint"
    )
    assert receipt.status is RunStatus.COMPENSATING
    assert h.log.get_run(run.id).status is RunStatus.COMPENSATING
    h.run_until_idle()

    # Then the refund ran, then the reservation was released: the run is compensated
    done = h.log.get_run(run.id)
    assert done.status is RunStatus.COMPENSATED
    assert (done.blocked_reason, done.last_error) == (None, None)
    assert world.effects[2:] == [("charge", "compensate"), ("reserve", "compensate")]
    event = acted(h, run.id)
    assert event.actor == "alice@ops.example"
    assert event.step == "charge"
    assert event.payload["action"] == "retry_compensation"
    assert event.payload["reason"] == "payments fixed the refund endpoint"
    assert event.payload["status"] == {"from": "parked", "to": "compensating"}
    assert event.payload["parked_reason"].startswith("compensation of step 'charge'")
    # The compensation started again from attempt 1, after the action
    kinds = [(e.type, e.step, e.attempt) for e in h.events(run.id)]
    at = kinds.index((EventType.OPERATOR_ACTION, "charge", None))
    assert kinds[at + 1] == (EventType.ATTEMPT_STARTED, "charge", 1)
    assert kinds[-1][0] is EventType.RUN_COMPENSATED


def test_retrying_twice_is_refused_the_second_time(h: SagaHarness, world: World) -> None:
    run = parked_compensating(h, world)
    world.refund = "retry"  # the retried refund will wait for a back-off
    h.orchestrator.retry_compensation(run.id, by="alice", reason="try again")
    h.run_until_idle()
    assert h.status(run.id) is RunStatus.COMPENSATING

    with pytest.raises(ActionRefusedError) as refused:
        h.orchestrator.retry_compensation(run.id, by="bob", reason="me too")
    assert str(refused.value) == (
        f"cannot retry the compensation of run {run.id!r}: it is compensating, not parked; "
        "let it finish (a compensation that keeps failing parks it)"
    )


def test_retry_compensation_refuses_a_run_parked_going_forward(
    h: SagaHarness, world: World
) -> None:
    run = parked_past_pivot(h, world)
    with pytest.raises(ActionRefusedError) as refused:
        h.orchestrator.retry_compensation(run.id, by="alice", reason="oops")
    assert str(refused.value) == (
        f"cannot retry the compensation of run {run.id!r}: it is parked going forward at "
        "step 'email', not compensating; resume it, force-compensate it or resolve it"
    )
    assert not [e for e in h.events(run.id) if e.type is EventType.OPERATOR_ACTION]


# -- resume ----------------------------------------------------------------------------


def test_a_run_parked_past_its_pivot_is_resumed_and_completes(h: SagaHarness, world: World) -> None:
    # Given a run parked after its parcel shipped, its email failing for good
    run = parked_past_pivot(h, world)

    # When the mailbox is fixed and an operator resumes it
    world.email = None
    receipt = h.orchestrator.resume(run.id, by="alice", reason="customer fixed their address")
    assert receipt.status is RunStatus.RUNNING
    h.run_until_idle()

    # Then the email was retried from attempt 1 and the run completed; nothing was undone
    assert h.status(run.id) is RunStatus.COMPLETED
    assert world.effects == [
        ("reserve", "forward"),
        ("charge", "forward"),
        ("ship", "forward"),
        ("email", "forward"),
    ]
    event = acted(h, run.id)
    assert (event.actor, event.payload["action"]) == ("alice", "resume")
    assert event.payload["status"] == {"from": "parked", "to": "running"}
    started = [(e.step, e.attempt) for e in h.events(run.id) if e.type is EventType.ATTEMPT_STARTED]
    assert started[-1] == ("email", 1)


def test_a_step_that_ran_out_of_attempts_is_resumed_from_attempt_1(
    h: SagaHarness, world: World
) -> None:
    # Given a run past its pivot whose email failed through its three hourly attempts
    world.email = "retry"
    run = start(h, "parcel")
    for _ in range(3):
        h.advance(timedelta(hours=1))
        h.run_until_idle()
    parked = h.log.get_run(run.id)
    assert (parked.status, parked.step, parked.attempt) == (RunStatus.PARKED, "email", 3)

    # When it is resumed, the mail server still busy
    h.orchestrator.resume(run.id, by="alice", reason="mail server restarted")
    h.run_until_idle()

    # Then it has three attempts again: it waits for the second rather than parking at once
    again = h.log.get_run(run.id)
    assert (again.status, again.attempt) == (RunStatus.RUNNING, 2)
    world.email = None
    h.advance(timedelta(hours=1))
    h.run_until_idle()
    assert h.status(run.id) is RunStatus.COMPLETED


def test_a_step_whose_outcome_was_unknown_is_resumed_with_the_same_key(
    h: SagaHarness, world: World
) -> None:
    run = parked_unknown(h, world)
    keys: list[str] = []

    class Keys(Hooks):
        def before_action(self, call: ActionCall) -> None:
            keys.append(call.idempotency_key)

    h.orchestrator.hooks = Keys()
    world.charge_unknown = False
    h.orchestrator.resume(run.id, by="alice", reason="payments says the charge did not land")
    h.run_until_idle()

    assert h.status(run.id) is RunStatus.COMPLETED
    assert keys[0] == f"{run.id}:charge:forward"
    assert world.effects.count(("charge", "forward")) == 2  # remote dedups by that key


def test_resume_refuses_a_run_parked_compensating(h: SagaHarness, world: World) -> None:
    run = parked_compensating(h, world)
    with pytest.raises(ActionRefusedError) as refused:
        h.orchestrator.resume(run.id, by="alice", reason="go on")
    assert str(refused.value) == (
        f"cannot resume run {run.id!r}: it is parked compensating step 'charge'; "
        "retry the compensation (retry-compensation) or resolve it"
    )


def test_resume_refuses_running_and_finished_runs(h: SagaHarness, world: World) -> None:
    world.email = "retry"
    waiting = start(h, "shop", "W1")
    with pytest.raises(ActionRefusedError, match=re.escape("it is running, not parked")):
        h.orchestrator.resume(waiting.id, by="alice", reason="go")
    world.email = None
    done = start(h, "shop", "D1")
    with pytest.raises(RunNotActiveError) as refused:
        h.orchestrator.resume(done.id, by="alice", reason="go")
    assert str(refused.value) == f"cannot resume run {done.id!r}: it is completed"


# -- force-compensate ------------------------------------------------------------------


def test_a_run_waiting_for_a_retry_is_force_compensated_at_once(
    h: SagaHarness, world: World
) -> None:
    # Given a run whose email waits an hour for its retry
    world.email = "retry"
    run = start(h, "shop")
    wake_at = h.log.get_run(run.id).wake_at
    assert wake_at is not None and wake_at > h.clock()

    # When an operator force-compensates it (the clock does not move)
    receipt = h.orchestrator.force_compensate(run.id, by="alice", reason="chargeback received")
    h.run_until_idle()

    # Then the charge was refunded and the reservation released, now
    assert receipt.not_compensated is None
    assert h.status(run.id) is RunStatus.COMPENSATED
    assert world.effects == [
        ("reserve", "forward"),
        ("charge", "forward"),
        ("charge", "compensate"),
        ("reserve", "compensate"),
    ]
    event = acted(h, run.id)
    assert (event.actor, event.payload["action"]) == ("alice", "force_compensate")
    assert event.payload["reason"] == "chargeback received"
    turned = next(e for e in h.events(run.id) if e.type is EventType.COMPENSATION_STARTED)
    assert turned.payload["reason"] == "force-compensated by alice: chargeback received"


@pytest.mark.parametrize("waits_at", ["approve", "cool_off", "settled"])
def test_a_run_waiting_for_a_person_a_timer_or_an_event_is_force_compensated(
    h: SagaHarness, world: World, waits_at: str
) -> None:
    # Given a run waiting at an approval, a timer or an external event
    run = start(h, "waiting")
    if waits_at != "approve":
        h.orchestrator.approve(run.id, by="boss@x.example")
        h.run_until_idle()
    if waits_at == "settled":
        h.advance(DAY)
        h.run_until_idle()
    waiting = h.log.get_run(run.id)
    assert (waiting.status, waiting.step) == (RunStatus.RUNNING, waits_at)

    # When it is force-compensated
    h.orchestrator.force_compensate(run.id, by="alice", reason="order withdrawn")
    h.run_until_idle()

    # Then it is compensated now, not at its deadline, and waits for nothing any more
    done = h.log.get_run(run.id)
    assert (done.status, done.awaiting) == (RunStatus.COMPENSATED, None)
    assert world.effects[-2:] == [("charge", "compensate"), ("reserve", "compensate")]


def test_a_run_with_a_step_in_flight_turns_after_that_step(store_url: str, world: World) -> None:
    class ForceDuring(Hooks):
        def before_action(self, call: ActionCall) -> None:
            if call.step == "charge" and call.phase.value == "forward":
                o = harness.orchestrator
                receipt = o.force_compensate(call.run_id, by="risk", reason="fraud")
                assert "once the step in flight is checkpointed" in receipt.note

    harness = SagaHarness(world.sagas(), store_url=store_url, hooks=[ForceDuring()])
    run = start(harness, "shop")

    # Then the charge in flight completed, and was then refunded; the email never ran
    assert harness.status(run.id) is RunStatus.COMPENSATED
    assert world.effects == [
        ("reserve", "forward"),
        ("charge", "forward"),
        ("charge", "compensate"),
        ("reserve", "compensate"),
    ]
    harness.close()


def test_force_compensating_a_run_parked_in_doubt_leaves_that_step_to_a_person(
    h: SagaHarness, world: World
) -> None:
    # Given a run parked because its charge's answer was lost and it has no probe
    run = parked_unknown(h, world)

    # When an operator force-compensates it
    receipt = h.orchestrator.force_compensate(run.id, by="alice", reason="customer gave up")
    h.run_until_idle()

    # Then the reservation is released, the charge is not refunded, and both say so
    assert h.status(run.id) is RunStatus.COMPENSATED
    assert world.effects == [
        ("reserve", "forward"),
        ("charge", "forward"),
        ("reserve", "compensate"),
    ]
    assert receipt.not_compensated == "charge"
    assert "step 'charge' is not compensated: its outcome is unknown" in receipt.note
    event = acted(h, run.id)
    assert event.payload["not_compensated"]["step"] == "charge"
    assert event.payload["status"] == {"from": "parked", "to": "running"}


def test_a_run_parked_while_being_cancelled_is_force_compensated_not_resumed(
    store_url: str, world: World
) -> None:
    # Given a charge cut short by a crash, no probe, and a cancel: the run parks
    crash = CrashAt("charge", point="after_action", mode="raise")
    h = SagaHarness(world.sagas(), store_url=store_url, hooks=[crash], lease=timedelta(seconds=5))
    run = h.start("shop", {"order_id": "C1"})
    with pytest.raises(SimulatedCrash):
        h.run_until_idle()
    h.orchestrator.cancel(run.id, "abandoned cart", by="shopper")
    h.advance(timedelta(seconds=6))
    h.run_until_idle()
    assert h.status(run.id) is RunStatus.PARKED

    # Then it cannot be resumed (that would carry the cancel out without the charge)
    with pytest.raises(ActionRefusedError) as refused:
        h.orchestrator.resume(run.id, by="alice", reason="go on")
    assert str(refused.value) == (
        f"cannot resume run {run.id!r}: it was parked while being cancelled "
        "(by shopper: abandoned cart); force-compensate it or resolve it"
    )
    # But it can be force-compensated: the charge in doubt is left to a person
    receipt = h.orchestrator.force_compensate(run.id, by="alice", reason="cancel it")
    h.run_until_idle()
    assert receipt.not_compensated == "charge"
    assert h.status(run.id) is RunStatus.COMPENSATED
    assert world.effects[-1] == ("reserve", "compensate")
    assert ("charge", "compensate") not in world.effects
    h.close()


def test_force_compensate_is_refused_past_a_completed_pivot(h: SagaHarness, world: World) -> None:
    # Parked past the pivot, and running (waiting for a retry) past it
    parked = parked_past_pivot(h, world)
    world.email = "retry"
    running = start(h, "parcel", "P2")
    for run in (parked, running):
        with pytest.raises(ActionRefusedError) as refused:
            h.orchestrator.force_compensate(run.id, by="alice", reason="undo it all")
        assert str(refused.value) == (
            f"cannot force-compensate run {run.id!r}: pivot 'ship' has completed, so the steps "
            "before it cannot be undone; resume it, or resolve it by hand"
        )
    assert ("charge", "compensate") not in world.effects


def test_force_compensate_refuses_finished_compensating_and_parked_compensating_runs(
    h: SagaHarness, world: World
) -> None:
    completed = start(h, "shop", "F1")
    world.email = "permanent"
    compensated = start(h, "shop", "F2")
    world.refund = "retry"
    compensating = start(h, "shop", "F3")
    world.refund = "permanent"
    parked = start(h, "shop", "F4")
    resolved = start(h, "shop", "F5")
    h.orchestrator.resolve(resolved.id, by="alice", reason="refunded by hand, ticket 9")

    def refusal(run: RunRecord) -> str:
        with pytest.raises((RunNotActiveError, ActionRefusedError)) as refused:
            h.orchestrator.force_compensate(run.id, by="alice", reason="undo")
        return str(refused.value)

    assert refusal(completed) == f"cannot force-compensate run {completed.id!r}: it is completed"
    assert refusal(compensated) == (
        f"cannot force-compensate run {compensated.id!r}: it is compensated"
    )
    assert refusal(resolved) == f"cannot force-compensate run {resolved.id!r}: it is resolved"
    assert refusal(compensating) == (
        f"cannot force-compensate run {compensating.id!r}: it is already compensating"
    )
    assert refusal(parked) == (
        f"cannot force-compensate run {parked.id!r}: it is parked compensating step 'charge'; "
        "retry the compensation (retry-compensation) or resolve it"
    )


def test_force_compensating_a_parked_run_needs_its_shape(h: SagaHarness, world: World) -> None:
    # Given a parked run whose definition no worker recorded, acted on from a bare process
    run = parked_unknown(h, world)
    with h.log.engine.begin() as conn:
        conn.execute(delete(definitions))
    bare = Orchestrator(h.log, Registry([]))

    with pytest.raises(ActionRefusedError) as refused:
        bare.force_compensate(run.id, by="alice", reason="undo")
    assert str(refused.value).startswith(
        f"cannot force-compensate run {run.id!r}: whether it has passed a pivot is unknown here"
    )
    # With the sagas (or a shape a worker recorded), it is accepted
    assert h.orchestrator.force_compensate(run.id, by="alice", reason="undo").run_id == run.id


# -- resolve ---------------------------------------------------------------------------


def test_a_parked_run_is_resolved_by_hand_and_never_driven_again(
    h: SagaHarness, world: World
) -> None:
    # Given a run parked at its refused refund
    run = parked_compensating(h, world)

    # When finance refunds by hand and an operator resolves it
    receipt = h.orchestrator.resolve(
        run.id, by="carol@finance.example", reason="refunded by hand, ticket 123"
    )

    # Then it is resolved, no worker touches it, and the log says who and why
    assert receipt.status is RunStatus.RESOLVED
    world.refund = None
    h.advance(timedelta(days=2))
    h.run_until_idle()
    done = h.log.get_run(run.id)
    assert done.status is RunStatus.RESOLVED
    assert (done.wake_at, done.blocked_reason) == (None, None)
    assert not done.status.active
    assert ("charge", "compensate") not in world.effects
    event = acted(h, run.id)
    assert event.actor == "carol@finance.example"
    assert event.payload["action"] == "resolve"
    assert event.payload["reason"] == "refunded by hand, ticket 123"
    assert event.payload["status"] == {"from": "parked", "to": "resolved"}
    assert "payments refused the refund" in event.payload["parked_reason"]
    assert h.log.count_runs() == {"resolved": 1}
    assert h.log.list_runs(status="resolved")[0].id == run.id


def test_resolve_refuses_completed_running_and_resolved_runs(h: SagaHarness, world: World) -> None:
    completed = start(h, "shop", "R1")
    with pytest.raises(RunNotActiveError) as refused:
        h.orchestrator.resolve(completed.id, by="alice", reason="done by hand")
    assert str(refused.value) == f"cannot resolve run {completed.id!r}: it is completed"

    world.email = "retry"
    running = start(h, "shop", "R2")
    with pytest.raises(ActionRefusedError) as refused_running:
        h.orchestrator.resolve(running.id, by="alice", reason="done by hand")
    assert str(refused_running.value) == (
        f"cannot resolve run {running.id!r}: it is running, not parked; "
        "force-compensate or cancel it first"
    )

    world.email, world.refund = "permanent", "permanent"
    parked = start(h, "shop", "R3")
    h.orchestrator.resolve(parked.id, by="alice", reason="refunded by hand")
    with pytest.raises(RunNotActiveError) as again:
        h.orchestrator.resolve(parked.id, by="bob", reason="me too")
    assert str(again.value) == f"cannot resolve run {parked.id!r}: it is resolved"
    assert len([e for e in h.events(parked.id) if e.type is EventType.OPERATOR_ACTION]) == 1


# -- every action -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "doing"),
    [
        ("retry_compensation", "retrying the compensation of"),
        ("resume", "resuming"),
        ("force_compensate", "force-compensating"),
        ("resolve", "resolving"),
    ],
)
def test_every_action_needs_a_reason_who_acts_and_a_known_run(
    h: SagaHarness, world: World, action: str, doing: str
) -> None:
    run = parked_compensating(h, world)
    act = getattr(h.orchestrator, action)
    with pytest.raises(ValueError) as no_reason:
        act(run.id, by="alice", reason="  ")
    assert str(no_reason.value) == f"{doing} run {run.id!r} needs a reason"
    with pytest.raises(ValueError) as nobody:
        act(run.id, by="", reason="why not")
    assert str(nobody.value) == f"{doing} run {run.id!r} needs to say who acts (by=...)"
    with pytest.raises(UnknownRunError, match="unknown run 'nope'"):
        act("nope", by="alice", reason="typo")
    # Nothing was written, and the run is as it was
    assert not [e for e in h.events(run.id) if e.type is EventType.OPERATOR_ACTION]
    assert h.status(run.id) is RunStatus.PARKED
