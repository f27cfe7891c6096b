"""Sending email from saga steps: over SMTP, or through a transactional email HTTP API.

Both senders have one method, :meth:`Mailer.send_email`, that takes the message
and the step's idempotency key and returns a :class:`SentEmail`. They differ in
what they can promise when an answer is lost:

- :class:`SmtpMailer` speaks SMTP (``smtplib``). SMTP has no idempotency: when
  the connection drops after the message was sent and before the server's
  ``250``, nobody can tell whether it was accepted, and a resend may deliver it
  twice. *At least once*, at best. The ``Message-ID`` is derived from the key,
  so both copies carry the same one and a receiver that dedupes by Message-ID
  keeps one; most receivers do not.
- :class:`HttpEmailApi` calls a Resend-style HTTP API with an
  ``Idempotency-Key`` header: *once per key* while the provider remembers the
  key (Resend: 24 hours). Its :meth:`~HttpEmailApi.find_sent` looks a message up
  by key, for a step's probe.

SMTP replies map onto the error taxonomy like this:

=========================================  ==========================
what happened                              raised
=========================================  ==========================
could not connect (nothing sent)           retried here, then ``RetryableError``
4xx reply (421, 450, 451, 452)             ``RetryableError``
4xx saying "rate" / "too many messages"    ``RateLimitedError`` (``rate_limit_wait``)
5xx reply (550, 553, 554), 535 auth        ``PermanentError``
dropped or timed out before the message    ``RetryableError`` (it cannot have landed)
dropped or timed out after the message     ``OutcomeUnknownError``
=========================================  ==========================

Both record each message accepted as ``email_sent`` (system ``email``, the
Message-ID or the API's email id as reference) for the compensation ledger; an
email cannot be undone, so its step is usually declared ``no_compensation``.
"""

from sagaledger.connectors._email_api import DEFAULT_EMAIL_API_URL, HttpEmailApi
from sagaledger.connectors._mail import Mailer, SentEmail, message_id_for
from sagaledger.connectors._smtp import DEFAULT_SMTP_RATE_LIMIT_WAIT, SmtpMailer

__all__ = [
    "DEFAULT_EMAIL_API_URL",
    "DEFAULT_SMTP_RATE_LIMIT_WAIT",
    "HttpEmailApi",
    "Mailer",
    "SentEmail",
    "SmtpMailer",
    "message_id_for",
]
