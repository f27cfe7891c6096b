"""A NetSuite-style ERP connector: the REST record API, signed with token-based authentication.

Every write is an upsert by ``externalId`` (``PUT .../salesOrder/eid:{externalId}``),
the mechanism NetSuite integrations rely on to avoid duplicates: the external id
is derived from the step's idempotency key, so a retried step updates the record
its first attempt created instead of creating a second one. A SuiteQL query by
external id is the probe that tells whether an attempt whose response was lost
landed.

How calls end, and what the orchestrator is told (see ``_http`` for the rest):

=========================================  ======================
NetSuite answers                           raised
=========================================  ======================
429 (concurrency limit of the account)     ``RateLimitedError``
400 ``SSS_REQUEST_LIMIT_EXCEEDED``         ``RateLimitedError``
401 ``INVALID_LOGIN``                      ``PermanentError``
other 4xx (invalid field, refused)         ``PermanentError``
5xx                                        ``RetryableError``
=========================================  ======================

Closing and cancelling a sales order, and voiding an invoice, are modelled as
follows (the REST API has no single "cancel" or "void" call):

- close: a PATCH that sets ``isClosed`` on every open line; NetSuite then shows
  the order as Closed. This is the documented way through web services.
- cancel: a PATCH of ``orderStatus`` to ``C`` (Cancelled), for an order not yet
  fulfilled or billed. Accounts whose configuration refuses it can close instead.
- void an invoice: the invoice is transformed into a credit memo for its full
  amount (``POST .../invoice/{id}/!transform/creditMemo``), the accounting
  reversal NetSuite offers to integrations; the memo's ``externalId`` makes it
  happen once.

Each call records what it did for the compensation ledger (system ``erp``:
``reserve``, ``release``, ``order_created``, ``order_cancelled``,
``order_closed``, ``invoice``, ``invoice_voided``; the ``find_*`` lookups record
what they found, which counts while a probe runs): see docs/connectors.md.
"""

from __future__ import annotations

from typing import Any

import httpx

from sagaledger._errors import PermanentError, RateLimitedError, StepError
from sagaledger.connectors._erp_effects import (
    exact,
    lines_total,
    record_money,
    record_order,
    record_release,
    record_reserve,
)
from sagaledger.connectors._erp_models import (
    NewInvoice,
    NewSalesOrder,
    OrderLine,
    RecordRef,
    SalesOrder,
    SalesOrderLine,
    account_url,
    external_id,
    sales_order_from_json,
)
from sagaledger.connectors._http import (
    CONNECT_ATTEMPTS,
    DEFAULT_RETRY_AFTER,
    DEFAULT_TIMEOUT,
    HttpConnector,
)
from sagaledger.connectors._oauth1 import OAuth1Credentials, OAuth1Signer

RECORD_API = "/services/rest/record/v1"
SUITEQL_API = "/services/rest/query/v1/suiteql"
#: The custom record type that holds inventory reservations.
RESERVATION_RECORD = "customrecord_sl_reservation"
#: Error codes NetSuite answers with a 400 when the account's concurrency limit
#: is reached (RESTlets and the older endpoints); REST web services send a 429.
CONCURRENCY_ERROR_CODES = frozenset({"SSS_REQUEST_LIMIT_EXCEEDED"})
#: SuiteQL ``transaction.type`` of each transaction record this connector writes.
TRANSACTION_TYPES = {"salesOrder": "SalesOrd", "invoice": "CustInvc", "creditMemo": "CustCred"}


class NetSuiteErp(HttpConnector):
    """Sales orders, inventory reservations and invoices in a NetSuite account.

    Args:
        credentials: The integration's consumer and access token; ``realm`` is
            the account id.
        base_url: The REST host; the account's own by default (a simulator's
            URL in tests).
        client: An ``httpx.Client`` to share (see :class:`HttpConnector`).
        timeout: Per-request timeouts when this connector makes its client.
        connect_attempts: Tries per call while the request cannot be sent.
        signer: Signs each request; one for ``credentials`` by default (inject
            one with a fixed nonce or clock in tests).
        currency: ISO code of the account's currency, in which invoices and
            credit memos are recorded for the compensation ledger.
    """

    def __init__(
        self,
        credentials: OAuth1Credentials,
        *,
        base_url: str | None = None,
        client: httpx.Client | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        connect_attempts: int = CONNECT_ATTEMPTS,
        signer: OAuth1Signer | None = None,
        currency: str = "USD",
    ):
        super().__init__(
            "netsuite",
            base_url or account_url(credentials.realm),
            client=client,
            timeout=timeout,
            secrets=credentials.secrets(),
            connect_attempts=connect_attempts,
        )
        self._signer = signer or OAuth1Signer(credentials)
        self.currency = currency.upper()

    # -- sales orders -------------------------------------------------------------

    def upsert_sales_order(self, external_id: str, order: NewSalesOrder) -> RecordRef:
        """Create the sales order with this external id, or update the one that has it.

        ``replace=item`` makes a repeated upsert replace the lines rather than
        add them again, so retrying leaves one order with the same lines.
        """
        body: dict[str, Any] = {
            "entity": {"id": order.customer},
            "item": {"items": [line.body() for line in order.lines]},
        }
        if order.memo is not None:
            body["memo"] = order.memo
        created = self._upsert("salesOrder", external_id, body, "upsert_sales_order")
        record_order("order_created", created.id)
        return created

    def get_sales_order(self, order_id: str) -> SalesOrder:
        """Read a sales order with its lines (``order_id``: internal id or ``eid:...``)."""
        response = self._call(
            "GET",
            f"{RECORD_API}/salesOrder/{order_id}",
            "get_sales_order",
            params={"expandSubResources": "true"},
        )
        return sales_order_from_json(response.json())

    def cancel_sales_order(self, order_id: str) -> None:
        """Cancel an order not yet fulfilled (``orderStatus`` -> ``C``); twice is a no-op."""
        self._call(
            "PATCH",
            f"{RECORD_API}/salesOrder/{order_id}",
            "cancel_sales_order",
            json={"orderStatus": {"id": "C"}},
        )
        record_order("order_cancelled", order_id)

    def close_sales_order(self, order_id: str) -> None:
        """Close every open line of an order, which closes the order.

        Reads the order first to learn its line numbers; closing a closed order
        sends nothing more.
        """
        order = self.get_sales_order(order_id)
        open_lines = [line.line for line in order.lines if not line.is_closed]
        if open_lines:
            self._call(
                "PATCH",
                f"{RECORD_API}/salesOrder/{order.id}",
                "close_sales_order",
                json={"item": {"items": [{"line": n, "isClosed": True} for n in open_lines]}},
            )
        record_order("order_closed", order.id)

    def find_sales_order(self, external_id: str) -> RecordRef | None:
        """The sales order with this external id, or None (the probe of an upsert)."""
        found = self._find_transaction("salesOrder", external_id)
        if found is not None:
            record_order("order_created", found.id, found=True)
        return found

    # -- inventory reservations ---------------------------------------------------

    def reserve(
        self, external_id: str, item: str, quantity: int, *, memo: str | None = None
    ) -> RecordRef:
        """Reserve ``quantity`` of ``item`` (upsert of a reservation record by external id).

        Raises:
            PermanentError: the item is unknown or has not that much stock.
        """
        body: dict[str, Any] = {
            "custrecord_sl_item": {"id": item},
            "custrecord_sl_quantity": quantity,
        }
        if memo is not None:
            body["custrecord_sl_memo"] = memo
        reserved = self._upsert(RESERVATION_RECORD, external_id, body, "reserve")
        record_reserve(reserved.id, quantity)
        return reserved

    def release(self, reservation_id: str) -> None:
        """Give a reservation's stock back; releasing twice is a no-op.

        Reads the reservation first, to record the quantity it gives back.
        """
        path = f"{RECORD_API}/{RESERVATION_RECORD}/{reservation_id}"
        held = self._call("GET", path, "get_reservation").json()
        self._call("PATCH", path, "release", json={"custrecord_sl_released": True})
        record_release(reservation_id, int(held["custrecord_sl_quantity"]))

    def find_reservation(self, external_id: str) -> RecordRef | None:
        """The reservation with this external id, or None (the probe of :meth:`reserve`)."""
        row = self.find(
            RESERVATION_RECORD, external_id, columns=("id", "externalid", "custrecord_sl_quantity")
        )
        if row is None:
            return None
        found = RecordRef(**_ref(RESERVATION_RECORD, row, external_id))
        record_reserve(found.id, int(row["custrecord_sl_quantity"]), found=True)
        return found

    # -- invoices -----------------------------------------------------------------

    def upsert_invoice(self, external_id: str, invoice: NewInvoice) -> RecordRef:
        """Create the invoice with this external id, or update the one that has it."""
        body: dict[str, Any] = {
            "entity": {"id": invoice.customer},
            "item": {"items": [line.body() for line in invoice.lines]},
        }
        if invoice.sales_order is not None:
            body["createdFrom"] = {"id": invoice.sales_order}
        if invoice.memo is not None:
            body["memo"] = invoice.memo
        created = self._upsert("invoice", external_id, body, "upsert_invoice")
        record_money("invoice", created.id, lines_total(invoice.lines), self.currency)
        return created

    def void_invoice(self, invoice_id: str, *, external_id: str) -> RecordRef:
        """Reverse an invoice with a credit memo for its full amount, once per ``external_id``.

        Args:
            invoice_id: The invoice's internal id.
            external_id: The credit memo's external id (derive it from the
                compensation's idempotency key); if a memo with it exists, it is
                returned and nothing is sent.

        The invoice is read first, for the amount the memo credits.
        """
        total = exact(
            self._call("GET", f"{RECORD_API}/invoice/{invoice_id}", "get_invoice").json()["total"]
        )
        memo = self._find_transaction("creditMemo", external_id)
        if memo is None:
            response = self._call(
                "POST",
                f"{RECORD_API}/invoice/{invoice_id}/!transform/creditMemo",
                "void_invoice",
                json={"externalId": external_id},
            )
            memo = self._created("creditMemo", external_id, response)
        record_money("invoice_voided", memo.id, total, self.currency)
        return memo

    def find_invoice(self, external_id: str) -> RecordRef | None:
        """The invoice with this external id, or None (the probe of an upsert)."""
        row = self.find(
            "transaction",
            external_id,
            tran_type=TRANSACTION_TYPES["invoice"],
            columns=("id", "externalid", "foreigntotal"),
        )
        if row is None:
            return None
        found = RecordRef(**_ref("invoice", row, external_id))
        record_money("invoice", found.id, exact(row["foreigntotal"]), self.currency, found=True)
        return found

    # -- SuiteQL ------------------------------------------------------------------

    def suiteql(self, query: str, *, limit: int = 1000) -> list[dict[str, Any]]:
        """Run a SuiteQL query and return its rows (column names lower-case, as NetSuite sends)."""
        response = self._call(
            "POST",
            SUITEQL_API,
            "suiteql",
            params={"limit": str(limit)},
            json={"q": query},
            headers={"Prefer": "transient"},
        )
        items = response.json().get("items", [])
        return [{k: v for k, v in row.items() if k != "links"} for row in items]

    def find(
        self,
        table: str,
        external_id: str,
        *,
        tran_type: str | None = None,
        columns: tuple[str, ...] = ("id", "externalid"),
    ) -> dict[str, Any] | None:
        """The row of ``table`` whose ``externalid`` is ``external_id``, or None.

        Args:
            table: ``transaction`` or a custom record type.
            external_id: The record's external id.
            tran_type: For ``transaction``, the type to match (``SalesOrd``),
                since external ids are unique per record type only.
            columns: The columns to read.
        """
        where = f"externalid = {_sql_string(external_id)}"
        if tran_type is not None:
            where += f" AND type = {_sql_string(tran_type)}"
        selected = ", ".join(columns)
        rows = self.suiteql(f"SELECT {selected} FROM {table} WHERE {where}", limit=2)
        return rows[0] if rows else None

    # -- plumbing -----------------------------------------------------------------

    def _find_transaction(self, record_type: str, external_id: str) -> RecordRef | None:
        row = self.find("transaction", external_id, tran_type=TRANSACTION_TYPES[record_type])
        return None if row is None else RecordRef(**_ref(record_type, row, external_id))

    def _upsert(
        self, record_type: str, external_id: str, body: dict[str, Any], operation: str
    ) -> RecordRef:
        params = {"replace": "item"} if "item" in body else None
        response = self._call(
            "PUT",
            f"{RECORD_API}/{record_type}/eid:{external_id}",
            operation,
            params=params,
            json=body,
        )
        return self._created(record_type, external_id, response)

    def _created(self, record_type: str, external_id: str, response: httpx.Response) -> RecordRef:
        """The record a 204 answer points at in its ``Location`` header."""
        location = response.headers.get("Location", "")
        record_id = location.rstrip("/").rsplit("/", 1)[-1]
        if not record_id.isdigit():
            # No usable Location (a proxy dropped it): ask where the record is.
            table = RESERVATION_RECORD if record_type == RESERVATION_RECORD else "transaction"
            row = self.find(table, external_id, tran_type=TRANSACTION_TYPES.get(record_type))
            if row is None:
                message = (
                    f"{self.system}: HTTP {response.status_code} without a Location, and no "
                    f"{record_type} has external id {external_id!r}"
                )
                raise PermanentError(
                    self.redact(message), details={"system": self.system, "record": record_type}
                )
            record_id = str(row["id"])
        return RecordRef(record_type=record_type, id=record_id, external_id=external_id)

    def _call(
        self,
        method: str,
        path: str,
        operation: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send a request to the REST API (signed by :meth:`prepare`)."""
        extra: dict[str, Any] = {}
        if params is not None:
            extra["params"] = params
        if json is not None:
            extra["json"] = json
        return self.send(method, f"{self.base_url}{path}", operation, headers=headers, **extra)

    def prepare(self, request: httpx.Request) -> None:
        """Sign the request as it is sent (its final URL, query included), afresh on each try."""
        signature = self._signer.authorization(request.method, str(request.url))
        request.headers["Authorization"] = signature

    def error_code(self, response: httpx.Response) -> tuple[str | None, str]:
        """NetSuite's error: the first ``o:errorDetails`` entry's code and detail."""
        try:
            body = response.json()
        except ValueError:
            return None, response.text[:200]
        if isinstance(body, dict):
            details = body.get("o:errorDetails")
            if isinstance(details, list) and details and isinstance(details[0], dict):
                code = details[0].get("o:errorCode")
                return (str(code) if code else None), str(details[0].get("detail", ""))
            if "title" in body:
                return None, str(body["title"])
        return super().error_code(response)

    def status_error(self, response: httpx.Response, operation: str) -> StepError:
        """As the base does, except that a concurrency refusal sent as a 400 is a rate limit."""
        error = super().status_error(response, operation)
        code = (error.details or {}).get("code")
        if response.status_code == 400 and code in CONCURRENCY_ERROR_CODES:
            wait = DEFAULT_RETRY_AFTER  # NetSuite sends no Retry-After with these
            return RateLimitedError(str(error), retry_after=wait, details=error.details)
        return error


def _sql_string(value: str) -> str:
    """A SuiteQL string literal (quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def _ref(record_type: str, row: dict[str, Any], external_id: str) -> dict[str, str]:
    return {"record_type": record_type, "id": str(row["id"]), "external_id": external_id}


__all__ = [
    "NetSuiteErp",
    "NewInvoice",
    "NewSalesOrder",
    "OAuth1Credentials",
    "OrderLine",
    "RecordRef",
    "SalesOrder",
    "SalesOrderLine",
    "account_url",
    "external_id",
]
