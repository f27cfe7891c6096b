"""The ERP simulator's SuiteQL: one shape of query, a SELECT by external id, enough for a probe."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from sagaledger.connectors.simulators._erp_records import RESERVATION, Reservation, Transaction
from sagaledger.connectors.simulators._http import Operation, SimRequest, SimResponse

_SUITEQL = re.compile(
    r"^\s*SELECT\s+(?P<cols>\w+(?:\s*,\s*\w+)*)\s+FROM\s+(?P<table>\w+)\s+"
    r"WHERE\s+externalid\s*=\s*'(?P<eid>(?:[^']|'')*)'"
    r"(?:\s+AND\s+type\s*=\s*'(?P<type>\w+)')?\s*;?\s*$",
    re.IGNORECASE,
)
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


def suiteql(
    request: SimRequest,
    transactions: Mapping[str, Transaction],
    reservations: Mapping[str, Reservation],
    error: Callable[[int, str, str], SimResponse],
) -> Operation | SimResponse:
    """The ``suiteql`` operation for a request, or the error NetSuite would answer at once.

    Args:
        request: The ``POST`` to the SuiteQL endpoint.
        transactions: The account's transactions, read when the operation runs.
        reservations: The account's reservations, read when the operation runs.
        error: Shapes an error as NetSuite does (the simulator's ``error``).
    """
    if "transient" not in (request.header("prefer") or ""):
        return error(
            400, "INVALID_HEADER", "SuiteQL over REST needs the header 'Prefer: transient'"
        )
    try:
        body = request.json()
    except ValueError:
        body = None
    query = body.get("q") if isinstance(body, dict) else None
    match = _SUITEQL.match(query) if isinstance(query, str) else None
    if match is None:
        return error(
            400,
            "INVALID_PARAMETER",
            "this simulator's SuiteQL answers only: SELECT col, ... FROM transaction|"
            f"{RESERVATION} WHERE externalid = '...' [AND type = '...']; got {query!r}",
        )
    table = match["table"].lower()
    if table not in _COLUMNS:
        return error(400, "INVALID_PARAMETER", f"unknown table {match['table']!r}")
    columns = [c.strip().lower() for c in match["cols"].split(",")]
    unknown = sorted(set(columns) - _COLUMNS[table])
    if unknown:
        return error(400, "INVALID_PARAMETER", f"unknown column(s) {unknown} of {table}")
    eid = match["eid"].replace("''", "'")
    tran_type = match["type"]

    def rows() -> SimResponse:
        found: list[dict[str, Any]] = []
        if table == "transaction":
            found = [
                transaction_row(t)
                for t in transactions.values()
                if t.external_id == eid and tran_type in (None, t.type)
            ]
        else:
            found = [reservation_row(r) for r in reservations.values()]
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


def transaction_row(t: Transaction) -> dict[str, Any]:
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


def reservation_row(r: Reservation) -> dict[str, Any]:
    return {
        "id": r.id,
        "externalid": r.external_id,
        "custrecord_sl_item": r.item,
        "custrecord_sl_quantity": r.quantity,
        "custrecord_sl_memo": r.memo,
        "custrecord_sl_released": "T" if r.released else "F",
    }
