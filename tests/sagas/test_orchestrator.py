"""The orchestrator's behaviour, driven synchronously through the test harness.

Every test runs on SQLite and on a real PostgreSQL server.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from sagaledger import (
    InputValidationError,
    Orchestrator,
    PermanentError,
    Registry,
    RetryableError,
    RetryPolicy,
    RetrySafety,
    RunStatus,
    Saga,
    UnknownRunError,
    UnknownSagaError,
    step,
)
from sagaledger.sagas import ActionCall, Dispatch, Hooks
from sagaledger.store import EventType, Phase
from sagaledger.testing import CrashAt, ManualClock, SagaHarness, SimulatedCrash
from tests import ledger_app
from tests.ledger_app import STEPS, Order, order_saga


def order(ledger: str, **extra: Any) -> dict[str, Any]:
    return {"order_id": "A1", "ledger": ledger, **extra}


def types(harness: SagaHarness, run_id: str) -> list[str]:
    return [e.type.value for e in harness.events(run_id)]


def test_a_run_completes_and_each_step_sees_earlier_outputs(
    harness: SagaHarness, ledger: str
) -> None:
    # When a run of four steps starts
    run = harness.run(order_saga, order(ledger))

    # Then every step ran once, in order, with its deterministic key
    assert run.status is RunStatus.COMPLETED
    assert ledger_app.calls(ledger) == [
        (name, "forward", f"{run.id}:{name}:forward", 1) for name in STEPS
    ]
    completed = [e for e in harness.events(run.id) if e.type is EventType.STEP_COMPLETED]
    assert [e.payload["output"]["seen"] for e in completed] == [
        [],
        ["reserve_inventory"],
        ["charge_payment", "reserve_inventory"],
        ["charge_payment", "create_erp_order", "reserve_inventory"],
    ]
    assert types(harness, run.id)[-1] == "run_completed"


def test_a_late_failure_compensates_in_exact_reverse_order_with_forward_outputs(
    harness: SagaHarness, ledger: str
) -> None:
    # Given the last step fails permanently
    run = harness.run(order_saga, order(ledger, fail_at="send_email"))

    # Then the completed steps are compensated last-first, each seeing its own output
    assert run.status is RunStatus.COMPENSATED
    events = harness.events(run.id)
    compensations = [e for e in events if e.type is EventType.COMPENSATION_COMPLETED]
    assert [e.step for e in compensations] == [
        "create_erp_order",
        "charge_payment",
        "reserve_inventory",
    ]
    assert [e.payload["result"]["undid"] for e in compensations] == [
        "create_erp_order-A1",
        "charge_payment-A1",
        "reserve_inventory-A1",
    ]
    # ...each with a key of its own, distinct from the forward key
    undo_keys = [c[2] for c in ledger_app.calls(ledger) if c[1] == "compensate"]
    assert undo_keys == [f"{run.id}:{s}:compensate" for s in reversed(STEPS[:3])]
    failed = next(e for e in events if e.type is EventType.STEP_FAILED)
    assert (failed.step, failed.phase, failed.payload["outcome"]) == (
        "send_email",
        Phase.FORWARD,
        "compensate",
    )
    assert "refused order A1" in failed.error["message"]


def test_a_failure_in_the_middle_undoes_only_what_completed(
    harness: SagaHarness, ledger: str
) -> None:
    run = harness.run(order_saga, order(ledger, fail_at="charge_payment"))

    assert run.status is RunStatus.COMPENSATED
    assert ledger_app.effects(ledger).count(("reserve_inventory", "compensate")) == 1
    assert ("charge_payment", "compensate") not in ledger_app.effects(ledger)


def test_transient_failures_retry_after_a_durable_back_off(store_url: str, ledger: str) -> None:
    clock = ManualClock()
    first = SagaHarness([order_saga], store_url=store_url, clock=clock)
    # Given charge_payment fails twice with a retryable error
    run = first.run(order_saga, order(ledger, flaky={"charge_payment": 2}))

    # Then the run waits for its back-off, recorded in the log
    stored = first.log.get_run(run.id)
    assert stored.status is RunStatus.RUNNING
    assert stored.lease_owner is None
    assert stored.wake_at is not None and stored.wake_at > clock()
    assert stored.dispatched_at == stored.wake_at  # a short wait: its message is on its way
    failed = [e for e in first.events(run.id) if e.type is EventType.STEP_FAILED]
    assert failed[-1].payload["outcome"] == "retry"
    first.close()

    # When the process is replaced (the queued retry message dies with it)
    second = SagaHarness([order_saga], store_url=store_url, clock=clock)
    assert second.run_until_idle() == 0  # nothing due before the back-off ends
    # ...and time passes beyond back-off and dispatch grace, twice
    for _ in range(2):
        clock.advance(timedelta(seconds=30))
        second.run_until_idle()

    # Then the step succeeded on its third attempt, with the same key every time
    assert second.status(run.id) is RunStatus.COMPLETED
    charges = [c for c in ledger_app.calls(ledger) if c[0] == "charge_payment"]
    assert [c[3] for c in charges] == [1, 2, 3]
    assert len({c[2] for c in charges}) == 1
    second.close()


def test_exhausted_retries_compensate(harness: SagaHarness, ledger: str) -> None:
    run = harness.run(order_saga, order(ledger, flaky={"create_erp_order": 99}))
    while harness.status(run.id) is RunStatus.RUNNING:
        harness.advance(timedelta(seconds=1))
        harness.run_until_idle()

    assert harness.status(run.id) is RunStatus.COMPENSATED
    attempts = [c[3] for c in ledger_app.calls(ledger) if c[0] == "create_erp_order"]
    assert attempts == [1, 2, 3, 4]  # max_attempts of the policy
    failed = [e for e in harness.events(run.id) if e.type is EventType.STEP_FAILED]
    assert [e.payload["outcome"] for e in failed] == ["retry", "retry", "retry", "compensate"]


def test_a_compensation_that_keeps_failing_parks_the_run_with_its_reason(
    harness: SagaHarness, ledger: str
) -> None:
    run = harness.run(
        order_saga, order(ledger, fail_at="create_erp_order", fail_compensation="charge_payment")
    )
    while harness.status(run.id) is RunStatus.COMPENSATING:
        harness.advance(timedelta(seconds=1))
        harness.run_until_idle()

    stored = harness.log.get_run(run.id)
    assert stored.status is RunStatus.PARKED
    assert stored.wake_at is None  # a person must act; nothing re-drives it silently
    assert "compensation of step 'charge_payment' failed after 4 attempts" in (
        stored.blocked_reason or ""
    )
    assert "cannot undo charge_payment" in (stored.blocked_reason or "")
    # The refund was attempted 4 times; the reservation was never released behind its back
    assert [c[0] for c in ledger_app.calls(ledger) if c[1] == "compensate"] == [
        "charge_payment"
    ] * 4
    assert types(harness, run.id)[-1] == "run_parked"


def test_an_unexpected_exception_type_listed_as_non_retryable_fails_at_once(
    store_url: str, ledger: str
) -> None:
    calls: list[int] = []

    def lookup(ctx: Any) -> None:
        calls.append(ctx.attempt)
        raise LookupError("no such customer")

    policy = RetryPolicy(max_attempts=5, non_retryable=(LookupError,))
    saga = Saga(
        "lookup",
        1,
        Order,
        [step(retry_safety=RetrySafety.NATURAL, no_compensation="read", retry=policy)(lookup)],
    )
    h = SagaHarness([saga], store_url=store_url)
    run = h.run(saga, order(ledger))
    assert (run.status, calls) == (RunStatus.COMPENSATED, [1])
    h.close()


def _pivot_saga(fail_after_pivot: str) -> tuple[Saga, list[str]]:
    done: list[str] = []

    def act(name: str) -> Any:
        def action(ctx: Any) -> dict[str, str]:
            if name == fail_after_pivot:
                raise PermanentError(f"{name} rejected")
            done.append(name)
            return {"ok": name}

        action.__name__ = name
        return action

    def undo(ctx: Any) -> None:
        done.append("undo " + ctx.step)

    steps = [
        step(compensate=undo, retry_safety=RetrySafety.IDEMPOTENCY_KEY)(act("hold_funds")),
        step(pivot=True, retry_safety=RetrySafety.IDEMPOTENCY_KEY)(act("ship")),
        step(no_compensation="a notice", retry_safety=RetrySafety.IDEMPOTENCY_KEY)(act("notify")),
    ]
    return Saga("pivoted", 1, Order, steps), done


def test_a_failure_after_the_pivot_parks_instead_of_compensating(
    store_url: str, ledger: str
) -> None:
    saga, done = _pivot_saga(fail_after_pivot="notify")
    h = SagaHarness([saga], store_url=store_url)
    run = h.run(saga, order(ledger))

    stored = h.log.get_run(run.id)
    assert stored.status is RunStatus.PARKED
    assert "pivot 'ship' has completed" in (stored.blocked_reason or "")
    assert done == ["hold_funds", "ship"]  # nothing was undone
    h.close()


def test_a_failure_of_the_pivot_itself_still_compensates(store_url: str, ledger: str) -> None:
    saga, done = _pivot_saga(fail_after_pivot="ship")
    h = SagaHarness([saga], store_url=store_url)
    assert h.run(saga, order(ledger)).status is RunStatus.COMPENSATED
    assert done == ["hold_funds", "undo hold_funds"]
    h.close()


def test_retry_after_from_the_remote_side_overrides_the_back_off(
    store_url: str, ledger: str
) -> None:
    attempts: list[int] = []

    def limited(ctx: Any) -> None:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            raise RetryableError("429 Too Many Requests", retry_after=timedelta(minutes=7))

    saga = Saga(
        "limited",
        1,
        Order,
        [step(retry_safety=RetrySafety.IDEMPOTENCY_KEY, no_compensation="x")(limited)],
    )
    h = SagaHarness([saga], store_url=store_url)
    run = h.run(saga, order(ledger))
    waiting = h.log.get_run(run.id)
    assert waiting.wake_at == h.clock() + timedelta(minutes=7)
    # A long wait holds no broker message: the recovery pass wakes the run.
    assert waiting.dispatched_at is None
    h.advance(timedelta(minutes=6, seconds=59))
    h.run_until_idle()
    assert attempts == [1]
    h.advance(timedelta(seconds=1))
    h.run_until_idle()
    assert (attempts, h.status(run.id)) == ([1, 2], RunStatus.COMPLETED)
    h.close()


@pytest.mark.parametrize(
    ("point", "phase", "calls_of_step"),
    [
        ("before_action", "forward", 1),
        ("after_action", "forward", 2),
        ("after_checkpoint", "forward", 1),
    ],
)
def test_a_crash_at_any_point_resumes_from_the_checkpoint(
    store_url: str, ledger: str, point: str, phase: str, calls_of_step: int
) -> None:
    crash = CrashAt("charge_payment", point=point, phase=phase)  # type: ignore[arg-type]
    h = SagaHarness([order_saga], store_url=store_url, hooks=[crash], lease=timedelta(seconds=5))
    run = h.start(order_saga, order(ledger))
    with pytest.raises(SimulatedCrash):
        h.run_until_idle()

    # Nothing is re-driven while the dead worker's lease is still valid
    assert h.run_until_idle() == 0
    h.advance(timedelta(seconds=6))
    h.run_until_idle()

    assert h.status(run.id) is RunStatus.COMPLETED
    calls = ledger_app.calls(ledger)
    assert [c[0] for c in calls].count("reserve_inventory") == 1
    charges = [c for c in calls if c[0] == "charge_payment"]
    assert len(charges) == calls_of_step
    assert {c[2] for c in charges} == {f"{run.id}:charge_payment:forward"}
    assert ledger_app.effects(ledger).count(("charge_payment", "forward")) == 1
    completed = [e.step for e in h.events(run.id) if e.type is EventType.STEP_COMPLETED]
    assert completed == list(STEPS)
    h.close()


def test_a_crash_mid_compensation_resumes_the_unwind(store_url: str, ledger: str) -> None:
    crash = CrashAt("charge_payment", point="after_action", phase="compensate")
    h = SagaHarness([order_saga], store_url=store_url, hooks=[crash], lease=timedelta(seconds=5))
    run = h.start(order_saga, order(ledger, fail_at="send_email"))
    with pytest.raises(SimulatedCrash):
        h.run_until_idle()
    h.advance(timedelta(seconds=6))
    h.run_until_idle()

    assert h.status(run.id) is RunStatus.COMPENSATED
    undo = [c for c in ledger_app.calls(ledger) if c[1] == "compensate"]
    assert [c[0] for c in undo] == [
        "create_erp_order",
        "charge_payment",
        "charge_payment",
        "reserve_inventory",
    ]
    assert undo[1][2] == undo[2][2]  # same idempotency key on the retry
    abandoned = [e for e in h.events(run.id) if e.type is EventType.ATTEMPT_ABANDONED]
    assert [(e.step, e.phase, e.attempt) for e in abandoned] == [
        ("charge_payment", Phase.COMPENSATE, 1)
    ]
    h.close()


def test_a_step_that_kills_every_worker_runs_out_of_attempts_and_parks(
    store_url: str, ledger: str
) -> None:
    class AlwaysCrash(Hooks):
        def before_action(self, call: ActionCall) -> None:
            if call.step == "create_erp_order" and call.phase is Phase.FORWARD:
                raise SimulatedCrash("poison")

    h = SagaHarness(
        [order_saga], store_url=store_url, hooks=[AlwaysCrash()], lease=timedelta(seconds=5)
    )
    run = h.start(order_saga, order(ledger))
    for _ in range(10):
        try:
            h.run_until_idle()
            break
        except SimulatedCrash:
            h.advance(timedelta(seconds=6))
    # Each lost attempt may have created the order, and the step has no probe to
    # ask: undoing the rest while the order may exist is for a person to decide.
    parked = h.log.get_run(run.id)
    assert parked.status is RunStatus.PARKED
    assert parked.blocked_reason is not None
    assert "'create_erp_order'" in parked.blocked_reason
    assert "outcome is unknown and it has no probe" in parked.blocked_reason
    abandoned = [e.attempt for e in h.events(run.id) if e.type is EventType.ATTEMPT_ABANDONED]
    assert abandoned == [1, 2, 3, 4]
    assert not any(e.type is EventType.COMPENSATION_STARTED for e in h.events(run.id))
    h.close()


def test_a_probe_finds_the_landed_effect_instead_of_repeating_it(
    store_url: str, ledger: str
) -> None:
    landed: dict[str, dict[str, str]] = {}
    executed: list[int] = []

    def charge(ctx: Any) -> dict[str, str]:
        executed.append(ctx.attempt)
        landed[ctx.idempotency_key] = {"charge": "ch_1"}
        return landed[ctx.idempotency_key]

    probe = RetrySafety.probe(lambda ctx: landed.get(ctx.idempotency_key))
    saga = Saga("probed", 1, Order, [step(retry_safety=probe, no_compensation="test")(charge)])
    h = SagaHarness([saga], store_url=store_url, hooks=[CrashAt("charge", point="after_action")])
    run = h.start(saga, order(ledger))
    with pytest.raises(SimulatedCrash):
        h.run_until_idle()
    h.advance(timedelta(minutes=1))
    h.run_until_idle()

    assert executed == [1]
    done = next(e for e in h.events(run.id) if e.type is EventType.STEP_COMPLETED)
    assert (done.attempt, done.payload["via_probe"], done.payload["output"]) == (
        2,
        True,
        {"charge": "ch_1"},
    )
    h.close()


def test_a_stale_worker_cannot_overwrite_a_newer_checkpoint(store_url: str, ledger: str) -> None:
    clock = ManualClock()
    h = SagaHarness([order_saga], store_url=store_url, clock=clock, lease=timedelta(seconds=5))
    refused: list[int] = []

    class Recorder(Hooks):
        def write_refused(self, run_id: str, token: int, events: Any) -> None:
            refused.append(token)

    rival = Orchestrator(
        h.log, Registry([order_saga]), clock=clock, worker_id="B", lease=timedelta(seconds=5)
    )

    class SlowWorker(Hooks):
        """While worker A is inside charge_payment, its lease expires and B takes over."""

        def before_action(self, call: ActionCall) -> None:
            if call.step == "charge_payment" and call.attempt == 1:
                clock.advance(timedelta(seconds=10))
                rival.drive(call.run_id)  # B claims with a newer token and finishes the run

    slow = Orchestrator(
        h.log,
        Registry([order_saga]),
        clock=clock,
        worker_id="A",
        hooks=[SlowWorker(), Recorder()],
        lease=timedelta(seconds=5),
    )
    run = h.start(order_saga, order(ledger))
    slow.drive(run.id)

    # A's checkpoint of charge_payment was refused: B's is the only one
    events = h.events(run.id)
    charge_done = [
        e for e in events if e.type is EventType.STEP_COMPLETED and e.step == "charge_payment"
    ]
    assert len(charge_done) == 1 and charge_done[0].actor == "worker:B"
    assert refused == [1]
    assert h.status(run.id) is RunStatus.COMPLETED
    assert all(e.actor == "worker:B" for e in events if e.token is not None and e.token > 1)
    assert [s for s, *_ in ledger_app.calls(ledger)].count(
        "charge_payment"
    ) == 2  # both ran (at least once)
    assert ledger_app.effects(ledger).count(("charge_payment", "forward")) == 1  # one effect by key
    h.close()


def test_a_duplicate_message_for_a_run_changes_nothing(harness: SagaHarness, ledger: str) -> None:
    run = harness.start(order_saga, order(ledger))
    harness.orchestrator.dispatch(Dispatch(run.id, "order", 1))
    harness.orchestrator.dispatch(Dispatch(run.id, "order", 1))
    harness.run_until_idle()
    assert harness.status(run.id) is RunStatus.COMPLETED
    assert len(ledger_app.calls(ledger)) == 4
    harness.run_until_idle()
    assert len(harness.events(run.id)) == len(types(harness, run.id))


def test_starting_twice_with_one_business_key_returns_the_same_run(
    harness: SagaHarness, ledger: str
) -> None:
    first = harness.run(order_saga, order(ledger), key="order-A1")
    again = harness.start(order_saga, order(ledger), key="order-A1")
    assert again.id == first.id
    assert harness.log.count_runs() == {"completed": 1}
    assert len(ledger_app.calls(ledger)) == 4


def test_invalid_input_is_refused_before_anything_is_written(
    harness: SagaHarness, ledger: str
) -> None:
    with pytest.raises(InputValidationError) as caught:
        harness.start(order_saga, {"ledger": ledger, "flaky": "lots"})
    message = str(caught.value)
    assert "saga 'order'" in message and "order_id" in message and "flaky" in message
    assert harness.log.count_runs() == {}


def test_unknown_saga_version_and_run_are_named(harness: SagaHarness, ledger: str) -> None:
    with pytest.raises(UnknownSagaError, match=r"unknown saga 'refund'; registered: order v1"):
        harness.start("refund", order(ledger))
    with pytest.raises(UnknownSagaError, match=r"saga 'order' version 9"):
        harness.start("order", order(ledger), version=9)
    with pytest.raises(UnknownRunError, match="nope"):
        harness.log.get_run("nope")
    assert harness.log.count_runs() == {}


def test_a_run_waits_visibly_for_a_worker_with_its_version(store_url: str, ledger: str) -> None:
    clock = ManualClock()
    v1 = SagaHarness([order_saga], store_url=store_url, clock=clock)
    run = v1.start(order_saga, order(ledger))
    v1.close()

    # A worker that only knows a reshaped version 1 (same name, different steps) ...
    other = Saga("order", 1, Order, list(order_saga.steps)[:2])
    v2 = SagaHarness([other], store_url=store_url, clock=clock)
    for _ in range(3):
        clock.advance(timedelta(minutes=1))
        v2.run_until_idle()
    stored = v2.log.get_run(run.id)
    assert stored.status is RunStatus.RUNNING
    assert "no live worker has it" in (stored.blocked_reason or "")
    assert types(v2, run.id).count("version_unavailable") == 1  # said once, not every poll
    assert ledger_app.calls(ledger) == []
    v2.close()

    # ...and a worker with the right definition finishes it
    right = SagaHarness([order_saga], store_url=store_url, clock=clock)
    clock.advance(timedelta(minutes=1))
    right.run_until_idle()
    assert right.log.get_run(run.id).status is RunStatus.COMPLETED
    assert right.log.get_run(run.id).blocked_reason is None
    right.close()


def test_a_message_that_arrives_before_the_back_off_ends_is_sent_again(
    harness: SagaHarness, ledger: str
) -> None:
    run = harness.run(order_saga, order(ledger, flaky={"reserve_inventory": 1}))
    wake_at = harness.log.get_run(run.id).wake_at
    assert wake_at is not None
    sent: list[Dispatch] = []
    harness.orchestrator.set_dispatcher(sent.append)

    # When a message for the run arrives 5 ms before its back-off ends
    harness.clock.now = wake_at - timedelta(milliseconds=5)
    harness.orchestrator.drive(run.id)

    # Then nothing runs early, and the message is sent again for the rest of the wait
    assert sent == [Dispatch(run.id, "order", 1, timedelta(milliseconds=5))]
    assert len(ledger_app.calls(ledger)) == 1


def test_two_fleets_each_finish_the_runs_of_their_own_version(store_url: str, ledger: str) -> None:
    clock = ManualClock()
    order_v2 = Saga("order", 2, Order, list(order_saga.steps)[:2])
    old = SagaHarness([order_saga], store_url=store_url, clock=clock)
    new = SagaHarness([order_v2], store_url=store_url, clock=clock)
    old.orchestrator.worker_id, new.orchestrator.worker_id = "old", "new"
    v1 = old.start(order_saga, order(ledger, order_id="one"))
    v2 = new.start(order_v2, order(ledger, order_id="two"))

    # The new fleet runs its own run and leaves the v1 run alone, saying why
    clock.advance(timedelta(seconds=15))
    new.run_until_idle()
    assert new.status(v2.id) is RunStatus.COMPLETED
    waiting = new.log.get_run(v1.id)
    assert waiting.status is RunStatus.RUNNING
    assert "version 1" in (waiting.blocked_reason or "")

    # The old fleet finishes the v1 run on v1's four steps
    old.run_until_idle()
    finished = old.log.get_run(v1.id)
    assert (finished.status, finished.blocked_reason) == (RunStatus.COMPLETED, None)
    steps_by_run = {
        run.id: [e.step for e in old.events(run.id) if e.type is EventType.STEP_COMPLETED]
        for run in (v1, v2)
    }
    assert steps_by_run == {v1.id: list(STEPS), v2.id: list(STEPS[:2])}
    assert {e.actor for e in old.events(v1.id) if e.token} == {"worker:old"}
    old.close()
    new.close()


def test_a_message_for_a_reshaped_definition_is_refused_visibly(
    harness: SagaHarness, ledger: str
) -> None:
    run = harness.start(order_saga, order(ledger))
    reshaped = Saga("order", 1, Order, list(order_saga.steps)[:2])
    stranger = Orchestrator(harness.log, Registry([reshaped]), clock=harness.clock)
    stranger.drive(run.id)
    stored = harness.log.get_run(run.id)
    assert "differs here" in (stored.blocked_reason or "")
    assert stored.lease_token == 0 and ledger_app.calls(ledger) == []


def test_a_run_started_without_a_broker_is_taken_by_the_next_recovery_pass(
    harness: SagaHarness, ledger: str
) -> None:
    # Given a process that only starts runs: no dispatcher, so no message goes out
    starter = Orchestrator(harness.log, Registry([order_saga]), clock=harness.clock)
    run = starter.start(order_saga, order(ledger))
    assert harness.log.get_run(run.id).dispatched_at is None

    # When a worker's recovery pass runs, at once (the dispatch grace is 10 s)
    harness.run_until_idle()

    # Then it drove the run, without waiting for a message that was never sent
    assert harness.status(run.id) is RunStatus.COMPLETED
