"""Billing: invoice in the ERP, charge the card, email the receipt.

The saga and the services it talks to, as an application would write them. A
worker runs it with::

    sagaledger worker --app examples.billing.app:registry

If a step fails for good, what was done is undone in reverse: the charge is
refunded for exactly what was taken, and the invoice is voided, which in
NetSuite means a credit memo for its full amount (the invoice stays on the
books, paid by the memo, as finance expects). The receipt is sent through an
HTTP email API with an ``Idempotency-Key`` and a probe, so it goes out once.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from functools import cache

from pydantic import BaseModel, Field

from examples.policies import NETSUITE, RETRY, STRIPE
from sagaledger import (
    CompensationContext,
    Registry,
    RetrySafety,
    Saga,
    StepContext,
    step,
)
from sagaledger.connectors.email import HttpEmailApi, SentEmail
from sagaledger.connectors.erp import NetSuiteErp, NewInvoice, OrderLine, RecordRef, external_id
from sagaledger.connectors.payments import Payment, Refund, StripePayments
from sagaledger.connectors.simulators import Endpoints, LocalConnectors

#: Who the receipt comes from.
SENDER = "Widgets & Co Billing <billing@widgets.example>"


class Line(BaseModel):
    """One billed item."""

    item: str
    quantity: int = Field(ge=1)
    unit_price_cents: int = Field(ge=1)


class Bill(BaseModel):
    """What the billing service hands to the saga."""

    invoice_number: str
    customer_id: str
    email: str
    lines: list[Line] = Field(min_length=1)
    payment_method: str = "pm_card_visa"

    @property
    def amount_cents(self) -> int:
        return sum(line.quantity * line.unit_price_cents for line in self.lines)


@dataclass(frozen=True)
class Services:
    """The remote systems the steps act on."""

    erp: NetSuiteErp
    payments: StripePayments
    email: HttpEmailApi


@cache
def services() -> Services:
    """The services, built once per process on first use (importing this module calls none).

    Here they are the simulators whose endpoints ``run.py`` hands over in the
    ``SAGALEDGER_SIMULATORS`` variable; the README shows what to build for the
    real NetSuite, Stripe and email API instead.
    """
    local = LocalConnectors.for_endpoints(Endpoints.from_env())
    return Services(erp=local.erp, payments=local.payments, email=local.email_api)


# -- create_invoice ---------------------------------------------------------------------


def invoice_found(ctx: StepContext[Bill]) -> RecordRef | None:
    return services().erp.find_invoice(external_id(ctx.idempotency_key))


def void_invoice(ctx: CompensationContext[Bill]) -> RecordRef:
    invoice = ctx.output_as(RecordRef)
    # A credit memo for the full amount; its external id makes a retry find it, not credit twice.
    return services().erp.void_invoice(invoice.id, external_id=external_id(ctx.idempotency_key))


@step(
    compensate=void_invoice,
    # An upsert by external id: a retry updates the invoice the first attempt made.
    retry_safety=RetrySafety.IDEMPOTENCY_KEY.with_probe(invoice_found),
    retry=RETRY,
    rate_limit=NETSUITE,
)
def create_invoice(ctx: StepContext[Bill]) -> RecordRef:
    bill = ctx.input
    lines = tuple(
        OrderLine(item=line.item, quantity=line.quantity, rate=Decimal(line.unit_price_cents) / 100)
        for line in bill.lines
    )
    invoice = NewInvoice(customer=bill.customer_id, lines=lines, memo=bill.invoice_number)
    return services().erp.upsert_invoice(external_id(ctx.idempotency_key), invoice)


# -- charge_card ------------------------------------------------------------------------


def charge_found(ctx: StepContext[Bill]) -> Payment | None:
    # Stripe forgets keys after 24 hours; the probe finds the charge by its metadata.
    return services().payments.probe(ctx)


def refund_charge(ctx: CompensationContext[Bill]) -> Refund:
    paid = ctx.output_as(Payment)
    # Exactly what the charge took, as recorded, not what the bill says it should cost.
    return services().payments.refund(
        paid.id,
        amount=paid.amount_received,
        idempotency_key=ctx.idempotency_key,
        metadata={"invoice": ctx.input.invoice_number},
    )


@step(
    compensate=refund_charge,
    retry_safety=RetrySafety.IDEMPOTENCY_KEY.with_probe(charge_found),
    retry=RETRY,
    rate_limit=STRIPE,
)
def charge_card(ctx: StepContext[Bill]) -> Payment:
    bill = ctx.input
    invoice = ctx.output("create_invoice", RecordRef)
    return services().payments.create_payment(
        amount=bill.amount_cents,
        currency="usd",
        payment_method=bill.payment_method,
        idempotency_key=ctx.idempotency_key,
        metadata={"invoice": bill.invoice_number, "netsuite_invoice": invoice.id},
        description=f"Invoice {bill.invoice_number}",
    )


# -- send_receipt -----------------------------------------------------------------------


def receipt_found(ctx: StepContext[Bill]) -> SentEmail | None:
    return services().email.probe(ctx)


@step(
    no_compensation="an email cannot be unsent",
    # The API sends once per Idempotency-Key; the probe covers a retry after it forgot the key.
    retry_safety=RetrySafety.IDEMPOTENCY_KEY.with_probe(receipt_found),
    retry=RETRY,
)
def send_receipt(ctx: StepContext[Bill]) -> SentEmail:
    bill = ctx.input
    paid = ctx.output("charge_card", Payment)
    lines = "".join(
        f"  {line.quantity} x {line.item} at ${line.unit_price_cents / 100:,.2f}\n"
        for line in bill.lines
    )
    return services().email.send_email(
        sender=SENDER,
        to=bill.email,
        subject=f"Receipt for invoice {bill.invoice_number}",
        text=f"{lines}Paid: ${paid.amount_received / 100:,.2f} (payment {paid.id}).\n",
        idempotency_key=ctx.idempotency_key,
    )


billing = Saga(
    "billing",
    version=1,
    input=Bill,
    steps=[create_invoice, charge_card, send_receipt],
    description="invoice in the ERP, charge the card, email the receipt",
)
registry = Registry([billing])
