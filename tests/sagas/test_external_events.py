"""External events: a run waits for a named event with a correlation key, up to a deadline;
an event sent before the run waits, or sent twice, counts once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from sagaledger import (
    DefinitionError,
    Registry,
    RetrySafety,
    RunStatus,
    Saga,
    StepContext,
    UnknownEventError,
    step,
    wait_for_event,
)
from sagaledger.sagas._waits import event_awaiting
from sagaledger.store import EventType
from sagaledger.testing import SagaHarness

DAY = timedelta(days=1)


class Order(BaseModel):
    order: str


def order_saga(
    done: list[tuple[str, Any]],
    *,
    on_deadline: Literal["fail", "continue"] = "fail",
    key: Any = None,
) -> Saga:
    """Charge, wait for the payment to settle, ship."""

    @step(
        retry_safety=RetrySafety.NATURAL,
        compensate=lambda ctx: done.append(("refund", ctx.input.order)),
    )
    def charge(ctx: StepContext[Order]) -> None:
        done.append(("charge", ctx.input.order))

    @step(retry_safety=RetrySafety.NATURAL, no_compensation="the last step")
    def ship(ctx: StepContext[Order]) -> None:
        done.append(("ship", ctx.outputs["settled"]))

    settled = wait_for_event(
        "settled",
        event="payment.settled",
        key=key or (lambda ctx: ctx.input.order),
        within=3 * DAY,
        on_deadline=on_deadline,
    )
    return Saga("order", 1, Order, [charge, settled, ship])


@pytest.fixture
def done() -> list[tuple[str, Any]]:
    return []


@pytest.fixture
def harness(store_url: str, done: list[tuple[str, Any]]) -> Iterator[SagaHarness]:
    h = SagaHarness([order_saga(done)], store_url=store_url)
    yield h
    h.close()


def start(harness: SagaHarness, order: str = "O-1") -> str:
    run = harness.start("order", {"order": order})
    harness.run_until_idle()
    return run.id


def received(harness: SagaHarness, run_id: str) -> list[Any]:
    return [e for e in harness.events(run_id) if e.type is EventType.EVENT_RECEIVED]


def test_a_waiting_run_takes_the_event_when_it_arrives(
    harness: SagaHarness, done: list[tuple[str, Any]]
) -> None:
    t0 = harness.clock()
    run_id = start(harness)
    waiting = harness.log.get_run(run_id)
    assert (waiting.step, waiting.lease_owner, waiting.wake_at) == ("settled", None, t0 + 3 * DAY)
    assert waiting.awaiting == event_awaiting("payment.settled", "O-1")
    (awaited,) = [e for e in harness.events(run_id) if e.type is EventType.EVENT_AWAITED]
    assert awaited.payload == {
        "event": "payment.settled",
        "key": "O-1",
        "deadline": (t0 + 3 * DAY).isoformat(),
    }

    harness.advance(DAY)
    receipt = harness.orchestrator.signal(
        "payment.settled", "O-1", {"settlement": "st_1"}, by="webhook:psp"
    )
    assert (receipt.new, receipt.woken) == (True, [run_id])
    harness.run_until_idle()

    assert harness.status(run_id) is RunStatus.COMPLETED
    (taken,) = received(harness, run_id)
    assert taken.actor == "webhook:psp"
    expected = {
        "received": True,
        "event": "payment.settled",
        "key": "O-1",
        "payload": {"settlement": "st_1"},
        "sender": "webhook:psp",
        "received_at": (t0 + DAY).isoformat(),
    }
    assert done == [("charge", "O-1"), ("ship", expected)]
    assert harness.log.get_run(run_id).awaiting is None


def test_an_event_sent_before_the_run_waits_is_not_lost(
    harness: SagaHarness, done: list[tuple[str, Any]]
) -> None:
    run = harness.start("order", {"order": "O-2"})  # not driven yet
    receipt = harness.orchestrator.signal("payment.settled", "O-2", {"early": True})
    assert (receipt.new, receipt.woken) == (True, [])
    harness.run_until_idle()
    assert harness.status(run.id) is RunStatus.COMPLETED
    assert [e.payload["payload"] for e in received(harness, run.id)] == [{"early": True}]


def test_an_event_sent_twice_counts_once(harness: SagaHarness, done: list[tuple[str, Any]]) -> None:
    run_id = start(harness)
    first = harness.orchestrator.signal("payment.settled", "O-1", {"attempt": 1})
    harness.advance(timedelta(minutes=5))
    again = harness.orchestrator.signal("payment.settled", "O-1", {"attempt": 2})
    assert (first.new, again.new) == (True, False)
    assert again.received_at == first.received_at  # the kept delivery is the first
    harness.run_until_idle()
    assert [e.payload["payload"] for e in received(harness, run_id)] == [{"attempt": 1}]
    assert next(d for d in done if d[0] == "ship")[1]["payload"] == {"attempt": 1}

    # After the run has moved on, another delivery changes nothing either
    late = harness.orchestrator.signal("payment.settled", "O-1", {"attempt": 3})
    harness.run_until_idle()
    assert (late.new, late.woken) == (False, [])
    assert len(received(harness, run_id)) == 1


def test_every_run_waiting_for_the_same_event_and_key_is_woken(
    store_url: str, done: list[tuple[str, Any]]
) -> None:
    # Two sagas wait for the settlement of one payment reference
    saga = order_saga(done, key=lambda ctx: "PAY-7")
    harness = SagaHarness([saga], store_url=store_url)
    first, second = start(harness, "O-1"), start(harness, "O-2")
    other = start(harness, "O-3")  # waits for the same event with the same key too
    receipt = harness.orchestrator.signal("payment.settled", "PAY-7")
    assert sorted(receipt.woken) == sorted([first, second, other])
    harness.run_until_idle()
    assert {harness.status(r) for r in (first, second, other)} == {RunStatus.COMPLETED}
    harness.close()


def test_a_signal_for_another_key_wakes_nobody(harness: SagaHarness) -> None:
    run_id = start(harness, "O-1")
    receipt = harness.orchestrator.signal("payment.settled", "O-99")
    assert receipt.woken == []
    harness.run_until_idle()
    assert harness.log.get_run(run_id).step == "settled"


def test_no_event_by_the_deadline_compensates(
    harness: SagaHarness, done: list[tuple[str, Any]]
) -> None:
    run_id = start(harness)
    harness.advance(3 * DAY - timedelta(seconds=1))
    harness.run_until_idle()
    assert harness.log.get_run(run_id).step == "settled"
    harness.advance(timedelta(seconds=1))
    harness.run_until_idle()
    assert harness.status(run_id) is RunStatus.COMPENSATED
    assert done == [("charge", "O-1"), ("refund", "O-1")]
    failed = next(e for e in harness.events(run_id) if e.type is EventType.STEP_FAILED)
    assert failed.error is not None
    assert "event 'payment.settled' with key 'O-1' did not arrive by" in failed.error["message"]
    # An event after the deadline is kept, but the run has moved on
    assert harness.orchestrator.signal("payment.settled", "O-1").woken == []


def test_on_deadline_continue_lets_later_steps_decide(
    store_url: str, done: list[tuple[str, Any]]
) -> None:
    harness = SagaHarness([order_saga(done, on_deadline="continue")], store_url=store_url)
    run_id = start(harness)
    harness.advance(3 * DAY)
    harness.run_until_idle()
    assert harness.status(run_id) is RunStatus.COMPLETED
    shipped = done[-1][1]
    assert (shipped["received"], shipped["event"], shipped["key"]) == (
        False,
        "payment.settled",
        "O-1",
    )
    harness.close()


def test_the_event_waited_for_is_kept_across_a_restart(
    store_url: str, done: list[tuple[str, Any]]
) -> None:
    first = SagaHarness([order_saga(done)], store_url=store_url)
    run_id = start(first)
    first.close()
    second = SagaHarness([order_saga(done)], store_url=store_url, clock=first.clock)
    second.orchestrator.signal("payment.settled", "O-1", by="webhook")
    second.run_until_idle()
    assert second.status(run_id) is RunStatus.COMPLETED
    assert len([e for e in second.events(run_id) if e.type is EventType.EVENT_AWAITED]) == 1
    second.close()


def test_an_event_that_lands_while_a_driver_holds_the_run_still_wakes_it(
    harness: SagaHarness,
) -> None:
    """The event lands after the driver looked for it and before it let the run go:
    its sender could not wake a run a worker held, so the driver looks again."""
    log, o = harness.log, harness.orchestrator
    looked = log.find_signal
    landed: list[str] = []

    def event_lands_just_after_the_look(name: str, key: str) -> Any:
        found = looked(name, key)
        if not landed:
            landed.append(key)
            log.record_signal(name, key, {"late": True}, "webhook", o.clock())
            assert o.wake(event_awaiting(name, key)) == []  # held: nothing to wake
        return found

    log.find_signal = event_lands_just_after_the_look  # type: ignore[method-assign]
    run_id = start(harness)
    assert landed == ["O-1"]
    assert harness.status(run_id) is RunStatus.COMPLETED  # at once, not in three days


def test_cancelling_a_run_that_waits_for_an_event_compensates_it(
    harness: SagaHarness, done: list[tuple[str, Any]]
) -> None:
    run_id = start(harness)
    harness.orchestrator.cancel(run_id, "order withdrawn", by="support")
    harness.run_until_idle()
    assert harness.status(run_id) is RunStatus.COMPENSATED
    assert done == [("charge", "O-1"), ("refund", "O-1")]
    assert harness.orchestrator.signal("payment.settled", "O-1").woken == []


def test_an_unknown_event_is_refused_and_names_the_known_ones(harness: SagaHarness) -> None:
    with pytest.raises(UnknownEventError) as refused:
        harness.orchestrator.signal("payment.setled", "O-1")
    assert str(refused.value) == (
        "unknown event 'payment.setled': no saga waits for it; known events: payment.settled"
    )
    assert harness.log.find_signal("payment.setled", "O-1") is None


def test_without_the_sagas_a_sender_knows_the_events_live_workers_wait_for(
    store_url: str, done: list[tuple[str, Any]]
) -> None:
    worker = SagaHarness([order_saga(done)], store_url=store_url)
    sender = SagaHarness(Registry([]), store_url=store_url, clock=worker.clock)
    with pytest.raises(UnknownEventError, match=r"known events: none \(start a worker"):
        sender.orchestrator.signal("payment.settled", "O-1")
    run_id = start(worker)  # its recovery pass says what its sagas wait for
    assert sender.orchestrator.signal("payment.settled", "O-1").woken == [run_id]
    with pytest.raises(UnknownEventError, match=r"known events: payment\.settled$"):
        sender.orchestrator.signal("parcel.delivered", "O-1")
    sender.close()
    worker.close()


@pytest.mark.parametrize(
    ("key", "payload", "message"),
    [
        ("", None, "correlation key must be a non-empty string"),
        ("k" * 201, None, "at most 200 characters"),
        ("O-1", {"at": object()}, "the payload is not JSON"),
    ],
)
def test_bad_deliveries_are_refused_by_name(
    harness: SagaHarness, key: str, payload: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        harness.orchestrator.signal("payment.settled", key, payload)


def test_a_key_function_that_fails_fails_the_step_like_an_action(
    store_url: str, done: list[tuple[str, Any]]
) -> None:
    harness = SagaHarness([order_saga(done, key=lambda ctx: 42)], store_url=store_url)
    run_id = start(harness)
    for _ in range(10):
        harness.advance(timedelta(hours=1))
        harness.run_until_idle()
    assert harness.status(run_id) is RunStatus.COMPENSATED
    failed = [e for e in harness.events(run_id) if e.type is EventType.STEP_FAILED]
    assert failed[-1].error is not None
    assert "correlation key must be a non-empty string" in failed[-1].error["message"]
    assert "got 42" in failed[-1].error["message"]
    harness.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"event": "payment settled"}, "invalid event name"),
        ({"event": "sagaledger:approval"}, "invalid event name"),
        ({"key": "O-1"}, "key must be a function"),
        ({"within": timedelta(0)}, "within= must be positive"),
        ({"on_deadline": "retry"}, "on_deadline must be 'fail' or 'continue'"),
    ],
)
def test_bad_event_waits_are_refused_by_name(options: dict[str, Any], message: str) -> None:
    settings: dict[str, Any] = {
        "event": "payment.settled",
        "key": lambda ctx: "k",
        "within": DAY,
        **options,
    }
    with pytest.raises(DefinitionError, match=message) as refused:
        wait_for_event("settled", **settings)
    assert str(refused.value).startswith("event wait 'settled': ")
