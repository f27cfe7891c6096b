"""The demo's order-fulfilment saga: reserve in the ERP, charge the card, create the order, confirm.

Every step calls a real connector (NetSuite-style ERP, Stripe-style payments, a
Resend-style email API) with its idempotency key, and pairs the key with a
probe that asks the remote system whether an earlier attempt already landed.
In the demo those systems are the simulators of
:class:`~sagaledger.connectors.simulators.SimulatorSuite`.

The confirmation goes through the HTTP email API, not SMTP: the API sends once
per key and can be asked whether a key's email went out, so a worker that dies
after sending does not email the customer twice. SMTP can promise at least
once at best, and has no probe.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sagaledger import (
    CompensationContext,
    Registry,
    RetryPolicy,
    RetrySafety,
    Saga,
    StepContext,
    step,
)
from sagaledger.connectors.erp import NewSalesOrder, OrderLine, RecordRef, external_id
from sagaledger.connectors.payments import Payment, StripePayments
from sagaledger.connectors.simulators import LocalConnectors

#: The saga's stable name, as stored in the log.
SAGA_NAME = "order_fulfilment"
#: Who the confirmation comes from.
SHOP_SENDER = "Sagaledger demo shop <orders@shop.example>"

#: Quick retries: the simulators answer in milliseconds.
_RETRY = RetryPolicy(max_attempts=3, initial_backoff=timedelta(milliseconds=200))


class Order(BaseModel):
    """The input of an order-fulfilment run."""

    order_id: str = Field(min_length=1)
    customer: str = Field(min_length=1, description="The customer's id in the ERP.")
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    sku: str = Field(min_length=1)
    quantity: int = Field(ge=1)
    unit_price_cents: int = Field(ge=1)
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    payment_method: str = Field(default="pm_card_visa", min_length=1)

    @property
    def amount_cents(self) -> int:
        """What the customer pays, in minor units."""
        return self.unit_price_cents * self.quantity


class Reservation(BaseModel):
    """What ``reserve_inventory`` records: the ERP's reservation."""

    model_config = ConfigDict(frozen=True)

    reservation_id: str
    sku: str
    quantity: int


class Charge(BaseModel):
    """What ``charge_payment`` records: the PaymentIntent and the money it took."""

    model_config = ConfigDict(frozen=True)

    payment_intent: str
    amount: int
    currency: str

    @classmethod
    def of(cls, payment: Payment) -> Charge:
        # What was received, not what was asked: the refund must give back exactly that.
        return cls(
            payment_intent=payment.id, amount=payment.amount_received, currency=payment.currency
        )


class ErpOrder(BaseModel):
    """What ``create_erp_order`` records: the ERP's sales order."""

    model_config = ConfigDict(frozen=True)

    sales_order_id: str


class Confirmation(BaseModel):
    """What ``send_confirmation`` records: the email API's id of the message."""

    model_config = ConfigDict(frozen=True)

    email_id: str


def charge_card(payments: StripePayments, order: Order, idempotency_key: str) -> Payment:
    """Send the charge ``charge_payment`` sends: the same request on every retry of the step.

    Stripe replays its first answer only to a request with the same key *and*
    the same parameters, so nothing here may vary between attempts.
    """
    return payments.create_payment(
        amount=order.amount_cents,
        currency=order.currency,
        payment_method=order.payment_method,
        idempotency_key=idempotency_key,
        metadata={"order_id": order.order_id},
        description=f"order {order.order_id}",
    )


def build_saga(connectors: Callable[[], LocalConnectors]) -> Saga:
    """Build the order-fulfilment saga (version 2) on the connectors ``connectors()`` returns.

    Args:
        connectors: Returns the connectors to call; called at each step, so that
            they are made in the process that runs the steps, when first needed.
    """
    keyed = RetrySafety.IDEMPOTENCY_KEY

    def record_id(ctx: StepContext[Order]) -> str:
        # Short and plain, the step's key is its own externalId: NetSuite users see the run.
        return external_id(ctx.idempotency_key)

    # -- reserve_inventory ------------------------------------------------------

    def reserved(ref: RecordRef, order: Order) -> Reservation:
        return Reservation(reservation_id=ref.id, sku=order.sku, quantity=order.quantity)

    def find_reservation(ctx: StepContext[Order]) -> Reservation | None:
        ref = connectors().erp.find_reservation(record_id(ctx))
        return None if ref is None else reserved(ref, ctx.input)

    def release(ctx: CompensationContext[Order]) -> dict[str, str]:
        reservation = ctx.output_as(Reservation)
        connectors().erp.release(reservation.reservation_id)
        return {"released": reservation.reservation_id}

    @step(
        compensate=release,
        retry_safety=keyed.with_probe(find_reservation),
        retry=_RETRY,
        compensation_retry=_RETRY,
    )
    def reserve_inventory(ctx: StepContext[Order]) -> Reservation:
        order = ctx.input
        ref = connectors().erp.reserve(
            record_id(ctx), order.sku, order.quantity, memo=order.order_id
        )
        return reserved(ref, order)

    # -- charge_payment -----------------------------------------------------------

    def find_charge(ctx: StepContext[Order]) -> Charge | None:
        payment = connectors().payments.probe(ctx)
        return None if payment is None else Charge.of(payment)

    def refund(ctx: CompensationContext[Order]) -> dict[str, Any]:
        charge = ctx.output_as(Charge)
        made = connectors().payments.refund(
            charge.payment_intent,
            idempotency_key=ctx.idempotency_key,
            amount=charge.amount,
            metadata={"order_id": ctx.input.order_id},
        )
        return {"refund": made.id, "amount": made.amount, "currency": made.currency}

    @step(
        compensate=refund,
        retry_safety=keyed.with_probe(find_charge),
        retry=_RETRY,
        compensation_retry=_RETRY,
    )
    def charge_payment(ctx: StepContext[Order]) -> Charge:
        return Charge.of(charge_card(connectors().payments, ctx.input, ctx.idempotency_key))

    # -- create_erp_order ---------------------------------------------------------

    def find_erp_order(ctx: StepContext[Order]) -> ErpOrder | None:
        ref = connectors().erp.find_sales_order(record_id(ctx))
        return None if ref is None else ErpOrder(sales_order_id=ref.id)

    def cancel_erp_order(ctx: CompensationContext[Order]) -> dict[str, str]:
        order = ctx.output_as(ErpOrder)
        connectors().erp.cancel_sales_order(order.sales_order_id)
        return {"cancelled": order.sales_order_id}

    @step(
        compensate=cancel_erp_order,
        retry_safety=keyed.with_probe(find_erp_order),
        retry=_RETRY,
        compensation_retry=_RETRY,
    )
    def create_erp_order(ctx: StepContext[Order]) -> ErpOrder:
        order, charge = ctx.input, ctx.output("charge_payment", Charge)
        line = OrderLine(
            item=order.sku,
            quantity=order.quantity,
            rate=Decimal(order.unit_price_cents) / 100,
        )
        new = NewSalesOrder(
            customer=order.customer,
            lines=(line,),
            memo=f"{order.order_id}, paid by {charge.payment_intent}",
        )
        ref = connectors().erp.upsert_sales_order(record_id(ctx), new)
        return ErpOrder(sales_order_id=ref.id)

    # -- send_confirmation --------------------------------------------------------

    def find_confirmation(ctx: StepContext[Order]) -> Confirmation | None:
        sent = connectors().email_api.probe(ctx)
        return None if sent is None else Confirmation(email_id=sent.message_id)

    @step(
        no_compensation="a sent email cannot be unsent",
        retry_safety=keyed.with_probe(find_confirmation),
        retry=_RETRY,
    )
    def send_confirmation(ctx: StepContext[Order]) -> Confirmation:
        order, erp_order = ctx.input, ctx.output("create_erp_order", ErpOrder)
        amount = Decimal(order.amount_cents) / 100
        sent = connectors().email_api.send_email(
            sender=SHOP_SENDER,
            to=order.email,
            subject=f"Your order {order.order_id}",
            # Nothing that varies between attempts: the API refuses a key reused
            # with another body.
            text=(
                f"We have your order {order.order_id}: {order.quantity} x {order.sku}, "
                f"{amount:.2f} {order.currency} (sales order {erp_order.sales_order_id})."
            ),
            idempotency_key=ctx.idempotency_key,
        )
        return Confirmation(email_id=sent.message_id)

    return Saga(
        name=SAGA_NAME,
        version=2,
        input=Order,
        steps=[reserve_inventory, charge_payment, create_erp_order, send_confirmation],
        description="Reserve stock, charge the card, create the ERP order, email the customer.",
    )


def build_registry(connectors: Callable[[], LocalConnectors]) -> Registry:
    """A registry holding the demo saga (see :func:`build_saga`)."""
    return Registry([build_saga(connectors)])
