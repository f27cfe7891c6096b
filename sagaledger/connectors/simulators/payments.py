"""A simulated Stripe: PaymentIntents, captures, cancels, refunds, search and lists.

It answers the requests :class:`~sagaledger.connectors.payments.StripePayments`
sends the way Stripe does, so a test can check the connector against behaviour,
not against a mock:

- a bearer (or basic) secret key, else 401 in Stripe's error shape;
- form bodies in bracket notation (``metadata[order_id]=A1``);
- idempotency keys on POST: a replay with the same parameters gets the first
  answer again with ``Idempotent-Replayed: true``; other parameters get 400
  ``idempotency_error``; a key is forgotten ``key_ttl`` (24 h) after first use,
  measured on the injectable ``clock``; answers to invalid requests are not kept;
- test payment methods: ``pm_card_visa`` (and ``_mastercard``, ``_amex``)
  succeed, ``pm_card_chargeDeclined``, ``pm_card_chargeDeclinedInsufficientFunds``
  and ``pm_card_chargeDeclinedExpiredCard`` are declined with 402 (the
  PaymentIntent stays behind, ``requires_payment_method``, as on Stripe);
- refunds never exceed what was captured (``charge_already_refunded``,
  ``amount_too_large``);
- search by ``metadata['k']:'v'`` (and ``status``, ``currency``), joined by
  ``AND``, which sees a PaymentIntent only ``search_lag`` after its creation,
  like Stripe's index; lists are up to date at once.

The ledger records ``charge``, ``authorize``, ``capture``, ``cancel`` (of an
authorization) and ``refund``, with amounts and currency. Injected faults answer
in Stripe's shape: 5xx ``api_error``, 429 ``rate_limit``, a decline 402
``card_declined``.
"""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sagaledger.connectors.simulators._faults import Effect, Fault
from sagaledger.connectors.simulators._http import Operation, SimRequest, SimResponse
from sagaledger.connectors.simulators._stripe_errors import (
    APPROVED,
    DECLINES,
    Rejected,
    new_id,
    stripe_error,
)
from sagaledger.connectors.simulators._stripe_search import Intent, StripeSearch

#: Stripe prunes idempotency keys once they are this old.
KEY_TTL = timedelta(hours=24)
#: How long a new PaymentIntent takes to become searchable (Stripe: "under a minute").
SEARCH_LAG = timedelta(minutes=1)
#: The key a simulator accepts unless told otherwise.
DEFAULT_API_KEY = "sk_test_sagaledger_simulator"

_INTENT_ACTION = re.compile(r"^/v1/payment_intents/([^/]+)/(capture|cancel)$")
_INTENT = re.compile(r"^/v1/payment_intents/([^/]+)$")


@dataclass
class _Saved:
    """The first answer given under an idempotency key."""

    fingerprint: tuple[Any, ...]
    response: SimResponse
    at: datetime


class PaymentsSimulator(StripeSearch):
    """Stripe's payments API on ``127.0.0.1``.

    Args:
        api_key: The secret key requests must carry.
        port: 0 for any free port.
        clock: Now, in UTC (a :class:`~sagaledger.testing.ManualClock` moves key
            expiry and search freshness in tests).
        key_ttl: How long an idempotency key is remembered.
        search_lag: How long before a new PaymentIntent shows up in search.
    """

    system = "payments"

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        *,
        port: int = 0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        key_ttl: timedelta = KEY_TTL,
        search_lag: timedelta = SEARCH_LAG,
    ):
        super().__init__(port)
        self.api_key = api_key
        self.clock = clock
        self.key_ttl = key_ttl
        self.search_lag = search_lag
        self._keys: dict[str, _Saved] = {}
        self._intents: dict[str, Intent] = {}
        self._refunds: dict[str, dict[str, Any]] = {}

    # -- HttpSimulator ------------------------------------------------------------

    def authenticate(self, request: SimRequest) -> SimResponse | None:
        scheme, _, credential = (request.header("authorization") or "").partition(" ")
        if scheme.lower() == "basic":  # Stripe takes the key as the basic-auth user too
            try:
                credential = base64.b64decode(credential).decode().partition(":")[0]
            except ValueError:
                credential = ""
        elif scheme.lower() != "bearer":
            credential = ""
        if credential == self.api_key:
            return None
        if not credential:
            return self._fail(401, "You did not provide an API key (Authorization: Bearer).")
        # Stripe names the key it refused by its last four characters only.
        shown = credential[:8] + "*" * max(0, len(credential) - 12) + credential[-4:]
        return self._fail(401, f"Invalid API Key provided: {shown}")

    def route(self, request: SimRequest) -> Operation | SimResponse:
        path, method = request.path, request.method
        if method == "POST":
            if path == "/v1/payment_intents":
                return "create_payment_intent", self._keyed(request, self._create)
            if path == "/v1/refunds":
                return "create_refund", self._keyed(request, self._refund)
            action = _INTENT_ACTION.match(path)
            if action:
                intent_id, verb = action.groups()
                apply = self._capture if verb == "capture" else self._cancel
                return f"{verb}_payment_intent", self._keyed(
                    request, lambda params: apply(intent_id, params)
                )
        elif method == "GET":
            query = {k: v[-1] for k, v in request.query.items()}
            if path == "/v1/payment_intents/search":
                return "search_payment_intents", lambda: self._search(query)
            if path == "/v1/payment_intents":
                return "list_payment_intents", lambda: self._list_intents(query)
            if path == "/v1/refunds":
                return "list_refunds", lambda: self._list_refunds(query)
            one = _INTENT.match(path)
            if one:
                return "retrieve_payment_intent", lambda: self._retrieve(one.group(1))
        return self._fail(404, f"Unrecognized request URL ({method}: {path}).")

    def error(self, status: int, code: str, message: str) -> SimResponse:
        if status >= 500:  # Stripe's api_error carries no code
            return self._fail(status, message, type="api_error")
        return self._fail(status, message, code=code)

    def decline(self, operation: str, fault: Fault) -> SimResponse:
        if operation == "create_payment_intent":
            reason = fault.code or "generic_decline"
            return self._fail(
                402, "Your card was declined.", "card_error", "card_declined", decline_code=reason
            )
        code = fault.code or "payment_intent_unexpected_state"
        return self._fail(400, f"The request was refused ({code}).", code=code)

    # -- idempotency ------------------------------------------------------------------

    def _keyed(
        self, request: SimRequest, endpoint: Callable[[dict[str, Any]], SimResponse]
    ) -> Callable[[], SimResponse]:
        """The endpoint behind Stripe's idempotency layer."""
        key = request.header("idempotency-key")
        flat = request.form()
        fingerprint = (request.method, request.path, tuple(sorted(flat.items())))

        def apply() -> SimResponse:
            if key is not None and len(key) > 255:
                return self._fail(400, "Idempotency keys are at most 255 characters.")
            saved = self._remembered(key)
            if saved is not None:
                if saved.fingerprint != fingerprint:
                    message = (
                        "Keys for idempotent requests can only be used with the same "
                        "parameters they were first used with."
                    )
                    return self._fail(400, message, "idempotency_error")
                replay = copy.deepcopy(saved.response)
                replay.headers["Idempotent-Replayed"] = "true"
                return replay
            try:
                response = endpoint(_nested(flat))
            except Rejected as rejected:
                return rejected.response
            if key is not None:
                response.headers["Idempotency-Key"] = key
                self._keys[key] = _Saved(fingerprint, copy.deepcopy(response), self.clock())
            return response

        return apply

    def _remembered(self, key: str | None) -> _Saved | None:
        """The answer saved under ``key``, unless the key was never used or has expired."""
        saved = self._keys.get(key) if key is not None else None
        if key is not None and saved is not None and self.clock() - saved.at >= self.key_ttl:
            del self._keys[key]
            return None
        return saved

    # -- endpoints ----------------------------------------------------------------------

    def _create(self, params: dict[str, Any]) -> SimResponse:
        amount = _amount(params.get("amount"), "amount", required=True)
        currency = str(params.get("currency") or "").lower()
        if not re.fullmatch(r"[a-z]{3}", currency):
            raise Rejected(self._fail(400, "Missing or invalid currency.", param="currency"))
        capture = params.get("capture_method", "automatic")
        if capture not in ("automatic", "automatic_async", "manual"):
            raise Rejected(self._fail(400, "Invalid capture_method.", param="capture_method"))
        metadata, types = params.get("metadata", {}), params.get("payment_method_types", {})
        if not isinstance(metadata, dict) or not isinstance(types, dict):
            message = "metadata and payment_method_types take bracket notation (a[k]=v)."
            raise Rejected(self._fail(400, message, code="parameter_invalid_string"))
        method = params.get("payment_method")
        confirm = params.get("confirm") == "true"
        if method is not None and method not in APPROVED and method not in DECLINES:
            message = f"No such PaymentMethod: '{method}'"
            raise Rejected(
                self._fail(400, message, code="resource_missing", param="payment_method")
            )
        intent_id = new_id("pi")
        data: dict[str, Any] = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_capturable": 0,
            "amount_received": 0,
            "currency": currency,
            "capture_method": capture,
            "confirmation_method": "automatic",
            "customer": params.get("customer"),
            "description": params.get("description"),
            "payment_method": method,
            "payment_method_types": list(types.values()) or ["card"],
            "metadata": metadata,
            "created": int(self.clock().timestamp()),
            "latest_charge": None,
            "last_payment_error": None,
            "livemode": False,
            "status": "requires_payment_method" if method is None else "requires_confirmation",
        }
        self._intents[intent_id] = Intent(data, self.clock())
        if not confirm or method is None:
            return self._ok(data)
        if method in DECLINES:
            code, decline_code, message = DECLINES[method]
            error = {"code": code, "decline_code": decline_code, "message": message}
            data.update(status="requires_payment_method", last_payment_error=error)
            return self._fail(
                402,
                message,
                "card_error",
                code,
                decline_code=decline_code,
                payment_intent=copy.deepcopy(data),
            )
        data["latest_charge"] = new_id("ch")
        manual = capture == "manual"
        if manual:
            data.update(status="requires_capture", amount_capturable=amount)
        else:
            data.update(status="succeeded", amount_received=amount)
        self._record("authorize" if manual else "charge", data, amount)
        return self._ok(data)

    def _capture(self, intent_id: str, params: dict[str, Any]) -> SimResponse:
        intent = self._find(intent_id)
        data = intent.data
        if data["status"] != "requires_capture":
            return self._unexpected_state(data, "capture")
        wanted = _amount(params.get("amount_to_capture"), "amount_to_capture")
        amount = wanted or data["amount_capturable"]
        if amount > data["amount_capturable"]:
            message = f"Amount to capture ({amount}) exceeds what is capturable."
            return self._fail(400, message, code="amount_too_large", param="amount_to_capture")
        data.update(status="succeeded", amount_received=amount, amount_capturable=0)
        self._record("capture", data, amount)
        return self._ok(data)

    def _cancel(self, intent_id: str, params: dict[str, Any]) -> SimResponse:
        data = self._find(intent_id).data
        if data["status"] in ("succeeded", "canceled"):
            return self._unexpected_state(data, "cancel")
        held = data["amount_capturable"]
        data.update(
            status="canceled",
            amount_capturable=0,
            cancellation_reason=params.get("cancellation_reason"),
        )
        if held:
            self._record("cancel", data, held)
        return self._ok(data)

    def _refund(self, params: dict[str, Any]) -> SimResponse:
        intent_id = params.get("payment_intent")
        if not intent_id:
            raise Rejected(self._fail(400, "Missing payment_intent.", param="payment_intent"))
        intent = self._find(intent_id, param="payment_intent")
        data = intent.data
        charge = data["latest_charge"]
        if data["status"] != "succeeded":
            return self._unexpected_state(data, "refund")
        left = data["amount_received"] - intent.refunded
        if left <= 0:
            message = f"Charge {charge} has already been refunded."
            return self._fail(400, message, code="charge_already_refunded")
        amount = _amount(params.get("amount"), "amount") or left
        if amount > left:
            message = f"Refund amount ({amount}) is greater than unrefunded amount ({left})."
            return self._fail(400, message, code="amount_too_large", param="amount")
        metadata = params.get("metadata", {})
        if not isinstance(metadata, dict):
            message = "metadata takes bracket notation (metadata[k]=v)."
            raise Rejected(self._fail(400, message, code="parameter_invalid_string"))
        intent.refunded += amount
        refund = {
            "id": new_id("re"),
            "object": "refund",
            "amount": amount,
            "currency": data["currency"],
            "payment_intent": intent_id,
            "charge": charge,
            "reason": params.get("reason"),
            "metadata": metadata,
            "status": "succeeded",
            "created": int(self.clock().timestamp()),
        }
        self._refunds[refund["id"]] = refund
        self._record("refund", refund, amount, payment_intent=intent_id)
        return self._ok(refund)

    def _retrieve(self, intent_id: str) -> SimResponse:
        try:
            return self._ok(self._find(intent_id).data)
        except Rejected as rejected:
            return rejected.response

    # -- helpers --------------------------------------------------------------------------

    def _find(self, intent_id: str, param: str | None = None) -> Intent:
        intent = self._intents.get(intent_id)
        if intent is None:
            message = f"No such payment_intent: '{intent_id}'"
            status = 400 if param else 404
            raise Rejected(self._fail(status, message, code="resource_missing", param=param))
        return intent

    def _unexpected_state(self, data: dict[str, Any], action: str) -> SimResponse:
        message = (
            f"You cannot {action} this PaymentIntent because it has a status of {data['status']}."
        )
        return self._fail(400, message, code="payment_intent_unexpected_state")

    def _record(self, operation: str, data: dict[str, Any], amount: int, **detail: Any) -> None:
        key = data["metadata"].get("sagaledger_key")
        self.ledger.record(Effect(operation, data["id"], key, amount, data["currency"], detail))


def _nested(flat: dict[str, str]) -> dict[str, Any]:
    """Stripe's bracket notation back into nested dicts (``a[b][c]=v``)."""
    nested: dict[str, Any] = {}
    for name, value in flat.items():
        head, _, rest = name.partition("[")
        parts = [head, *re.findall(r"([^\[\]]*)\]", "[" + rest)] if rest else [head]
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def _amount(value: Any, param: str, required: bool = False) -> int:
    """A positive integer parameter; 0 when absent and optional."""
    if value is None and not required:
        return 0
    if value is None:
        message = f"Missing required param: {param}."
        raise Rejected(stripe_error(400, message, code="parameter_missing", param=param))
    if not str(value).isdigit() or int(value) <= 0:
        message = f"Invalid positive integer: {param}."
        raise Rejected(stripe_error(400, message, code="parameter_invalid_integer", param=param))
    return int(value)
