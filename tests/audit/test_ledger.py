"""The compensation ledger: each effect a run had elsewhere, what undid it, and balances."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

from sagaledger import (
    PermanentError,
    RetryPolicy,
    RetrySafety,
    RunStatus,
    Saga,
    StepContext,
    step,
)
from sagaledger.audit import compensation_ledger, record_effect
from sagaledger.sagas import CompensationContext
from sagaledger.testing import CrashAt, ManualClock, SagaHarness, SimulatedCrash

START = datetime(2026, 3, 2, 9, tzinfo=UTC)
QUICK = RetryPolicy(max_attempts=2, initial_backoff=timedelta(seconds=1), jitter=0)


class Order(BaseModel):
    order: str
    amount: Decimal = Decimal("99.90")
    refund: Decimal | None = None  # what the refund gives back (the amount by default)
    fail_at: str | None = None  # the step that fails for good
    refund_fails: bool = False
    charge_then_fail: bool = False
    undo_silently: bool = False


def shop_saga() -> Saga:
    """Reserve stock, charge, create the ERP order, ship (a pivot), email."""

    def release(ctx: CompensationContext[Order]) -> None:
        record_effect("erp", "release", f"res-{ctx.input.order}", amount=2, unit="each")

    @step(retry_safety=RetrySafety.NATURAL, compensate=release)
    def reserve(ctx: StepContext[Order]) -> None:
        record_effect("erp", "reserve", f"res-{ctx.input.order}", amount=2, unit="each")

    def refund(ctx: CompensationContext[Order]) -> None:
        if ctx.input.refund_fails:
            raise PermanentError("card closed")
        if ctx.input.undo_silently:
            return
        amount = ctx.input.amount if ctx.input.refund is None else ctx.input.refund
        record_effect("payments", "refund", f"re-{ctx.input.order}", amount=amount, currency="usd")

    def find_charge(ctx: StepContext[Order]) -> dict[str, str] | None:
        record_effect(
            "payments", "charge", f"ch-{ctx.input.order}", amount=ctx.input.amount,
            currency="USD", found=True,
        )  # fmt: skip
        return {"charge": f"ch-{ctx.input.order}"}

    @step(
        retry_safety=RetrySafety.IDEMPOTENCY_KEY.with_probe(find_charge),
        compensate=refund,
        compensation_retry=QUICK,
        retry=QUICK,
    )
    def charge(ctx: StepContext[Order]) -> dict[str, str]:
        record_effect(
            "payments", "charge", f"ch-{ctx.input.order}", amount=ctx.input.amount, currency="USD"
        )
        if ctx.input.charge_then_fail:
            raise PermanentError("the response could not be read")
        return {"charge": f"ch-{ctx.input.order}"}

    def cancel_order(ctx: CompensationContext[Order]) -> None:
        record_effect("erp", "order_cancelled", f"so-{ctx.input.order}")

    @step(retry_safety=RetrySafety.NATURAL, compensate=cancel_order)
    def create_order(ctx: StepContext[Order]) -> None:
        record_effect("erp", "order_created", f"so-{ctx.input.order}")
        if ctx.input.fail_at == "create_order":
            raise PermanentError("after the order was written")

    @step(retry_safety=RetrySafety.NATURAL, pivot=True)
    def ship(ctx: StepContext[Order]) -> None:
        if ctx.input.fail_at == "ship":
            raise PermanentError("carrier refused")
        record_effect("carrier", "shipment", f"parcel-{ctx.input.order}")

    @step(retry_safety=RetrySafety.NATURAL, no_compensation="an email cannot be unsent")
    def email(ctx: StepContext[Order]) -> None:
        record_effect("email", "email_sent", f"msg-{ctx.input.order}")
        if ctx.input.fail_at == "email":
            raise PermanentError("mailbox full")

    return Saga("shop", 1, Order, [reserve, charge, create_order, ship, email])


@pytest.fixture
def harness(store_url: str) -> Iterator[SagaHarness]:
    h = SagaHarness([shop_saga()], store_url=store_url, clock=ManualClock(START))
    yield h
    h.close()


def run(harness: SagaHarness, order: str, **options: Any) -> str:
    run_id = harness.run("shop", {"order": order, **options}).id
    for _ in range(5):  # through any back-off
        harness.advance(timedelta(seconds=5))
        harness.run_until_idle()
    return run_id


def statuses(harness: SagaHarness, run_id: str) -> list[tuple[str, str, str]]:
    ledger = compensation_ledger(harness.log)
    return [(e.step, e.effect.operation, e.status) for e in ledger.entries if e.run_id == run_id]


def balance(harness: SagaHarness, run_id: str) -> Any:
    return next(r for r in compensation_ledger(harness.log).runs if r.run_id == run_id)


def test_a_completed_run_keeps_its_effects_and_balances(harness: SagaHarness) -> None:
    run_id = run(harness, "A")
    assert statuses(harness, run_id) == [
        ("reserve", "reserve", "kept"),
        ("charge", "charge", "kept"),
        ("create_order", "order_created", "kept"),
        ("ship", "shipment", "kept"),
        ("email", "email_sent", "kept"),
    ]
    assert balance(harness, run_id).balanced
    charge = next(e for e in compensation_ledger(harness.log).entries if e.step == "charge")
    assert (charge.effect.amount, charge.effect.currency) == (Decimal("99.90"), "USD")
    assert charge.idempotency_key == f"{run_id}:charge:forward"
    assert charge.at == START


def test_a_late_failure_is_undone_exactly_and_balances(harness: SagaHarness) -> None:
    run_id = run(harness, "B", fail_at="ship")
    assert harness.status(run_id) is RunStatus.COMPENSATED
    assert statuses(harness, run_id) == [
        ("reserve", "reserve", "undone"),
        ("charge", "charge", "undone"),
        ("create_order", "order_created", "undone"),
    ]
    entries = {e.step: e for e in compensation_ledger(harness.log).entries}
    (refund,) = entries["charge"].undone_by
    assert (refund.effect.operation, refund.effect.amount) == ("refund", Decimal("99.90"))
    assert refund.idempotency_key == f"{run_id}:charge:compensate"
    run_balance = balance(harness, run_id)
    assert run_balance.balanced and run_balance.open == {}
    totals = compensation_ledger(harness.log).totals()
    assert totals[("payments", "charge", "USD")] == totals[("payments", "refund", "USD")]


def test_a_parked_compensation_leaves_the_charge_outstanding(harness: SagaHarness) -> None:
    run_id = run(harness, "C", fail_at="ship", refund_fails=True)
    assert harness.status(run_id) is RunStatus.PARKED
    assert statuses(harness, run_id) == [
        ("reserve", "reserve", "outstanding"),  # it comes after the charge, which parked
        ("charge", "charge", "outstanding"),
        ("create_order", "order_created", "undone"),
    ]
    run_balance = balance(harness, run_id)
    assert not run_balance.balanced
    assert run_balance.open == {"USD": Decimal("99.90"), "each": Decimal(2)}
    assert "charge charge ch-C: outstanding" in run_balance.why
    charge = next(e for e in compensation_ledger(harness.log).entries if e.step == "charge")
    assert "card closed" in charge.reason  # the parked run's reason


def test_a_partial_refund_is_partly_undone(harness: SagaHarness) -> None:
    run_id = run(harness, "D", fail_at="ship", refund="90.00")
    assert ("charge", "charge", "partly undone") in statuses(harness, run_id)
    assert balance(harness, run_id).open == {"USD": Decimal("9.90")}


def test_an_effect_whose_step_then_failed_is_stranded(harness: SagaHarness) -> None:
    run_id = run(harness, "E", charge_then_fail=True)
    assert harness.status(run_id) is RunStatus.COMPENSATED
    assert statuses(harness, run_id) == [
        ("reserve", "reserve", "undone"),
        ("charge", "charge", "stranded"),
    ]
    assert balance(harness, run_id).open == {"USD": Decimal("99.90")}


def test_past_a_pivot_effects_stand_and_a_failed_steps_effect_is_stranded(
    harness: SagaHarness,
) -> None:
    run_id = run(harness, "F", fail_at="email")
    assert harness.status(run_id) is RunStatus.PARKED  # past the pivot: it cannot be undone
    found = statuses(harness, run_id)
    assert found[:4] == [
        ("reserve", "reserve", "kept"),
        ("charge", "charge", "kept"),
        ("create_order", "order_created", "kept"),
        ("ship", "shipment", "kept"),
    ]
    assert found[4] == ("email", "email_sent", "stranded")
    entries = [e for e in compensation_ledger(harness.log).entries if e.run_id == run_id]
    assert entries[0].reason.startswith("the run is parked: step 'email' failed permanently")
    # A step that failed after writing is never completed, so never compensated
    other = run(harness, "G", fail_at="create_order")
    assert statuses(harness, other) == [
        ("reserve", "reserve", "undone"),
        ("charge", "charge", "undone"),
        ("create_order", "order_created", "stranded"),
    ]


def test_a_step_with_no_compensation_is_not_compensatable_and_balances(store_url: str) -> None:
    @step(retry_safety=RetrySafety.NATURAL, no_compensation="a confirmation cannot be unsent")
    def confirm(ctx: StepContext[Order]) -> None:
        record_effect("email", "email_sent", f"msg-{ctx.input.order}")

    @step(retry_safety=RetrySafety.NATURAL, no_compensation="it fails")
    def check(ctx: StepContext[Order]) -> None:
        raise PermanentError("address rejected")

    harness = SagaHarness([Saga("notify", 1, Order, [confirm, check])], store_url=store_url)
    run_id = harness.run("notify", {"order": "P"}).id
    assert harness.status(run_id) is RunStatus.COMPENSATED
    (entry,) = compensation_ledger(harness.log).entries
    assert (entry.status, entry.reason) == (
        "not compensatable",
        "the step has no compensation: a confirmation cannot be unsent",
    )
    assert compensation_ledger(harness.log).runs[0].balanced
    harness.close()


def test_a_compensation_that_records_nothing_is_not_itemised(harness: SagaHarness) -> None:
    run_id = run(harness, "H", fail_at="ship", undo_silently=True)
    assert ("charge", "charge", "undone, not itemised") in statuses(harness, run_id)
    assert not balance(harness, run_id).balanced


def test_a_retried_or_probed_charge_counts_once(harness: SagaHarness) -> None:
    crash = CrashAt("charge", point="after_action", mode="raise")
    harness.orchestrator.hooks.hooks.append(crash)  # type: ignore[attr-defined]
    started = harness.start("shop", {"order": "I"})
    with pytest.raises(SimulatedCrash):
        harness.run_until_idle()
    harness.orchestrator.hooks.hooks.remove(crash)  # type: ignore[attr-defined]
    harness.advance(timedelta(seconds=60))  # the lease runs out; the probe finds the charge
    harness.run_until_idle()
    assert harness.status(started.id) is RunStatus.COMPLETED
    found = [e for e in compensation_ledger(harness.log).entries if e.step == "charge"]
    assert [(e.effect.reference, e.status) for e in found] == [("ch-I", "kept")]


def test_a_period_holds_the_runs_started_in_it(harness: SagaHarness) -> None:
    first = run(harness, "J")
    harness.advance(timedelta(days=2))
    second = run(harness, "K", fail_at="ship")
    day = START.replace(hour=0)
    assert {r.run_id for r in compensation_ledger(harness.log, day, day + timedelta(1)).runs} == {
        first
    }
    later = compensation_ledger(harness.log, day + timedelta(1))
    assert {r.run_id for r in later.runs} == {second}


def test_export_and_balance_from_the_cli(harness: SagaHarness, store_url: str) -> None:
    kept, undone, parked = (
        run(harness, "L"),
        run(harness, "M", fail_at="ship"),
        run(harness, "N", fail_at="ship", refund_fails=True),
    )

    def audit(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "sagaledger", "audit", *args, "--store", store_url]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    exported = audit("export", "--format", "csv")
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    charges = {r["run_id"]: r for r in rows if r["operation"] == "charge"}
    assert {k: v["status"] for k, v in charges.items()} == {
        kept: "kept",
        undone: "undone",
        parked: "outstanding",
    }
    assert charges[undone]["undone_by"] == "refund re-M 99.90"
    assert charges[undone]["undone_amount"] == "99.90 USD"
    assert charges[undone]["amount"] == "99.90"
    lines = audit("export", "--format", "jsonl", "--from", "2026-03-02", "--to", "2026-03-03")
    assert [json.loads(line) for line in lines.stdout.splitlines()] == [
        {**r, "version": int(r["version"])} | _nulls(r) for r in rows
    ]

    report = audit("balance")
    assert report.returncode == 1
    unbalanced = [line for line in report.stdout.splitlines() if line.startswith("unbalanced")]
    assert len(unbalanced) == 1 and f"run {parked}" in unbalanced[0]
    assert report.stdout.splitlines()[-1] == "3 runs with effects, 11 effects: 1 unbalanced"
    as_json = json.loads(audit("balance", "--json").stdout)
    assert [r["run_id"] for r in as_json["unbalanced"]] == [parked]
    assert as_json["unbalanced"][0]["open"] == {"USD": "99.90", "each": "2"}


def _nulls(row: dict[str, str]) -> dict[str, Any]:
    """CSV writes None as an empty field: JSON keeps it."""
    return {k: None for k, v in row.items() if v == ""}


def test_a_run_resolved_by_hand_balances_and_says_who_settled_it(harness: SagaHarness) -> None:
    run_id = run(harness, "Q", fail_at="ship", refund_fails=True)
    assert not balance(harness, run_id).balanced
    harness.orchestrator.resolve(run_id, by="ops:alice", reason="refunded by hand, ticket 42")
    charge = next(
        e
        for e in compensation_ledger(harness.log).entries
        if e.run_id == run_id and e.step == "charge"
    )
    assert charge.status == "resolved by hand"
    assert charge.reason == (
        "resolved by hand by ops:alice: refunded by hand, ticket 42 (was outstanding)"
    )
    assert balance(harness, run_id).balanced


def test_a_refund_made_before_its_compensation_failed_counts_once(store_url: str) -> None:
    calls: list[int] = []

    def refund(ctx: CompensationContext[Order]) -> None:
        calls.append(1)
        record_effect("payments", "refund", "re-R", amount="10.00", currency="USD")
        raise PermanentError("the ledger service is down")  # after the refund was made

    @step(retry_safety=RetrySafety.NATURAL, compensate=refund)
    def charge(ctx: StepContext[Order]) -> None:
        record_effect("payments", "charge", "ch-R", amount="10.00", currency="USD")

    @step(retry_safety=RetrySafety.NATURAL, no_compensation="it fails")
    def fail(ctx: StepContext[Order]) -> None:
        raise PermanentError("late failure")

    harness = SagaHarness([Saga("refunds", 1, Order, [charge, fail])], store_url=store_url)
    run_id = harness.run("refunds", {"order": "R"}).id
    assert harness.status(run_id) is RunStatus.PARKED
    (entry,) = compensation_ledger(harness.log).entries
    assert (entry.status, [u.effect.reference for u in entry.undone_by]) == ("undone", ["re-R"])
    harness.orchestrator.retry_compensation(run_id, by="ops", reason="service back")
    harness.run_until_idle()  # fails again, recording the same refund again
    (entry,) = compensation_ledger(harness.log).entries
    assert len(calls) == 2 and len(entry.undone_by) == 1
    assert compensation_ledger(harness.log).runs[0].balanced
    harness.close()
