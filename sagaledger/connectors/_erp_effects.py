"""What the NetSuite connector records for the compensation ledger (see ``erp``'s table)."""

from __future__ import annotations

from decimal import Decimal

from sagaledger.audit._effects import record_effect
from sagaledger.connectors._erp_models import OrderLine

#: The system the ledger names for these effects.
SYSTEM = "erp"
#: The unit of reserved quantities.
UNIT = "each"
_CENT = Decimal("0.01")


def record_reserve(reservation_id: str, quantity: int, *, found: bool = False) -> None:
    """``reserve``: the quantity a reservation holds."""
    record_effect(SYSTEM, "reserve", reservation_id, amount=quantity, unit=UNIT, found=found)


def record_release(reservation_id: str, quantity: int) -> None:
    """``release``: the quantity given back."""
    record_effect(SYSTEM, "release", reservation_id, amount=quantity, unit=UNIT)


def record_order(operation: str, order_id: str, *, found: bool = False) -> None:
    """``order_created``, ``order_cancelled``, ``order_closed``: one record each."""
    record_effect(SYSTEM, operation, order_id, found=found)


def record_money(
    operation: str, record_id: str, amount: Decimal, currency: str, *, found: bool = False
) -> None:
    """``invoice``, ``invoice_voided``: an amount of money."""
    record_effect(
        SYSTEM, operation, record_id, amount=amount, currency=currency.upper(), found=found
    )


def lines_total(lines: tuple[OrderLine, ...]) -> Decimal:
    """What the lines come to, exactly (NetSuite's ``total`` without tax or shipping)."""
    return to_cents(sum((line.rate * line.quantity for line in lines), Decimal(0)))


def exact(value: object) -> Decimal:
    """A NetSuite amount (a JSON float, a SuiteQL string) as written, to the cent at least."""
    return to_cents(Decimal(str(value)))


def to_cents(amount: Decimal) -> Decimal:
    """``50.0`` as ``50.00``: the same money, written as finance reads it (finer kept as is)."""
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        return amount.quantize(_CENT)
    return amount
