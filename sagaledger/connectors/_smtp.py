"""Sending email over SMTP from saga steps (see :mod:`sagaledger.connectors.email`)."""

from __future__ import annotations

import base64
import email.policy
import email.utils
import logging
import re
import smtplib
import ssl
from collections.abc import Iterable, Sequence
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import tenacity

from sagaledger._errors import (
    OutcomeUnknownError,
    PermanentError,
    RateLimitedError,
    RetryableError,
    StepError,
)
from sagaledger.connectors._http import CONNECT_ATTEMPTS
from sagaledger.connectors._mail import SentEmail, message_id_for, recipients_of, record_sent

logger = logging.getLogger("sagaledger.connectors.email")

#: How long to wait after an SMTP "slow down" reply: SMTP has no Retry-After.
DEFAULT_SMTP_RATE_LIMIT_WAIT = timedelta(seconds=60)

#: Wording in a 4xx reply that means "you are sending too fast", not "try again".
_RATE_LIMIT_WORDING = re.compile(
    r"\brate\b|\brate-?limit|too many (messages|mails|emails|connections|requests)|throttl",
    re.IGNORECASE,
)


class _NotSent(Exception):
    """Internal: the SMTP connection failed before anything was sent; tenacity retries it."""


class _Refused(Exception):
    """Internal: the server answered a command with a code other than the one expected."""

    def __init__(self, stage: str, code: int, reply: bytes | str):
        text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
        super().__init__(f"{code} {text}")
        self.stage, self.code, self.text = stage, code, " ".join(text.split())


class SmtpMailer:
    """Sends email over SMTP: at least once, at best.

    A send is one SMTP session: connect (retried briefly while refused), EHLO,
    STARTTLS when asked, AUTH when credentials are given, MAIL, RCPT for every
    recipient, DATA. A recipient the server refuses fails the whole message
    before DATA, so nothing is ever sent to only some recipients.

    Delivery guarantee: SMTP has no idempotency keys. If the connection is lost
    after the message was sent and before the server's ``250``, the send raises
    :class:`~sagaledger.OutcomeUnknownError`, and a retry sends the message
    again: the receiver may get it twice. Both copies carry the same
    ``Message-ID`` (see :func:`message_id_for`), which lets receivers that dedupe
    by Message-ID keep one; most do not, and SMTP offers no way to ask a server
    whether it accepted a message, so there is no probe.

    Args:
        host: The SMTP server.
        port: Its port (587 for submission with STARTTLS).
        username: Given with ``password``, the session authenticates (PLAIN or LOGIN).
        password: Never appears in an error or log line.
        starttls: Upgrade to TLS after EHLO (refused as a permanent error when
            the server does not offer it). Turn it off only for local servers.
        tls_context: The TLS context for STARTTLS (the system defaults when None).
        connect_timeout: Seconds to connect and read the greeting.
        timeout: Seconds to wait for each reply once connected; past it after
            the message was sent, the outcome is unknown.
        connect_attempts: Tries per send while the server cannot be reached.
        rate_limit_wait: How long a "slow down" reply asks to wait.
        local_hostname: The name given in EHLO (the machine's FQDN by default).
        message_id_domain: The Message-ID's right-hand side (the sender's domain by default).
    """

    #: The system's name in errors.
    system = "smtp"

    def __init__(
        self,
        host: str,
        port: int = 587,
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = True,
        tls_context: ssl.SSLContext | None = None,
        connect_timeout: float = 3.0,
        timeout: float = 30.0,
        connect_attempts: int = CONNECT_ATTEMPTS,
        rate_limit_wait: timedelta = DEFAULT_SMTP_RATE_LIMIT_WAIT,
        local_hostname: str | None = None,
        message_id_domain: str | None = None,
    ):
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.host, self.port = host, port
        self._username, self._password = username, password
        self._starttls, self._tls_context = starttls, tls_context
        self._connect_timeout, self._timeout = connect_timeout, timeout
        self._connect_attempts = max(1, connect_attempts)
        self._rate_limit_wait = rate_limit_wait
        self._local_hostname = local_hostname
        self._message_id_domain = message_id_domain
        self._secrets = sorted(_smtp_secrets(username, password), key=len, reverse=True)

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
        """Send one message in one SMTP session.

        Args:
            sender: The ``From`` address (``"Shop <orders@shop.example>"``).
            to: One address or several.
            subject: The subject.
            text: The plain-text body.
            html: An HTML alternative, if any.
            idempotency_key: The step's key; the ``Message-ID`` is derived from it.

        Returns:
            The message's ``Message-ID`` and the server's final reply.

        Raises:
            RetryableError: The server could not be reached, or answered 4xx.
            RateLimitedError: The server said the sender is going too fast.
            PermanentError: 5xx, failed authentication, or a missing extension.
            OutcomeUnknownError: The message was sent and no answer came back.
        """
        recipients = recipients_of(to)
        message = self.compose(
            sender=sender,
            to=recipients,
            subject=subject,
            text=text,
            html=html,
            idempotency_key=idempotency_key,
        )
        envelope_from = email.utils.parseaddr(sender)[1]
        envelope_to = [email.utils.parseaddr(r)[1] for r in recipients]
        reply = self._deliver(envelope_from, envelope_to, message.as_bytes())
        message_id = str(message["Message-ID"])
        logger.info("smtp accepted %s for %d recipient(s)", message_id, len(recipients))
        record_sent(message_id)
        return SentEmail(
            message_id=message_id,
            idempotency_key=idempotency_key,
            to=recipients,
            server_reply=reply,
        )

    def compose(
        self,
        *,
        sender: str,
        to: Sequence[str],
        subject: str,
        text: str,
        html: str | None,
        idempotency_key: str,
    ) -> EmailMessage:
        """The message as it goes on the wire (CRLF line ends), with its derived Message-ID."""
        message = EmailMessage(policy=email.policy.SMTP)
        message["From"] = sender
        message["To"] = ", ".join(to)
        message["Subject"] = subject
        message["Date"] = email.utils.formatdate(usegmt=True)
        domain = self._message_id_domain or email.utils.parseaddr(sender)[1].rpartition("@")[2]
        message["Message-ID"] = message_id_for(idempotency_key, domain or "localhost")
        message.set_content(text)
        if html is not None:
            message.add_alternative(html, subtype="html")
        return message

    def redact(self, text: str) -> str:
        """``text`` with the password (and its base64 forms) replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    # -- the session --------------------------------------------------------------

    def _deliver(self, envelope_from: str, envelope_to: list[str], data: bytes) -> str:
        smtp = self._connect()
        sent = False  # True once the whole message, final dot included, has left
        stage = "ehlo"
        try:
            smtp.ehlo_or_helo_if_needed()
            if self._starttls:
                stage = "starttls"
                smtp.starttls(context=self._tls_context or ssl.create_default_context())
                smtp.ehlo_or_helo_if_needed()  # again: TLS discards what was said before
            if self._username is not None and self._password is not None:
                stage = "auth"
                smtp.login(self._username, self._password)
            stage = "mail"
            options = [f"SIZE={len(data)}"] if smtp.has_extn("size") else []
            _expect(stage, (250,), smtp.mail(envelope_from, options))
            stage = "rcpt"
            for address in envelope_to:
                _expect(stage, (250, 251), smtp.rcpt(address))
            stage = "data"
            _expect(stage, (354,), smtp.docmd("DATA"))
            smtp.send(_dot_stuffed(data))
            sent = True
            code, reply = smtp.getreply()
            _expect(stage, (250,), (code, reply))
            return reply.decode("utf-8", "replace")
        except _Refused as refused:
            raise self._refused(refused) from None
        except smtplib.SMTPResponseException as exc:  # login, starttls: raised by smtplib
            raise self._refused(_Refused(stage, exc.smtp_code, exc.smtp_error)) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise self._error(PermanentError, f"{stage} not offered: {exc}", stage=stage) from None
        except ssl.SSLCertVerificationError as exc:
            raise self._error(
                PermanentError, f"untrusted certificate: {exc}", stage=stage
            ) from None
        except smtplib.SMTPServerDisconnected as exc:
            raise self._lost(exc, stage, sent) from None
        except smtplib.SMTPException as exc:  # no usable AUTH mechanism, and the like
            raise self._error(PermanentError, f"{stage} failed: {exc}", stage=stage) from None
        except OSError as exc:
            raise self._lost(exc, stage, sent) from None
        finally:
            _hang_up(smtp)

    def _connect(self) -> smtplib.SMTP:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_NotSent),
            stop=tenacity.stop_after_attempt(self._connect_attempts),
            wait=tenacity.wait_random_exponential(multiplier=0.05, max=0.5),  # full jitter
            reraise=True,
        )
        try:
            return retrying(self._connect_once)
        except _NotSent as exc:
            raise self._error(
                RetryableError, f"could not connect: {exc}", stage="connect"
            ) from None
        except smtplib.SMTPConnectError as exc:  # the greeting was not 220
            raise self._refused(_Refused("connect", exc.smtp_code, exc.smtp_error)) from None

    def _connect_once(self) -> smtplib.SMTP:
        smtp = smtplib.SMTP(local_hostname=self._local_hostname, timeout=self._connect_timeout)
        try:
            smtp.connect(self.host, self.port)
        except smtplib.SMTPConnectError:
            smtp.close()
            raise
        except OSError as exc:  # refused, unreachable, no greeting: nothing was sent
            smtp.close()
            raise _NotSent(f"{type(exc).__name__}: {exc}") from None
        if smtp.sock is not None:
            smtp.sock.settimeout(self._timeout)
        return smtp

    # -- errors -------------------------------------------------------------------

    def _lost(self, exc: OSError, stage: str, sent: bool) -> StepError:
        # smtplib reports timeouts and resets while reading as SMTPServerDisconnected.
        if sent:
            return self._error(
                OutcomeUnknownError,
                f"no reply after the message was sent ({exc}); it may have been accepted",
                stage=stage,
            )
        return self._error(
            RetryableError, f"connection lost before the message was sent ({exc})", stage=stage
        )

    def _refused(self, refused: _Refused) -> StepError:
        code, stage = refused.code, refused.stage
        message = f"{stage} refused: {code} {refused.text}"
        if 400 <= code < 500:
            if _RATE_LIMIT_WORDING.search(refused.text):
                return self._error(
                    RateLimitedError, message, stage=stage, code=code, wait=self._rate_limit_wait
                )
            return self._error(RetryableError, message, stage=stage, code=code)
        return self._error(PermanentError, message, stage=stage, code=code)

    def _error(
        self,
        kind: type[StepError],
        message: str,
        *,
        stage: str | None = None,
        code: int | None = None,
        wait: timedelta | None = None,
    ) -> StepError:
        details: dict[str, Any] = {"system": self.system, "operation": "send", "host": self.host}
        if stage is not None:
            details["stage"] = stage
        if code is not None:
            details["smtp_code"] = code
        text = self.redact(f"{self.system} send: {message}")
        if kind is RateLimitedError:
            return RateLimitedError(text, retry_after=wait, details=details)
        return kind(text, details=details)


def _smtp_secrets(username: str | None, password: str | None) -> Iterable[str]:
    """The password and the base64 forms in which AUTH PLAIN and LOGIN carry it."""
    if not password:
        return ()
    forms = {password, base64.b64encode(password.encode()).decode()}
    if username is not None:
        forms.add(base64.b64encode(f"\0{username}\0{password}".encode()).decode())
    return forms


def _expect(stage: str, wanted: tuple[int, ...], answer: tuple[int, bytes]) -> None:
    code, reply = answer
    if code not in wanted:
        raise _Refused(stage, code, reply)


def _dot_stuffed(data: bytes) -> bytes:
    """The DATA payload: a leading "." doubled on each line, ended by CRLF "." CRLF (RFC 5321)."""
    data = re.sub(rb"(?m)^\.", b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def _hang_up(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()
