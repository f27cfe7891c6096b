"""Payments through Stripe's HTTP API: charge, capture, cancel, refund, and find by key.

Requests are what Stripe's own libraries send: a bearer secret key, form
bodies in Stripe's bracket notation (``metadata[order_id]=A1``), and an
``Idempotency-Key`` header on every POST. Point :class:`StripePayments` at
``https://api.stripe.com`` with a test key, or at a
:class:`~sagaledger.connectors.simulators.payments.PaymentsSimulator`.

Stripe forgets an idempotency key 24 hours after first seeing it, and a saga
can retry later than that. So every payment and refund also carries the
saga's key in its metadata (``metadata[sagaledger_key]``), and
:meth:`StripePayments.find_payment` / :meth:`StripePayments.find_refund` look
it up there: a step's probe asks before each retry whether the charge already
landed, whatever Stripe still remembers.

How Stripe's answers map onto the orchestrator's errors (beyond the base's):

==========================================  ==========================
Stripe said                                 raised
==========================================  ==========================
402 ``card_error`` (declined, expired)      ``PermanentError``
400 ``idempotency_error`` (other params)    ``PermanentError``
409, or ``lock_timeout`` (key/object busy)  ``RetryableError``
429 ``rate_limit``                          ``RateLimitedError``
5xx to a POST                               ``OutcomeUnknownError``
5xx to a GET                                ``RetryableError``
==========================================  ==========================

A 5xx to a POST is an unknown outcome because Stripe saves whatever an
endpoint answered once it began executing, 500s included, and may have moved
money before failing: only a probe can tell.

Each call records what it did to the customer's money for the compensation
ledger, in major units (``9.99 USD``, ``500 JPY``; system ``payments``:
``charge``, ``capture`` when it takes less than authorized,
``cancel_authorization``, ``refund``; :meth:`StripePayments.find_payment`
records the charge it found, which counts while a probe runs): see
docs/connectors.md.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

import httpx

from sagaledger._errors import OutcomeUnknownError, PermanentError, RetryableError, StepError
from sagaledger.connectors._http import CONNECT_ATTEMPTS, DEFAULT_TIMEOUT, HttpConnector
from sagaledger.connectors._stripe_effects import (
    record_cancel,
    record_capture,
    record_charge,
    record_refund,
)
from sagaledger.connectors._stripe_form import (
    form_pairs,
    keyed_metadata,
    path_segment,
    search_literal,
)
from sagaledger.connectors._stripe_models import KEY_METADATA, Payment, Refund
from sagaledger.connectors._stripe_models import LANDED_STATUSES as LANDED_STATUSES  # re-export

logger = logging.getLogger("sagaledger.connectors.payments")

#: Where Stripe's API lives.
STRIPE_API = "https://api.stripe.com"
#: How far back the strongly consistent list is scanned when search has no hit yet.
RECENT_WINDOW = timedelta(minutes=10)
#: Stripe refuses longer idempotency keys.
MAX_KEY_LENGTH = 255
#: Pages of 100 a probe reads before it gives up and says it cannot tell.
MAX_LIST_PAGES = 5

_FORM = "application/x-www-form-urlencoded"


class HasIdempotencyKey(Protocol):
    """What a probe needs from a step's context."""

    @property
    def idempotency_key(self) -> str: ...


class StripePayments(HttpConnector):
    """Stripe's PaymentIntents and Refunds, for saga steps.

    Args:
        api_key: The secret key (``sk_test_...``); it is masked in every error.
        base_url: Stripe's API, or a simulator's URL.
        client: An ``httpx.Client`` to share; one is made when omitted.
        timeout: Timeouts of the client made when ``client`` is omitted.
        stripe_version: Sent as ``Stripe-Version`` to pin the API version.
        connect_attempts: Tries per call while the request cannot be sent.
        clock: Now, in UTC; probes scan the payments created shortly before it.
        recent_window: How far back a probe scans the list when search has no hit.
    """

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = STRIPE_API,
        client: httpx.Client | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        stripe_version: str | None = None,
        connect_attempts: int = CONNECT_ATTEMPTS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        recent_window: timedelta = RECENT_WINDOW,
    ):
        if not api_key:
            raise ValueError("StripePayments needs an API key")
        super().__init__(
            "stripe",
            base_url,
            client=client,
            timeout=timeout,
            secrets=[api_key],
            connect_attempts=connect_attempts,
        )
        self._headers = {"Authorization": f"Bearer {api_key}", "User-Agent": "sagaledger"}
        if stripe_version:
            self._headers["Stripe-Version"] = stripe_version
        self._clock = clock
        self._recent_window = recent_window

    # -- effects ------------------------------------------------------------------

    def create_payment(
        self,
        *,
        amount: int,
        currency: str,
        payment_method: str,
        idempotency_key: str,
        capture_method: Literal["automatic", "automatic_async", "manual"] = "automatic",
        metadata: Mapping[str, str] | None = None,
        customer: str | None = None,
        description: str | None = None,
        payment_method_types: Sequence[str] = ("card",),
    ) -> Payment:
        """Create and confirm a PaymentIntent: charge now, or authorize (``manual``).

        Args:
            amount: Minor units (cents).
            currency: Three-letter ISO code.
            payment_method: The card to charge (``pm_...``).
            idempotency_key: The step's key; also stored in ``metadata[sagaledger_key]``.
            capture_method: ``manual`` only authorizes; :meth:`capture` takes the money.
            metadata: Your own fields (order id, ...); shown in Stripe's dashboard.
            customer: The customer the payment method belongs to, if any.
            description: Shown on the payment in Stripe.
            payment_method_types: Naming the types confirms without a ``return_url``.

        Returns:
            The payment, ``succeeded`` or ``requires_capture``.

        Raises:
            PermanentError: declined (402), invalid, or the card needs the
                customer to act (3-D Secure), which a saga cannot do.
        """
        params = {
            "amount": amount,
            "currency": currency.lower(),
            "payment_method": payment_method,
            "confirm": True,
            "capture_method": capture_method,
            "payment_method_types": list(payment_method_types),
            "customer": customer,
            "description": description,
            "metadata": keyed_metadata(metadata, idempotency_key),
        }
        body = self._post("/v1/payment_intents", "create_payment_intent", params, idempotency_key)
        payment = Payment.from_stripe(body)
        if not payment.landed:
            raise self.make_error(
                PermanentError,
                "create_payment_intent",
                f"payment {payment.id} is {payment.status}, not charged",
            )
        record_charge(payment)
        return payment

    def capture(
        self, payment_intent: str, *, idempotency_key: str, amount: int | None = None
    ) -> Payment:
        """Capture an authorized (``manual``) payment: all of it, or ``amount``.

        The ledger counted the authorization as charged, so capturing all of it
        records nothing; capturing less releases the rest at once, recorded as
        ``capture`` with minus the part released.
        """
        params = {"amount_to_capture": amount}
        path = f"/v1/payment_intents/{path_segment(payment_intent)}/capture"
        payment = Payment.from_stripe(
            self._post(path, "capture_payment_intent", params, idempotency_key)
        )
        record_capture(payment)
        return payment

    def cancel(
        self, payment_intent: str, *, idempotency_key: str, reason: str | None = None
    ) -> Payment:
        """Cancel a payment not yet captured, releasing its authorization."""
        params = {"cancellation_reason": reason}
        path = f"/v1/payment_intents/{path_segment(payment_intent)}/cancel"
        payment = Payment.from_stripe(
            self._post(path, "cancel_payment_intent", params, idempotency_key)
        )
        record_cancel(payment)
        return payment

    def refund(
        self,
        payment_intent: str,
        *,
        idempotency_key: str,
        amount: int | None = None,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Refund:
        """Refund a captured payment (all that is left of it, or ``amount``).

        A refund already made under ``idempotency_key`` is returned instead of
        a new one: the list of the payment's refunds is asked first, so a retry
        after Stripe forgot the key cannot refund twice.
        """
        refund = self._find_refund(payment_intent, idempotency_key)
        if refund is None:
            params = {
                "payment_intent": payment_intent,
                "amount": amount,
                "reason": reason,
                "metadata": keyed_metadata(metadata, idempotency_key),
            }
            refund = Refund.from_stripe(
                self._post("/v1/refunds", "create_refund", params, idempotency_key)
            )
        # A refund an earlier attempt made is this call's too: the completed attempt stands for it.
        record_refund(refund)
        return refund

    # -- reads ----------------------------------------------------------------------

    def retrieve(self, payment_intent: str) -> Payment:
        """The payment as Stripe has it now."""
        path = f"/v1/payment_intents/{path_segment(payment_intent)}"
        return Payment.from_stripe(self._get(path, "retrieve_payment_intent"))

    def find_payment(self, idempotency_key: str) -> Payment | None:
        """The payment that landed under ``idempotency_key``, or None if none did.

        Stripe's search finds it by metadata however old it is, but only about
        a minute after it was made; the list of payments made in the last
        ``recent_window`` covers that minute. Payments that hold no money
        (declined, canceled) do not count.

        Raises:
            OutcomeUnknownError: more than one payment landed under the key, or
                too many recent payments to scan: a person must look.
        """
        query = f"metadata[{search_literal(KEY_METADATA)}]:{search_literal(idempotency_key)}"
        found = self._get(
            "/v1/payment_intents/search",
            "search_payment_intents",
            params={"query": query, "limit": 100},
        )["data"]
        if not found:
            since = int((self._clock() - self._recent_window).timestamp())
            recent = self._list(
                "/v1/payment_intents", "list_payment_intents", {"created[gte]": since}
            )
            found = [
                p for p in recent if (p.get("metadata") or {}).get(KEY_METADATA) == idempotency_key
            ]
        landed = [p for p in map(Payment.from_stripe, found) if p.landed]
        if len(landed) > 1:
            # Guessing which to keep could leave a charge unrefunded: stop for a person.
            ids = ", ".join(p.id for p in landed)
            raise self.make_error(
                OutcomeUnknownError, "find_payment", f"several payments under one key: {ids}"
            )
        if not landed:
            return None
        record_charge(landed[0], found=True)
        return landed[0]

    def find_refund(self, payment_intent: str, idempotency_key: str) -> Refund | None:
        """The refund of ``payment_intent`` made under ``idempotency_key``, or None."""
        refund = self._find_refund(payment_intent, idempotency_key)
        if refund is not None:
            record_refund(refund, found=True)
        return refund

    def probe(self, ctx: HasIdempotencyKey) -> Payment | None:
        """A step probe: ``RetrySafety.IDEMPOTENCY_KEY.with_probe(payments.probe)``."""
        return self.find_payment(ctx.idempotency_key)

    # -- the wire ---------------------------------------------------------------------

    def _find_refund(self, payment_intent: str, idempotency_key: str) -> Refund | None:
        refunds = self._list("/v1/refunds", "list_refunds", {"payment_intent": payment_intent})
        for data in refunds:
            if (data.get("metadata") or {}).get(KEY_METADATA) == idempotency_key:
                return Refund.from_stripe(data)
        return None

    def _post(
        self, path: str, operation: str, params: Mapping[str, Any], idempotency_key: str
    ) -> dict[str, Any]:
        if not idempotency_key or len(idempotency_key) > MAX_KEY_LENGTH:
            raise ValueError(f"idempotency keys are 1 to {MAX_KEY_LENGTH} characters")
        headers = {**self._headers, "Content-Type": _FORM, "Idempotency-Key": idempotency_key}
        body = urllib.parse.urlencode(form_pairs(params))
        response = self.send("POST", path, operation, headers=headers, content=body)
        return self._read(response, operation)

    def _get(
        self, path: str, operation: str, params: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        query = form_pairs(params or {})
        response = self.send("GET", path, operation, headers=self._headers, params=query)
        return self._read(response, operation)

    def _list(self, path: str, operation: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Every object of a list endpoint, newest first, within ``MAX_LIST_PAGES`` pages."""
        items: list[dict[str, Any]] = []
        after: str | None = None
        for _ in range(MAX_LIST_PAGES):
            page = self._get(path, operation, {**params, "limit": 100, "starting_after": after})
            items.extend(page["data"])
            if not page.get("has_more") or not page["data"]:
                return items
            after = page["data"][-1]["id"]
        raise self.make_error(
            OutcomeUnknownError, operation, f"more than {len(items)} objects to scan"
        )

    def _read(self, response: httpx.Response, operation: str) -> dict[str, Any]:
        logger.debug(
            "stripe %s: %s %s (request %s%s)",
            operation,
            response.request.method,
            response.status_code,
            response.headers.get("Request-Id"),
            ", replayed" if response.headers.get("Idempotent-Replayed") == "true" else "",
        )
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            # A 2xx that is not Stripe's JSON (a proxy's page?): a POST may still have landed.
            post = response.request.method == "POST"
            kind = OutcomeUnknownError if post else RetryableError
            raise self.make_error(kind, operation, "the answer is not a JSON object")
        return body

    def status_error(self, response: httpx.Response, operation: str) -> StepError:
        """Stripe's refinements of the base mapping (see the module's table)."""
        error = _error_object(response)
        status, code = response.status_code, error.get("code")
        kind: type[StepError] | None = None
        if status == 409 or code == "lock_timeout":
            kind = RetryableError  # the key or object is busy with another request
        elif status >= 500 and response.request.method == "POST":
            kind = OutcomeUnknownError
        if kind is None:
            exc = super().status_error(response, operation)
        else:
            message = error.get("message") or ""
            label = code or error.get("type")
            text = f"HTTP {status}" + (f" {label}" if label else "") + f": {message}"
            exc = self.make_error(kind, operation, text, status=status, code=label)
        extra = {
            "type": error.get("type"),
            "decline_code": error.get("decline_code"),
            "param": error.get("param"),
            "request_id": response.headers.get("Request-Id"),
        }
        if exc.details is not None:
            exc.details.update({k: self.redact(str(v)) for k, v in extra.items() if v})
        return exc


def _error_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


__all__ = ["HasIdempotencyKey", "Payment", "Refund", "StripePayments", "form_pairs"]
