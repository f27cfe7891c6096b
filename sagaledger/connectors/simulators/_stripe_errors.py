"""Stripe's error shape, its ids, and the test cards the payments simulator declines."""

from __future__ import annotations

import itertools
import secrets
from typing import Any

from sagaledger.connectors.simulators._http import SimResponse

#: Test payment methods that are declined: (code, decline_code, message).
DECLINES = {
    "pm_card_chargeDeclined": ("card_declined", "generic_decline", "Your card was declined."),
    "pm_card_chargeDeclinedInsufficientFunds": (
        "card_declined",
        "insufficient_funds",
        "Your card has insufficient funds.",
    ),
    "pm_card_chargeDeclinedExpiredCard": ("expired_card", "expired_card", "Your card has expired."),
}
#: Test payment methods that are charged.
APPROVED = frozenset({"pm_card_visa", "pm_card_mastercard", "pm_card_amex"})

_ids = itertools.count(1)


class Rejected(Exception):
    """A request refused before the endpoint acted: its answer is not kept for its key."""

    def __init__(self, response: SimResponse):
        super().__init__(response.status)
        self.response = response


def stripe_error(
    status: int,
    message: str,
    type: str = "invalid_request_error",
    code: str | None = None,
    **extra: Any,
) -> SimResponse:
    """An error in Stripe's shape: ``{"error": {"type", "code", "message", ...}}``."""
    error = {"type": type, "message": message}
    if code is not None:
        error["code"] = code
    error.update({k: v for k, v in extra.items() if v is not None})
    return SimResponse(status, {"error": error}, {"Request-Id": new_id("req")})


def new_id(prefix: str) -> str:
    # A counter keeps ids ordered and unique; the random tail makes them look like Stripe's.
    return f"{prefix}_{next(_ids):06d}{secrets.token_hex(6)}"
