"""The built-in connectors record their business effects, so their sagas get a ledger for free.

Real sagas run through the harness against the simulators over loopback; the
tests read what each attempt recorded in the log and what the compensation
ledger makes of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

from sagaledger import (
    CompensationContext,
    PermanentError,
    RetryPolicy,
    RetrySafety,
    RunStatus,
    Saga,
    StepContext,
    step,
)
from sagaledger.audit import Effect, LedgerEntry, compensation_ledger
from sagaledger.audit._effects import Collecting, collecting
from sagaledger.connectors._stripe_models import major_units
from sagaledger.connectors.email import SentEmail
from sagaledger.connectors.erp import NewInvoice, NewSalesOrder, OrderLine, RecordRef, external_id
from sagaledger.connectors.payments import Payment, Refund
from sagaledger.connectors.simulators import Fault, FaultKind, LocalConnectors, SimulatorSuite
from sagaledger.store import EventType
from sagaledger.testing import SagaHarness

#: Back-offs of exactly 1 s, 2 s.
RETRY = RetryPolicy(max_attempts=3, initial_backoff=timedelta(seconds=1), jitter=0.0)
SENDER = "Shop <orders@shop.example>"


class Order(BaseModel):
    order_id: str = "SO-1"
    email: str = "ada@example.com"
    sku: str = "WIDGET-1"
    quantity: int = 2
    unit_cents: int = 1250
    currency: str = "usd"
    close_instead: bool = False  # undo the sales order by closing it, not cancelling

    @property
    def cents(self) -> int:
        return self.quantity * self.unit_cents


class Bill(BaseModel):
    invoice: str = "INV-1"
    email: str = "ada@example.com"
    quantity: int = 4
    unit_cents: int = 1250
    fail_filing: bool = False  # the last step fails for good, after the receipt went out


# -- fixtures -------------------------------------------------------------------------


@dataclass
class World:
    suite: SimulatorSuite
    connectors: LocalConnectors


@pytest.fixture
def world() -> Iterator[World]:
    with SimulatorSuite() as suite:
        connectors = suite.connectors()
        yield World(suite, connectors)
        connectors.close()


HarnessFor = Callable[[Saga], SagaHarness]


@pytest.fixture
def harness_for() -> Iterator[HarnessFor]:
    """Makes a harness for one saga; closes them all afterwards."""
    made: list[SagaHarness] = []

    def make(saga: Saga) -> SagaHarness:
        made.append(SagaHarness([saga]))
        return made[-1]

    yield make
    for h in made:
        h.close()


def order_saga(c: LocalConnectors) -> Saga:
    """Reserve (ERP), charge (Stripe), create the sales order (ERP), confirm (SMTP)."""

    def release(ctx: CompensationContext[Order]) -> None:
        c.erp.release(ctx.output_as(RecordRef).id)

    @step(
        compensate=release,
        retry_safety=RetrySafety.IDEMPOTENCY_KEY.with_probe(
            lambda ctx: c.erp.find_reservation(external_id(ctx.idempotency_key))
        ),
        retry=RETRY,
    )
    def reserve(ctx: StepContext[Order]) -> RecordRef:
        order = ctx.input
        return c.erp.reserve(external_id(ctx.idempotency_key), order.sku, order.quantity)

    def refund(ctx: CompensationContext[Order]) -> Refund:
        paid = ctx.output_as(Payment)
        return c.payments.refund(
            paid.id, amount=paid.amount_received, idempotency_key=ctx.idempotency_key
        )

    @step(
        compensate=refund,
        retry_safety=RetrySafety.IDEMPOTENCY_KEY.with_probe(c.payments.probe),
        retry=RETRY,
        compensation_retry=RETRY,
    )
    def charge(ctx: StepContext[Order]) -> Payment:
        order = ctx.input
        return c.payments.create_payment(
            amount=order.cents,
            currency=order.currency,
            payment_method="pm_card_visa",
            idempotency_key=ctx.idempotency_key,
        )

    def undo_order(ctx: CompensationContext[Order]) -> None:
        order_id = ctx.output_as(RecordRef).id
        if ctx.input.close_instead:
            c.erp.close_sales_order(order_id)
        else:
            c.erp.cancel_sales_order(order_id)

    @step(
        compensate=undo_order,
        retry_safety=RetrySafety.IDEMPOTENCY_KEY.with_probe(
            lambda ctx: c.erp.find_sales_order(external_id(ctx.idempotency_key))
        ),
        retry=RETRY,
    )
    def create_order(ctx: StepContext[Order]) -> RecordRef:
        order = ctx.input
        line = OrderLine(item=order.sku, quantity=order.quantity, rate=Decimal("12.50"))
        return c.erp.upsert_sales_order(
            external_id(ctx.idempotency_key), NewSalesOrder(customer="C-1", lines=(line,))
        )

    @step(no_compensation="an email cannot be unsent", retry_safety=RetrySafety.IDEMPOTENCY_KEY)
    def confirm(ctx: StepContext[Order]) -> SentEmail:
        return c.mailer.send_email(
            sender=SENDER,
            to=ctx.input.email,
            subject="Confirmed",
            text="Thank you.",
            idempotency_key=ctx.idempotency_key,
        )

    return Saga("fulfil", 1, Order, [reserve, charge, create_order, confirm])


def billing_saga(c: LocalConnectors) -> Saga:
    """Invoice (ERP), a receipt through the email API, then file the bill away."""

    def void(ctx: CompensationContext[Bill]) -> RecordRef:
        invoice = ctx.output_as(RecordRef)
        return c.erp.void_invoice(invoice.id, external_id=external_id(ctx.idempotency_key))

    @step(
        compensate=void,
        retry_safety=RetrySafety.IDEMPOTENCY_KEY.with_probe(
            lambda ctx: c.erp.find_invoice(external_id(ctx.idempotency_key))
        ),
        retry=RETRY,
    )
    def invoice(ctx: StepContext[Bill]) -> RecordRef:
        bill = ctx.input
        line = OrderLine(
            item="WIDGET-1", quantity=bill.quantity, rate=Decimal(bill.unit_cents) / 100
        )
        return c.erp.upsert_invoice(
            external_id(ctx.idempotency_key), NewInvoice(customer="C-1", lines=(line,))
        )

    @step(
        no_compensation="an email cannot be unsent",
        retry_safety=RetrySafety.IDEMPOTENCY_KEY.with_probe(c.email_api.probe),
        retry=RETRY,
    )
    def receipt(ctx: StepContext[Bill]) -> SentEmail:
        return c.email_api.send_email(
            sender=SENDER,
            to=ctx.input.email,
            subject="Receipt",
            text="Paid.",
            idempotency_key=ctx.idempotency_key,
        )

    @step(retry_safety=RetrySafety.NATURAL, no_compensation="filing changes nothing elsewhere")
    def file_away(ctx: StepContext[Bill]) -> None:
        if ctx.input.fail_filing:
            raise PermanentError("the archive refused the bill")

    return Saga("bill", 1, Bill, [invoice, receipt, file_away])


# -- helpers ----------------------------------------------------------------------------


def play(h: SagaHarness, saga: Saga, input: BaseModel) -> str:
    """Run ``input`` until it ends (moving the clock to each wake-up); return the run id."""
    run = h.start(saga, input)
    for _ in range(50):
        h.run_until_idle()
        now = h.log.get_run(run.id)
        if not now.status.active:
            return run.id
        assert now.wake_at is not None
        h.clock.now = max(h.clock(), now.wake_at)
    raise AssertionError("the run did not end")


Recorded = tuple[str, str, str, str | None, str | None]


def recorded(h: SagaHarness, run_id: str) -> list[tuple[str, str | None, list[Recorded]]]:
    """(event type, step, effects) of every event that kept effects, in order."""
    found = []
    for event in h.events(run_id):
        payload = event.payload if isinstance(event.payload, dict) else {}
        if "effects" in payload:
            effects = [Effect.from_json(e) for e in payload["effects"]]
            found.append((event.type.value, event.step, [_brief(e) for e in effects]))
    return found


def _brief(e: Effect) -> Recorded:
    amount = None if e.amount is None else str(e.amount)
    return (e.system, e.operation, e.reference, amount, e.currency or e.unit)


def entries(h: SagaHarness, run_id: str) -> list[LedgerEntry]:
    return [e for e in compensation_ledger(h.log).entries if e.run_id == run_id]


def statuses(h: SagaHarness, run_id: str) -> dict[tuple[str, str], str]:
    return {(e.step, e.effect.operation): e.status for e in entries(h, run_id)}


def output(h: SagaHarness, run_id: str, step_name: str) -> Any:
    [done] = [
        e for e in h.events(run_id) if e.type is EventType.STEP_COMPLETED and e.step == step_name
    ]
    return done.payload["output"]


# -- currencies -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minor", "currency", "major"),
    [
        (999, "usd", "9.99"),
        (4200, "EUR", "42.00"),
        (500, "jpy", "500"),
        (12000, "krw", "12000"),
        (1500, "clp", "1500"),
        (5120, "kwd", "5.120"),
        (10000, "isk", "100.00"),  # two-decimal in Stripe's API, whatever its cash has
    ],
)
def test_minor_units_become_exact_major_units_by_the_currencys_exponent(
    minor: int, currency: str, major: str
) -> None:
    assert major_units(minor, currency) == Decimal(major)
    assert str(major_units(minor, currency)) == major


# -- payments, ERP and SMTP in one saga -------------------------------------------------


def test_a_completed_order_keeps_each_effect_the_connectors_recorded(
    world: World, harness_for: HarnessFor
) -> None:
    saga = order_saga(world.connectors)
    harness = harness_for(saga)
    run_id = play(harness, saga, Order())

    assert harness.log.get_run(run_id).status is RunStatus.COMPLETED
    reservation = output(harness, run_id, "reserve")["id"]
    payment = output(harness, run_id, "charge")["id"]
    sales_order = output(harness, run_id, "create_order")["id"]
    message_id = output(harness, run_id, "confirm")["message_id"]
    assert recorded(harness, run_id) == [
        ("step_completed", "reserve", [("erp", "reserve", reservation, "2", "each")]),
        ("step_completed", "charge", [("payments", "charge", payment, "25.00", "USD")]),
        ("step_completed", "create_order", [("erp", "order_created", sales_order, None, None)]),
        ("step_completed", "confirm", [("email", "email_sent", message_id, None, None)]),
    ]
    assert statuses(harness, run_id) == {
        ("reserve", "reserve"): "kept",
        ("charge", "charge"): "kept",
        ("create_order", "order_created"): "kept",
        ("confirm", "email_sent"): "kept",
    }
    [balance] = [r for r in compensation_ledger(harness.log).runs if r.run_id == run_id]
    assert balance.balanced


def test_a_late_failure_undoes_each_effect_for_exactly_what_it_made(
    world: World, harness_for: HarnessFor
) -> None:
    # Given the SMTP server refuses the confirmation (a .invalid address: 550)
    saga = order_saga(world.connectors)
    harness = harness_for(saga)
    run_id = play(harness, saga, Order(email="grace@hopper.invalid"))

    assert harness.log.get_run(run_id).status is RunStatus.COMPENSATED
    reservation = output(harness, run_id, "reserve")["id"]
    payment = output(harness, run_id, "charge")["id"]
    sales_order = output(harness, run_id, "create_order")["id"]
    [refund] = world.suite.payments.ledger.effects("refund")
    # Then each compensation recorded its undoing, and the failed email nothing
    undone = "compensation_completed"
    assert recorded(harness, run_id)[3:] == [
        (undone, "create_order", [("erp", "order_cancelled", sales_order, None, None)]),
        (undone, "charge", [("payments", "refund", refund.ref, "25.00", "USD")]),
        (undone, "reserve", [("erp", "release", reservation, "2", "each")]),
    ]
    assert statuses(harness, run_id) == {
        ("reserve", "reserve"): "undone",
        ("charge", "charge"): "undone",
        ("create_order", "order_created"): "undone",
    }
    [charged] = [e for e in entries(harness, run_id) if e.step == "charge"]
    assert charged.effect.reference == payment
    assert charged.row()["undone_amount"] == "25.00 USD"
    [balance] = [r for r in compensation_ledger(harness.log).runs if r.run_id == run_id]
    assert (balance.balanced, balance.open) == (True, {})


def test_a_refund_declined_for_good_parks_the_run_and_leaves_it_unbalanced(
    world: World, harness_for: HarnessFor
) -> None:
    # Given the refund is refused permanently
    world.suite.payments.inject(Fault(FaultKind.DECLINE, operation="create_refund", times=5))

    saga = order_saga(world.connectors)
    harness = harness_for(saga)
    run_id = play(harness, saga, Order(email="grace@hopper.invalid"))

    # Then the run parks: the order was cancelled, the charge and the reservation stand
    assert harness.log.get_run(run_id).status is RunStatus.PARKED
    assert statuses(harness, run_id) == {
        ("reserve", "reserve"): "outstanding",
        ("charge", "charge"): "outstanding",
        ("create_order", "order_created"): "undone",
    }
    failed = [e for e in harness.events(run_id) if e.type is EventType.COMPENSATION_FAILED]
    assert [("effects" in e.payload) for e in failed] == [False]
    [balance] = [r for r in compensation_ledger(harness.log).runs if r.run_id == run_id]
    assert balance.balanced is False
    assert balance.open == {"USD": Decimal("25.00"), "each": Decimal(2)}


def test_a_refund_whose_answer_was_lost_is_recorded_once_by_the_retry_that_finds_it(
    world: World, harness_for: HarnessFor
) -> None:
    world.suite.payments.inject(Fault(FaultKind.LOST_RESPONSE, operation="create_refund"))

    saga = order_saga(world.connectors)
    harness = harness_for(saga)
    run_id = play(harness, saga, Order(email="grace@hopper.invalid"))

    assert harness.log.get_run(run_id).status is RunStatus.COMPENSATED
    [refund] = world.suite.payments.ledger.effects("refund")
    undoing = [(t, s, e) for t, s, e in recorded(harness, run_id) if s == "charge"][1:]
    # The lost attempt recorded nothing; the retry found the refund and recorded it
    assert undoing == [
        ("compensation_completed", "charge", [("payments", "refund", refund.ref, "25.00", "USD")])
    ]
    assert statuses(harness, run_id)[("charge", "charge")] == "undone"


def test_probes_record_what_they_found_and_the_ledger_counts_it_once(
    world: World, harness_for: HarnessFor
) -> None:
    # Given the reservation, the charge and the sales order each land but lose their answer
    for simulator, operation in [
        (world.suite.erp, "reserve"),
        (world.suite.payments, "create_payment_intent"),
        (world.suite.erp, "upsert_sales_order"),
    ]:
        simulator.inject(Fault(FaultKind.LOST_RESPONSE, operation=operation))

    saga = order_saga(world.connectors)
    harness = harness_for(saga)
    run_id = play(harness, saga, Order(quantity=3))

    assert harness.log.get_run(run_id).status is RunStatus.COMPLETED
    completed = [(s, e) for t, s, e in recorded(harness, run_id) if t == "step_completed"]
    reservation = output(harness, run_id, "reserve")["id"]
    payment = output(harness, run_id, "charge")["id"]
    sales_order = output(harness, run_id, "create_order")["id"]
    # Then each step completed by its probe, with the effect the probe found
    assert completed[:3] == [
        ("reserve", [("erp", "reserve", reservation, "3", "each")]),
        ("charge", [("payments", "charge", payment, "37.50", "USD")]),
        ("create_order", [("erp", "order_created", sales_order, None, None)]),
    ]
    probed = [e for e in harness.events(run_id) if e.type is EventType.STEP_COMPLETED][:3]
    assert [e.payload["via_probe"] for e in probed] == [True, True, True]
    assert [e.effect.operation for e in entries(harness, run_id)] == [
        "reserve",
        "charge",
        "order_created",
        "email_sent",
    ]


def test_closing_the_order_undoes_it_as_cancelling_does(
    world: World, harness_for: HarnessFor
) -> None:
    order = Order(email="grace@hopper.invalid", close_instead=True)

    saga = order_saga(world.connectors)
    harness = harness_for(saga)
    run_id = play(harness, saga, order)

    sales_order = output(harness, run_id, "create_order")["id"]
    [closing] = [
        e
        for t, s, e in recorded(harness, run_id)
        if (t, s) == ("compensation_completed", "create_order")
    ]
    assert closing == [("erp", "order_closed", sales_order, None, None)]  # fmt: skip
    assert statuses(harness, run_id)[("create_order", "order_created")] == "undone"


def test_a_zero_decimal_currency_is_recorded_in_whole_units(
    world: World, harness_for: HarnessFor
) -> None:
    saga = order_saga(world.connectors)
    harness = harness_for(saga)
    run_id = play(harness, saga, Order(unit_cents=750, currency="jpy", quantity=2))

    [charge] = [e for e in entries(harness, run_id) if e.effect.operation == "charge"]
    assert (charge.effect.amount, charge.effect.currency) == (Decimal(1500), "JPY")


# -- the authorization flow (direct calls, collected as the driver collects) -------------


def collected(mode: Collecting = Collecting.ACTION) -> tuple[list[Effect], Any]:
    into: list[Effect] = []
    return into, collecting(mode, into)


def test_an_authorization_is_a_charge_and_its_cancel_gives_it_back(world: World) -> None:
    payments = world.connectors.payments
    made, block = collected()
    with block:
        held = payments.create_payment(
            amount=2500,
            currency="usd",
            payment_method="pm_card_visa",
            idempotency_key="k-hold",
            capture_method="manual",
        )
        payments.cancel(held.id, idempotency_key="k-release")

    assert [_brief(e) for e in made] == [
        ("payments", "charge", held.id, "25.00", "USD"),
        ("payments", "cancel_authorization", held.id, "25.00", "USD"),
    ]


def test_a_capture_records_only_the_money_it_releases(world: World) -> None:
    payments = world.connectors.payments
    made, block = collected()
    with block:
        whole = payments.create_payment(
            amount=2500,
            currency="usd",
            payment_method="pm_card_visa",
            idempotency_key="k-whole",
            capture_method="manual",
        )
        payments.capture(whole.id, idempotency_key="k-cap-whole")
        part = payments.create_payment(
            amount=2500,
            currency="usd",
            payment_method="pm_card_visa",
            idempotency_key="k-part",
            capture_method="manual",
        )
        payments.capture(part.id, idempotency_key="k-cap-part", amount=1800)

    # The whole capture changes no money the charge did not count; the part one releases 7.00
    assert [_brief(e) for e in made] == [
        ("payments", "charge", whole.id, "25.00", "USD"),
        ("payments", "charge", part.id, "25.00", "USD"),
        ("payments", "capture", part.id, "-7.00", "USD"),
    ]


def test_lookups_record_what_they_found_only_while_a_probe_runs(world: World) -> None:
    payments = world.connectors.payments
    paid = payments.create_payment(
        amount=1000, currency="eur", payment_method="pm_card_visa", idempotency_key="k-look"
    )
    given = payments.refund(paid.id, amount=400, idempotency_key="r-look")

    in_action, block = collected(Collecting.ACTION)
    with block:
        payments.find_payment("k-look")
        payments.find_refund(paid.id, "r-look")
    in_probe, block = collected(Collecting.PROBE)
    with block:
        payments.find_payment("k-look")
        payments.find_refund(paid.id, "r-look")
        assert payments.find_payment("k-none") is None

    assert in_action == []
    assert [_brief(e) for e in in_probe] == [
        ("payments", "charge", paid.id, "10.00", "EUR"),
        ("payments", "refund", given.id, "4.00", "EUR"),
    ]


# -- ERP invoices and the email API ----------------------------------------------------


def test_a_voided_invoice_is_undone_by_its_credit_memo_for_the_same_money(
    world: World, harness_for: HarnessFor
) -> None:
    # Given the email API refuses the receipt for good, and the invoice's answer was lost
    world.suite.email_api.inject(Fault(FaultKind.DECLINE, operation="send"))
    world.suite.erp.inject(Fault(FaultKind.LOST_RESPONSE, operation="upsert_invoice"))

    saga = billing_saga(world.connectors)
    harness = harness_for(saga)
    run_id = play(harness, saga, Bill())

    assert harness.log.get_run(run_id).status is RunStatus.COMPENSATED
    invoice = output(harness, run_id, "invoice")["id"]
    [voided] = world.suite.erp.ledger.effects("invoice_voided")
    memo = voided.detail["credit_memo"]
    assert [(t, s, e) for t, s, e in recorded(harness, run_id)] == [
        ("step_completed", "invoice", [("erp", "invoice", invoice, "50.00", "USD")]),
        ("compensation_completed", "invoice", [("erp", "invoice_voided", memo, "50.00", "USD")]),
    ]
    assert statuses(harness, run_id) == {("invoice", "invoice"): "undone"}


def test_an_email_sent_is_a_record_the_probe_finds(world: World, harness_for: HarnessFor) -> None:
    # The receipt lands but its answer is lost: the probe finds it by key
    world.suite.email_api.inject(Fault(FaultKind.LOST_RESPONSE, operation="send"))

    saga = billing_saga(world.connectors)
    harness = harness_for(saga)
    run_id = play(harness, saga, Bill())

    assert harness.log.get_run(run_id).status is RunStatus.COMPLETED
    [sent] = world.suite.email_api.ledger.effects()
    [(_, _, receipt)] = [r for r in recorded(harness, run_id) if r[1] == "receipt"]
    assert receipt == [("email", "email_sent", sent.ref, None, None)]
    assert output(harness, run_id, "receipt")["message_id"] == sent.ref


def test_an_email_sent_before_a_late_failure_is_not_compensatable(
    world: World, harness_for: HarnessFor
) -> None:
    saga = billing_saga(world.connectors)
    harness = harness_for(saga)

    run_id = play(harness, saga, Bill(fail_filing=True))

    assert harness.log.get_run(run_id).status is RunStatus.COMPENSATED
    sent = output(harness, run_id, "receipt")["message_id"]
    [email] = [e for e in entries(harness, run_id) if e.step == "receipt"]
    assert (email.effect.operation, email.effect.reference) == ("email_sent", sent)
    assert email.status == "not compensatable"
    assert "an email cannot be unsent" in email.reason
    assert statuses(harness, run_id) == {
        ("invoice", "invoice"): "undone",
        ("receipt", "email_sent"): "not compensatable",
    }
    [balance] = [r for r in compensation_ledger(harness.log).runs if r.run_id == run_id]
    assert balance.balanced
