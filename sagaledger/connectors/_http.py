"""What every HTTP connector shares: client, timeouts, a short in-call retry, one error taxonomy.

A connector turns each way a call can end into one of the errors the
orchestrator acts on:

==============================  ===================================  =====================
what happened                   raised                               the orchestrator
==============================  ===================================  =====================
could not connect (not sent)    retried here, then ``RetryableError``  retries with back-off
5xx                             ``RetryableError``                   retries with back-off
429                             ``RateLimitedError`` (Retry-After)   waits, no attempt used
4xx (declined, invalid)         ``PermanentError``                   compensates
sent, no answer (timeout, drop) ``OutcomeUnknownError``              probes, then decides
==============================  ===================================  =====================

Only the first is retried inside the call: a request that never left cannot
have landed. Everything else goes back to the orchestrator, whose retries are
durable and use the same idempotency key.

Every message and detail passes through :meth:`HttpConnector.redact`, so the
secrets a connector holds never reach a log, an event or an error.
"""

from __future__ import annotations

import email.utils
import json
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Self

import httpx
import tenacity

from sagaledger._errors import (
    OutcomeUnknownError,
    PermanentError,
    RateLimitedError,
    RetryableError,
    StepError,
)

#: Connect, write and pool waits are short (nothing was sent yet); the read
#: timeout bounds how long a sent request may take before its outcome is unknown.
DEFAULT_TIMEOUT = httpx.Timeout(connect=3.0, read=30.0, write=10.0, pool=5.0)
#: Connection attempts per call when the request could not be sent at all.
CONNECT_ATTEMPTS = 3
#: The Retry-After assumed when a 429 carries none.
DEFAULT_RETRY_AFTER = timedelta(seconds=1)

#: Errors raised before the request was sent: safe to retry within the call.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class _NotSent(Exception):
    """Internal: a connection-level failure before sending, for tenacity to retry."""

    def __init__(self, cause: httpx.HTTPError):
        super().__init__(str(cause))
        self.cause = cause


class HttpConnector:
    """Base of connectors that call an HTTP API on behalf of saga steps.

    Subclasses build requests (auth, encoding, the idempotency header) and read
    the remote error shape in :meth:`error_code`; this class sends them and
    maps the outcome onto the taxonomy above.

    Args:
        system: The remote system's name, used in every error (``payments``).
        base_url: Where the API lives (``https://api.example.com``).
        client: An ``httpx.Client`` to share (its timeouts, pool, proxies);
            one is made when omitted and closed by :meth:`close`.
        timeout: Per-request timeouts when this connector makes its client.
        secrets: Values that must never appear in errors or logs (API keys,
            token secrets); :meth:`redact` masks them.
        connect_attempts: Tries per call while the request cannot be sent.
    """

    def __init__(
        self,
        system: str,
        base_url: str,
        *,
        client: httpx.Client | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        secrets: Iterable[str] = (),
        connect_attempts: int = CONNECT_ATTEMPTS,
    ):
        self.system = system
        self.base_url = base_url.rstrip("/")
        self._own_client = client is None
        self.client = client if client is not None else httpx.Client(timeout=timeout)
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._connect_attempts = max(1, connect_attempts)

    def close(self) -> None:
        """Close the client if this connector made it."""
        if self._own_client:
            self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- what subclasses provide ------------------------------------------------

    def error_code(self, response: httpx.Response) -> tuple[str | None, str]:
        """The remote error's code and message, read from its body.

        The default reads ``{"error": {"code": ..., "message": ...}}`` and falls
        back to the body's first 200 characters.
        """
        try:
            body = response.json()
        except ValueError:
            return None, response.text[:200]
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            code = error.get("code") or error.get("type")
            return (str(code) if code else None), str(error.get("message", ""))
        return None, json.dumps(body)[:200]

    # -- sending ----------------------------------------------------------------

    def send(
        self,
        method: str,
        path: str,
        operation: str,
        *,
        headers: Mapping[str, str] | None = None,
        **request: Any,
    ) -> httpx.Response:
        """Send one request and return its 2xx response, or raise the taxonomy's error.

        Args:
            method: HTTP method.
            path: Path below ``base_url`` (or an absolute URL).
            operation: What the call does, for errors (``create_payment``).
            headers: Extra headers (auth, ``Idempotency-Key``).
            **request: ``params``, ``data``, ``json`` or ``content``, as httpx takes them.

        Raises:
            RetryableError: 5xx, or the request could not be sent after retries.
            RateLimitedError: 429; ``retry_after`` from the response.
            PermanentError: any other 4xx.
            OutcomeUnknownError: the request was sent and no response came back.
        """
        url = path if "://" in path else f"{self.base_url}/{path.lstrip('/')}"
        built = self.client.build_request(method, url, headers=headers, **request)
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_NotSent),
            stop=tenacity.stop_after_attempt(self._connect_attempts),
            wait=tenacity.wait_random_exponential(multiplier=0.05, max=0.5),
            reraise=True,
        )
        try:
            response = retrying(self._send_once, built)
        except _NotSent as exc:
            raise self.make_error(
                RetryableError, operation, f"could not connect: {exc.cause!r}"
            ) from None
        except httpx.TimeoutException as exc:
            raise self.make_error(
                OutcomeUnknownError, operation, f"no response within the timeout ({exc!r})"
            ) from None
        except httpx.TransportError as exc:
            raise self.make_error(
                OutcomeUnknownError, operation, f"connection lost after sending ({exc!r})"
            ) from None
        if response.is_success:
            return response
        raise self.status_error(response, operation)

    def prepare(self, request: httpx.Request) -> None:
        """Called on the built request before each try: sign it here (a fresh nonce each time)."""

    def _send_once(self, request: httpx.Request) -> httpx.Response:
        self.prepare(request)
        try:
            response = self.client.send(request)
            response.read()
            return response
        except _NOT_SENT as exc:
            raise _NotSent(exc) from None

    def status_error(self, response: httpx.Response, operation: str) -> StepError:
        """The taxonomy's error for a non-2xx response (subclasses may refine it)."""
        code, message = self.error_code(response)
        status = response.status_code
        text = f"HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
        if status == 429:
            wait = retry_after(response.headers.get("Retry-After"))
            return self.make_error(
                RateLimitedError, operation, text, status=status, code=code, retry_after=wait
            )
        if status >= 500:
            return self.make_error(RetryableError, operation, text, status=status, code=code)
        return self.make_error(PermanentError, operation, text, status=status, code=code)

    def make_error(
        self,
        kind: type[StepError],
        operation: str,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: timedelta | None = None,
    ) -> StepError:
        """An error of ``kind`` that names this system and ``operation``, secrets masked.

        For subclasses that map a response or an exception of their own.
        """
        details: dict[str, Any] = {"system": self.system, "operation": operation}
        if status is not None:
            details["status"] = status
        if code is not None:
            details["code"] = self.redact(code)
        text = self.redact(f"{self.system} {operation}: {message}")
        if kind is RateLimitedError:
            return RateLimitedError(
                text, retry_after=retry_after or DEFAULT_RETRY_AFTER, details=details
            )
        return kind(text, details=details)

    def redact(self, text: str) -> str:
        """``text`` with every secret this connector holds replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def retry_after(header: str | None, now: datetime | None = None) -> timedelta | None:
    """A ``Retry-After`` header's wait: seconds, or an HTTP date; None if absent or unreadable."""
    if not header:
        return None
    value = header.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return timedelta(seconds=max(0.0, seconds))
