"""Order fulfilment: reserve stock in the ERP, charge the card, create the sales order, confirm.

The saga and the services it talks to, as an application would write them. A
worker runs it with::

    sagaledger worker --app examples.order_fulfilment.app:registry

If a step fails for good, the steps already done are undone in reverse: the
sales order is cancelled, the charge refunded for exactly what was taken, and
the reserved stock released. The email is the last step and cannot be unsent.
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
from sagaledger.connectors.email import Mailer, SentEmail
from sagaledger.connectors.erp import NetSuiteErp, NewSalesOrder, OrderLine, RecordRef, external_id
from sagaledger.connectors.payments import Payment, Refund, StripePayments
from sagaledger.connectors.simulators import Endpoints, LocalConnectors

#: Who the confirmation comes from.
SENDER = "Widgets & Co <orders@widgets.example>"


class Order(BaseModel):
    """What the shop hands to the saga."""

    order_id: str
    customer_id: str
    email: str
    sku: str
    quantity: int = Field(ge=1)
    unit_price_cents: int = Field(ge=1)
    payment_method: str = "pm_card_visa"

    @property
    def amount_cents(self) -> int:
        return self.quantity * self.unit_price_cents


@dataclass(frozen=True)
class Services:
    """The remote systems the steps act on."""

    payments: StripePayments
    erp: NetSuiteErp
    mailer: Mailer


@cache
def services() -> Services:
    """The services, built once per process on first use (importing this module calls none).

    Here they are the simulators whose endpoints ``run.py`` hands over in the
    ``SAGALEDGER_SIMULATORS`` variable; the README shows what to build for the
    real Stripe, NetSuite and SMTP server instead.
    """
    local = LocalConnectors.for_endpoints(Endpoints.from_env())
    return Services(payments=local.payments, erp=local.erp, mailer=local.mailer)


# -- reserve_inventory ----------------------------------------------------------------


def reservation_found(ctx: StepContext[Order]) -> RecordRef | None:
    return services().erp.find_reservation(external_id(ctx.idempotency_key))


def release_inventory(ctx: CompensationContext[Order]) -> dict[str, str]:
    reservation = ctx.output_as(RecordRef)
    services().erp.release(reservation.id)  # releasing twice gives nothing back twice
    return {"released": reservation.id}


@step(
    compensate=release_inventory,
    # An upsert by external id: a retry updates the reservation the first attempt made.
    retry_safety=RetrySafety.IDEMPOTENCY_KEY.with_probe(reservation_found),
    retry=RETRY,
    rate_limit=NETSUITE,
)
def reserve_inventory(ctx: StepContext[Order]) -> RecordRef:
    order = ctx.input
    return services().erp.reserve(
        external_id(ctx.idempotency_key), order.sku, order.quantity, memo=order.order_id
    )


# -- charge_card ----------------------------------------------------------------------


def charge_found(ctx: StepContext[Order]) -> Payment | None:
    # Stripe forgets keys after 24 hours; the probe finds the charge by its metadata.
    return services().payments.probe(ctx)


def refund_charge(ctx: CompensationContext[Order]) -> Refund:
    paid = ctx.output_as(Payment)
    # Exactly what the charge took, as recorded, not what the order says it should cost.
    return services().payments.refund(
        paid.id,
        amount=paid.amount_received,
        idempotency_key=ctx.idempotency_key,
        metadata={"order_id": ctx.input.order_id},
    )


@step(
    compensate=refund_charge,
    retry_safety=RetrySafety.IDEMPOTENCY_KEY.with_probe(charge_found),
    retry=RETRY,
    rate_limit=STRIPE,
)
def charge_card(ctx: StepContext[Order]) -> Payment:
    order = ctx.input
    return services().payments.create_payment(
        amount=order.amount_cents,
        currency="usd",
        payment_method=order.payment_method,
        idempotency_key=ctx.idempotency_key,
        metadata={"order_id": order.order_id},
        description=f"Order {order.order_id}",
    )


# -- create_sales_order ---------------------------------------------------------------


def sales_order_found(ctx: StepContext[Order]) -> RecordRef | None:
    return services().erp.find_sales_order(external_id(ctx.idempotency_key))


def cancel_sales_order(ctx: CompensationContext[Order]) -> dict[str, str]:
    order = ctx.output_as(RecordRef)
    services().erp.cancel_sales_order(order.id)  # cancelling twice is a no-op
    return {"cancelled": order.id}


@step(
    compensate=cancel_sales_order,
    retry_safety=RetrySafety.IDEMPOTENCY_KEY.with_probe(sales_order_found),
    retry=RETRY,
    rate_limit=NETSUITE,
)
def create_sales_order(ctx: StepContext[Order]) -> RecordRef:
    order = ctx.input
    paid = ctx.output("charge_card", Payment)
    line = OrderLine(
        item=order.sku, quantity=order.quantity, rate=Decimal(order.unit_price_cents) / 100
    )
    sales_order = NewSalesOrder(
        customer=order.customer_id, lines=(line,), memo=f"{order.order_id}, paid by {paid.id}"
    )
    return services().erp.upsert_sales_order(external_id(ctx.idempotency_key), sales_order)


# -- send_confirmation ----------------------------------------------------------------


@step(
    no_compensation="an email cannot be unsent",
    # SMTP has no idempotency: a retry after a lost reply may send a second copy,
    # with the same Message-ID (derived from the key).
    retry_safety=RetrySafety.IDEMPOTENCY_KEY,
    retry=RETRY,
)
def send_confirmation(ctx: StepContext[Order]) -> SentEmail:
    order = ctx.input
    sales_order = ctx.output("create_sales_order", RecordRef)
    total = f"${order.amount_cents / 100:,.2f}"
    return services().mailer.send_email(
        sender=SENDER,
        to=order.email,
        subject=f"Order {order.order_id} confirmed",
        text=(
            f"Thank you for your order {order.order_id} (sales order {sales_order.id}).\n"
            f"{order.quantity} x {order.sku}, {total} charged to your card.\n"
        ),
        idempotency_key=ctx.idempotency_key,
    )


orders = Saga(
    "order_fulfilment",
    version=1,
    input=Order,
    steps=[reserve_inventory, charge_card, create_sales_order, send_confirmation],
    description="reserve stock, charge, create the sales order, confirm by email",
)
registry = Registry([orders])
