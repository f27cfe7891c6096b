"""Search and lists in the payments simulator: Stripe's search language (a subset) and pages."""

from __future__ import annotations

import copy
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sagaledger.connectors.simulators._http import HttpSimulator, SimResponse
from sagaledger.connectors.simulators._stripe_errors import new_id, stripe_error

_CLAUSE = re.compile(
    r"""^\s*(?:metadata\[(?P<q>['"])(?P<meta>.*?)(?P=q)\]|(?P<field>[a-z_]+))\s*:\s*"""
    r"""(?P<v>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")\s*$"""
)


@dataclass
class Intent:
    """A PaymentIntent the simulator holds: its JSON, when it was made, what it refunded."""

    data: dict[str, Any]
    created_at: datetime
    refunded: int = 0


class StripeSearch(HttpSimulator):
    """The reads of :class:`~sagaledger.connectors.simulators.payments.PaymentsSimulator`.

    Search, the lists, and the answers in Stripe's shape that every endpoint
    gives; the simulator sets up the state they read.
    """

    clock: Callable[[], datetime]
    search_lag: timedelta
    _intents: dict[str, Intent]
    _refunds: dict[str, dict[str, Any]]

    # -- endpoints ----------------------------------------------------------------------

    def _search(self, query: dict[str, str]) -> SimResponse:
        try:
            tests = _parse_query(query.get("query", ""))
            limit = _limit(query)
            start = int(query.get("page") or 0)
        except ValueError as exc:
            return self._fail(400, f"Invalid search query: {exc}", param="query")
        indexed_before = self.clock() - self.search_lag
        hits = [
            i.data
            for i in self._newest_first()
            if i.created_at <= indexed_before and all(_holds(i.data, c) for c in tests)
        ]
        page = hits[start : start + limit]
        more = start + limit < len(hits)
        return self._ok(
            {
                "object": "search_result",
                "url": "/v1/payment_intents/search",
                "data": page,
                "has_more": more,
                "next_page": str(start + limit) if more else None,
            }
        )

    def _list_intents(self, query: dict[str, str]) -> SimResponse:
        # Named as the operator module names them: created[gte] is operator.ge.
        ops = {"gt": "gt", "gte": "ge", "lt": "lt", "lte": "le"}
        bounds = {ops[op]: query.get(f"created[{op}]") for op in ops}
        try:
            limits = {op: int(v) for op, v in bounds.items() if v is not None}
        except ValueError:
            return self._fail(400, "Invalid integer for created.", param="created")
        found = [
            i.data
            for i in self._newest_first()
            if all(getattr(operator, op)(i.data["created"], v) for op, v in limits.items())
        ]
        return self._page(found, query, "/v1/payment_intents")

    def _list_refunds(self, query: dict[str, str]) -> SimResponse:
        wanted = query.get("payment_intent")
        found = [
            r
            for r in reversed(self._refunds.values())
            if wanted is None or r["payment_intent"] == wanted
        ]
        return self._page(found, query, "/v1/refunds")

    # -- helpers --------------------------------------------------------------------------

    def _page(self, items: list[dict[str, Any]], query: dict[str, str], url: str) -> SimResponse:
        try:
            limit = _limit(query)
        except ValueError as exc:
            return self._fail(400, str(exc), param="limit")
        after = query.get("starting_after")
        if after:
            ids = [item["id"] for item in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        return self._ok(
            {"object": "list", "url": url, "data": items[:limit], "has_more": len(items) > limit}
        )

    def _newest_first(self) -> list[Intent]:
        return list(reversed(self._intents.values()))

    def _ok(self, body: dict[str, Any]) -> SimResponse:
        return SimResponse(200, copy.deepcopy(body), {"Request-Id": new_id("req")})

    def _fail(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        code: str | None = None,
        **extra: Any,
    ) -> SimResponse:
        return stripe_error(status, message, type, code, **extra)


def _limit(query: dict[str, str]) -> int:
    limit = int(query.get("limit") or 10)
    if not 1 <= limit <= 100:
        raise ValueError("limit must be between 1 and 100")
    return limit


#: A search clause: the metadata key (or top-level field) it reads, and the value it wants.
_Clause = tuple[bool, str, str]


def _parse_query(query: str) -> list[_Clause]:
    """Clauses of Stripe's search language that the simulator knows, joined by AND."""
    if not query.strip():
        raise ValueError("the query is empty")
    clauses: list[_Clause] = []
    for text in re.split(r"\s+AND\s+", query):
        match = _CLAUSE.match(text)
        if match is None:
            raise ValueError(f"cannot read {text!r}")
        value = re.sub(r"\\(.)", r"\1", match["v"][1:-1])
        meta, field = match["meta"], match["field"]
        if meta is not None:
            clauses.append((True, meta, value))
        elif field in ("status", "currency", "customer"):
            clauses.append((False, field, value))
        else:
            raise ValueError(f"the simulator cannot search {field!r}")
    return clauses


def _holds(data: dict[str, Any], clause: _Clause) -> bool:
    in_metadata, name, value = clause
    found = data["metadata"].get(name) if in_metadata else data.get(name)
    return bool(found == value)
