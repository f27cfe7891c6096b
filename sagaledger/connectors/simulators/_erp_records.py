"""The ERP simulator's records, its status tables, and how it reads them from request bodies."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

RECORD_API = "/services/rest/record/v1/"
RESERVATION = "customrecord_sl_reservation"
CURRENCY = "USD"

#: (SuiteQL transaction type, status id) -> the status's name.
STATUS_NAMES = {
    ("SalesOrd", "A"): "Pending Approval",
    ("SalesOrd", "B"): "Pending Fulfillment",
    ("SalesOrd", "C"): "Cancelled",
    ("SalesOrd", "H"): "Closed",
    ("CustInvc", "A"): "Open",
    ("CustInvc", "B"): "Paid In Full",
    ("CustCred", "B"): "Fully Applied",
}
#: REST record type -> SuiteQL transaction type, and the prefix of its ``tranId``.
TRANSACTION_RECORDS = {"salesOrder": ("SalesOrd", "SO"), "invoice": ("CustInvc", "INV")}
#: The statuses in which an upsert may still change a transaction.
EDITABLE_STATUSES = {"SalesOrd": ("A", "B"), "CustInvc": ("A",)}


@dataclass
class Line:
    """A transaction line."""

    line: int
    item: str
    quantity: int
    rate: Decimal
    is_closed: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "item": {"id": self.item},
            "quantity": self.quantity,
            "rate": float(self.rate),
            "amount": float(self.rate * self.quantity),
            "isClosed": self.is_closed,
        }


@dataclass
class Transaction:
    """A sales order, invoice or credit memo the account holds."""

    type: str  # SuiteQL's: SalesOrd, CustInvc, CustCred
    id: str
    external_id: str | None
    tran_id: str
    customer: str
    status: str
    lines: list[Line] = field(default_factory=list)
    memo: str | None = None
    created_from: str | None = None

    @property
    def total(self) -> Decimal:
        return sum((line.rate * line.quantity for line in self.lines), Decimal(0))


@dataclass
class Reservation:
    """A ``customrecord_sl_reservation`` instance."""

    id: str
    external_id: str
    item: str
    quantity: int
    memo: str | None = None
    released: bool = False


class InvalidContent(Exception):
    """A request body NetSuite would refuse with 400 INVALID_CONTENT."""


# -- parsing bodies -----------------------------------------------------------------


def ref_id(body: Any, name: str, *, required: bool = True) -> Any:
    value = body.get(name) if isinstance(body, dict) else None
    if isinstance(value, dict) and value.get("id") not in (None, ""):
        return str(value["id"])
    if required:
        raise InvalidContent(f"field {name!r} needs a reference: {{'id': ...}}")
    return None


def sublist_items(body: Any) -> list[Any]:
    sublist = body.get("item") if isinstance(body, dict) else None
    items = sublist.get("items") if isinstance(sublist, dict) else None
    return items if isinstance(items, list) else []


def parse_lines(body: Any) -> list[Line]:
    items = sublist_items(body)
    if not items:
        raise InvalidContent("a transaction needs at least one line in item.items")
    lines = []
    for n, raw in enumerate(items, start=1):
        if not isinstance(raw, dict):
            raise InvalidContent(f"item.items[{n - 1}] is not an object")
        try:
            rate = Decimal(str(raw.get("rate", 0)))
        except InvalidOperation:
            raise InvalidContent(f"item.items[{n - 1}].rate is not a number") from None
        item = ref_id(raw, "item")
        lines.append(
            Line(n, item, parse_quantity(raw.get("quantity"), f"item.items[{n - 1}]"), rate)
        )
    return lines


def closing_line(raw: Any) -> int:
    if not (isinstance(raw, dict) and raw.get("isClosed") is True and "line" in raw):
        raise InvalidContent("to close lines, send item.items of {'line': n, 'isClosed': true}")
    return int(raw["line"])


def parse_quantity(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 1:
        raise InvalidContent(f"{where}: quantity must be a number >= 1, got {value!r}")
    return int(value)


def numbered(lines: list[Line]) -> list[Line]:
    return [Line(n, x.item, x.quantity, x.rate, x.is_closed) for n, x in enumerate(lines, 1)]


def line_key(line: Line) -> tuple[str, int, Decimal, bool]:
    return (line.item, line.quantity, line.rate, line.is_closed)


def minor_units(amount: Decimal) -> int:
    return int((amount * 100).to_integral_value())
