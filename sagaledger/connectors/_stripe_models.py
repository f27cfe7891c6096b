"""What the Stripe connector returns: payments and refunds, read from Stripe's JSON."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

#: The metadata field that carries the saga's idempotency key (probes search it).
KEY_METADATA = "sagaledger_key"
#: Statuses in which a PaymentIntent holds or has moved the customer's money.
LANDED_STATUSES = frozenset({"succeeded", "requires_capture", "processing"})


class Payment(BaseModel):
    """A PaymentIntent, as far as a saga needs it.

    Attributes:
        id: Stripe's id (``pi_...``).
        amount: The amount asked for, in minor units.
        amount_received: What has been captured.
        amount_capturable: What is authorized and may still be captured.
        currency: Three-letter ISO code, lower case.
        status: Stripe's status (``succeeded``, ``requires_capture``, ...).
        capture_method: ``automatic``, ``automatic_async`` or ``manual``.
        latest_charge: The charge behind it (``ch_...``), once there is one.
        idempotency_key: The saga key it was created under, from its metadata.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    amount: int
    amount_received: int = 0
    amount_capturable: int = 0
    currency: str
    status: str
    capture_method: str = "automatic"
    latest_charge: str | None = None
    idempotency_key: str | None = None

    @property
    def landed(self) -> bool:
        """True when the customer's money is moved or held (the effect to undo)."""
        return self.status in LANDED_STATUSES

    @classmethod
    def from_stripe(cls, data: Mapping[str, Any]) -> Payment:
        """Read Stripe's PaymentIntent JSON."""
        charge = data.get("latest_charge")
        return cls(
            id=data["id"],
            amount=data["amount"],
            amount_received=data.get("amount_received") or 0,
            amount_capturable=data.get("amount_capturable") or 0,
            currency=data["currency"],
            status=data["status"],
            capture_method=data.get("capture_method") or "automatic",
            latest_charge=charge.get("id") if isinstance(charge, dict) else charge,
            idempotency_key=(data.get("metadata") or {}).get(KEY_METADATA),
        )


class Refund(BaseModel):
    """A refund of (part of) a PaymentIntent.

    Attributes:
        id: Stripe's id (``re_...``).
        payment_intent: The PaymentIntent refunded.
        amount: Minor units given back.
        currency: Three-letter ISO code, lower case.
        status: ``succeeded``, ``pending``, ``failed``, ...
        idempotency_key: The saga key it was made under, from its metadata.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    payment_intent: str | None
    amount: int
    currency: str
    status: str
    idempotency_key: str | None = None

    @classmethod
    def from_stripe(cls, data: Mapping[str, Any]) -> Refund:
        """Read Stripe's Refund JSON."""
        return cls(
            id=data["id"],
            payment_intent=data.get("payment_intent"),
            amount=data["amount"],
            currency=data["currency"],
            status=data["status"],
            idempotency_key=(data.get("metadata") or {}).get(KEY_METADATA),
        )
