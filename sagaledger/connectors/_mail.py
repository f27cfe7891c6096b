"""What both email senders share: the result, the interface, the derived Message-ID."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from sagaledger.audit._effects import record_effect


class SentEmail(BaseModel):
    """What a sender reports about a message the service accepted.

    Attributes:
        message_id: The id to look the message up by: the ``Message-ID`` header
            for SMTP (derived from the key), the provider's email id for the API.
        idempotency_key: The key it was sent under.
        to: The recipients.
        server_reply: SMTP only: the server's final reply (often its queue id).
    """

    model_config = ConfigDict(frozen=True)

    message_id: str
    idempotency_key: str
    to: tuple[str, ...]
    server_reply: str | None = None


class Mailer(Protocol):
    """What a saga step needs from an email sender."""

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
        """Send one message, once per ``idempotency_key`` as far as the transport allows."""
        ...


def message_id_for(idempotency_key: str, domain: str) -> str:
    """The ``Message-ID`` of the message sent under ``idempotency_key``: the same on every retry.

    The key is hashed because a Message-ID may not contain its colons, and so
    that recipients do not see run ids.
    """
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    return f"<{digest}@{domain}>"


def record_sent(message_id: str, *, found: bool = False) -> None:
    """The ledger's ``email_sent`` (system ``email``): one record, named by its id."""
    record_effect("email", "email_sent", message_id, found=found)


def recipients_of(to: str | Sequence[str]) -> tuple[str, ...]:
    found = (to,) if isinstance(to, str) else tuple(to)
    if not found:
        raise ValueError("an email needs at least one recipient")
    return found
