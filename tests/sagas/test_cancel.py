"""Cancelling a run at any point: completed steps are undone in reverse, from the log.

Every test runs on SQLite and on a real PostgreSQL server.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from sagaledger import (
    RetryableError,
    RetrySafety,
    RunNotActiveError,
    RunStatus,
    Saga,
    StepContext,
    UnknownRunError,
    step,
)
from sagaledger.sagas import ActionCall, CancelOutcome, Hooks
from sagaledger.store import EventType
from sagaledger.testing import CrashAt, SagaHarness, SimulatedCrash
from tests import ledger_app
from tests.ledger_app import order_saga


def order(ledger: str, **extra: Any) -> dict[str, Any]:
    return {"order_id": "A1", "ledger": ledger, **extra}


def calls(ledger: str) -> list[tuple[str, str, int]]:
    return [(step, phase, attempt) for step, phase, _key, attempt in ledger_app.calls(ledger)]


def test_a_cancel_during_a_retry_back_off_compensates_without_the_pending_retry(
    harness: SagaHarness, ledger: str
) -> None:
    # Given a run whose third step failed once and waits for its retry
    run = harness.start(order_saga, order(ledger, flaky={"create_erp_order": 1}))
    harness.run_until_idle()
    assert calls(ledger)[-1] == ("create_erp_order", "forward", 1)
    assert harness.log.get_run(run.id).wake_at > harness.clock()  # the back-off

    # When an operator cancels it, before the back-off ends
    outcome = harness.orchestrator.cancel(run.id, "customer changed their mind", by="alice")
    harness.run_until_idle()

    # Then the pending retry never ran, and the two completed steps were undone in reverse
    assert outcome is CancelOutcome.CANCELLING
    assert harness.status(run.id) is RunStatus.COMPENSATED
    assert calls(ledger) == [
        ("reserve_inventory", "forward", 1),
        ("charge_payment", "forward", 1),
        ("create_erp_order", "forward", 1),
        ("charge_payment", "compensate", 1),
        ("reserve_inventory", "compensate", 1),
    ]
    events = harness.events(run.id)
    asked = next(e for e in events if e.type is EventType.CANCEL_REQUESTED)
    assert (asked.actor, asked.payload["reason"]) == ("alice", "customer changed their mind")
    turned = next(e for e in events if e.type is EventType.COMPENSATION_STARTED)
    assert turned.payload["reason"] == "cancelled by alice: customer changed their mind"
    # No attempt 2 of the failed step was ever started
    started = [(e.step, e.attempt) for e in events if e.type is EventType.ATTEMPT_STARTED]
    assert ("create_erp_order", 2) not in started


def test_a_cancel_while_a_step_runs_turns_the_run_after_that_step(
    store_url: str, ledger: str
) -> None:
    # Given an operator who cancels while the second step is in flight
    class CancelDuring(Hooks):
        def before_action(self, call: ActionCall) -> None:
            if call.step == "charge_payment" and call.phase.value == "forward":
                h.orchestrator.cancel(call.run_id, "fraud suspected", by="risk-team")

    h = SagaHarness([order_saga], store_url=store_url, hooks=[CancelDuring()])
    run = h.start(order_saga, order(ledger))
    h.run_until_idle()

    # Then the step in flight finished and was checkpointed, and nothing after it ran;
    # both completed steps were undone, last first
    assert h.status(run.id) is RunStatus.COMPENSATED
    assert calls(ledger) == [
        ("reserve_inventory", "forward", 1),
        ("charge_payment", "forward", 1),
        ("charge_payment", "compensate", 1),
        ("reserve_inventory", "compensate", 1),
    ]
    asked = next(e for e in h.events(run.id) if e.type is EventType.CANCEL_REQUESTED)
    assert asked.payload["outcome"] == "cancelling after the step in flight"
    h.close()


def test_a_cancel_during_compensation_changes_nothing_and_is_recorded(
    harness: SagaHarness, ledger: str
) -> None:
    # Given a run compensating, its compensation of the charge waiting for a retry
    run = harness.start(
        order_saga, order(ledger, fail_at="send_email", fail_compensation="charge_payment")
    )
    harness.run_until_idle()
    assert harness.status(run.id) is RunStatus.COMPENSATING

    # When it is cancelled
    outcome = harness.orchestrator.cancel(run.id, "stop it", by="bob")

    # Then the request is in the log and the compensation goes on as before
    assert outcome is CancelOutcome.ALREADY_COMPENSATING
    asked = [e for e in harness.events(run.id) if e.type is EventType.CANCEL_REQUESTED]
    assert [(e.actor, e.payload["outcome"]) for e in asked] == [
        ("bob", "ignored: the run is already compensating")
    ]
    assert harness.log.get_run(run.id).cancel_requested is None


def test_a_finished_or_unknown_run_cannot_be_cancelled(harness: SagaHarness, ledger: str) -> None:
    run = harness.run(order_saga, order(ledger))
    with pytest.raises(RunNotActiveError, match=f"cannot cancel run '{run.id}': it is completed"):
        harness.orchestrator.cancel(run.id, "too late", by="alice")
    with pytest.raises(UnknownRunError, match="nope"):
        harness.orchestrator.cancel("nope", "typo", by="alice")
    with pytest.raises(ValueError, match="needs a reason"):
        harness.orchestrator.cancel(run.id, " ", by="alice")
    # Nothing was written for the refused requests
    assert not any(e.type is EventType.CANCEL_REQUESTED for e in harness.events(run.id))


def test_a_cancel_after_a_crash_mid_step_asks_the_probe_before_undoing(store_url: str) -> None:
    # Given a step whose attempt was cut short by a crash, and a probe that finds its effect
    charged: dict[str, str] = {}
    undone: list[str] = []

    def refund(ctx: Any) -> None:
        undone.append(ctx.output["charge"])

    def found(ctx: StepContext[Any]) -> dict[str, str] | None:
        return {"charge": charged[ctx.idempotency_key]} if ctx.idempotency_key in charged else None

    @step(compensate=refund, retry_safety=RetrySafety.IDEMPOTENCY_KEY.with_probe(found))
    def charge(ctx: StepContext[Any]) -> dict[str, str]:
        charged[ctx.idempotency_key] = "ch_1"
        return {"charge": "ch_1"}

    @step(retry_safety=RetrySafety.NATURAL, no_compensation="nothing to undo")
    def confirm(ctx: StepContext[Any]) -> None:
        return None

    saga = Saga("pay", 1, ledger_app.Order, [charge, confirm])
    # (the worker dies after the charge landed, before its checkpoint)
    crash = CrashAt("charge", point="after_action", mode="raise")
    h = SagaHarness([saga], store_url=store_url, hooks=[crash], lease=timedelta(seconds=5))
    run = h.start(saga, {"order_id": "B1", "ledger": "unused"})
    with pytest.raises(SimulatedCrash):
        h.run_until_idle()

    # When the run is cancelled while its lease is still held by the dead worker
    h.orchestrator.cancel(run.id, "abandoned cart", by="alice")
    h.advance(timedelta(seconds=6))  # the dead worker's lease expires
    h.run_until_idle()

    # Then the probe found the charge, and it was refunded
    assert h.status(run.id) is RunStatus.COMPENSATED
    assert undone == ["ch_1"]
    completed = [e for e in h.events(run.id) if e.type is EventType.STEP_COMPLETED]
    assert [(e.step, e.payload["via_probe"]) for e in completed] == [("charge", True)]
    h.close()


def test_past_a_completed_pivot_the_cancel_is_refused_and_the_run_goes_on(
    store_url: str,
) -> None:
    # Given a run past its pivot (the parcel has shipped), its last step waiting to retry
    tries: list[int] = []

    @step(retry_safety=RetrySafety.NATURAL, compensate=lambda ctx: None)
    def pack(ctx: StepContext[Any]) -> None:
        return None

    @step(retry_safety=RetrySafety.NATURAL, pivot=True)
    def ship(ctx: StepContext[Any]) -> None:
        return None

    @step(retry_safety=RetrySafety.NATURAL, no_compensation="a notice cannot be unsent")
    def notify(ctx: StepContext[Any]) -> None:
        tries.append(ctx.attempt)
        if ctx.attempt == 1:
            raise RetryableError("mail server busy")

    saga = Saga("parcel", 1, ledger_app.Order, [pack, ship, notify])
    h = SagaHarness([saga], store_url=store_url)
    run = h.start(saga, {"order_id": "C1", "ledger": "unused"})
    h.run_until_idle()

    # When it is cancelled
    assert h.orchestrator.cancel(run.id, "too late?", by="alice") is CancelOutcome.CANCELLING
    h.run_until_idle()

    # Then the driver refused, in the log, and the retry ran: the run completed
    done = h.log.get_run(run.id)
    assert done.status is RunStatus.COMPLETED
    assert done.cancel_requested is None
    assert tries == [1, 2]
    outcomes = [
        e.payload["outcome"] for e in h.events(run.id) if e.type is EventType.CANCEL_REQUESTED
    ]
    assert outcomes == ["cancelling", "refused: pivot 'ship' has completed"]
    started = [(e.step, e.attempt) for e in h.events(run.id) if e.type is EventType.ATTEMPT_STARTED]
    assert ("notify", 2) in started
    h.close()


def test_a_run_nobody_asked_to_cancel_is_not_turned_by_a_renewal_or_a_checkpoint(
    store_url: str, ledger: str
) -> None:
    # Given a run in flight whose lease is renewed mid-step, and no cancel request
    class RenewDuring(Hooks):
        def before_action(self, call: ActionCall) -> None:
            if call.step == "charge_payment":
                assert h.orchestrator.leases.renew() == 1

    h = SagaHarness([order_saga], store_url=store_url, hooks=[RenewDuring()])
    run = h.start(order_saga, order(ledger))
    h.run_until_idle()

    # Then every write found no request (an empty JSON column is not one): it completed
    assert h.status(run.id) is RunStatus.COMPLETED
    assert not any(e.type is EventType.COMPENSATION_STARTED for e in h.events(run.id))
    h.close()


def test_a_cancel_from_another_process_turns_the_run_at_the_next_checkpoint(
    store_url: str, ledger: str
) -> None:
    # Given a cancel written by another process mid-step, and no lease renewal meanwhile
    class CancelElsewhere(Hooks):
        def before_action(self, call: ActionCall) -> None:
            if call.step == "charge_payment" and call.phase.value == "forward":
                other = SagaHarness([order_saga], store_url=store_url)
                other.orchestrator.cancel(call.run_id, "duplicate order", by="service:shop")
                other.close()

    h = SagaHarness([order_saga], store_url=store_url, hooks=[CancelElsewhere()])
    run = h.start(order_saga, order(ledger))
    h.run_until_idle()

    # Then the checkpoint of the step in flight reported the request: the run turned there
    assert h.status(run.id) is RunStatus.COMPENSATED
    assert [c for c in calls(ledger) if c[1] == "forward"] == [
        ("reserve_inventory", "forward", 1),
        ("charge_payment", "forward", 1),
    ]
    h.close()


def test_a_cancel_during_the_last_step_is_too_late_and_says_so(store_url: str, ledger: str) -> None:
    class CancelLast(Hooks):
        def before_action(self, call: ActionCall) -> None:
            if call.step == "send_email":
                other = SagaHarness([order_saga], store_url=store_url)
                other.orchestrator.cancel(call.run_id, "changed my mind", by="bob")
                other.close()

    h = SagaHarness([order_saga], store_url=store_url, hooks=[CancelLast()])
    run = h.start(order_saga, order(ledger))
    h.run_until_idle()

    done = h.log.get_run(run.id)
    assert done.status is RunStatus.COMPLETED
    assert done.cancel_requested is None
    outcomes = [
        e.payload["outcome"] for e in h.events(run.id) if e.type is EventType.CANCEL_REQUESTED
    ]
    assert outcomes == ["cancelling after the step in flight", "too late: the run completed first"]
    h.close()
