"""Sagas for the dashboard's tests: a shop whose refund can be broken, and an approval.

``dash_shop``: ``reserve`` (undone by ``release``) -> ``charge`` (undone by
``refund``) -> ``email``. Its input carries a card number and its charge
returns an API key, which every page and the API must redact. While
:data:`BROKEN` holds ``refund`` the refund fails for good, so a run whose email
fails (``email`` in it) parks while compensating; mended, a retried
compensation succeeds. Runs are driven in the test's process by a harness, so
this is plain module state.

``dash_approval``: ``reserve`` -> ``manager`` (an approval alice may give) -> ``ship``.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from sagaledger import (
    CompensationContext,
    PermanentError,
    Registry,
    RetryPolicy,
    RetrySafety,
    Saga,
    StepContext,
    approval,
    step,
)
from sagaledger.audit import record_effect

#: What fails for good now: ``refund``, ``email``.
BROKEN: set[str] = set()
#: The approver, and the token name an operator logs in with.
APPROVER = "alice@x.example"
#: What the charge returns besides its id: a secret the pages must hide.
API_KEY = "sk_live_THIS_MUST_NOT_SHOW"
CARD = "4242424242424242"

_ONCE = RetryPolicy(max_attempts=1)


class Order(BaseModel):
    order_id: str
    card_number: str = CARD
    amount: Decimal = Decimal("25.00")


def release(ctx: CompensationContext[Order]) -> None:
    record_effect("erp", "release", f"res-{ctx.input.order_id}", amount=1, unit="each")


@step(compensate=release, retry_safety=RetrySafety.NATURAL)
def reserve(ctx: StepContext[Order]) -> dict[str, Any]:
    record_effect("erp", "reserve", f"res-{ctx.input.order_id}", amount=1, unit="each")
    return {"reserved": ctx.input.order_id}


def refund(ctx: CompensationContext[Order]) -> dict[str, Any]:
    if "refund" in BROKEN:
        raise PermanentError("payments refused the refund")
    record_effect(
        "payments", "refund", f"re-{ctx.input.order_id}", amount=ctx.input.amount, currency="EUR"
    )
    return {"refund": f"re-{ctx.input.order_id}"}


@step(compensate=refund, retry_safety=RetrySafety.IDEMPOTENCY_KEY, retry=_ONCE)
def charge(ctx: StepContext[Order]) -> dict[str, Any]:
    record_effect(
        "payments", "charge", f"ch-{ctx.input.order_id}", amount=ctx.input.amount, currency="EUR"
    )
    return {"charge": f"ch-{ctx.input.order_id}", "api_key": API_KEY}


@step(no_compensation="an email cannot be unsent", retry_safety=RetrySafety.NATURAL, retry=_ONCE)
def email(ctx: StepContext[Order]) -> None:
    if "email" in BROKEN:
        raise PermanentError("mailbox does not exist")


manager = approval("manager", approvers=[APPROVER], deadline=timedelta(days=2))


@step(no_compensation="the last step", retry_safety=RetrySafety.NATURAL)
def ship(ctx: StepContext[Order]) -> dict[str, Any]:
    return {"shipped": ctx.input.order_id}


shop = Saga("dash_shop", 1, Order, [reserve, charge, email])
approved = Saga("dash_approval", 1, Order, [reserve, manager, ship])
registry = Registry([shop, approved])
