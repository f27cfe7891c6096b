"""A trip saga for the telemetry tests: a retry, a three-day timer, a late failure.

``book_hotel`` succeeds, ``charge_card`` fails on its first attempt (a retryable
error) and succeeds on its second, ``cooling_off`` waits three days, and
``confirm`` fails for good when the input asks for it, so the run compensates
``charge_card`` then ``book_hotel``. Every step logs a line, as step code does.
"""

from __future__ import annotations

import logging
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
    timer,
)

logger = logging.getLogger("tests.trip")
logger.setLevel(logging.INFO)  # a worker process's root logger says warnings only

#: The first attempt of charge_card fails; the retry comes this much later.
BACKOFF = timedelta(seconds=10)
COOLING_OFF = timedelta(days=3)
RETRY = RetryPolicy(max_attempts=3, initial_backoff=BACKOFF, jitter=0)


class Trip(BaseModel):
    traveller: str
    #: Make confirm fail permanently (the run compensates).
    refuse: bool = False
    #: Make charge_card's compensation fail for good (the run parks).
    stuck_refund: bool = False
    #: charge_card fails on its first attempt.
    flaky: bool = True


def cancel_hotel(ctx: CompensationContext[Trip]) -> None:
    logger.info("cancelling the hotel")


def refund(ctx: CompensationContext[Trip]) -> None:
    if ctx.input.stuck_refund:
        raise PermanentError("the card was closed")
    logger.info("refunding")


@step(retry_safety=RetrySafety.NATURAL, compensate=cancel_hotel)
def book_hotel(ctx: StepContext[Trip]) -> dict[str, str]:
    logger.info("booking a hotel for %s", ctx.input.traveller)
    return {"booking": "H-1"}


@step(retry_safety=RetrySafety.IDEMPOTENCY_KEY, compensate=refund, retry=RETRY)
def charge_card(ctx: StepContext[Trip]) -> dict[str, str]:
    logger.info("charging")
    if ctx.input.flaky and ctx.attempt == 1:
        raise RetryableError("the payment provider timed out")
    return {"charge": "ch_1"}


@step(retry_safety=RetrySafety.NATURAL, no_compensation="a confirmation is the last step")
def confirm(ctx: StepContext[Trip]) -> None:
    logger.info("confirming")
    if ctx.input.refuse:
        raise PermanentError("the hotel refused the booking")


trip_saga = Saga(
    "trip", 1, Trip, [book_hotel, charge_card, timer("cooling_off", after=COOLING_OFF), confirm]
)
#: A saga that completes at once, for tests that run a worker process.
quick_saga = Saga("quick", 1, Trip, [book_hotel, confirm])
registry = Registry([trip_saga, quick_saga])
