"""An order whose remote systems an operator's test can break and mend: for the ops commands.

``reserve`` (undone by ``release``) -> ``charge`` (undone by ``refund``) ->
``ship`` (the pivot) -> ``email``. The steps record each effect in
:data:`EFFECTS`; :data:`BROKEN` names what fails for good now (``refund``,
``email``) and what only fails for an hour (``email_busy``). Runs are driven in
the test's process by a harness, so both are plain module state.
``dropped`` is the registry of a careless deploy: the charge is no longer undone.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from sagaledger import (
    CompensationContext,
    PermanentError,
    Registry,
    RetryableError,
    RetryPolicy,
    RetrySafety,
    Saga,
    StepContext,
    step,
)

EFFECTS: list[tuple[str, str]] = []
BROKEN: set[str] = set()

_ONCE = RetryPolicy(max_attempts=1)
_HOURLY = RetryPolicy(
    max_attempts=3, initial_backoff=timedelta(hours=1), max_backoff=timedelta(hours=1), jitter=0
)


class Order(BaseModel):
    order_id: str


def release(ctx: CompensationContext[Order]) -> None:
    EFFECTS.append(("reserve", "compensate"))


@step(compensate=release, retry_safety=RetrySafety.NATURAL)
def reserve(ctx: StepContext[Order]) -> None:
    EFFECTS.append(("reserve", "forward"))


def refund(ctx: CompensationContext[Order]) -> None:
    if "refund" in BROKEN:
        raise PermanentError("payments refused the refund")
    EFFECTS.append(("charge", "compensate"))


def _charge(ctx: StepContext[Order]) -> dict[str, str]:
    EFFECTS.append(("charge", "forward"))
    return {"charge": f"ch-{ctx.input.order_id}"}


charge = step("charge", compensate=refund, retry_safety=RetrySafety.IDEMPOTENCY_KEY, retry=_ONCE)(
    _charge
)


@step(pivot=True, retry_safety=RetrySafety.NATURAL)
def ship(ctx: StepContext[Order]) -> None:
    EFFECTS.append(("ship", "forward"))


@step(no_compensation="an email cannot be unsent", retry_safety=RetrySafety.NATURAL, retry=_HOURLY)
def email(ctx: StepContext[Order]) -> None:
    if "email" in BROKEN:
        raise PermanentError("mailbox does not exist")
    if "email_busy" in BROKEN:
        raise RetryableError("mail server busy")
    EFFECTS.append(("email", "forward"))


#: Without the pivot: a failed email unwinds the run.
shop = Saga("ops_shop", 1, Order, [reserve, charge, email])
#: With it: a failed email past the shipment parks the run.
parcel = Saga("ops_parcel", 1, Order, [reserve, charge, ship, email])
registry = Registry([shop, parcel])

_kept = step(
    "charge", no_compensation="dropped", retry_safety=RetrySafety.IDEMPOTENCY_KEY, retry=_ONCE
)(_charge)
dropped = Registry([Saga("ops_shop", 1, Order, [reserve, _kept, email]), parcel])
