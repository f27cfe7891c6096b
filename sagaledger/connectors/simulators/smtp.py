"""A simulated SMTP server on loopback: real RFC 5321 sessions, a ledger, and faults.

It speaks enough SMTP for ``smtplib`` and most clients: EHLO/HELO, AUTH PLAIN
and LOGIN (checked against the configured credentials), MAIL, RCPT, DATA with
dot-unstuffing, RSET, NOOP and QUIT, and the 5xx replies real servers give to
commands out of order. Every accepted message is parsed (``email``), kept in
:attr:`SmtpSimulator.messages` and recorded in the ledger as an ``email_sent``
effect keyed by its ``Message-ID``. Like a real server it accepts a message
whose Message-ID it has seen before; the ledger marks it ``duplicate``.

Faults come from the same :class:`FaultPlan` as the HTTP simulators (operation
``"send"``) and hit the reply to the end of DATA:

================  ============================================================
fault             the server
================  ============================================================
``latency``       waits ``delay`` seconds, then accepts
``error``         ``451 4.3.0`` (transient); nothing kept
``rate_limit``    ``421 4.7.0 too many messages``, and closes; nothing kept
``timeout``       holds ``delay`` seconds, then hangs up without a reply
``decline``       ``550 5.7.1`` (permanent); nothing kept
``lost_response`` keeps the message, then hangs up before its ``250``
================  ============================================================
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.policy
import hmac
import itertools
import re
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from sagaledger.connectors.simulators._faults import (
    Effect,
    FaultKind,
)
from sagaledger.connectors.simulators._serving import ServedSimulator

#: The operation name faults use to hit a message.
SEND = "send"
#: Longest command line accepted (RFC 5321 4.5.3.1.4 says 512 with its CRLF; be lenient).
_MAX_LINE = 4096
#: Seconds a connection may sit idle before the server closes it.
_IDLE_TIMEOUT = 60.0
_MAIL_FROM = re.compile(r"^FROM:\s*<([^>]*)>\s*(.*)$", re.IGNORECASE)
_RCPT_TO = re.compile(r"^TO:\s*<([^>]+)>\s*(.*)$", re.IGNORECASE)
_NOT_IMPLEMENTED = frozenset({"VRFY", "EXPN", "HELP", "TURN", "ETRN", "STARTTLS", "BDAT"})


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the server accepted, as it arrived.

    Attributes:
        queue_id: The server's id for it (given in its ``250`` reply).
        mail_from: The envelope sender (MAIL FROM).
        rcpt_to: The envelope recipients (RCPT TO).
        data: The message after dot-unstuffing, CRLF line ends.
        message: ``data`` parsed.
        message_id: Its ``Message-ID`` header, if it has one.
        authenticated_as: The user the session authenticated as, if any.
        duplicate: True when an earlier message had the same Message-ID.
    """

    queue_id: str
    mail_from: str
    rcpt_to: tuple[str, ...]
    data: bytes
    message: EmailMessage
    message_id: str | None
    authenticated_as: str | None
    duplicate: bool


class SmtpSimulator(ServedSimulator):
    """A simulated SMTP server on ``127.0.0.1``, one thread per connection.

    Args:
        port: 0 for any free port (see :attr:`port`).
        username: The user AUTH accepts.
        password: That user's password.
        hostname: The name the server greets with.
        auth_mechanisms: What EHLO advertises and AUTH accepts (PLAIN, LOGIN).
        require_auth: Refuse MAIL with ``530`` until the session has authenticated.
        max_message_size: Advertised as SIZE; larger messages get ``552``.
    """

    #: The service's name, in logs.
    system = "smtp"

    def __init__(
        self,
        port: int = 0,
        *,
        username: str = "sagaledger",
        password: str = "simulator-password",
        hostname: str = "smtp.simulator.test",
        auth_mechanisms: Iterable[str] = ("PLAIN", "LOGIN"),
        require_auth: bool = True,
        max_message_size: int = 10 * 1024 * 1024,
    ):
        self.username, self.password, self.hostname = username, password, hostname
        self.auth_mechanisms = tuple(m.upper() for m in auth_mechanisms)
        unknown = set(self.auth_mechanisms) - {"PLAIN", "LOGIN"}
        if unknown:
            raise ValueError(f"unsupported AUTH mechanism(s) {sorted(unknown)}: use PLAIN, LOGIN")
        self.require_auth = require_auth
        self.max_message_size = max_message_size
        self.messages: list[ReceivedMessage] = []
        self._lock = threading.Lock()
        self._queue_ids = itertools.count(1)
        self._sessions = _Server(("127.0.0.1", port), self)
        super().__init__(self._sessions)

    @property
    def host(self) -> str:
        return str(self._sessions.server_address[0])

    @property
    def port(self) -> int:
        return int(self._sessions.server_address[1])

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def _hang_up(self) -> None:
        self._sessions.hang_up_all()  # server_close() then joins the session threads

    def check_credentials(self, username: str, password: str) -> bool:
        """True when AUTH should accept this pair."""
        return hmac.compare_digest(username.encode(), self.username.encode()) and (
            hmac.compare_digest(password.encode(), self.password.encode())
        )

    def accept(
        self, mail_from: str, rcpt_to: tuple[str, ...], data: bytes, user: str | None
    ) -> ReceivedMessage:
        """Keep a message that passed DATA and record its effect; the queue id answers."""
        parsed = BytesParser(policy=email.policy.default).parsebytes(data)
        message_id = str(parsed["Message-ID"]).strip() if parsed["Message-ID"] else None
        with self._lock:
            duplicate = message_id is not None and any(
                m.message_id == message_id for m in self.messages
            )
            received = ReceivedMessage(
                queue_id=f"{next(self._queue_ids):08X}",
                mail_from=mail_from,
                rcpt_to=rcpt_to,
                data=data,
                message=parsed,
                message_id=message_id,
                authenticated_as=user,
                duplicate=duplicate,
            )
            self.messages.append(received)
            detail = {
                "from": mail_from,
                "to": list(rcpt_to),
                "subject": str(parsed["Subject"] or ""),
                "duplicate": duplicate,
            }
            self.ledger.record(Effect("email_sent", received.queue_id, message_id, detail=detail))
        return received

    def hold(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the server is stopping."""
        self._stopping.wait(seconds)


class _Server(socketserver.ThreadingTCPServer):
    """Tracks its open sessions so that stopping can hang up on them."""

    allow_reuse_address = True
    daemon_threads = False  # server_close() joins them: no thread outlives stop()
    block_on_close = True

    def __init__(self, address: tuple[str, int], simulator: SmtpSimulator):
        self.simulator = simulator
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Session)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def hang_up_all(self) -> None:
        with self._open_lock:
            for sock in self._open:
                with contextlib.suppress(OSError):  # already gone
                    sock.shutdown(socket.SHUT_RDWR)


class _HangUp(Exception):
    """Internal: end the session now, with no further reply."""


class _Session(socketserver.StreamRequestHandler):
    """One SMTP session: a small state machine over the command lines."""

    server: _Server
    timeout = _IDLE_TIMEOUT

    def setup(self) -> None:
        super().setup()
        self.sim = self.server.simulator
        self.greeted: str | None = None  # "EHLO" or "HELO"
        self.user: str | None = None
        self.mail_from: str | None = None
        self.rcpt_to: list[str] = []

    def handle(self) -> None:
        commands: dict[str, Callable[[str], None]] = {
            "EHLO": self.ehlo,
            "HELO": self.helo,
            "AUTH": self.auth,
            "MAIL": self.mail,
            "RCPT": self.rcpt,
            "DATA": self.data,
            "RSET": self.rset,
            "NOOP": lambda _: self.reply(250, "2.0.0 Ok"),
            "QUIT": self.quit,
        }
        try:
            self.reply(220, f"{self.sim.hostname} ESMTP sagaledger simulator")
            while True:
                verb, _, argument = self.read_line().partition(" ")
                verb = verb.upper()
                if verb in commands:
                    commands[verb](argument.strip())
                elif verb in _NOT_IMPLEMENTED:
                    self.reply(502, "5.5.1 Command not implemented")
                else:
                    self.reply(500, "5.5.2 Syntax error, command unrecognized")
        except TimeoutError:
            self.try_reply(421, "4.4.2 Idle too long, closing connection")
        except (_HangUp, OSError):
            pass

    # -- lines ------------------------------------------------------------------

    def read_line(self) -> str:
        line = self.rfile.readline(_MAX_LINE)
        if not line:
            raise _HangUp
        return line.decode("utf-8", "replace").rstrip("\r\n")

    def reply(self, code: int, *lines: str) -> None:
        out = [f"{code}-{text}" for text in lines[:-1]] + [f"{code} {lines[-1]}"]
        self.wfile.write(("\r\n".join(out) + "\r\n").encode())

    def try_reply(self, code: int, text: str) -> None:
        with contextlib.suppress(OSError):
            self.reply(code, text)

    # -- commands ----------------------------------------------------------------

    def reset(self) -> None:
        self.mail_from, self.rcpt_to = None, []

    def ehlo(self, domain: str) -> None:
        if not domain:
            return self.reply(501, "5.5.4 Syntax: EHLO hostname")
        self.greeted = "EHLO"
        self.reset()
        extensions = [f"SIZE {self.sim.max_message_size}", "8BITMIME", "ENHANCEDSTATUSCODES"]
        if self.sim.auth_mechanisms:
            extensions.append("AUTH " + " ".join(self.sim.auth_mechanisms))
        self.reply(250, f"{self.sim.hostname} greets {domain}", *extensions)

    def helo(self, domain: str) -> None:
        if not domain:
            return self.reply(501, "5.5.4 Syntax: HELO hostname")
        self.greeted = "HELO"
        self.reset()
        self.reply(250, self.sim.hostname)

    def auth(self, argument: str) -> None:
        mechanism, _, initial = argument.partition(" ")
        mechanism = mechanism.upper()
        if self.greeted != "EHLO":
            return self.reply(503, "5.5.1 Send EHLO first")
        if self.user is not None:
            return self.reply(503, "5.5.1 Already authenticated")
        if self.mail_from is not None:
            return self.reply(503, "5.5.1 AUTH not allowed during a mail transaction")
        if mechanism not in self.sim.auth_mechanisms:
            return self.reply(504, "5.5.4 Unrecognized authentication type")
        try:
            if mechanism == "PLAIN":
                response = self.challenge("", initial.strip())
                _authzid, username, password = response.split("\0")
            else:  # LOGIN
                username = self.challenge("Username:", initial.strip())
                password = self.challenge("Password:", "")
        except _Cancelled:
            return self.reply(501, "5.7.0 Authentication cancelled")
        except (ValueError, binascii.Error):
            return self.reply(501, "5.5.2 Cannot decode the response")
        if not self.sim.check_credentials(username, password):
            # Say nothing about which part was wrong, and never echo either.
            return self.reply(535, "5.7.8 Authentication credentials invalid")
        self.user = username
        self.reply(235, "2.7.0 Authentication successful")

    def challenge(self, prompt: str, given: str) -> str:
        """The client's decoded answer: ``given`` if it came with AUTH, else asked for."""
        if not given:
            self.reply(334, base64.b64encode(prompt.encode()).decode())
            given = self.read_line().strip()
            if given == "*":
                raise _Cancelled
        return base64.b64decode(given, validate=True).decode()

    def mail(self, argument: str) -> None:
        if self.greeted is None:
            return self.reply(503, "5.5.1 Send HELO/EHLO first")
        if self.sim.require_auth and self.user is None:
            return self.reply(530, "5.7.0 Authentication required")
        if self.mail_from is not None:
            return self.reply(503, "5.5.1 Nested MAIL command")
        matched = _MAIL_FROM.match(argument)
        if matched is None:
            return self.reply(501, "5.5.4 Syntax: MAIL FROM:<address>")
        size = re.search(r"\bSIZE=(\d+)", matched.group(2), re.IGNORECASE)
        if size is not None and int(size.group(1)) > self.sim.max_message_size:
            return self.reply(552, "5.3.4 Message size exceeds fixed limit")
        self.mail_from = matched.group(1)
        self.reply(250, "2.1.0 Ok")

    def rcpt(self, argument: str) -> None:
        if self.mail_from is None:
            return self.reply(503, "5.5.1 Need MAIL before RCPT")
        matched = _RCPT_TO.match(argument)
        if matched is None:
            return self.reply(501, "5.5.4 Syntax: RCPT TO:<address>")
        address = matched.group(1)
        local, at, domain = address.rpartition("@")
        if not (local and at and domain):
            return self.reply(501, "5.1.3 Bad recipient address syntax")
        if domain.lower() == "invalid" or domain.lower().endswith(".invalid"):
            return self.reply(550, "5.1.1 Recipient address rejected: no such mailbox")
        if len(self.rcpt_to) >= 100:
            return self.reply(452, "4.5.3 Too many recipients")
        self.rcpt_to.append(address)
        self.reply(250, "2.1.5 Ok")

    def data(self, argument: str) -> None:
        if argument:
            return self.reply(501, "5.5.4 Syntax: DATA")
        if self.mail_from is None or not self.rcpt_to:
            return self.reply(503, "5.5.1 Need RCPT before DATA")
        self.reply(354, "End data with <CR><LF>.<CR><LF>")
        lines: list[bytes] = []
        size = 0
        while True:
            line = self.rfile.readline(_MAX_LINE)
            if not line:
                raise _HangUp  # the client went away mid-message: nothing is kept
            if line in (b".\r\n", b".\n"):
                break
            if line.startswith(b"."):
                line = line[1:]  # dot-unstuffing (RFC 5321 4.5.2)
            size += len(line)
            if size <= self.sim.max_message_size:
                lines.append(line)
        mail_from, rcpt_to = self.mail_from, tuple(self.rcpt_to)
        self.reset()
        if size > self.sim.max_message_size:
            return self.reply(552, "5.3.4 Message size exceeds fixed limit")
        self.finish_message(mail_from, rcpt_to, b"".join(lines))

    def finish_message(self, mail_from: str, rcpt_to: tuple[str, ...], data: bytes) -> None:
        """The reply to the end of DATA, where faults strike."""
        fault = self.sim.faults.take(SEND)
        kind = fault.kind if fault is not None else None
        if kind is FaultKind.LATENCY and fault is not None:
            self.sim.hold(fault.delay)
        elif kind is FaultKind.ERROR:
            return self.reply(451, "4.3.0 Simulated transient failure, try again later")
        elif kind is FaultKind.RATE_LIMIT:
            self.reply(421, "4.7.0 Too many messages, slow down; closing connection")
            raise _HangUp
        elif kind is FaultKind.TIMEOUT and fault is not None:
            self.sim.hold(fault.delay)
            raise _HangUp
        elif kind is FaultKind.DECLINE and fault is not None:
            return self.reply(550, f"5.7.1 Message refused: {fault.code or 'policy rejection'}")
        received = self.sim.accept(mail_from, rcpt_to, data, self.user)
        if kind is FaultKind.LOST_RESPONSE:
            raise _HangUp  # kept, but the client never hears so
        self.reply(250, f"2.0.0 Ok: queued as {received.queue_id}")

    def rset(self, _: str) -> None:
        self.reset()
        self.reply(250, "2.0.0 Ok")

    def quit(self, _: str) -> None:
        self.reply(221, "2.0.0 Bye")
        raise _HangUp


class _Cancelled(Exception):
    """Internal: the client answered an AUTH challenge with ``*``."""
