"""A simulated NetSuite account: the REST record API, SuiteQL and token-based authentication.

What it does as NetSuite does:

- every request must carry a valid OAuth 1.0a HMAC-SHA256 signature for this
  account (``realm``), a fresh nonce and a timestamp near the server's clock;
  otherwise ``401 INVALID_LOGIN`` (the reason goes to :attr:`ErpSimulator.login_audit_trail`,
  as NetSuite keeps it in its login audit trail, not in the answer);
- ``PUT .../{type}/eid:{externalId}`` upserts: a second PUT with the same
  external id updates the record, never duplicates it; sublist lines are added
  to the existing ones unless the query says ``replace=item``;
- writes answer ``204`` with a ``Location`` header naming the record;
- errors come in NetSuite's shape (``type``, ``title``, ``status``, ``o:errorDetails``).

What it models in its own way (see ``connectors/erp.py``): inventory
reservations as a custom record whose user event refuses more than the stock
on hand, cancel as a PATCH of ``orderStatus``, and an invoice's void as its
transform into a credit memo. SuiteQL understands one shape only, enough for a
probe: ``SELECT cols FROM transaction|customrecord_sl_reservation WHERE
externalid = '...' [AND type = '...']``.

Effects in the ledger: ``reserve``, ``release``, ``order_created``,
``order_updated``, ``order_cancelled``, ``order_closed``, ``invoice_created``,
``invoice_updated``, ``invoice_voided``; ``amount`` holds the quantity for
stock and minor units (USD) for money.
"""

from __future__ import annotations

import http
import itertools
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from sagaledger.connectors._oauth1 import DEFAULT_MAX_SKEW, OAuth1Credentials, OAuth1Verifier
from sagaledger.connectors.simulators._faults import Effect, Fault
from sagaledger.connectors.simulators._http import HttpSimulator, Operation, SimRequest, SimResponse

RECORD_API = "/services/rest/record/v1/"
SUITEQL_API = "/services/rest/query/v1/suiteql"
RESERVATION = "customrecord_sl_reservation"
CURRENCY = "USD"

_LOGIN_DETAIL = (
    "Invalid login attempt. For more details, see the Login Audit Trail in the NetSuite UI "
    "at Setup > Users/Roles > User Management > View Login Audit Trail."
)
_SUITEQL = re.compile(
    r"^\s*SELECT\s+(?P<cols>\w+(?:\s*,\s*\w+)*)\s+FROM\s+(?P<table>\w+)\s+"
    r"WHERE\s+externalid\s*=\s*'(?P<eid>(?:[^']|'')*)'"
    r"(?:\s+AND\s+type\s*=\s*'(?P<type>\w+)')?\s*;?\s*$",
    re.IGNORECASE,
)
#: (SuiteQL transaction type, status id) -> the status's name.
_STATUS = {
    ("SalesOrd", "A"): "Pending Approval",
    ("SalesOrd", "B"): "Pending Fulfillment",
    ("SalesOrd", "C"): "Cancelled",
    ("SalesOrd", "H"): "Closed",
    ("CustInvc", "A"): "Open",
    ("CustInvc", "B"): "Paid In Full",
    ("CustCred", "B"): "Fully Applied",
}
#: REST record type -> SuiteQL transaction type, and the prefix of its ``tranId``.
_TRANSACTIONS = {"salesOrder": ("SalesOrd", "SO"), "invoice": ("CustInvc", "INV")}
#: The statuses in which an upsert may still change a transaction.
_EDITABLE = {"SalesOrd": ("A", "B"), "CustInvc": ("A",)}
#: The columns this simulator's SuiteQL knows, per table.
_COLUMNS = {
    "transaction": frozenset(
        {"id", "externalid", "type", "status", "tranid", "entity", "foreigntotal", "memo"}
        | {"createdfrom"}
    ),
    RESERVATION: frozenset(
        {"id", "externalid", "custrecord_sl_item", "custrecord_sl_quantity"}
        | {"custrecord_sl_memo", "custrecord_sl_released"}
    ),
}


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


class _Invalid(Exception):
    """A request body NetSuite would refuse with 400 INVALID_CONTENT."""


class ErpSimulator(HttpSimulator):
    """A NetSuite account on loopback, for the credentials it is given.

    Args:
        credentials: The only consumer and token it accepts; ``realm`` is the account.
        stock: Quantity on hand per item id; items not listed do not exist.
        port: 0 for any free port.
        max_skew: Seconds a request's ``oauth_timestamp`` may be off.
        clock: Seconds since the epoch, for timestamps.
    """

    system = "erp"

    def __init__(
        self,
        credentials: OAuth1Credentials,
        *,
        stock: Mapping[str, int] | None = None,
        port: int = 0,
        max_skew: float = DEFAULT_MAX_SKEW,
        clock: Callable[[], float] = time.time,
    ):
        super().__init__(port)
        self.verifier = OAuth1Verifier(credentials, max_skew=max_skew, clock=clock)
        #: Why each refused login was refused, in order.
        self.login_audit_trail: list[str] = []
        self.stock: dict[str, int] = dict(stock or {})
        self.transactions: dict[str, Transaction] = {}
        self.reservations: dict[str, Reservation] = {}
        self._ids = itertools.count(1001)

    # -- state read by tests --------------------------------------------------------

    def available(self, item: str) -> int:
        """Stock on hand minus what live reservations hold."""
        held = sum(
            r.quantity for r in self.reservations.values() if r.item == item and not r.released
        )
        return self.stock.get(item, 0) - held

    def sales_orders(self) -> list[Transaction]:
        """Every sales order, oldest first."""
        return [t for t in self.transactions.values() if t.type == "SalesOrd"]

    # -- HttpSimulator --------------------------------------------------------------

    def authenticate(self, request: SimRequest) -> SimResponse | None:
        host = request.header("host") or "127.0.0.1"
        pairs = [(k, v) for k, values in request.query.items() for v in values]
        url = f"http://{host}{request.path}"
        if pairs:
            url += "?" + urllib.parse.urlencode(pairs)
        reason = self.verifier.verify(request.method, url, request.header("authorization"))
        if reason is None:
            return None
        self.login_audit_trail.append(reason)
        return self.error(401, "INVALID_LOGIN", _LOGIN_DETAIL)

    def error(self, status: int, code: str, message: str) -> SimResponse:
        if code == "simulated_error":
            code = "UNEXPECTED_ERROR"
        return SimResponse(
            status,
            {
                "type": "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html",
                "title": http.HTTPStatus(status).phrase,
                "status": status,
                "o:errorDetails": [{"detail": message, "o:errorCode": code}],
            },
        )

    def decline(self, operation: str, fault: Fault) -> SimResponse:
        default = "SL_INSUFFICIENT_STOCK" if operation == "reserve" else "USER_ERROR"
        return self.error(400, fault.code or default, f"{operation} refused (simulated)")

    def route(self, request: SimRequest) -> Operation | SimResponse:
        if request.path == SUITEQL_API and request.method == "POST":
            return self._suiteql(request)
        if not request.path.startswith(RECORD_API):
            return self.error(404, "INVALID_URL", f"no REST resource at {request.path}")
        parts = request.path.removeprefix(RECORD_API).split("/")
        record, ref, rest = parts[0], (parts[1] if len(parts) > 1 else ""), parts[2:]
        try:
            body = request.json() if request.body else None
        except ValueError:
            return self.error(400, "INVALID_CONTENT", "the request body is not JSON")
        replace = ",".join(request.query.get("replace", [])).split(",")
        try:
            return self._record_route(request.method, record, ref, rest, body, replace, request)
        except _Invalid as exc:
            return self.error(400, "INVALID_CONTENT", str(exc))

    def _record_route(
        self,
        method: str,
        record: str,
        ref: str,
        rest: list[str],
        body: Any,
        replace: list[str],
        request: SimRequest,
    ) -> Operation | SimResponse:
        eid = urllib.parse.unquote(ref[4:]) if ref.startswith("eid:") else None
        if method != "GET" and not isinstance(body, dict):
            raise _Invalid("the request body must be a JSON object")
        if record in _TRANSACTIONS:
            if method == "PUT" and eid and not rest:
                lines = _lines(body)
                customer = _ref_id(body, "entity")
                op = f"upsert_{'sales_order' if record == 'salesOrder' else 'invoice'}"
                return op, lambda: self._upsert_transaction(
                    record, eid, customer, lines, body, "item" in replace, request
                )
            if method == "GET" and ref and not rest:
                op = "get_sales_order" if record == "salesOrder" else "get_invoice"
                expand = request.query.get("expandSubResources", ["false"])[0] == "true"
                return op, lambda: self._get_transaction(record, ref, expand, request)
            if method == "PATCH" and record == "salesOrder" and ref.isdigit() and not rest:
                if _ref_id(body, "orderStatus", required=False) == "C":
                    return "cancel_sales_order", lambda: self._cancel(ref)
                closing = [_closing_line(i) for i in _items(body)]
                if closing:
                    return "close_sales_order", lambda: self._close(ref, closing)
                raise _Invalid("this simulator's PATCH of a sales order cancels or closes it")
            if record == "invoice" and method == "POST" and rest == ["!transform", "creditMemo"]:
                memo_eid = body.get("externalId") if isinstance(body, dict) else None
                return "void_invoice", lambda: self._credit(ref, memo_eid, request)
        if record == RESERVATION:
            if method == "PUT" and eid and not rest:
                item = _ref_id(body, "custrecord_sl_item")
                quantity = _quantity(body.get("custrecord_sl_quantity"), "custrecord_sl_quantity")
                memo = body.get("custrecord_sl_memo")
                return "reserve", lambda: self._reserve(eid, item, quantity, memo, request)
            if method == "PATCH" and ref.isdigit() and not rest:
                if not (isinstance(body, dict) and body.get("custrecord_sl_released") is True):
                    raise _Invalid("this simulator's PATCH of a reservation releases it")
                return "release", lambda: self._release(ref)
            if method == "GET" and ref and not rest:
                return "get_reservation", lambda: self._get_reservation(ref, request)
        return self.error(
            404, "INVALID_URL", f"{method} {request.path} is not a resource this simulator serves"
        )

    # -- operations (each runs under the simulator's lock) ------------------------------

    def _new_id(self) -> str:
        return str(next(self._ids))

    def _location(self, request: SimRequest, record: str, record_id: str) -> SimResponse:
        host = request.header("host") or "127.0.0.1"
        # 204 must carry no body: bytes, so that nothing follows the headers.
        return SimResponse(204, b"", {"Location": f"http://{host}{RECORD_API}{record}/{record_id}"})

    def _find(self, type_: str, eid: str) -> Transaction | None:
        return next(
            (t for t in self.transactions.values() if t.type == type_ and t.external_id == eid),
            None,
        )

    def _lookup(self, record: str, ref: str) -> Transaction | None:
        type_ = _TRANSACTIONS[record][0]
        if ref.startswith("eid:"):
            return self._find(type_, urllib.parse.unquote(ref[4:]))
        found = self.transactions.get(ref)
        return found if found is not None and found.type == type_ else None

    def _upsert_transaction(
        self,
        record: str,
        eid: str,
        customer: str,
        lines: list[Line],
        body: dict[str, Any],
        replace: bool,
        request: SimRequest,
    ) -> SimResponse:
        type_, prefix = _TRANSACTIONS[record]
        for line in lines:
            if line.item not in self.stock:
                return self._invalid_item(line.item, "item")
        existing = self._find(type_, eid)
        memo = body.get("memo")
        if existing is None:
            new_id = self._new_id()
            created = Transaction(
                type_,
                new_id,
                eid,
                f"{prefix}{new_id}",
                customer,
                "B" if type_ == "SalesOrd" else "A",
                _numbered(lines),
                memo,
                _ref_id(body, "createdFrom", required=False),
            )
            self.transactions[new_id] = created
            operation = "order_created" if type_ == "SalesOrd" else "invoice_created"
            self._record(operation, created, created.total)
            return self._location(request, record, new_id)
        if existing.status not in _EDITABLE[type_]:
            return self.error(
                400,
                "USER_ERROR",
                f"{record} {existing.id} is {_STATUS[(type_, existing.status)]}: it cannot change",
            )
        before = (existing.customer, existing.memo, [_key(x) for x in existing.lines])
        kept = [] if replace else existing.lines
        existing.customer, existing.memo = customer, memo
        existing.lines = _numbered(kept + lines)
        if before != (existing.customer, existing.memo, [_key(x) for x in existing.lines]):
            operation = "order_updated" if type_ == "SalesOrd" else "invoice_updated"
            self._record(operation, existing, existing.total)
        return self._location(request, record, existing.id)

    def _get_transaction(
        self, record: str, ref: str, expand: bool, request: SimRequest
    ) -> SimResponse:
        found = self._lookup(record, ref)
        if found is None:
            return self._missing(record, ref)
        self_link = f"http://{request.header('host')}{RECORD_API}{record}/{found.id}"
        items: dict[str, Any] = {"links": [{"rel": "self", "href": f"{self_link}/item"}]}
        if expand:
            items["items"] = [line.as_json() for line in found.lines]
        status_field = "orderStatus" if found.type == "SalesOrd" else "status"
        return SimResponse(
            200,
            {
                "links": [{"rel": "self", "href": self_link}],
                "id": found.id,
                "externalId": found.external_id,
                "tranId": found.tran_id,
                "entity": {"id": found.customer},
                status_field: {"id": found.status, "refName": _STATUS[(found.type, found.status)]},
                "total": float(found.total),
                "memo": found.memo,
                "item": items,
            },
        )

    def _cancel(self, ref: str) -> SimResponse:
        order = self._lookup("salesOrder", ref)
        if order is None:
            return self._missing("salesOrder", ref)
        if order.status == "C":
            return SimResponse(204, b"")  # cancelled already: nothing changes
        if order.status != "B" and order.status != "A":
            return self.error(
                400,
                "USER_ERROR",
                f"sales order {order.id} is {_STATUS[('SalesOrd', order.status)]}: "
                "only an order not yet fulfilled can be cancelled",
            )
        order.status = "C"
        self._record("order_cancelled", order, order.total)
        return SimResponse(204, b"")

    def _close(self, ref: str, closing: list[int]) -> SimResponse:
        order = self._lookup("salesOrder", ref)
        if order is None:
            return self._missing("salesOrder", ref)
        if order.status == "C":
            return self.error(400, "USER_ERROR", f"sales order {order.id} is Cancelled")
        by_number = {line.line: line for line in order.lines}
        unknown = [n for n in closing if n not in by_number]
        if unknown:
            return self.error(400, "INVALID_CONTENT", f"order {order.id} has no line(s) {unknown}")
        newly = [by_number[n] for n in closing if not by_number[n].is_closed]
        for line in newly:
            line.is_closed = True
        if all(line.is_closed for line in order.lines) and order.status != "H":
            order.status = "H"
            self._record("order_closed", order, order.total)
        return SimResponse(204, b"")

    def _credit(self, ref: str, memo_eid: Any, request: SimRequest) -> SimResponse:
        invoice = self._lookup("invoice", ref)
        if invoice is None:
            return self._missing("invoice", ref)
        if memo_eid is not None and self._find("CustCred", str(memo_eid)) is not None:
            return self.error(
                400, "DUP_RCRD", f"a credit memo with external id {memo_eid!r} already exists"
            )
        if invoice.status != "A":
            return self.error(400, "USER_ERROR", f"invoice {invoice.id} has no amount due")
        new_id = self._new_id()
        memo = Transaction(
            "CustCred",
            new_id,
            None if memo_eid is None else str(memo_eid),
            f"CM{new_id}",
            invoice.customer,
            "B",
            [Line(x.line, x.item, x.quantity, x.rate) for x in invoice.lines],
            created_from=invoice.id,
        )
        self.transactions[new_id] = memo
        invoice.status = "B"
        self._record("invoice_voided", invoice, invoice.total, credit_memo=new_id)
        return self._location(request, "creditMemo", new_id)

    def _reserve(
        self, eid: str, item: str, quantity: int, memo: Any, request: SimRequest
    ) -> SimResponse:
        if item not in self.stock:
            return self._invalid_item(item, "custrecord_sl_item")
        existing = next((r for r in self.reservations.values() if r.external_id == eid), None)
        held = 0 if existing is None else existing.quantity
        if existing is not None and existing.released:
            return self.error(
                400, "USER_ERROR", f"reservation {existing.id} is released: reserve anew"
            )
        if existing is not None and existing.item != item:
            return self.error(400, "USER_ERROR", f"reservation {existing.id} is for another item")
        if quantity - held > self.available(item):
            return self.error(
                400,
                "SL_INSUFFICIENT_STOCK",
                f"cannot reserve {quantity} of item {item}: "
                f"{self.available(item) + held} available",
            )
        if existing is None:
            existing = Reservation(self._new_id(), eid, item, quantity, memo)
            self.reservations[existing.id] = existing
            self._record_reservation("reserve", existing, quantity)
        elif quantity != held:
            existing.quantity = quantity
            self._record_reservation("reserve", existing, quantity - held, updated=True)
        return self._location(request, RESERVATION, existing.id)

    def _release(self, ref: str) -> SimResponse:
        reservation = self.reservations.get(ref)
        if reservation is None:
            return self._missing(RESERVATION, ref)
        if not reservation.released:  # releasing twice gives nothing back twice
            reservation.released = True
            self._record_reservation("release", reservation, reservation.quantity)
        return SimResponse(204, b"")

    def _get_reservation(self, ref: str, request: SimRequest) -> SimResponse:
        if ref.startswith("eid:"):
            eid = urllib.parse.unquote(ref[4:])
            found = next((r for r in self.reservations.values() if r.external_id == eid), None)
        else:
            found = self.reservations.get(ref)
        if found is None:
            return self._missing(RESERVATION, ref)
        return SimResponse(200, _reservation_row(found))

    def _suiteql(self, request: SimRequest) -> Operation | SimResponse:
        if "transient" not in (request.header("prefer") or ""):
            return self.error(
                400, "INVALID_HEADER", "SuiteQL over REST needs the header 'Prefer: transient'"
            )
        try:
            body = request.json()
        except ValueError:
            body = None
        query = body.get("q") if isinstance(body, dict) else None
        match = _SUITEQL.match(query) if isinstance(query, str) else None
        if match is None:
            return self.error(
                400,
                "INVALID_PARAMETER",
                "this simulator's SuiteQL answers only: SELECT col, ... FROM transaction|"
                f"{RESERVATION} WHERE externalid = '...' [AND type = '...']; got {query!r}",
            )
        table = match["table"].lower()
        if table not in _COLUMNS:
            return self.error(400, "INVALID_PARAMETER", f"unknown table {match['table']!r}")
        columns = [c.strip().lower() for c in match["cols"].split(",")]
        unknown = sorted(set(columns) - _COLUMNS[table])
        if unknown:
            return self.error(400, "INVALID_PARAMETER", f"unknown column(s) {unknown} of {table}")
        eid = match["eid"].replace("''", "'")
        tran_type = match["type"]

        def rows() -> SimResponse:
            found: list[dict[str, Any]] = []
            if table == "transaction":
                found = [
                    _transaction_row(t)
                    for t in self.transactions.values()
                    if t.external_id == eid and tran_type in (None, t.type)
                ]
            else:
                found = [_reservation_row(r) for r in self.reservations.values()]
                found = [r for r in found if r["externalid"] == eid]
            items = [{"links": [], **{c: r[c] for c in columns}} for r in found]
            return SimResponse(
                200,
                {
                    "links": [],
                    "count": len(items),
                    "hasMore": False,
                    "items": items,
                    "offset": 0,
                    "totalResults": len(items),
                },
            )

        return "suiteql", rows

    # -- helpers ----------------------------------------------------------------------

    def _missing(self, record: str, ref: str) -> SimResponse:
        return self.error(
            404, "NONEXISTENT_ID", f"The record instance {record}/{ref} does not exist."
        )

    def _invalid_item(self, item: str, field_name: str) -> SimResponse:
        return self.error(
            400,
            "INVALID_FLD_VALUE",
            f"You have entered an Invalid Field Value {item} for the following field: {field_name}",
        )

    def _record(self, operation: str, t: Transaction, total: Decimal, **detail: Any) -> None:
        self.ledger.record(
            Effect(
                operation,
                t.id,
                t.external_id,
                _minor(total),
                CURRENCY,
                {"tran_id": t.tran_id, "customer": t.customer, **detail},
            )
        )

    def _record_reservation(
        self, operation: str, r: Reservation, quantity: int, **detail: Any
    ) -> None:
        self.ledger.record(
            Effect(operation, r.id, r.external_id, quantity, None, {"item": r.item, **detail})
        )


# -- parsing bodies -----------------------------------------------------------------


def _ref_id(body: Any, name: str, *, required: bool = True) -> Any:
    value = body.get(name) if isinstance(body, dict) else None
    if isinstance(value, dict) and value.get("id") not in (None, ""):
        return str(value["id"])
    if required:
        raise _Invalid(f"field {name!r} needs a reference: {{'id': ...}}")
    return None


def _items(body: Any) -> list[Any]:
    sublist = body.get("item") if isinstance(body, dict) else None
    items = sublist.get("items") if isinstance(sublist, dict) else None
    return items if isinstance(items, list) else []


def _lines(body: Any) -> list[Line]:
    items = _items(body)
    if not items:
        raise _Invalid("a transaction needs at least one line in item.items")
    lines = []
    for n, raw in enumerate(items, start=1):
        if not isinstance(raw, dict):
            raise _Invalid(f"item.items[{n - 1}] is not an object")
        try:
            rate = Decimal(str(raw.get("rate", 0)))
        except InvalidOperation:
            raise _Invalid(f"item.items[{n - 1}].rate is not a number") from None
        item = _ref_id(raw, "item")
        lines.append(Line(n, item, _quantity(raw.get("quantity"), f"item.items[{n - 1}]"), rate))
    return lines


def _closing_line(raw: Any) -> int:
    if not (isinstance(raw, dict) and raw.get("isClosed") is True and "line" in raw):
        raise _Invalid("to close lines, send item.items of {'line': n, 'isClosed': true}")
    return int(raw["line"])


def _quantity(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 1:
        raise _Invalid(f"{where}: quantity must be a number >= 1, got {value!r}")
    return int(value)


def _numbered(lines: list[Line]) -> list[Line]:
    return [Line(n, x.item, x.quantity, x.rate, x.is_closed) for n, x in enumerate(lines, 1)]


def _key(line: Line) -> tuple[str, int, Decimal, bool]:
    return (line.item, line.quantity, line.rate, line.is_closed)


def _minor(amount: Decimal) -> int:
    return int((amount * 100).to_integral_value())


def _transaction_row(t: Transaction) -> dict[str, Any]:
    return {
        "id": t.id,
        "externalid": t.external_id,
        "type": t.type,
        "status": t.status,
        "tranid": t.tran_id,
        "entity": t.customer,
        "foreigntotal": str(t.total),
        "memo": t.memo,
        "createdfrom": t.created_from,
    }


def _reservation_row(r: Reservation) -> dict[str, Any]:
    return {
        "id": r.id,
        "externalid": r.external_id,
        "custrecord_sl_item": r.item,
        "custrecord_sl_quantity": r.quantity,
        "custrecord_sl_memo": r.memo,
        "custrecord_sl_released": "T" if r.released else "F",
    }
