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
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from sagaledger.connectors._oauth1 import DEFAULT_MAX_SKEW, OAuth1Credentials, OAuth1Verifier
from sagaledger.connectors.simulators._erp_operations import ErpOperations
from sagaledger.connectors.simulators._erp_records import CURRENCY as CURRENCY  # re-export
from sagaledger.connectors.simulators._erp_records import (
    RECORD_API,
    RESERVATION,
    TRANSACTION_RECORDS,
    InvalidContent,
    Reservation,
    Transaction,
    closing_line,
    parse_lines,
    parse_quantity,
    ref_id,
    sublist_items,
)
from sagaledger.connectors.simulators._erp_records import Line as Line  # re-export
from sagaledger.connectors.simulators._erp_suiteql import suiteql
from sagaledger.connectors.simulators._faults import Fault
from sagaledger.connectors.simulators._http import Operation, SimRequest, SimResponse

SUITEQL_API = "/services/rest/query/v1/suiteql"

_LOGIN_DETAIL = (
    "Invalid login attempt. For more details, see the Login Audit Trail in the NetSuite UI "
    "at Setup > Users/Roles > User Management > View Login Audit Trail."
)


class ErpSimulator(ErpOperations):
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
            return suiteql(request, self.transactions, self.reservations, self.error)
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
        except InvalidContent as exc:
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
            raise InvalidContent("the request body must be a JSON object")
        if record in TRANSACTION_RECORDS:
            if method == "PUT" and eid and not rest:
                lines = parse_lines(body)
                customer = ref_id(body, "entity")
                op = f"upsert_{'sales_order' if record == 'salesOrder' else 'invoice'}"
                return op, lambda: self._upsert_transaction(
                    record, eid, customer, lines, body, "item" in replace, request
                )
            if method == "GET" and ref and not rest:
                op = "get_sales_order" if record == "salesOrder" else "get_invoice"
                expand = request.query.get("expandSubResources", ["false"])[0] == "true"
                return op, lambda: self._get_transaction(record, ref, expand, request)
            if method == "PATCH" and record == "salesOrder" and ref.isdigit() and not rest:
                if ref_id(body, "orderStatus", required=False) == "C":
                    return "cancel_sales_order", lambda: self._cancel(ref)
                closing = [closing_line(i) for i in sublist_items(body)]
                if closing:
                    return "close_sales_order", lambda: self._close(ref, closing)
                raise InvalidContent("this simulator's PATCH of a sales order cancels or closes it")
            if record == "invoice" and method == "POST" and rest == ["!transform", "creditMemo"]:
                memo_eid = body.get("externalId") if isinstance(body, dict) else None
                return "void_invoice", lambda: self._credit(ref, memo_eid, request)
        if record == RESERVATION:
            if method == "PUT" and eid and not rest:
                item = ref_id(body, "custrecord_sl_item")
                quantity = parse_quantity(
                    body.get("custrecord_sl_quantity"), "custrecord_sl_quantity"
                )
                memo = body.get("custrecord_sl_memo")
                return "reserve", lambda: self._reserve(eid, item, quantity, memo, request)
            if method == "PATCH" and ref.isdigit() and not rest:
                if not (isinstance(body, dict) and body.get("custrecord_sl_released") is True):
                    raise InvalidContent("this simulator's PATCH of a reservation releases it")
                return "release", lambda: self._release(ref)
            if method == "GET" and ref and not rest:
                return "get_reservation", lambda: self._get_reservation(ref, request)
        return self.error(
            404, "INVALID_URL", f"{method} {request.path} is not a resource this simulator serves"
        )
