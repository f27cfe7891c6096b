"""What the Stripe connector returns: payments and refunds, read from Stripe's JSON."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict

#: The metadata field that carries the saga's idempotency key (probes search it).
KEY_METADATA = "sagaledger_key"
#: Statuses in which a PaymentIntent holds or has moved the customer's money.
LANDED_STATUSES = frozenset({"succeeded", "requires_capture", "processing"})
#: Currencies whose API amounts are whole units (Stripe's "zero-decimal" list):
#: 500 JPY is ``amount=500``. ISK, HUF and TWD are not among them: Stripe keeps
#: them two-decimal in the API, whatever their cash has.
ZERO_DECIMAL_CURRENCIES = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv"}
    | {"xaf", "xof", "xpf"}
)
#: Currencies whose API amounts are thousandths: 5.120 KWD is ``amount=5120``.
THREE_DECIMAL_CURRENCIES = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})


def major_units(amount: int, currency: str) -> Decimal:
    """An amount in Stripe's minor units as an exact amount in major units.

    ``major_units(999, "usd")`` is ``Decimal("9.99")``, ``major_units(500, "jpy")``
    is ``Decimal("500")``, ``major_units(5120, "kwd")`` is ``Decimal("5.120")``.
    """
    code = currency.lower()
    exponent = (
        0 if code in ZERO_DECIMAL_CURRENCIES else 3 if code in THREE_DECIMAL_CURRENCIES else 2
    )
    return Decimal(amount).scaleb(-exponent)


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
