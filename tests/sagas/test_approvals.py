"""Approval steps: a run waits for a person's decision, escalates at its deadline, and
compensates when rejected. Time is the harness's manual clock: hours pass at once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from sagaledger import (
    Decision,
    DefinitionError,
    Escalate,
    NotAllowedToDecideError,
    RetrySafety,
    RunNotActiveError,
    RunNotWaitingError,
    RunStatus,
    Saga,
    StepContext,
    approval,
    step,
)
from sagaledger.sagas._waits import APPROVAL_SIGNAL, approval_key
from sagaledger.store import EventRecord, EventType
from sagaledger.testing import SagaHarness

HOUR = timedelta(hours=1)
MANAGERS = ["*@managers.example"]
DIRECTORS = ["cfo@example.com", "ceo@example.com"]


class Refund(BaseModel):
    order: str
    amount: int


class Shown(BaseModel):
    order: str
    amount: int


def refund_saga(done: list[tuple[str, str]], **options: Any) -> Saga:
    """Hold funds, reserve stock, wait for a manager, pay out."""

    def undo(what: str) -> Any:
        return lambda ctx: done.append((f"undo_{what}", ctx.input.order))

    @step(retry_safety=RetrySafety.NATURAL, compensate=undo("hold"))
    def hold_funds(ctx: StepContext[Refund]) -> dict[str, int]:
        done.append(("hold", ctx.input.order))
        return {"held": ctx.input.amount}

    @step(retry_safety=RetrySafety.NATURAL, compensate=undo("reserve"))
    def reserve(ctx: StepContext[Refund]) -> None:
        done.append(("reserve", ctx.input.order))

    @step(retry_safety=RetrySafety.NATURAL, no_compensation="the last step")
    def pay_out(ctx: StepContext[Refund]) -> Any:
        done.append(("pay", ctx.input.order))
        return ctx.outputs["manager_approval"]

    settings: dict[str, Any] = {
        "approvers": MANAGERS,
        "deadline": 48 * HOUR,
        "on_deadline": Escalate(to=DIRECTORS, within=24 * HOUR, then=Decision.REJECT),
        "show": lambda ctx: Shown(order=ctx.input.order, amount=ctx.input.amount),
        **options,
    }
    waiting = approval("manager_approval", **settings)
    return Saga("refund", 1, Refund, [hold_funds, reserve, waiting, pay_out])


@pytest.fixture
def done() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def harness(store_url: str, done: list[tuple[str, str]]) -> Iterator[SagaHarness]:
    h = SagaHarness([refund_saga(done)], store_url=store_url)
    yield h
    h.close()


def start(harness: SagaHarness, order: str = "R-1", amount: int = 900) -> str:
    run = harness.start("refund", {"order": order, "amount": amount})
    harness.run_until_idle()
    return run.id


def of_approval(harness: SagaHarness, run_id: str) -> list[EventRecord]:
    """The run's approval events and what followed them."""
    kinds = {
        EventType.APPROVAL_REQUESTED,
        EventType.APPROVAL_ESCALATED,
        EventType.APPROVAL_DECIDED,
        EventType.STEP_FAILED,
        EventType.COMPENSATION_STARTED,
        EventType.RUN_COMPENSATED,
        EventType.RUN_COMPLETED,
    }
    return [e for e in harness.events(run_id) if e.type in kinds]


def test_unanswered_for_48_hours_it_escalates_and_the_escalation_deadline_compensates(
    harness: SagaHarness, done: list[tuple[str, str]]
) -> None:
    t0 = harness.clock()
    run_id = start(harness)
    waiting = harness.log.get_run(run_id)
    assert (waiting.status, waiting.step, waiting.lease_owner) == (
        RunStatus.RUNNING,
        "manager_approval",
        None,
    )
    assert waiting.wake_at == t0 + 48 * HOUR  # the deadline is the run's wake-up time

    # A minute before the deadline nothing has moved
    harness.advance(48 * HOUR - timedelta(minutes=1))
    harness.run_until_idle()
    assert [e.type for e in of_approval(harness, run_id)] == [EventType.APPROVAL_REQUESTED]

    # Hour 48: escalated to the directors, with their own 24 hours
    harness.advance(timedelta(minutes=1))
    harness.run_until_idle()
    with pytest.raises(NotAllowedToDecideError, match=r"cfo@example.com, ceo@example.com"):
        harness.orchestrator.approve(run_id, by="alice@managers.example")
    assert harness.log.get_run(run_id).wake_at == t0 + 72 * HOUR

    # Hour 72: nobody answered; rejected by default, compensated in reverse
    harness.advance(24 * HOUR)
    harness.run_until_idle()
    assert harness.status(run_id) is RunStatus.COMPENSATED
    assert done == [
        ("hold", "R-1"),
        ("reserve", "R-1"),
        ("undo_reserve", "R-1"),
        ("undo_hold", "R-1"),
    ]

    requested, escalated, decided, failed, turned, compensated = of_approval(harness, run_id)
    shown = {"order": "R-1", "amount": 900}
    assert (requested.type, requested.actor, requested.created_at) == (
        EventType.APPROVAL_REQUESTED,
        "worker:harness",
        t0,
    )
    assert requested.payload == {
        "level": 0,
        "approvers": MANAGERS,
        "deadline": (t0 + 48 * HOUR).isoformat(),
        "shown": shown,
    }
    assert (escalated.type, escalated.created_at) == (EventType.APPROVAL_ESCALATED, t0 + 48 * HOUR)
    assert escalated.payload == {
        "level": 1,
        "approvers": DIRECTORS,
        "deadline": (t0 + 72 * HOUR).isoformat(),
        "shown": shown,
        "missed_deadline": (t0 + 48 * HOUR).isoformat(),
    }
    assert (decided.type, decided.actor, decided.created_at) == (
        EventType.APPROVAL_DECIDED,
        "worker:harness",
        t0 + 72 * HOUR,
    )
    assert decided.payload["decision"] == "reject"
    assert decided.payload["by"] is None
    assert "no decision by the deadline" in decided.payload["reason"]
    assert failed.type is EventType.STEP_FAILED
    assert failed.error is not None and "rejected by its deadline" in failed.error["message"]
    assert turned.type is EventType.COMPENSATION_STARTED
    assert compensated.type is EventType.RUN_COMPENSATED
    assert harness.log.get_run(run_id).awaiting is None


def test_an_approval_within_the_deadline_continues_the_run(
    harness: SagaHarness, done: list[tuple[str, str]]
) -> None:
    t0 = harness.clock()
    run_id = start(harness)
    harness.advance(47 * HOUR)
    request = harness.orchestrator.approve(run_id, by="Alice@Managers.example", reason="checked")
    assert request.payload["shown"] == {"order": "R-1", "amount": 900}
    harness.run_until_idle()

    assert harness.status(run_id) is RunStatus.COMPLETED
    assert done == [("hold", "R-1"), ("reserve", "R-1"), ("pay", "R-1")]
    decided = next(e for e in harness.events(run_id) if e.type is EventType.APPROVAL_DECIDED)
    assert decided.actor == "Alice@Managers.example"
    assert decided.payload == {
        "decision": "approve",
        "by": "Alice@Managers.example",
        "reason": "checked",
        "level": 0,
        "shown": {"order": "R-1", "amount": 900},
        "decided_at": (t0 + 47 * HOUR).isoformat(),
    }
    # Later steps see the decision as the approval step's output
    paid = [e for e in harness.events(run_id) if e.type is EventType.STEP_COMPLETED][-1]
    assert paid.payload["output"]["by"] == "Alice@Managers.example"
    assert not [e for e in harness.events(run_id) if e.type is EventType.APPROVAL_ESCALATED]


def test_the_escalated_group_can_approve_before_its_own_deadline(harness: SagaHarness) -> None:
    run_id = start(harness)
    harness.advance(48 * HOUR)
    harness.run_until_idle()
    harness.advance(23 * HOUR)
    harness.orchestrator.approve(run_id, by="cfo@example.com")
    harness.run_until_idle()
    assert harness.status(run_id) is RunStatus.COMPLETED
    decided = next(e for e in harness.events(run_id) if e.type is EventType.APPROVAL_DECIDED)
    assert (decided.actor, decided.payload["level"]) == ("cfo@example.com", 1)


def test_a_rejection_compensates_in_reverse_and_says_who_and_why(
    harness: SagaHarness, done: list[tuple[str, str]]
) -> None:
    run_id = start(harness)
    harness.orchestrator.reject(run_id, by="bob@managers.example", reason="duplicate refund")
    harness.run_until_idle()
    assert harness.status(run_id) is RunStatus.COMPENSATED
    assert done[2:] == [("undo_reserve", "R-1"), ("undo_hold", "R-1")]
    failed = next(e for e in harness.events(run_id) if e.type is EventType.STEP_FAILED)
    assert failed.error is not None
    assert "rejected by bob@managers.example: duplicate refund" in failed.error["message"]
    assert failed.payload["outcome"] == "compensate"


def test_a_decision_made_while_no_worker_runs_is_applied_when_one_starts(
    store_url: str, done: list[tuple[str, str]]
) -> None:
    first = SagaHarness([refund_saga(done)], store_url=store_url)
    run_id = start(first)
    first.close()  # every worker gone

    # Only the log: an orchestrator with no sagas and no dispatcher (as the CLI is)
    clock = first.clock
    cli = SagaHarness([], store_url=store_url, clock=clock)
    cli.orchestrator.set_dispatcher(None)
    cli.orchestrator.approve(run_id, by="carol@managers.example", reason="ok")
    assert cli.status(run_id) is RunStatus.RUNNING
    cli.close()

    second = SagaHarness([refund_saga(done)], store_url=store_url, clock=clock)
    second.run_until_idle()
    assert second.status(run_id) is RunStatus.COMPLETED
    assert done == [("hold", "R-1"), ("reserve", "R-1"), ("pay", "R-1")]
    second.close()


def test_approve_by_default_at_the_deadline(store_url: str, done: list[tuple[str, str]]) -> None:
    saga = refund_saga(done, on_deadline=Decision.APPROVE, deadline=2 * HOUR)
    harness = SagaHarness([saga], store_url=store_url)
    run_id = start(harness)
    harness.advance(2 * HOUR)
    harness.run_until_idle()
    assert harness.status(run_id) is RunStatus.COMPLETED
    decided = next(e for e in harness.events(run_id) if e.type is EventType.APPROVAL_DECIDED)
    assert decided.payload["decision"] == "approve"
    assert "approved by default" in decided.payload["reason"]
    harness.close()


def test_refusals_name_the_fault_and_record_nothing(harness: SagaHarness) -> None:
    o = harness.orchestrator
    run_id = start(harness)

    with pytest.raises(NotAllowedToDecideError) as refused:
        o.approve(run_id, by="mallory@example.com")
    assert str(refused.value) == (
        f"'mallory@example.com' may not decide approval 'manager_approval' of run {run_id!r}; "
        "it may be decided by: *@managers.example"
    )
    with pytest.raises(ValueError, match="needs a reason"):
        o.reject(run_id, by="bob@managers.example", reason=" ")
    with pytest.raises(ValueError, match="who decides"):
        o.approve(run_id, by="")
    assert (
        harness.log.find_signal(APPROVAL_SIGNAL, approval_key(run_id, "manager_approval")) is None
    )

    o.approve(run_id, by="bob@managers.example")
    with pytest.raises(
        RunNotWaitingError, match=r"already decided: approve by bob@managers\.example"
    ):
        o.reject(run_id, by="alice@managers.example", reason="too late")
    harness.run_until_idle()
    with pytest.raises(RunNotActiveError, match="it is completed"):
        o.approve(run_id, by="bob@managers.example")


def test_a_run_not_at_an_approval_cannot_be_decided(
    store_url: str, done: list[tuple[str, str]]
) -> None:
    harness = SagaHarness([refund_saga(done)], store_url=store_url)
    run = harness.start("refund", {"order": "R-9", "amount": 5})  # not driven yet
    with pytest.raises(RunNotWaitingError, match=r"is not waiting for an approval: .*'hold_funds'"):
        harness.orchestrator.approve(run.id, by="bob@managers.example")
    harness.close()


def test_a_decision_after_the_deadline_is_refused_even_before_a_worker_escalates(
    harness: SagaHarness,
) -> None:
    run_id = start(harness)
    harness.advance(48 * HOUR)  # due, but no worker has escalated yet
    with pytest.raises(RunNotWaitingError, match=r"deadline .* has passed"):
        harness.orchestrator.approve(run_id, by="bob@managers.example")
    harness.run_until_idle()
    assert any(e.type is EventType.APPROVAL_ESCALATED for e in harness.events(run_id))


def test_a_decision_that_lands_while_a_driver_holds_the_run_still_wakes_it(
    harness: SagaHarness,
) -> None:
    """The decision was made just before the deadline, and landed after the driver
    looked for one: its sender could not wake a run a worker held, so the driver
    looks again once it has let the run go (after escalating it)."""
    log, o = harness.log, harness.orchestrator
    run_id = start(harness)
    key = approval_key(run_id, "manager_approval")
    looked = log.find_signal
    landed: list[str] = []

    def decision_lands_just_after_the_look(name: str, k: str) -> Any:
        found = looked(name, k)
        if not landed:
            landed.append(k)
            decision = {"decision": "approve", "reason": "in time", "level": 0}
            log.record_signal(name, k, decision, "bob@managers.example", o.clock())
            assert o.wake("approval:" + k) == []  # the run is held: nothing to wake
        return found

    harness.advance(48 * HOUR)
    log.find_signal = decision_lands_just_after_the_look  # type: ignore[method-assign]
    harness.run_until_idle()
    assert landed == [key]
    assert harness.status(run_id) is RunStatus.COMPLETED  # now, not at hour 72
    kinds = [e.type for e in of_approval(harness, run_id)]
    assert kinds == [
        EventType.APPROVAL_REQUESTED,
        EventType.APPROVAL_ESCALATED,
        EventType.APPROVAL_DECIDED,
        EventType.RUN_COMPLETED,
    ]


def test_cancelling_a_run_that_waits_for_an_approval_compensates_it(
    harness: SagaHarness, done: list[tuple[str, str]]
) -> None:
    run_id = start(harness)
    harness.orchestrator.cancel(run_id, "customer withdrew", by="support@example.com")
    harness.run_until_idle()
    assert harness.status(run_id) is RunStatus.COMPENSATED
    assert done[2:] == [("undo_reserve", "R-1"), ("undo_hold", "R-1")]
    assert harness.log.get_run(run_id).awaiting is None
    assert harness.orchestrator.pending_approvals() == []


def test_pending_approvals_lists_what_people_must_decide(harness: SagaHarness) -> None:
    t0 = harness.clock()
    first = start(harness, "R-1", 900)
    second = start(harness, "R-2", 40)
    harness.orchestrator.approve(first, by="bob@managers.example")
    harness.run_until_idle()
    (pending,) = harness.orchestrator.pending_approvals()
    assert (pending.run_id, pending.saga, pending.step, pending.level) == (
        second,
        "refund",
        "manager_approval",
        0,
    )
    assert pending.approvers == MANAGERS
    assert pending.deadline == t0 + 48 * HOUR
    assert pending.shown == {"order": "R-2", "amount": 40}


def test_approvers_computed_from_the_run_once(store_url: str, done: list[tuple[str, str]]) -> None:
    asked: list[str] = []

    def approvers(ctx: StepContext[Refund]) -> list[str]:
        asked.append(ctx.input.order)
        return ["cfo@example.com"] if ctx.input.amount > 1000 else MANAGERS

    harness = SagaHarness([refund_saga(done, approvers=approvers)], store_url=store_url)
    big = start(harness, "R-1", 5000)
    harness.advance(HOUR)
    harness.run_until_idle()  # a later drive does not compute them again
    with pytest.raises(NotAllowedToDecideError):
        harness.orchestrator.approve(big, by="bob@managers.example")
    harness.orchestrator.approve(big, by="CFO@example.com")
    harness.run_until_idle()
    assert harness.status(big) is RunStatus.COMPLETED
    assert asked == ["R-1"]
    harness.close()


def test_a_failing_show_fails_the_step_like_an_action(
    store_url: str, done: list[tuple[str, str]]
) -> None:
    def show(ctx: StepContext[Refund]) -> Any:
        raise RuntimeError("pricing service down")

    harness = SagaHarness([refund_saga(done, show=show)], store_url=store_url)
    run_id = start(harness)
    for _ in range(10):
        harness.advance(HOUR)
        harness.run_until_idle()
    assert harness.status(run_id) is RunStatus.COMPENSATED
    failed = [e for e in harness.events(run_id) if e.type is EventType.STEP_FAILED]
    assert failed[-1].error is not None
    assert "pricing service down" in failed[-1].error["message"]
    harness.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"approvers": []}, "approvers is empty"),
        ({"approvers": "bob@example.com"}, "must be a list of names"),
        ({"deadline": timedelta(0)}, "deadlines must be positive"),
        (
            {"on_deadline": Escalate(to=DIRECTORS, within=-HOUR)},
            "deadlines must be positive",
        ),
        ({"on_deadline": Escalate(to=[], within=HOUR)}, "escalation: approvers is empty"),
        ({"on_deadline": "approve"}, "must end in Decision.APPROVE or Decision.REJECT"),
    ],
)
def test_bad_approval_definitions_are_refused_by_name(
    options: dict[str, Any], message: str
) -> None:
    settings: dict[str, Any] = {"approvers": MANAGERS, "deadline": HOUR, **options}
    with pytest.raises(DefinitionError, match=message) as refused:
        approval("manager_approval", **settings)
    assert str(refused.value).startswith("approval 'manager_approval': ")


def test_an_approval_step_has_its_own_fingerprint() -> None:
    done: list[tuple[str, str]] = []
    with_approval = refund_saga(done)
    plain = Saga(
        "refund",
        1,
        Refund,
        [*with_approval.steps[:2], with_approval.steps[3]],
    )
    assert with_approval.fingerprint != plain.fingerprint


def test_a_run_being_cancelled_takes_no_decision_and_is_not_pending(harness: SagaHarness) -> None:
    o = harness.orchestrator
    cancelled, decided, pending = (
        start(harness, "R-1"),
        start(harness, "R-2"),
        start(harness, "R-3"),
    )
    o.set_dispatcher(None)  # nothing is driven: the requests are kept, not yet applied
    o.cancel(cancelled, "customer withdrew", by="support@example.com")
    o.approve(decided, by="bob@managers.example")
    with pytest.raises(RunNotWaitingError, match=r"is being cancelled \(by support@example.com"):
        o.approve(cancelled, by="bob@managers.example")
    assert [p.run_id for p in o.pending_approvals()] == [pending]
