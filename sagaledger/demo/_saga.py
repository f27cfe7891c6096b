"""The demo's order-fulfilment saga: reserve, charge, create the ERP order, confirm.

Each step does its work on a :class:`~sagaledger.demo.Ledger` under the step's
idempotency key, so a step re-run after a crash is recorded as a second call
that applies nothing. An order whose SKU starts with ``DISCONTINUED`` is refused
by the "ERP" (a late, permanent failure), which makes the run compensate.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, Field

from sagaledger import (
    CompensationContext,
    PermanentError,
    Registry,
    RetryPolicy,
    RetrySafety,
    Saga,
    StepContext,
    step,
)
from sagaledger.demo._ledger import Ledger

#: The saga's stable name, as stored in the log.
SAGA_NAME = "order_fulfilment"
#: SKUs with this prefix are refused by the ERP step.
DISCONTINUED_PREFIX = "DISCONTINUED"

#: Quick retries: the demo has no slow remote systems to be patient with.
_RETRY = RetryPolicy(max_attempts=3, initial_backoff=timedelta(milliseconds=200))


class Order(BaseModel):
    """The input of an order-fulfilment run."""

    order_id: str = Field(min_length=1)
    customer: str = Field(min_length=1)
    sku: str = Field(min_length=1)
    quantity: int = Field(ge=1)
    amount_cents: int = Field(ge=1)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")


def build_saga(ledger: Callable[[], Ledger]) -> Saga:
    """Build the order-fulfilment saga (version 1) on the ledger ``ledger()`` returns.

    Args:
        ledger: Returns the ledger to work on; called at each step, so the
            ledger's location can be decided after the saga is imported.
    """

    def apply(
        ctx: StepContext[Order] | CompensationContext[Order], kind: str, **detail: Any
    ) -> str:
        phase = "forward" if isinstance(ctx, StepContext) else "compensate"
        effect = ledger().apply(
            key=ctx.idempotency_key,
            kind=kind,
            order_id=ctx.input.order_id,
            step=ctx.step,
            phase=phase,
            attempt=ctx.attempt,
            detail=detail,
        )
        return effect.ref

    def release(ctx: CompensationContext[Order]) -> dict[str, str]:
        reservation = ctx.output["reservation_id"]
        return {"release_id": apply(ctx, "release", reservation_id=reservation)}

    def refund(ctx: CompensationContext[Order]) -> dict[str, str]:
        charge = ctx.output["charge_id"]
        amount = ctx.output["amount_cents"]
        return {"refund_id": apply(ctx, "refund", charge_id=charge, amount_cents=amount)}

    def cancel_order(ctx: CompensationContext[Order]) -> dict[str, str]:
        erp_order = ctx.output["erp_order_id"]
        return {"cancellation_id": apply(ctx, "erp_cancellation", erp_order_id=erp_order)}

    common: dict[str, Any] = {
        "retry_safety": RetrySafety.IDEMPOTENCY_KEY,
        "retry": _RETRY,
        "compensation_retry": _RETRY,
    }

    @step(compensate=release, **common)
    def reserve_inventory(ctx: StepContext[Order]) -> dict[str, Any]:
        order = ctx.input
        ref = apply(ctx, "reservation", sku=order.sku, quantity=order.quantity)
        return {"reservation_id": ref, "sku": order.sku, "quantity": order.quantity}

    @step(compensate=refund, **common)
    def charge_payment(ctx: StepContext[Order]) -> dict[str, Any]:
        order = ctx.input
        ref = apply(ctx, "charge", amount_cents=order.amount_cents, currency=order.currency)
        return {"charge_id": ref, "amount_cents": order.amount_cents, "currency": order.currency}

    @step(compensate=cancel_order, **common)
    def create_erp_order(ctx: StepContext[Order]) -> dict[str, Any]:
        order = ctx.input
        if order.sku.startswith(DISCONTINUED_PREFIX):
            ledger().reject(
                key=ctx.idempotency_key,
                order_id=order.order_id,
                step=ctx.step,
                phase="forward",
                attempt=ctx.attempt,
            )
            raise PermanentError(
                f"ERP refused order {order.order_id}: sku {order.sku} is discontinued"
            )
        charge = ctx.output("charge_payment")["charge_id"]
        return {"erp_order_id": apply(ctx, "erp_order", sku=order.sku, charge_id=charge)}

    @step(no_compensation="a sent email cannot be unsent", **common)
    def send_confirmation(ctx: StepContext[Order]) -> dict[str, Any]:
        order = ctx.input
        erp_order = ctx.output("create_erp_order")["erp_order_id"]
        ref = apply(ctx, "email", to=order.email, erp_order_id=erp_order)
        return {"message_id": ref}

    return Saga(
        name=SAGA_NAME,
        version=1,
        input=Order,
        steps=[reserve_inventory, charge_payment, create_erp_order, send_confirmation],
        description="Reserve stock, charge the card, create the ERP order, email the customer.",
    )


def build_registry(ledger: Callable[[], Ledger]) -> Registry:
    """A registry holding the demo saga (see :func:`build_saga`)."""
    return Registry([build_saga(ledger)])
