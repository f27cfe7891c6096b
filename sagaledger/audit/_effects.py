"""Business effects: what a step did in another system, for the compensation ledger.

A connector (or a step's own code) calls :func:`record_effect` when it has done
something with a business meaning: charged a card, refunded it, reserved stock,
created an order. The driver collects the effects of each attempt and keeps
them in the log with the attempt's outcome (``step_completed``,
``step_failed``, ``compensation_completed``...), so the ledger is read from
the log alone: a charge whose step later failed is on record as well.

An effect names its system, its operation and the remote reference, and what
it measures: money (``amount`` and ``currency``), a quantity (``amount`` and
``unit``), or, with neither, one record. Outside a step, recording does nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any


class Collecting(Enum):
    """What the driver is running while it collects."""

    ACTION = "action"  # a step's action or a compensation: effects made now
    PROBE = "probe"  # a probe: effects an earlier attempt made, found now


@dataclass(frozen=True)
class Effect:
    """One business effect in another system.

    Attributes:
        system: The system it happened in (``payments``, ``erp``, ``email``).
        operation: What was done (``charge``, ``refund``, ``reserve``, ``release``).
        reference: The remote system's id for it (a charge id, a sales order id).
        amount: How much: money in major units (``Decimal("9.99")``), or a quantity.
        currency: ISO 4217 code, for money.
        unit: The unit of a quantity (``each``, ``kg``).
    """

    system: str
    operation: str
    reference: str
    amount: Decimal | None = None
    currency: str | None = None
    unit: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The effect as the log keeps it (amounts as decimal strings: exact)."""
        kept: dict[str, Any] = {
            "system": self.system,
            "operation": self.operation,
            "reference": self.reference,
        }
        if self.amount is not None:
            kept["amount"] = str(self.amount)
        if self.currency is not None:
            kept["currency"] = self.currency.upper()
        if self.unit is not None:
            kept["unit"] = self.unit
        return kept

    @classmethod
    def from_json(cls, kept: dict[str, Any]) -> Effect:
        amount = kept.get("amount")
        return cls(
            kept["system"],
            kept["operation"],
            kept["reference"],
            None if amount is None else Decimal(amount),
            kept.get("currency"),
            kept.get("unit"),
        )


_collector: ContextVar[tuple[Collecting, list[Effect]] | None] = ContextVar(
    "sagaledger_effects", default=None
)


def record_effect(
    system: str,
    operation: str,
    reference: str,
    *,
    amount: Decimal | int | str | None = None,
    currency: str | None = None,
    unit: str | None = None,
    found: bool = False,
) -> None:
    """Record a business effect of the step (or compensation) running now.

    Args:
        system: The system it happened in.
        operation: What was done.
        reference: The remote system's id for it.
        amount: Money in major units, or a quantity (exact: a Decimal, int or string).
        currency: For money.
        unit: For a quantity.
        found: The effect was found to exist, not made now: a lookup that
            reports one. It counts only when a probe is running (the probe
            found that an earlier attempt landed), not inside an action.

    Raises:
        ValueError: an amount that is not a number, or both a currency and a unit.
    """
    active = _collector.get()
    if active is None:
        return
    mode, effects = active
    if found and mode is not Collecting.PROBE:
        return
    if currency is not None and unit is not None:
        raise ValueError(f"effect {system}/{operation} {reference}: money or a quantity, not both")
    try:
        exact = None if amount is None else Decimal(str(amount))
    except InvalidOperation:
        exact = Decimal("NaN")
    if exact is not None and not exact.is_finite():
        raise ValueError(f"effect {system}/{operation} {reference}: amount {amount!r}")
    effects.append(Effect(system, operation, str(reference), exact, currency, unit))


@contextmanager
def collecting(mode: Collecting, into: list[Effect]) -> Iterator[None]:
    """Collect the effects recorded in this block into ``into`` (the driver wraps each call)."""
    token = _collector.set((mode, into))
    try:
        yield
    finally:
        _collector.reset(token)
