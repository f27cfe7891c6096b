"""What each ERP simulator operation does to the account's records, as NetSuite would."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from sagaledger.connectors.simulators._erp_records import (
    CURRENCY,
    EDITABLE_STATUSES,
    RECORD_API,
    RESERVATION,
    STATUS_NAMES,
    TRANSACTION_RECORDS,
    Line,
    Reservation,
    Transaction,
    line_key,
    minor_units,
    numbered,
    ref_id,
)
from sagaledger.connectors.simulators._erp_suiteql import reservation_row
from sagaledger.connectors.simulators._faults import Effect
from sagaledger.connectors.simulators._http import HttpSimulator, SimRequest, SimResponse


class ErpOperations(HttpSimulator):
    """The records of a simulated NetSuite account and the operations that change them.

    :class:`~sagaledger.connectors.simulators.erp.ErpSimulator` sets the state
    up and routes requests here.
    """

    stock: dict[str, int]
    transactions: dict[str, Transaction]
    reservations: dict[str, Reservation]
    _ids: Iterator[int]

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
        type_ = TRANSACTION_RECORDS[record][0]
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
        type_, prefix = TRANSACTION_RECORDS[record]
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
                numbered(lines),
                memo,
                ref_id(body, "createdFrom", required=False),
            )
            self.transactions[new_id] = created
            operation = "order_created" if type_ == "SalesOrd" else "invoice_created"
            self._record(operation, created, created.total)
            return self._location(request, record, new_id)
        if existing.status not in EDITABLE_STATUSES[type_]:
            return self.error(
                400,
                "USER_ERROR",
                f"{record} {existing.id} is {STATUS_NAMES[(type_, existing.status)]}: "
                "it cannot change",
            )
        before = (existing.customer, existing.memo, [line_key(x) for x in existing.lines])
        kept = [] if replace else existing.lines
        existing.customer, existing.memo = customer, memo
        existing.lines = numbered(kept + lines)
        if before != (existing.customer, existing.memo, [line_key(x) for x in existing.lines]):
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
                status_field: {
                    "id": found.status,
                    "refName": STATUS_NAMES[(found.type, found.status)],
                },
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
                f"sales order {order.id} is {STATUS_NAMES[('SalesOrd', order.status)]}: "
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
        return SimResponse(200, reservation_row(found))

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
                minor_units(total),
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
