"""Sending email through a Resend-style HTTP API (see :mod:`sagaledger.connectors.email`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import httpx

from sagaledger._errors import RetryableError, StepError
from sagaledger.connectors._http import CONNECT_ATTEMPTS, DEFAULT_TIMEOUT, HttpConnector
from sagaledger.connectors._mail import SentEmail, recipients_of, record_sent

logger = logging.getLogger("sagaledger.connectors.email")

#: Where a Resend-style API lives.
DEFAULT_EMAIL_API_URL = "https://api.resend.com"


class _Keyed(Protocol):
    @property
    def idempotency_key(self) -> str: ...


class HttpEmailApi(HttpConnector):
    """Sends email through a transactional email HTTP API, in Resend's style.

    ``POST /emails`` with a JSON body, ``Authorization: Bearer <api key>`` and the
    step's key in ``Idempotency-Key``; errors come back as
    ``{"statusCode": 422, "name": "validation_error", "message": "..."}``.

    Delivery guarantee: once per key while the provider remembers the key
    (Resend: 24 hours). A retry within that window, even after a lost answer,
    gets the first answer back and sends nothing. After it, only a probe stands
    between a retry and a second email: :meth:`find_sent` (or :meth:`probe`)
    asks ``GET /emails?idempotency_key=...``. That lookup is served by
    :class:`~sagaledger.connectors.simulators.email_api.EmailApiSimulator`; Resend's
    own API lists emails without it, so against Resend the probe finds nothing
    (it matches the key field exactly, so it never takes another email for this
    one) and the guarantee is the key window's.

    Args:
        base_url: Where the API lives.
        api_key: Sent as a bearer token; never appears in an error or log line.
        client: An ``httpx.Client`` to share; one is made when omitted.
        timeout: Per-request timeouts when this connector makes its client.
        connect_attempts: Tries per call while the request cannot be sent.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_EMAIL_API_URL,
        *,
        api_key: str,
        client: httpx.Client | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        connect_attempts: int = CONNECT_ATTEMPTS,
    ):
        super().__init__(
            "email_api",
            base_url,
            client=client,
            timeout=timeout,
            secrets=[api_key],
            connect_attempts=connect_attempts,
        )
        self._auth = {"Authorization": f"Bearer {api_key}"}

    def send_email(
        self,
        *,
        sender: str,
        to: str | Sequence[str],
        subject: str,
        text: str,
        html: str | None = None,
        idempotency_key: str,
    ) -> SentEmail:
        """Send one message; a retry with the same key sends nothing more.

        Args:
            sender: The ``from`` address (``"Shop <orders@shop.example>"``).
            to: One address or several.
            subject: The subject.
            text: The plain-text body.
            html: An HTML alternative, if any.
            idempotency_key: The step's key, sent as ``Idempotency-Key``.

        Returns:
            The provider's email id.

        Raises:
            RetryableError: 5xx, could not connect, or the same key is in flight (409).
            RateLimitedError: 429; ``retry_after`` from the response.
            PermanentError: invalid message or recipients (422), bad API key,
                the same key reused for a different message (409).
            OutcomeUnknownError: the request was sent and no answer came back.
        """
        recipients = recipients_of(to)
        body: dict[str, Any] = {
            "from": sender,
            "to": list(recipients),
            "subject": subject,
            "text": text,
        }
        if html is not None:
            body["html"] = html
        headers = {**self._auth, "Idempotency-Key": idempotency_key}
        response = self.send("POST", "/emails", "send_email", headers=headers, json=body)
        email_id = str(response.json()["id"])
        logger.info("email api accepted %s for %d recipient(s)", email_id, len(recipients))
        record_sent(email_id)
        return SentEmail(message_id=email_id, idempotency_key=idempotency_key, to=recipients)

    def find_sent(self, idempotency_key: str) -> SentEmail | None:
        """The message sent under ``idempotency_key``, or None if the provider has none.

        Raises:
            RetryableError, RateLimitedError, PermanentError, OutcomeUnknownError:
                the lookup itself failed (a probe that raises does not count as "not sent").
        """
        response = self.send(
            "GET",
            "/emails",
            "find_email",
            headers=self._auth,
            params={"idempotency_key": idempotency_key},
        )
        listed = response.json()
        for item in listed.get("data", []) if isinstance(listed, dict) else []:
            if isinstance(item, dict) and item.get("idempotency_key") == idempotency_key:
                to = item.get("to") or []
                record_sent(str(item["id"]), found=True)
                return SentEmail(
                    message_id=str(item["id"]),
                    idempotency_key=idempotency_key,
                    to=tuple(to) if isinstance(to, list) else (str(to),),
                )
        return None

    def probe(self, ctx: _Keyed) -> SentEmail | None:
        """A step probe: ``RetrySafety.IDEMPOTENCY_KEY.with_probe(api.probe)``."""
        return self.find_sent(ctx.idempotency_key)

    def error_code(self, response: httpx.Response) -> tuple[str | None, str]:
        """Resend's error shape: ``{"statusCode", "name", "message"}``."""
        try:
            body = response.json()
        except ValueError:
            return None, response.text[:200]
        if isinstance(body, dict) and "name" in body:
            return str(body["name"]), str(body.get("message", ""))
        return super().error_code(response)

    def status_error(self, response: httpx.Response, operation: str) -> StepError:
        """As the base maps it, except a key still in flight elsewhere, which is worth a retry."""
        code, message = self.error_code(response)
        if response.status_code == 409 and code == "concurrent_idempotent_requests":
            text = f"HTTP 409 {code}: {message}"
            return self.make_error(RetryableError, operation, text, status=409, code=code)
        return super().status_error(response, operation)
