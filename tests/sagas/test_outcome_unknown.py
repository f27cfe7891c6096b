"""Steps whose outcome is unknown: probed before a retry and before the run gives up on them.

The "remote system" here is a dict of effects by idempotency key, so each test
can make a call land or not land and then lose its answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from sagaledger import (
    CompensationContext,
    OutcomeUnknownError,
    PermanentError,
    RetryPolicy,
    RetrySafety,
    RunStatus,
    Saga,
    StepContext,
    step,
)
from sagaledger.store import EventType, RunRecord
from sagaledger.testing import SagaHarness

QUICK = RetryPolicy(max_attempts=3, initial_backoff=timedelta(seconds=1), jitter=0)


class Order(BaseModel):
    order_id: str


class Remote:
    """Effects applied once per key, the calls made, and what the next charge does."""

    def __init__(self) -> None:
        self.effects: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []  # (operation, key)
        self.charge_outcome = "ok"  # ok | lost (lands, answer lost) | timeout (does not land)
        self.probe_fails = False
        self.search_lag = 0  # probes that miss an effect before the search shows it

    def apply(self, operation: str, key: str, **fields: Any) -> dict[str, Any]:
        self.calls.append((operation, key))
        return self.effects.setdefault(key, {"operation": operation, **fields})

    def charge(self, ctx: StepContext[Order]) -> dict[str, Any]:
        if self.charge_outcome == "timeout":
            self.calls.append(("charge", ctx.idempotency_key))
            raise OutcomeUnknownError("payments charge: no response within the timeout")
        effect = self.apply("charge", ctx.idempotency_key, amount=4200)
        if self.charge_outcome == "lost":
            raise OutcomeUnknownError("payments charge: connection lost after sending")
        return {"charge_id": ctx.idempotency_key, "amount": effect["amount"]}

    def find_charge(self, ctx: StepContext[Order]) -> dict[str, Any] | None:
        self.calls.append(("probe", ctx.idempotency_key))
        if self.probe_fails:
            raise ConnectionError("payments search: connection refused")
        probes = self.calls.count(("probe", ctx.idempotency_key))
        found = self.effects.get(ctx.idempotency_key) if probes > self.search_lag else None
        return None if found is None else {"charge_id": ctx.idempotency_key, "amount": 4200}


def make_saga(remote: Remote, *, probe: bool = True, fail_after: bool = False) -> Saga:
    def release(ctx: CompensationContext[Order]) -> None:
        remote.apply("release", ctx.idempotency_key)

    def refund(ctx: CompensationContext[Order]) -> None:
        remote.apply("refund", ctx.idempotency_key, amount=ctx.output["amount"])

    @step(compensate=release, retry_safety=RetrySafety.IDEMPOTENCY_KEY, retry=QUICK)
    def reserve(ctx: StepContext[Order]) -> dict[str, Any]:
        return remote.apply("reserve", ctx.idempotency_key)

    safety = RetrySafety.IDEMPOTENCY_KEY
    if probe:
        safety = safety.with_probe(remote.find_charge)

    @step(compensate=refund, retry_safety=safety, retry=QUICK)
    def charge(ctx: StepContext[Order]) -> dict[str, Any]:
        return remote.charge(ctx)

    @step(
        no_compensation="a confirmation cannot be unsent",
        retry_safety=RetrySafety.NATURAL,
        retry=QUICK,
    )
    def confirm(ctx: StepContext[Order]) -> None:
        if fail_after:
            raise PermanentError("email refused the address")

    return Saga("order", version=1, input=Order, steps=[reserve, charge, confirm])


@pytest.fixture
def remote() -> Remote:
    return Remote()


@pytest.fixture
def harness_for(remote: Remote) -> Iterator[Any]:
    made: list[SagaHarness] = []

    def build(**options: Any) -> SagaHarness:
        made.append(SagaHarness([make_saga(remote, **options)]))
        return made[-1]

    yield build
    for harness in made:
        harness.close()


def settle(harness: SagaHarness, run_id: str) -> RunRecord:
    """Drive the run through its back-offs until it stops being active."""
    for _ in range(20):
        harness.run_until_idle()
        run = harness.log.get_run(run_id)
        if not run.status.active:
            return run
        harness.advance(timedelta(minutes=1))
    raise AssertionError(f"run {run_id} still {harness.status(run_id)}")


def test_a_lost_answer_is_probed_on_retry_and_the_charge_is_not_made_again(
    harness_for: Any, remote: Remote
) -> None:
    harness = harness_for()
    remote.charge_outcome = "lost"
    run = harness.start("order", {"order_id": "A1"})
    harness.run_until_idle()
    remote.charge_outcome = "ok"  # the service answers again; the first charge stands
    done = settle(harness, run.id)

    assert done.status is RunStatus.COMPLETED
    key = f"{run.id}:charge:forward"
    assert remote.calls.count(("charge", key)) == 1  # the retry was answered by the probe
    assert ("probe", key) in remote.calls
    charged = [e for e in harness.events(run.id) if e.type is EventType.STEP_COMPLETED]
    assert [e.payload["via_probe"] for e in charged] == [False, True, False]
    failed = next(e for e in harness.events(run.id) if e.type is EventType.STEP_FAILED)
    assert failed.error is not None and failed.error["outcome_unknown"] is True


def test_giving_up_on_a_charge_that_landed_refunds_it_in_reverse_order(
    harness_for: Any, remote: Remote
) -> None:
    harness = harness_for()
    remote.charge_outcome = "lost"  # every attempt lands the (same) charge and loses the answer
    remote.search_lag = 2  # the search index shows the charge from the third probe on
    run = harness.start("order", {"order_id": "A1"})
    done = settle(harness, run.id)

    assert done.status is RunStatus.COMPENSATED
    # Three attempts under one key (one charge), probed before attempts 2 and 3 and
    # once more on giving up, which found it: refunded, then the reservation released
    assert [op for op, _ in remote.calls] == [
        "reserve",
        "charge",
        "probe",
        "charge",
        "probe",
        "charge",
        "probe",
        "refund",
        "release",
    ]
    assert len([e for e in remote.effects.values() if e["operation"] == "charge"]) == 1
    refund = next(e for e in remote.effects.values() if e["operation"] == "refund")
    assert refund["amount"] == 4200
    kinds = [(e.type.value, e.step) for e in harness.events(run.id)]
    assert kinds.index(("step_completed", "charge")) < kinds.index(("compensation_started", None))
    charged = next(
        e
        for e in harness.events(run.id)
        if e.step == "charge" and e.type is EventType.STEP_COMPLETED
    )
    assert charged.payload["via_probe"] is True


def test_giving_up_on_a_charge_that_never_landed_refunds_nothing(
    harness_for: Any, remote: Remote
) -> None:
    harness = harness_for()
    remote.charge_outcome = "timeout"  # sent, never applied, no answer
    run = harness.start("order", {"order_id": "A1"})
    done = settle(harness, run.id)

    assert done.status is RunStatus.COMPENSATED
    assert [op for op, _ in remote.calls if op != "probe"] == [
        "reserve",
        "charge",
        "charge",
        "charge",
        "release",
    ]
    # Probed before each retry and once more before giving up
    assert [op for op, _ in remote.calls].count("probe") == 3
    assert not any(e["operation"] in ("charge", "refund") for e in remote.effects.values())


def test_an_unknown_outcome_without_a_probe_parks_the_run_for_a_person(
    harness_for: Any, remote: Remote
) -> None:
    harness = harness_for(probe=False)
    remote.charge_outcome = "lost"
    run = harness.start("order", {"order_id": "A1"})
    done = settle(harness, run.id)

    assert done.status is RunStatus.PARKED
    assert done.blocked_reason is not None
    assert "'charge'" in done.blocked_reason and "no probe" in done.blocked_reason
    # Nothing was undone: nobody knows whether the charge needs a refund
    assert [op for op, _ in remote.calls] == ["reserve", "charge", "charge", "charge"]


def test_a_failing_probe_when_giving_up_parks_the_run(harness_for: Any, remote: Remote) -> None:
    harness = harness_for()
    remote.charge_outcome = "timeout"
    run = harness.start("order", {"order_id": "A1"})
    harness.run_until_idle()
    remote.probe_fails = True
    done = settle(harness, run.id)

    assert done.status is RunStatus.PARKED
    assert done.blocked_reason is not None
    assert "probe failed" in done.blocked_reason and "connection refused" in done.blocked_reason
    assert "release" not in [op for op, _ in remote.calls]


def test_a_permanent_failure_elsewhere_compensates_without_probing(
    harness_for: Any, remote: Remote
) -> None:
    harness = harness_for(fail_after=True)
    run = harness.start("order", {"order_id": "A1"})
    done = settle(harness, run.id)

    assert done.status is RunStatus.COMPENSATED
    assert [op for op, _ in remote.calls] == ["reserve", "charge", "refund", "release"]


def test_an_errors_details_are_kept_in_the_log(harness_for: Any, remote: Remote) -> None:
    harness = harness_for()

    def declined(ctx: StepContext[Order]) -> dict[str, Any]:
        raise PermanentError(
            "payments create_payment_intent: HTTP 402 card_declined: Your card was declined.",
            details={"system": "payments", "status": 402, "code": "card_declined"},
        )

    remote.charge = declined  # type: ignore[method-assign]
    run = harness.start("order", {"order_id": "A1"})
    settle(harness, run.id)

    failed = next(e for e in harness.events(run.id) if e.type is EventType.STEP_FAILED)
    assert failed.error is not None
    assert failed.error["details"] == {"system": "payments", "status": 402, "code": "card_declined"}
    assert "outcome_unknown" not in failed.error
