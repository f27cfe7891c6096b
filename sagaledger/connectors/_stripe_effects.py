"""What the Stripe connector records for the compensation ledger (see ``payments``' table)."""

from __future__ import annotations

from sagaledger.audit._effects import record_effect
from sagaledger.connectors._stripe_models import Payment, Refund, major_units

#: The system the ledger names for these effects.
SYSTEM = "payments"
#: Refund statuses in which no money went back.
_REFUND_FAILED = frozenset({"failed", "canceled"})


def record_charge(payment: Payment, *, found: bool = False) -> None:
    """``charge``: what the payment holds, captured or only authorized."""
    held = payment.amount_received + payment.amount_capturable or payment.amount
    amount = major_units(held, payment.currency)
    record_effect(
        SYSTEM, "charge", payment.id, amount=amount, currency=payment.currency.upper(), found=found
    )


def record_capture(payment: Payment) -> None:
    """``capture``, only when it took less than authorized: minus the part released."""
    released = payment.amount - payment.amount_received
    if payment.status == "succeeded" and released > 0:
        amount = -major_units(released, payment.currency)
        record_effect(
            SYSTEM, "capture", payment.id, amount=amount, currency=payment.currency.upper()
        )


def record_cancel(payment: Payment) -> None:
    """``cancel_authorization``: the authorization a cancel released."""
    if payment.status == "canceled" and payment.amount_received == 0:
        amount = major_units(payment.amount, payment.currency)
        record_effect(
            SYSTEM,
            "cancel_authorization",
            payment.id,
            amount=amount,
            currency=payment.currency.upper(),
        )


def record_refund(refund: Refund, *, found: bool = False) -> None:
    """``refund``: the money given back (nothing for a refund that failed)."""
    if refund.status in _REFUND_FAILED:
        return
    amount = major_units(refund.amount, refund.currency)
    record_effect(
        SYSTEM, "refund", refund.id, amount=amount, currency=refund.currency.upper(), found=found
    )
