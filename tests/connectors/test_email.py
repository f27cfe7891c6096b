"""Email over real SMTP and real loopback HTTP, against the simulators, through real saga runs.

Each fault is injected into a simulator and the run is driven by the test harness
(a manual clock, SQLite): what the orchestrator did is read from the saga log, and
what was really sent from the simulator's ledger.
"""

from __future__ import annotations

import base64
import logging
import smtplib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from sagaledger import (
    CompensationContext,
    OutcomeUnknownError,
    PermanentError,
    RateLimitedError,
    RetryableError,
    RetryPolicy,
    RetrySafety,
    RunStatus,
    Saga,
    StepContext,
    step,
)
from sagaledger.connectors.email import HttpEmailApi, Mailer, SentEmail, SmtpMailer, message_id_for
from sagaledger.connectors.simulators import Effect, Fault, FaultKind
from sagaledger.connectors.simulators.email_api import EmailApiSimulator
from sagaledger.connectors.simulators.smtp import SmtpSimulator
from sagaledger.store import EventType
from sagaledger.testing import SagaHarness

SMTP_USER = "shop-mailer"
SMTP_PASSWORD = "smtp-Pa55-q8Zx1"
API_KEY = "re_test_K9f3hD2sXw"
SENDER = "Shop <orders@shop.example>"
#: How long the SMTP mailer waits after a "too many messages" reply, in these tests.
SMTP_RATE_LIMIT_WAIT = timedelta(seconds=20)
#: Replies slower than this are timeouts: short, so that the timeout faults are quick.
REPLY_TIMEOUT = 0.3
FAST_RETRY = RetryPolicy(
    max_attempts=3,
    initial_backoff=timedelta(seconds=1),
    max_backoff=timedelta(seconds=1),
    jitter=0,
)


@pytest.fixture(autouse=True)
def no_threads_left_behind() -> Iterator[None]:
    """Every test's servers and sessions are gone (within 2 s) once its fixtures are."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 2
    while True:
        extra = [t.name for t in threading.enumerate() if t not in before and t.is_alive()]
        if not extra or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert extra == []


@pytest.fixture
def smtp_simulator() -> Iterator[SmtpSimulator]:
    with SmtpSimulator(username=SMTP_USER, password=SMTP_PASSWORD) as simulator:
        yield simulator


def smtp_mailer_for(simulator: SmtpSimulator, password: str = SMTP_PASSWORD) -> SmtpMailer:
    return SmtpMailer(
        simulator.host,
        simulator.port,
        username=SMTP_USER,
        password=password,
        starttls=False,  # the simulator speaks plain SMTP on loopback
        connect_timeout=1.0,
        timeout=REPLY_TIMEOUT,
        rate_limit_wait=SMTP_RATE_LIMIT_WAIT,
        local_hostname="worker.test",
    )


@pytest.fixture
def smtp_mailer(smtp_simulator: SmtpSimulator) -> SmtpMailer:
    return smtp_mailer_for(smtp_simulator)


@pytest.fixture
def email_api_simulator() -> Iterator[EmailApiSimulator]:
    with EmailApiSimulator(api_key=API_KEY) as simulator:
        yield simulator


def email_api_for(simulator: EmailApiSimulator, api_key: str = API_KEY) -> HttpEmailApi:
    return HttpEmailApi(
        simulator.url, api_key=api_key, timeout=httpx.Timeout(1.0, read=REPLY_TIMEOUT)
    )


@pytest.fixture
def email_api(email_api_simulator: EmailApiSimulator) -> Iterator[HttpEmailApi]:
    api = email_api_for(email_api_simulator)
    yield api
    api.close()


# -- the messages as received -------------------------------------------------------


def test_smtp_delivers_the_message_as_composed_after_authenticating(
    smtp_simulator: SmtpSimulator, smtp_mailer: SmtpMailer
) -> None:
    # Given a body with lines that SMTP must dot-stuff, one of them a lone "."
    body = "Thanks for your order.\n.starts with a dot\n..two dots\n.\nthe line after"

    # When it is sent to two recipients
    sent = smtp_mailer.send_email(
        sender=SENDER,
        to=["ada@customer.example", "Bob <bob@customer.example>"],
        subject="Order A1 confirmed",
        text=body,
        idempotency_key="run-1:send_confirmation:forward",
    )

    # Then the server authenticated the session and got the envelope and headers
    [received] = smtp_simulator.messages
    assert received.authenticated_as == SMTP_USER
    assert received.mail_from == "orders@shop.example"
    assert received.rcpt_to == ("ada@customer.example", "bob@customer.example")
    message = received.message
    assert message["From"] == SENDER
    assert message["To"] == "ada@customer.example, Bob <bob@customer.example>"
    assert message["Subject"] == "Order A1 confirmed"
    expected_id = message_id_for("run-1:send_confirmation:forward", "shop.example")
    assert message["Message-ID"] == sent.message_id == expected_id
    # ...and the body intact: unstuffed, nothing cut at the lone dot
    assert message.get_content().replace("\r\n", "\n") == body + "\n"
    assert b"\r\n.starts with a dot\r\n..two dots\r\n.\r\nthe line after" in received.data
    assert sent.server_reply == f"2.0.0 Ok: queued as {received.queue_id}"


def test_the_message_id_is_the_same_on_every_retry_of_a_key_and_differs_between_keys(
    smtp_simulator: SmtpSimulator, smtp_mailer: SmtpMailer
) -> None:
    def send(key: str) -> SentEmail:
        return smtp_mailer.send_email(
            sender=SENDER, to="ada@customer.example", subject="Hi", text="Hi", idempotency_key=key
        )

    first, again, other = send("run-1:s:forward"), send("run-1:s:forward"), send("run-2:s:forward")

    assert first.message_id == again.message_id != other.message_id
    assert [m.message_id for m in smtp_simulator.messages] == [
        first.message_id,
        first.message_id,
        other.message_id,
    ]
    # A server accepts a resent Message-ID; the ledger shows it as a duplicate
    assert [m.duplicate for m in smtp_simulator.messages] == [False, True, False]


def test_smtp_authenticates_with_login_when_that_is_all_the_server_offers() -> None:
    with SmtpSimulator(
        username=SMTP_USER, password=SMTP_PASSWORD, auth_mechanisms=["LOGIN"]
    ) as simulator:
        smtp_mailer_for(simulator).send_email(
            sender=SENDER, to="ada@customer.example", subject="Hi", text="Hi", idempotency_key="k"
        )
        assert [m.authenticated_as for m in simulator.messages] == [SMTP_USER]


def test_the_smtp_simulator_refuses_commands_out_of_order(smtp_simulator: SmtpSimulator) -> None:
    with smtplib.SMTP(smtp_simulator.host, smtp_simulator.port, local_hostname="t.test") as smtp:
        assert smtp.docmd("MAIL", "FROM:<a@shop.example>")[0] == 503  # no EHLO yet
        assert smtp.docmd("XYZZY")[0] == 500
        assert smtp.docmd("VRFY", "ada")[0] == 502
        smtp.ehlo()
        assert smtp.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        assert {"size", "8bitmime"} <= set(smtp.esmtp_features)
        assert smtp.docmd("MAIL", "FROM:<a@shop.example>")[0] == 530  # not authenticated
        smtp.login(SMTP_USER, SMTP_PASSWORD)
        assert smtp.docmd("RCPT", "TO:<ada@customer.example>")[0] == 503  # no MAIL
        assert smtp.docmd("DATA")[0] == 503  # no RCPT
        assert smtp.mail("a@shop.example")[0] == 250
        assert smtp.docmd("MAIL", "FROM:<a@shop.example>")[0] == 503  # nested
        assert smtp.rcpt("ada@customer.example")[0] == 250
        assert smtp.rset()[0] == 250
        assert smtp.docmd("DATA")[0] == 503  # RSET ended the transaction
        assert smtp.noop()[0] == 250
        assert smtp.mail("a@shop.example", ["SIZE=999999999"])[0] == 552
    assert smtp_simulator.messages == []


def test_stopping_the_smtp_simulator_hangs_up_on_a_session_left_open() -> None:
    simulator = SmtpSimulator().start()
    client = smtplib.SMTP(simulator.host, simulator.port, local_hostname="t.test")
    client.ehlo()

    started = time.monotonic()
    simulator.stop()

    assert time.monotonic() - started < 1  # not the 60 s idle timeout
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()
    client.close()


def test_the_api_request_carries_the_key_the_bearer_token_and_a_json_body(
    email_api_simulator: EmailApiSimulator, email_api: HttpEmailApi
) -> None:
    sent = email_api.send_email(
        sender=SENDER,
        to=["ada@customer.example"],
        subject="Order A1 confirmed",
        text="Thanks",
        html="<p>Thanks</p>",
        idempotency_key="run-1:send_confirmation:forward",
    )

    [request] = email_api_simulator.requests
    assert (request.method, request.path) == ("POST", "/emails")
    assert request.header("Idempotency-Key") == "run-1:send_confirmation:forward"
    assert request.header("Authorization") == f"Bearer {API_KEY}"
    assert request.header("Content-Type") == "application/json"
    assert request.json() == {
        "from": SENDER,
        "to": ["ada@customer.example"],
        "subject": "Order A1 confirmed",
        "text": "Thanks",
        "html": "<p>Thanks</p>",
    }
    assert [e.ref for e in email_api_simulator.ledger.effects("email_sent")] == [sent.message_id]


def test_the_api_replays_a_key_refuses_it_for_another_body_and_forgets_it_after_a_day() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    with EmailApiSimulator(api_key=API_KEY, clock=lambda: now) as simulator:
        api = email_api_for(simulator)
        message = {"sender": SENDER, "to": "ada@customer.example", "subject": "Hi", "text": "Hi"}
        first = api.send_email(**message, idempotency_key="k")

        # A repeat gets the first answer and sends nothing
        assert api.send_email(**message, idempotency_key="k") == first
        # The same key for a different message is refused
        with pytest.raises(PermanentError) as conflict:
            api.send_email(**{**message, "text": "Other"}, idempotency_key="k")
        assert conflict.value.details == {
            "system": "email_api",
            "operation": "send_email",
            "status": 409,
            "code": "invalid_idempotent_request",
        }
        assert len(simulator.ledger.effects("email_sent")) == 1

        # After the key's 24 hours, only a lookup still knows the message was sent...
        now += timedelta(hours=25)
        found = api.find_sent("k")
        assert found is not None and found.message_id == first.message_id
        assert api.find_sent("another key") is None
        # ...and a send without asking first sends it again
        assert api.send_email(**message, idempotency_key="k").message_id != first.message_id
        assert len(simulator.ledger.effects("email_sent")) == 2
        api.close()


def test_an_invalid_recipient_is_a_permanent_422_and_nothing_is_sent(
    email_api_simulator: EmailApiSimulator, email_api: HttpEmailApi
) -> None:
    with pytest.raises(PermanentError) as refused:
        email_api.send_email(
            sender=SENDER, to="not-an-address", subject="Hi", text="Hi", idempotency_key="k"
        )
    assert refused.value.details is not None
    assert (refused.value.details["status"], refused.value.details["code"]) == (
        422,
        "validation_error",
    )
    assert "Invalid `to` field" in str(refused.value)
    assert email_api_simulator.ledger.effects() == []


# -- SMTP replies mapped onto the taxonomy -------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error", "smtp_code", "kept"),
    [
        (Fault(FaultKind.ERROR), RetryableError, 451, 0),
        (Fault(FaultKind.RATE_LIMIT), RateLimitedError, 421, 0),
        (Fault(FaultKind.DECLINE), PermanentError, 550, 0),
        (Fault(FaultKind.TIMEOUT, delay=1.0), OutcomeUnknownError, None, 0),
        (Fault(FaultKind.LOST_RESPONSE), OutcomeUnknownError, None, 1),
    ],
    ids=lambda value: value.kind.value if isinstance(value, Fault) else None,
)
def test_each_smtp_fault_raises_its_error(
    smtp_simulator: SmtpSimulator,
    smtp_mailer: SmtpMailer,
    fault: Fault,
    error: type[Exception],
    smtp_code: int | None,
    kept: int,
) -> None:
    smtp_simulator.inject(fault)
    with pytest.raises(error) as raised:
        smtp_mailer.send_email(
            sender=SENDER, to="ada@customer.example", subject="Hi", text="Hi", idempotency_key="k"
        )
    assert type(raised.value) is error
    details = getattr(raised.value, "details", None) or {}
    assert details.get("smtp_code") == smtp_code
    assert details["stage"] == "data"
    assert len(smtp_simulator.messages) == kept
    if error is RateLimitedError:
        assert raised.value.retry_after == SMTP_RATE_LIMIT_WAIT  # type: ignore[attr-defined]


def test_a_refused_recipient_fails_the_message_before_data(
    smtp_simulator: SmtpSimulator, smtp_mailer: SmtpMailer
) -> None:
    with pytest.raises(PermanentError, match=r"rcpt refused: 550 5\.1\.1") as raised:
        smtp_mailer.send_email(
            sender=SENDER,
            to=["ada@customer.example", "ghost@nowhere.invalid"],
            subject="Hi",
            text="Hi",
            idempotency_key="k",
        )
    assert raised.value.details == {
        "system": "smtp",
        "operation": "send",
        "host": "127.0.0.1",
        "stage": "rcpt",
        "smtp_code": 550,
    }
    assert smtp_simulator.messages == []  # not even to the valid recipient


def test_a_server_that_refuses_connections_is_retryable() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mailer = SmtpMailer("127.0.0.1", port, starttls=False, local_hostname="worker.test")
    with pytest.raises(RetryableError, match="could not connect") as raised:
        mailer.send_email(
            sender=SENDER, to="ada@customer.example", subject="Hi", text="Hi", idempotency_key="k"
        )
    assert type(raised.value) is RetryableError


# -- faults through saga runs, for both senders --------------------------------------


class Confirmation(BaseModel):
    order_id: str
    email: str


@dataclass
class Channel:
    """One way of sending email, with its simulator and the step's retry safety."""

    name: str
    mailer: Mailer
    simulator: SmtpSimulator | EmailApiSimulator
    retry_safety: RetrySafety
    rate_limit_wait: timedelta

    def sent(self) -> list[Effect]:
        return self.simulator.ledger.effects("email_sent")


@pytest.fixture(params=["smtp", "api"])
def channel(request: pytest.FixtureRequest) -> Channel:
    if request.param == "smtp":
        smtp: SmtpMailer = request.getfixturevalue("smtp_mailer")
        simulator: SmtpSimulator | EmailApiSimulator = request.getfixturevalue("smtp_simulator")
        # SMTP keeps no keys: the derived Message-ID is all a retry carries.
        return Channel("smtp", smtp, simulator, RetrySafety.IDEMPOTENCY_KEY, SMTP_RATE_LIMIT_WAIT)
    api: HttpEmailApi = request.getfixturevalue("email_api")
    simulator = request.getfixturevalue("email_api_simulator")
    safety = RetrySafety.IDEMPOTENCY_KEY.with_probe(api.probe)
    return Channel("api", api, simulator, safety, timedelta(seconds=7))


@dataclass
class OrderSaga:
    saga: Saga
    released: list[str]


def order_saga(mailer: Mailer, retry_safety: RetrySafety) -> OrderSaga:
    """Reserve stock (undone by releasing it), then send the confirmation."""
    released: list[str] = []

    def reserve_stock(ctx: StepContext[Confirmation]) -> dict[str, str]:
        return {"reservation": f"res-{ctx.input.order_id}"}

    def release_stock(ctx: CompensationContext[Confirmation]) -> None:
        released.append(ctx.output["reservation"])

    def send_confirmation(ctx: StepContext[Confirmation]) -> SentEmail:
        return mailer.send_email(
            sender=SENDER,
            to=ctx.input.email,
            subject=f"Order {ctx.input.order_id} confirmed",
            text="Thanks for your order.",
            idempotency_key=ctx.idempotency_key,
        )

    steps = [
        step(compensate=release_stock, retry_safety=RetrySafety.NATURAL)(reserve_stock),
        step(
            no_compensation="an email cannot be unsent",
            retry_safety=retry_safety,
            retry=FAST_RETRY,
        )(send_confirmation),
    ]
    return OrderSaga(Saga("confirm_order", 1, Confirmation, steps), released)


@pytest.fixture
def harnesses(tmp_path: Path) -> Iterator[Callable[[Saga], SagaHarness]]:
    """Makes harnesses on SQLite files under tmp_path, and closes them."""
    made: list[SagaHarness] = []

    def make(saga: Saga) -> SagaHarness:
        made.append(SagaHarness([saga], store_url=f"sqlite:///{tmp_path}/saga{len(made)}.db"))
        return made[-1]

    yield make
    for harness in made:
        harness.close()


ORDER = {"order_id": "A1", "email": "ada@customer.example"}


def step_events(harness: SagaHarness, run_id: str, kind: EventType) -> list[Any]:
    return [e for e in harness.events(run_id) if e.type is kind and e.step == "send_confirmation"]


def test_a_transient_failure_is_retried_and_the_email_sent_once(
    channel: Channel, harnesses: Callable[[Saga], SagaHarness]
) -> None:
    # Given the service fails the first send with a transient error (SMTP 451, HTTP 500)
    order = order_saga(channel.mailer, channel.retry_safety)
    harness = harnesses(order.saga)
    channel.simulator.inject(Fault(FaultKind.ERROR, operation="send"))

    # When the run starts, it waits for its back-off...
    run = harness.run(order.saga, ORDER)
    assert run.status is RunStatus.RUNNING
    [failed] = step_events(harness, run.id, EventType.STEP_FAILED)
    assert failed.payload["outcome"] == "retry"
    assert failed.error["type"] == "sagaledger._errors.RetryableError"
    assert channel.sent() == []

    # ...and once it has passed, the second attempt sends the email, once
    harness.advance(timedelta(seconds=1))
    harness.run_until_idle()
    assert harness.status(run.id) is RunStatus.COMPLETED
    [done] = step_events(harness, run.id, EventType.STEP_COMPLETED)
    assert done.attempt == 2
    assert len(channel.sent()) == 1


def test_a_rate_limit_defers_the_send_without_using_an_attempt(
    channel: Channel, harnesses: Callable[[Saga], SagaHarness]
) -> None:
    # Given the service says "slow down" (SMTP 421 "too many messages", HTTP 429 Retry-After: 7)
    order = order_saga(channel.mailer, channel.retry_safety)
    harness = harnesses(order.saga)
    channel.simulator.inject(Fault(FaultKind.RATE_LIMIT, operation="send", retry_after=7))

    # When the run starts, the step is deferred for exactly the wait asked
    run = harness.run(order.saga, ORDER)
    waiting = harness.log.get_run(run.id)
    assert waiting.status is RunStatus.RUNNING
    assert waiting.wake_at == harness.clock() + channel.rate_limit_wait
    assert len(step_events(harness, run.id, EventType.STEP_DEFERRED)) == 1
    assert step_events(harness, run.id, EventType.STEP_FAILED) == []

    # Then nothing is sent before the wait ends...
    harness.advance(channel.rate_limit_wait - timedelta(seconds=1))
    harness.run_until_idle()
    assert channel.sent() == []
    # ...and once it has, the same first attempt sends it once
    harness.advance(timedelta(seconds=1))
    harness.run_until_idle()
    assert harness.status(run.id) is RunStatus.COMPLETED
    [done] = step_events(harness, run.id, EventType.STEP_COMPLETED)
    assert done.attempt == 1
    assert len(channel.sent()) == 1


def test_a_permanent_refusal_compensates_the_earlier_steps(
    channel: Channel, harnesses: Callable[[Saga], SagaHarness]
) -> None:
    # Given the service refuses the message (SMTP 550, HTTP 422)
    order = order_saga(channel.mailer, channel.retry_safety)
    harness = harnesses(order.saga)
    channel.simulator.inject(Fault(FaultKind.DECLINE, operation="send"))

    run = harness.run(order.saga, ORDER)

    # Then the run is not retried: the stock reservation is released at once
    assert run.status is RunStatus.COMPENSATED
    assert order.released == ["res-A1"]
    [failed] = step_events(harness, run.id, EventType.STEP_FAILED)
    assert (failed.attempt, failed.payload["outcome"]) == (1, "compensate")
    assert failed.error["type"] == "sagaledger._errors.PermanentError"
    assert channel.sent() == []


def test_a_timeout_is_an_unknown_outcome_and_the_retry_sends_one_email(
    channel: Channel, harnesses: Callable[[Saga], SagaHarness]
) -> None:
    # Given the service holds the first send past the client's timeout and keeps nothing
    order = order_saga(channel.mailer, channel.retry_safety)
    harness = harnesses(order.saga)
    channel.simulator.inject(Fault(FaultKind.TIMEOUT, operation="send", delay=0.5))

    run = harness.run(order.saga, ORDER)
    [failed] = step_events(harness, run.id, EventType.STEP_FAILED)
    assert failed.error["type"] == "sagaledger._errors.OutcomeUnknownError"
    assert failed.error["outcome_unknown"] is True
    harness.advance(timedelta(seconds=1))
    harness.run_until_idle()

    # Then the retry sends it (the API's probe found nothing first): one email in all
    assert harness.status(run.id) is RunStatus.COMPLETED
    [done] = step_events(harness, run.id, EventType.STEP_COMPLETED)
    assert (done.attempt, done.payload["via_probe"]) == (2, False)
    assert len(channel.sent()) == 1


def test_a_lost_api_response_is_found_by_the_probe_and_sent_once(
    email_api_simulator: EmailApiSimulator,
    email_api: HttpEmailApi,
    harnesses: Callable[[Saga], SagaHarness],
) -> None:
    # Given the API sends the email and the connection drops before its answer
    order = order_saga(email_api, RetrySafety.IDEMPOTENCY_KEY.with_probe(email_api.probe))
    harness = harnesses(order.saga)
    email_api_simulator.inject(Fault(FaultKind.LOST_RESPONSE, operation="send"))

    run = harness.run(order.saga, ORDER)
    [failed] = step_events(harness, run.id, EventType.STEP_FAILED)
    assert failed.error["outcome_unknown"] is True
    harness.advance(timedelta(seconds=1))
    harness.run_until_idle()

    # Then the probe found the email before any resend: one email, one POST
    assert harness.status(run.id) is RunStatus.COMPLETED
    [sent] = email_api_simulator.ledger.effects("email_sent")
    assert sent.key == f"{run.id}:send_confirmation:forward"
    [done] = step_events(harness, run.id, EventType.STEP_COMPLETED)
    assert (done.attempt, done.payload["via_probe"]) == (2, True)
    assert done.payload["output"]["message_id"] == sent.ref
    posts = [r for r in email_api_simulator.requests if r.method == "POST"]
    assert len(posts) == 1


def test_a_lost_smtp_reply_means_the_message_is_delivered_twice_with_one_message_id(
    smtp_simulator: SmtpSimulator,
    smtp_mailer: SmtpMailer,
    harnesses: Callable[[Saga], SagaHarness],
) -> None:
    # Given the server keeps the message and drops the connection before its 250
    order = order_saga(smtp_mailer, RetrySafety.IDEMPOTENCY_KEY)
    harness = harnesses(order.saga)
    smtp_simulator.inject(Fault(FaultKind.LOST_RESPONSE, operation="send"))

    run = harness.run(order.saga, ORDER)
    [failed] = step_events(harness, run.id, EventType.STEP_FAILED)
    assert failed.error["outcome_unknown"] is True
    harness.advance(timedelta(seconds=1))
    harness.run_until_idle()

    # Then SMTP, which has no way to ask, sent it again: at least once, here twice,
    # both copies with the Message-ID derived from the step's key
    assert harness.status(run.id) is RunStatus.COMPLETED
    message_id = message_id_for(f"{run.id}:send_confirmation:forward", "shop.example")
    sent = smtp_simulator.ledger.effects("email_sent")
    assert [(e.key, e.detail["duplicate"]) for e in sent] == [
        (message_id, False),
        (message_id, True),
    ]
    [done] = step_events(harness, run.id, EventType.STEP_COMPLETED)
    assert (done.attempt, done.payload["via_probe"]) == (2, False)
    assert done.payload["output"]["message_id"] == message_id


# -- secrets ---------------------------------------------------------------------------


def smtp_secret_forms(password: str) -> list[str]:
    """The password as it crosses the wire in AUTH PLAIN and LOGIN, and as itself."""
    return [
        password,
        base64.b64encode(password.encode()).decode(),
        base64.b64encode(f"\0{SMTP_USER}\0{password}".encode()).decode(),
    ]


@pytest.mark.parametrize("sender", ["smtp", "api"])
def test_secrets_never_reach_errors_the_saga_log_or_log_lines(
    sender: str,
    harnesses: Callable[[Saga], SagaHarness],
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong_secret = "wrong-" + (SMTP_PASSWORD if sender == "smtp" else API_KEY)
    simulator: SmtpSimulator | EmailApiSimulator
    if sender == "smtp":
        smtp: SmtpSimulator = request.getfixturevalue("smtp_simulator")
        simulator = smtp
        good: Mailer = smtp_mailer_for(smtp)
        bad: Mailer = smtp_mailer_for(smtp, password=wrong_secret)
        secrets = smtp_secret_forms(SMTP_PASSWORD) + smtp_secret_forms(wrong_secret)
        refusal = "auth refused: 535 5.7.8"
    else:
        api: EmailApiSimulator = request.getfixturevalue("email_api_simulator")
        simulator = api
        good = request.getfixturevalue("email_api")
        bad = email_api_for(api, api_key=wrong_secret)
        secrets = [API_KEY, wrong_secret]
        refusal = "HTTP 403 invalid_api_key"

    # Given one run that sends after a transient error, with the right secret...
    ok = order_saga(good, RetrySafety.IDEMPOTENCY_KEY)
    ok_harness = harnesses(ok.saga)
    simulator.inject(Fault(FaultKind.ERROR, operation="send"))
    ok_run = ok_harness.run(ok.saga, ORDER)
    ok_harness.advance(timedelta(seconds=1))
    ok_harness.run_until_idle()
    assert ok_harness.status(ok_run.id) is RunStatus.COMPLETED

    # ...and one whose credentials are refused
    refused = order_saga(bad, RetrySafety.IDEMPOTENCY_KEY)
    refused_harness = harnesses(refused.saga)
    refused_run = refused_harness.run(refused.saga, ORDER)
    assert refused_run.status is RunStatus.COMPENSATED
    [failed] = step_events(refused_harness, refused_run.id, EventType.STEP_FAILED)
    assert refusal in failed.error["message"]
    with pytest.raises(PermanentError) as raised:
        bad.send_email(
            sender=SENDER, to="ada@customer.example", subject="Hi", text="Hi", idempotency_key="k"
        )
    if isinstance(bad, HttpEmailApi):
        bad.close()

    # Then no secret appears in the errors, the saga logs or the captured log lines
    seen = "\n".join(
        [
            str(raised.value),
            repr(raised.value.details),
            repr(ok_harness.events(ok_run.id)),
            repr(ok_harness.log.get_run(ok_run.id)),
            repr(refused_harness.events(refused_run.id)),
            repr(refused_harness.log.get_run(refused_run.id)),
            caplog.text,
        ]
    )
    assert "send_confirmation" in seen and refusal in seen  # the places searched are the right ones
    leaked = [secret for secret in secrets if secret in seen]
    assert leaked == []
