"""What the NetSuite connector takes and returns, and how it names records and accounts."""

from __future__ import annotations

import hashlib
import re
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

#: External ids kept as given: safe in a URL path and inside a SuiteQL string.
_PLAIN_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,150}$")


def external_id(idempotency_key: str, part: str | None = None) -> str:
    """The ``externalId`` of the record a step writes, derived from its idempotency key.

    The key itself when it is short and plain (what finance sees in NetSuite
    then names the run and step); otherwise a digest of it, so the id stays
    safe in a URL and in a query.

    Args:
        idempotency_key: ``ctx.idempotency_key`` of the step.
        part: Tells apart several records written by one step (``line-2``).
    """
    value = idempotency_key if part is None else f"{idempotency_key}:{part}"
    if _PLAIN_ID.match(value):
        return value
    return "sl-" + hashlib.sha256(value.encode()).hexdigest()[:40]


def account_url(account: str) -> str:
    """The REST host of an account: ``1234567_SB1`` -> ``https://1234567-sb1.suitetalk...``."""
    return f"https://{account.lower().replace('_', '-')}.suitetalk.api.netsuite.com"


# -- what goes in -------------------------------------------------------------------


class OrderLine(BaseModel):
    """One line of a sales order or an invoice."""

    model_config = ConfigDict(frozen=True)

    item: str
    quantity: int = Field(ge=1)
    rate: Decimal = Field(ge=0)

    def body(self) -> dict[str, Any]:
        return {"item": {"id": self.item}, "quantity": self.quantity, "rate": float(self.rate)}


class NewSalesOrder(BaseModel):
    """A sales order to create (or update, by external id)."""

    model_config = ConfigDict(frozen=True)

    customer: str
    lines: tuple[OrderLine, ...] = Field(min_length=1)
    memo: str | None = None


class NewInvoice(BaseModel):
    """An invoice to create (or update, by external id)."""

    model_config = ConfigDict(frozen=True)

    customer: str
    lines: tuple[OrderLine, ...] = Field(min_length=1)
    sales_order: str | None = None
    memo: str | None = None


# -- what comes out -----------------------------------------------------------------


class RecordRef(BaseModel):
    """A record NetSuite holds: its type, internal id and external id."""

    model_config = ConfigDict(frozen=True)

    record_type: str
    id: str
    external_id: str


class SalesOrderLine(BaseModel):
    """A line of a sales order as NetSuite returns it."""

    model_config = ConfigDict(frozen=True)

    line: int
    item: str
    quantity: int
    rate: Decimal
    is_closed: bool


class SalesOrder(BaseModel):
    """A sales order as NetSuite returns it."""

    model_config = ConfigDict(frozen=True)

    id: str
    external_id: str | None
    tran_id: str
    status_id: str
    status: str
    total: Decimal
    lines: tuple[SalesOrderLine, ...]


def sales_order_from_json(body: dict[str, Any]) -> SalesOrder:
    """Read NetSuite's sales order JSON (with its expanded ``item`` sublist)."""
    status = body.get("orderStatus") or {}
    items = (body.get("item") or {}).get("items", [])
    lines = tuple(
        SalesOrderLine(
            line=int(i["line"]),
            item=str((i.get("item") or {}).get("id", "")),
            quantity=int(i.get("quantity", 0)),
            rate=Decimal(str(i.get("rate", 0))),
            is_closed=bool(i.get("isClosed", False)),
        )
        for i in items
    )
    return SalesOrder(
        id=str(body["id"]),
        external_id=body.get("externalId"),
        tran_id=str(body.get("tranId", "")),
        status_id=str(status.get("id", "")),
        status=str(status.get("refName", "")),
        total=Decimal(str(body.get("total", 0))),
        lines=lines,
    )
