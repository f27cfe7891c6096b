"""A simulated transactional email HTTP API, in Resend's style.

    POST /emails          send ({"from", "to", "subject", "text" | "html"}) -> {"id"}
    GET  /emails/{id}     one sent email
    GET  /emails          recent emails; ``?idempotency_key=K`` narrows to the one sent under K

Authentication is ``Authorization: Bearer <api key>`` (401 without one, 403 for
a wrong one). ``Idempotency-Key`` is honoured as Resend documents it: within
the key's retention window a repeat gets the first answer and sends nothing,
and the same key with a different body is refused with 409. Errors have
Resend's shape: ``{"statusCode": 422, "name": "validation_error", "message": ...}``.

The lookup by ``idempotency_key`` is this simulator's addition (Resend's list
has no such filter); the probe of :class:`~sagaledger.connectors.email.HttpEmailApi`
uses it, and each listed email carries its ``idempotency_key``.
"""

from __future__ import annotations

import email.utils
import hashlib
import itertools
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sagaledger.connectors.simulators._faults import Effect, Fault
from sagaledger.connectors.simulators._http import (
    HttpSimulator,
    Operation,
    SimRequest,
    SimResponse,
)

#: How long a key is remembered (Resend: 24 hours).
DEFAULT_KEY_RETENTION = timedelta(hours=24)
#: Most recipients one email may have.
MAX_RECIPIENTS = 50
#: Resend's names for the errors the shared base raises by its own codes.
_ERROR_NAMES = {"simulated_error": "application_error", "rate_limit": "rate_limit_exceeded"}


@dataclass(frozen=True)
class _Remembered:
    """The first answer given under an idempotency key."""

    fingerprint: str
    response: SimResponse
    at: datetime


class EmailApiSimulator(HttpSimulator):
    """A simulated Resend-style email API on ``127.0.0.1``.

    Args:
        port: 0 for any free port (see :attr:`url`).
        api_key: The bearer token it accepts.
        key_retention: How long an idempotency key is remembered.
        clock: Now, as UTC (to age keys past their retention in tests).
    """

    system = "email_api"

    def __init__(
        self,
        port: int = 0,
        *,
        api_key: str = "re_test_simulator",
        key_retention: timedelta = DEFAULT_KEY_RETENTION,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        super().__init__(port)
        self.api_key = api_key
        self.key_retention = key_retention
        self.clock = clock
        #: Every email sent, by id, in the order sent.
        self.emails: dict[str, dict[str, Any]] = {}
        self._keys: dict[str, _Remembered] = {}
        self._ids = itertools.count(1)

    # -- the service ---------------------------------------------------------------

    def authenticate(self, request: SimRequest) -> SimResponse | None:
        header = request.header("authorization")
        if not header:
            return self.error(401, "missing_api_key", "Missing API key in the authorization header")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.api_key:
            return self.error(403, "invalid_api_key", "API key is invalid")
        return None

    def route(self, request: SimRequest) -> Operation | SimResponse:
        path = request.path.rstrip("/")
        if path == "/emails" and request.method == "POST":
            return self._route_send(request)
        if path == "/emails" and request.method == "GET":
            return "list_emails", lambda: self._list(request)
        if path.startswith("/emails/") and request.method == "GET":
            email_id = path.removeprefix("/emails/")
            return "get_email", lambda: self._get(email_id)
        if path == "/emails" or path.startswith("/emails/"):
            return self.error(405, "method_not_allowed", f"Method {request.method} not allowed")
        return self.error(404, "not_found", "The requested endpoint does not exist")

    def error(self, status: int, code: str, message: str) -> SimResponse:
        name = _ERROR_NAMES.get(code, code)
        return SimResponse(status, {"statusCode": status, "name": name, "message": message})

    def decline(self, operation: str, fault: Fault) -> SimResponse:
        # The provider refusing to send (a suppressed recipient, an unverified domain).
        return self.error(422, fault.code or "validation_error", "The email was refused")

    # -- sending -------------------------------------------------------------------

    def _route_send(self, request: SimRequest) -> Operation | SimResponse:
        key = request.header("idempotency-key")
        if key is not None and not 1 <= len(key) <= 256:
            return self.error(
                400, "invalid_idempotency_key", "The key must be between 1 and 256 characters"
            )
        try:
            body = request.json()
        except ValueError:
            return self.error(400, "validation_error", "The body is not valid JSON")
        invalid = _invalid_email(body)
        if invalid is not None:
            return invalid
        return "send", lambda: self._send(body, key)

    def _send(self, body: dict[str, Any], key: str | None) -> SimResponse:
        now = self.clock()
        fingerprint = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        remembered = self._keys.get(key) if key is not None else None
        if remembered is not None and now - remembered.at < self.key_retention:
            if remembered.fingerprint != fingerprint:
                return self.error(
                    409,
                    "invalid_idempotent_request",
                    "Same idempotency key used with a different request payload",
                )
            return SimResponse(remembered.response.status, dict(remembered.response.body))
        email_id = str(uuid.UUID(int=next(self._ids)))
        to = [body["to"]] if isinstance(body["to"], str) else list(body["to"])
        self.emails[email_id] = {
            "object": "email",
            "id": email_id,
            "to": to,
            "from": body["from"],
            "created_at": now.isoformat(),
            "subject": body["subject"],
            "html": body.get("html"),
            "text": body.get("text"),
            "bcc": body.get("bcc"),
            "cc": body.get("cc"),
            "reply_to": body.get("reply_to"),
            "last_event": "delivered",
            "idempotency_key": key,
        }
        detail = {"to": to, "subject": body["subject"]}
        self.ledger.record(Effect("email_sent", email_id, key, detail=detail))
        answer = SimResponse(200, {"id": email_id})
        if key is not None:
            self._keys[key] = _Remembered(fingerprint, answer, now)
        return SimResponse(answer.status, dict(answer.body))

    # -- looking up ----------------------------------------------------------------

    def _get(self, email_id: str) -> SimResponse:
        found = self.emails.get(email_id)
        if found is None:
            return self.error(404, "not_found", "Email not found")
        return SimResponse(200, found)

    def _list(self, request: SimRequest) -> SimResponse:
        wanted = request.query.get("idempotency_key", [None])[0]
        try:
            limit = min(100, max(1, int(request.query.get("limit", ["20"])[0])))
        except ValueError:
            return self.error(422, "validation_error", "limit must be a number from 1 to 100")
        newest_first = list(reversed(self.emails.values()))
        if wanted is not None:
            newest_first = [e for e in newest_first if e["idempotency_key"] == wanted]
        page = newest_first[:limit]
        return SimResponse(
            200, {"object": "list", "has_more": len(newest_first) > limit, "data": page}
        )


def _invalid_email(body: Any) -> SimResponse | None:
    """Resend's 422 for a body it would not send, or None."""

    def refuse(name: str, message: str) -> SimResponse:
        return SimResponse(422, {"statusCode": 422, "name": name, "message": message})

    if not isinstance(body, dict):
        return refuse("validation_error", "The body must be a JSON object")
    for field in ("from", "to", "subject"):
        if not body.get(field):
            return refuse("missing_required_field", f"Missing `{field}` field.")
    if not (body.get("text") or body.get("html")):
        return refuse("validation_error", "Give a `text` or an `html` body.")
    to = body["to"]
    recipients = [to] if isinstance(to, str) else to
    if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients):
        return refuse("validation_error", "`to` must be an address or a list of addresses.")
    if len(recipients) > MAX_RECIPIENTS:
        return refuse("validation_error", f"`to` may hold at most {MAX_RECIPIENTS} addresses.")
    for field, addresses in (("from", [body["from"]]), ("to", recipients)):
        for address in addresses:
            if not _well_formed(address):
                return refuse(
                    "validation_error",
                    f"Invalid `{field}` field. The email address needs to follow the "
                    "`email@example.com` or `Name <email@example.com>` format.",
                )
    return None


def _well_formed(address: Any) -> bool:
    if not isinstance(address, str):
        return False
    _, bare = email.utils.parseaddr(address)
    local, at, domain = bare.rpartition("@")
    return bool(local and at and "." in domain and " " not in bare)
