"""The Stripe connector against the payments simulator, over real loopback HTTP.

Sagas run through the harness on a manual clock that the simulator shares, so
back-offs, Retry-After and Stripe's 24-hour key expiry are moved by the test.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

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
    Step,
    StepContext,
    step,
)
from sagaledger.connectors.payments import Payment, Refund, StripePayments, form_pairs
from sagaledger.connectors.simulators import Fault, FaultKind
from sagaledger.connectors.simulators.payments import PaymentsSimulator
from sagaledger.store import EventRecord, EventType
from sagaledger.testing import ManualClock, SagaHarness

API_KEY = "sk_test_51SagaLedgerSecretKeyForTests0001"
WRONG_KEY = "sk_test_51SagaLedgerWrongKeyForTests0002"
STRIPE_VERSION = "2024-06-20"
#: Short enough that a timeout fault costs a fraction of a second.
READ_TIMEOUT = 0.3
#: Back-offs of 1 s, then 2 s: exact, so the test can check them.
RETRY = RetryPolicy(max_attempts=3, initial_backoff=timedelta(seconds=1), jitter=0.0)
#: The charge's only attempt is its last: the run gives up on the first failure.
ONE_ATTEMPT = RetryPolicy(max_attempts=1)
CREATE = ("POST", "/v1/payment_intents")


class Order(BaseModel):
    order_id: str = "A1"
    amount: int = 4200
    currency: str = "eur"
    payment_method: str = "pm_card_visa"
    fail_receipt: bool = False


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def simulator(clock: ManualClock) -> Iterator[PaymentsSimulator]:
    """A started simulator on the shared clock; no server thread outlives the test."""
    before = set(threading.enumerate())
    with PaymentsSimulator(API_KEY, clock=clock) as sim:
        yield sim
    # Handlers of timed-out requests may still be sleeping: they must end, not leak.
    for thread in set(threading.enumerate()) - before:
        thread.join(timeout=3)
        assert not thread.is_alive(), f"{thread.name} still running after the test"


@pytest.fixture
def payments(simulator: PaymentsSimulator, clock: ManualClock) -> Iterator[StripePayments]:
    """The connector, pointed at the simulator, with a short read timeout."""
    with StripePayments(
        API_KEY,
        base_url=simulator.url,
        clock=clock,
        stripe_version=STRIPE_VERSION,
        timeout=httpx.Timeout(2.0, read=READ_TIMEOUT),
    ) as connector:
        yield connector


@pytest.fixture
def journal() -> list[str]:
    """What the saga's local steps did and undid, in order."""
    return []


HarnessFor = Callable[[Saga], SagaHarness]


@pytest.fixture
def harness_for(clock: ManualClock) -> Iterator[HarnessFor]:
    """Makes a harness for one saga on the shared clock; closes them all afterwards."""
    made: list[SagaHarness] = []

    def make(saga: Saga) -> SagaHarness:
        made.append(SagaHarness([saga], clock=clock))
        return made[-1]

    yield make
    for h in made:
        h.close()


# -- the saga under test ----------------------------------------------------------------


def order_saga(payments: StripePayments, journal: list[str], retry: RetryPolicy = RETRY) -> Saga:
    """Reserve, invoice, charge (with the connector's probe), send a receipt."""

    def local(name: str) -> Step:
        def act(ctx: StepContext[Order]) -> dict[str, str]:
            journal.append(name)
            return {"done": name}

        def undo(ctx: CompensationContext[Order]) -> None:
            journal.append(f"undo {name}")

        undoable = step(name, compensate=undo, retry_safety=RetrySafety.IDEMPOTENCY_KEY)
        return undoable(act)

    def charge(ctx: StepContext[Order]) -> Payment:
        order = ctx.input
        return payments.create_payment(
            amount=order.amount,
            currency=order.currency,
            payment_method=order.payment_method,
            idempotency_key=ctx.idempotency_key,
            metadata={"order_id": order.order_id},
        )

    def refund(ctx: CompensationContext[Order]) -> Refund:
        paid = ctx.output_as(Payment)
        return payments.refund(
            paid.id, amount=paid.amount_received, idempotency_key=ctx.idempotency_key
        )

    def send_receipt(ctx: StepContext[Order]) -> None:
        if ctx.input.fail_receipt:
            raise PermanentError("the mail server refused the receipt")

    return Saga(
        "checkout",
        1,
        Order,
        [
            local("reserve_inventory"),
            local("create_invoice"),
            step(
                compensate=refund,
                retry_safety=RetrySafety.IDEMPOTENCY_KEY.with_probe(payments.probe),
                retry=retry,
                compensation_retry=RETRY,
            )(charge),
            step(no_compensation="a notice", retry_safety=RetrySafety.NATURAL)(send_receipt),
        ],
    )


# -- helpers ------------------------------------------------------------------------------


def drive(h: SagaHarness, run_id: str) -> RunStatus:
    """Advance the clock to each wake-up until the run ends; return how it ended."""
    for _ in range(50):
        h.run_until_idle()
        run = h.log.get_run(run_id)
        if not run.status.active:
            return run.status
        assert run.wake_at is not None, f"run {run_id} is {run.status} with nothing to wait for"
        h.clock.now = max(h.clock(), run.wake_at)
    raise AssertionError(f"run {run_id} did not finish")


def of_type(
    h: SagaHarness, run_id: str, kind: EventType, name: str = "charge"
) -> list[EventRecord]:
    return [e for e in h.events(run_id) if e.type is kind and e.step == name]


def calls(sim: PaymentsSimulator, method: str, path: str) -> int:
    return sum(1 for r in sim.requests if (r.method, r.path) == (method, path))


def amounts(sim: PaymentsSimulator, operation: str) -> list[tuple[str, int | None]]:
    return [(e.ref, e.amount) for e in sim.ledger.effects(operation)]


def key_of(run_id: str, phase: str = "forward") -> str:
    return f"{run_id}:charge:{phase}"


# -- the wire format ------------------------------------------------------------------------


def test_requests_follow_stripes_wire_format(
    payments: StripePayments, simulator: PaymentsSimulator, clock: ManualClock
) -> None:
    # When the connector authorizes, captures, refunds, retrieves and searches
    paid = payments.create_payment(
        amount=4200,
        currency="EUR",
        payment_method="pm_card_visa",
        idempotency_key="run-1:charge:forward",
        capture_method="manual",
        metadata={"order_id": "A1"},
    )
    payments.capture(paid.id, idempotency_key="run-1:capture:forward")
    payments.refund(paid.id, amount=1000, idempotency_key="run-1:charge:compensate")
    payments.retrieve(paid.id)
    clock.advance(timedelta(minutes=2))  # past the search index's lag
    assert payments.find_payment("run-1:charge:forward") == payments.retrieve(paid.id)

    # Then Stripe received exactly these requests...
    requests = simulator.requests
    assert [(r.method, r.path) for r in requests] == [
        CREATE,
        ("POST", f"/v1/payment_intents/{paid.id}/capture"),
        ("GET", "/v1/refunds"),  # is there a refund under this key already?
        ("POST", "/v1/refunds"),
        ("GET", f"/v1/payment_intents/{paid.id}"),
        ("GET", "/v1/payment_intents/search"),
        ("GET", f"/v1/payment_intents/{paid.id}"),
    ]
    # ...each with the bearer key and the pinned API version
    for r in requests:
        assert r.header("Authorization") == f"Bearer {API_KEY}"
        assert r.header("Stripe-Version") == STRIPE_VERSION
    # ...POSTs form-encoded, in bracket notation, under the step's key
    create, capture, _, refund = requests[:4]
    for r, key in [
        (create, "run-1:charge:forward"),
        (capture, "run-1:capture:forward"),
        (refund, "run-1:charge:compensate"),
    ]:
        assert r.header("Content-Type") == "application/x-www-form-urlencoded"
        assert r.header("Idempotency-Key") == key
    assert b"metadata%5Border_id%5D=A1" in create.body
    assert create.form() == {
        "amount": "4200",
        "currency": "eur",
        "payment_method": "pm_card_visa",
        "confirm": "true",
        "capture_method": "manual",
        "payment_method_types[0]": "card",
        "metadata[order_id]": "A1",
        "metadata[sagaledger_key]": "run-1:charge:forward",
    }
    assert capture.form() == {}
    assert refund.form() == {
        "payment_intent": paid.id,
        "amount": "1000",
        "metadata[sagaledger_key]": "run-1:charge:compensate",
    }
    # ...GETs carry no key and no body; search asks by metadata in Stripe's query language
    for r in requests[4:]:
        assert r.header("Idempotency-Key") is None and r.body == b""
    assert requests[2].query["payment_intent"] == [paid.id]
    assert requests[5].query["query"] == ["metadata['sagaledger_key']:'run-1:charge:forward'"]
    # And the simulator's ledger saw an authorization, its capture and a partial refund
    assert [(e.operation, e.amount, e.currency) for e in simulator.ledger.effects()] == [
        ("authorize", 4200, "eur"),
        ("capture", 4200, "eur"),
        ("refund", 1000, "eur"),
    ]


def test_form_pairs_flattens_nested_values_in_bracket_notation() -> None:
    assert form_pairs(
        {"a": 1, "skip": None, "ok": False, "metadata": {"k": "v"}, "types": ["card", "sepa"]}
    ) == [
        ("a", "1"),
        ("ok", "false"),
        ("metadata[k]", "v"),
        ("types[0]", "card"),
        ("types[1]", "sepa"),
    ]


# -- idempotency ---------------------------------------------------------------------------------


def _charge(payments: StripePayments, key: str, amount: int = 4200) -> Payment:
    return payments.create_payment(
        amount=amount, currency="eur", payment_method="pm_card_visa", idempotency_key=key
    )


def test_a_replay_with_the_same_key_returns_the_first_payment_and_charges_once(
    payments: StripePayments, simulator: PaymentsSimulator
) -> None:
    first = _charge(payments, "k-1")
    again = _charge(payments, "k-1")

    assert again == first
    assert amounts(simulator, "charge") == [(first.id, 4200)]
    # Stripe marks the replayed answer; resend the connector's request as it went out
    sent = simulator.requests[-1]
    replay = httpx.post(
        simulator.url + sent.path,
        content=sent.body,
        headers={k: v for k, v in sent.headers.items() if k not in ("host", "content-length")},
    )
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == first.id


def test_the_same_key_with_other_parameters_is_a_permanent_error(
    payments: StripePayments, simulator: PaymentsSimulator
) -> None:
    first = _charge(payments, "k-1")

    with pytest.raises(PermanentError) as refused:
        _charge(payments, "k-1", amount=9900)

    assert refused.value.details is not None
    assert (refused.value.details["status"], refused.value.details["code"]) == (
        400,
        "idempotency_error",
    )
    assert amounts(simulator, "charge") == [(first.id, 4200)]


def test_the_simulator_forgets_a_key_after_24_hours(
    payments: StripePayments, simulator: PaymentsSimulator, clock: ManualClock
) -> None:
    # A key is still honoured just before its 24 hours are up...
    first = _charge(payments, "k-1")
    clock.advance(timedelta(hours=23, minutes=59))
    assert _charge(payments, "k-1") == first
    # ...and forgotten after: the same request now charges again (what the probe prevents)
    clock.advance(timedelta(minutes=2))
    second = _charge(payments, "k-1")

    assert second.id != first.id
    assert amounts(simulator, "charge") == [(first.id, 4200), (second.id, 4200)]


def test_a_retry_after_stripe_forgot_the_key_is_caught_by_the_probe(
    payments: StripePayments,
    simulator: PaymentsSimulator,
    journal: list[str],
    harness_for: HarnessFor,
    clock: ManualClock,
) -> None:
    saga = order_saga(payments, journal)
    h = harness_for(saga)
    # Given the charge lands but its answer is lost
    simulator.inject(Fault(FaultKind.LOST_RESPONSE, operation="create_payment_intent"))
    run = h.run(saga, Order())
    assert h.status(run.id) is RunStatus.RUNNING
    # When the retry comes 25 hours later, after Stripe forgot the key
    clock.advance(timedelta(hours=25))
    h.run_until_idle()

    # Then the probe found the charge by its metadata, and nothing was charged again
    assert h.status(run.id) is RunStatus.COMPLETED
    assert calls(simulator, *CREATE) == 1
    [charged] = simulator.ledger.effects("charge")
    assert charged.key == key_of(run.id)
    [done] = of_type(h, run.id, EventType.STEP_COMPLETED)
    assert (done.attempt, done.payload["via_probe"], done.payload["output"]["id"]) == (
        2,
        True,
        charged.ref,
    )


# -- faults, through saga runs ------------------------------------------------------------


def test_a_5xx_is_retried_with_back_off_and_charges_once(
    payments: StripePayments,
    simulator: PaymentsSimulator,
    journal: list[str],
    harness_for: HarnessFor,
) -> None:
    saga = order_saga(payments, journal)
    h = harness_for(saga)
    simulator.inject(Fault(FaultKind.ERROR, operation="create_payment_intent", times=2))

    run = h.run(saga, Order())
    assert drive(h, run.id) is RunStatus.COMPLETED

    failed = of_type(h, run.id, EventType.STEP_FAILED)
    assert [e.payload["outcome"] for e in failed] == ["retry", "retry"]
    waits = [datetime.fromisoformat(e.payload["retry_at"]) - e.created_at for e in failed]
    assert waits == [timedelta(seconds=1), timedelta(seconds=2)]
    assert all(e.error and e.error["details"]["code"] == "api_error" for e in failed)
    assert calls(simulator, *CREATE) == 3
    assert len(simulator.ledger.effects("charge")) == 1


def test_a_429_defers_the_step_by_retry_after_without_using_an_attempt(
    payments: StripePayments,
    simulator: PaymentsSimulator,
    journal: list[str],
    harness_for: HarnessFor,
    clock: ManualClock,
) -> None:
    saga = order_saga(payments, journal)
    h = harness_for(saga)
    simulator.inject(Fault(FaultKind.RATE_LIMIT, operation="create_payment_intent", retry_after=7))

    run = h.run(saga, Order())
    limited_at = clock()
    [deferred] = of_type(h, run.id, EventType.STEP_DEFERRED)
    assert datetime.fromisoformat(deferred.payload["until"]) == limited_at + timedelta(seconds=7)
    assert h.log.get_run(run.id).wake_at == limited_at + timedelta(seconds=7)

    # Nothing is sent before Retry-After has passed...
    clock.advance(timedelta(seconds=6.9))
    h.run_until_idle()
    assert calls(simulator, *CREATE) == 1
    # ...and then the same attempt runs again
    clock.advance(timedelta(seconds=0.1))
    h.run_until_idle()
    assert h.status(run.id) is RunStatus.COMPLETED
    assert of_type(h, run.id, EventType.STEP_FAILED) == []
    [done] = of_type(h, run.id, EventType.STEP_COMPLETED)
    assert done.attempt == 1
    assert len(simulator.ledger.effects("charge")) == 1


@pytest.mark.parametrize(
    ("payment_method", "fault", "decline_code"),
    [
        ("pm_card_chargeDeclined", None, "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", None, "insufficient_funds"),
        ("pm_card_visa", Fault(FaultKind.DECLINE, code="do_not_honor"), "do_not_honor"),
    ],
)
def test_a_declined_card_compensates_the_earlier_steps_in_reverse(
    payments: StripePayments,
    simulator: PaymentsSimulator,
    journal: list[str],
    harness_for: HarnessFor,
    payment_method: str,
    fault: Fault | None,
    decline_code: str,
) -> None:
    saga = order_saga(payments, journal)
    h = harness_for(saga)
    if fault is not None:
        simulator.inject(fault)

    run = h.run(saga, Order(payment_method=payment_method))

    assert drive(h, run.id) is RunStatus.COMPENSATED
    assert journal == [
        "reserve_inventory",
        "create_invoice",
        "undo create_invoice",
        "undo reserve_inventory",
    ]
    [failed] = of_type(h, run.id, EventType.STEP_FAILED)
    assert failed.payload["outcome"] == "compensate"
    assert failed.error is not None
    details = failed.error["details"]
    assert (details["status"], details["type"], details["decline_code"]) == (
        402,
        "card_error",
        decline_code,
    )
    assert calls(simulator, *CREATE) == 1  # permanent: never retried
    assert simulator.ledger.effects() == []
    # A declined PaymentIntent may exist under the key, but it holds no money
    assert payments.find_payment(key_of(run.id)) is None


def _wait_for_charge(simulator: PaymentsSimulator) -> None:
    deadline = time.monotonic() + 3
    while not simulator.ledger.effects("charge"):
        assert time.monotonic() < deadline, "the slow charge never landed"
        time.sleep(0.02)


@pytest.mark.parametrize(
    ("fault", "landed"),
    [
        # The charge lands, the connection drops before the answer
        (Fault(FaultKind.LOST_RESPONSE, operation="create_payment_intent"), True),
        # The charge lands after the connector stopped waiting
        (Fault(FaultKind.LATENCY, operation="create_payment_intent", delay=0.6), True),
        # The request hangs and nothing is charged
        (Fault(FaultKind.TIMEOUT, operation="create_payment_intent", delay=0.4), False),
    ],
    ids=["lost_response", "timeout_after_landing", "timeout_not_landed"],
)
def test_an_unknown_outcome_on_the_charge_is_probed_and_never_charged_twice(
    payments: StripePayments,
    simulator: PaymentsSimulator,
    journal: list[str],
    harness_for: HarnessFor,
    fault: Fault,
    landed: bool,
) -> None:
    saga = order_saga(payments, journal)
    h = harness_for(saga)
    simulator.inject(fault)

    run = h.run(saga, Order())
    [failed] = of_type(h, run.id, EventType.STEP_FAILED)
    assert failed.error is not None and failed.error["outcome_unknown"] is True
    if landed:
        _wait_for_charge(simulator)

    assert drive(h, run.id) is RunStatus.COMPLETED
    [charged] = simulator.ledger.effects("charge")
    assert (charged.key, charged.amount) == (key_of(run.id), 4200)
    [done] = of_type(h, run.id, EventType.STEP_COMPLETED)
    assert done.payload["output"]["id"] == charged.ref
    # The probe answered when the charge had landed; otherwise the retry charged once
    assert done.payload["via_probe"] is landed
    assert calls(simulator, *CREATE) == (1 if landed else 2)
    assert simulator.ledger.effects("refund") == []


def test_a_charge_whose_answer_is_lost_when_the_run_gives_up_is_refunded_exactly(
    payments: StripePayments,
    simulator: PaymentsSimulator,
    journal: list[str],
    harness_for: HarnessFor,
) -> None:
    # Given the charge's only attempt lands but its answer is lost (and search lags)
    saga = order_saga(payments, journal, retry=ONE_ATTEMPT)
    h = harness_for(saga)
    simulator.inject(Fault(FaultKind.LOST_RESPONSE, operation="create_payment_intent"))

    run = h.run(saga, Order(amount=1999))

    # Then giving up, the probe finds the charge, and it is refunded first, in full
    assert drive(h, run.id) is RunStatus.COMPENSATED
    [charged] = simulator.ledger.effects("charge")
    [refunded] = simulator.ledger.effects("refund")
    assert (
        (refunded.amount, refunded.currency)
        == (charged.amount, charged.currency)
        == (
            1999,
            "eur",
        )
    )
    assert refunded.detail["payment_intent"] == charged.ref
    assert refunded.key == key_of(run.id, "compensate")
    undone = [e.step for e in h.events(run.id) if e.type is EventType.COMPENSATION_COMPLETED]
    assert undone == ["charge", "create_invoice", "reserve_inventory"]
    [found] = of_type(h, run.id, EventType.STEP_COMPLETED)
    assert found.payload["via_probe"] is True


def test_a_timeout_where_the_charge_did_not_land_refunds_nothing(
    payments: StripePayments,
    simulator: PaymentsSimulator,
    journal: list[str],
    harness_for: HarnessFor,
) -> None:
    saga = order_saga(payments, journal, retry=ONE_ATTEMPT)
    h = harness_for(saga)
    simulator.inject(Fault(FaultKind.TIMEOUT, operation="create_payment_intent", delay=0.4))

    run = h.run(saga, Order())

    assert drive(h, run.id) is RunStatus.COMPENSATED
    assert simulator.ledger.effects() == []
    assert calls(simulator, "POST", "/v1/refunds") == 0
    assert of_type(h, run.id, EventType.STEP_COMPLETED) == []
    assert journal[-2:] == ["undo create_invoice", "undo reserve_inventory"]


def test_a_late_failure_refunds_exactly_the_charged_amount_once(
    payments: StripePayments,
    simulator: PaymentsSimulator,
    journal: list[str],
    harness_for: HarnessFor,
) -> None:
    saga = order_saga(payments, journal)
    h = harness_for(saga)
    # Given the first refund attempt meets a server error
    simulator.inject(Fault(FaultKind.ERROR, operation="create_refund", status=503))

    run = h.run(saga, Order(amount=3150, fail_receipt=True))

    assert drive(h, run.id) is RunStatus.COMPENSATED
    [charged] = simulator.ledger.effects("charge")
    assert amounts(simulator, "refund")[0][1] == charged.amount == 3150
    assert len(simulator.ledger.effects("refund")) == 1
    assert calls(simulator, "POST", "/v1/refunds") == 2
    retried = of_type(h, run.id, EventType.COMPENSATION_FAILED)
    assert [e.payload["outcome"] for e in retried] == ["retry"]


def test_search_lags_but_the_probe_still_finds_a_fresh_charge(
    payments: StripePayments, simulator: PaymentsSimulator
) -> None:
    paid = _charge(payments, "k-fresh")

    # Stripe's search index has not caught up yet...
    searched = httpx.get(
        simulator.url + "/v1/payment_intents/search",
        params={"query": "metadata['sagaledger_key']:'k-fresh'"},
        headers={"Authorization": f"Bearer {API_KEY}"},
    ).json()
    assert searched["data"] == []
    # ...so the probe reads the (strongly consistent) list of recent payments
    assert payments.find_payment("k-fresh") == paid
    assert calls(simulator, "GET", "/v1/payment_intents") == 1
    assert payments.find_payment("k-other") is None


def test_refunds_never_exceed_what_was_captured(
    payments: StripePayments, simulator: PaymentsSimulator
) -> None:
    paid = _charge(payments, "k-1", amount=1000)
    payments.refund(paid.id, amount=600, idempotency_key="r-1")

    with pytest.raises(PermanentError, match="amount_too_large"):
        payments.refund(paid.id, amount=500, idempotency_key="r-2")
    payments.refund(paid.id, idempotency_key="r-3")  # the remaining 400
    with pytest.raises(PermanentError, match="charge_already_refunded"):
        payments.refund(paid.id, idempotency_key="r-4")
    # A refund retried under its key is found, not made again
    assert payments.refund(paid.id, amount=600, idempotency_key="r-1").amount == 600

    assert [a for _, a in amounts(simulator, "refund")] == [600, 400]


# -- error mapping ------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "status", "error", "expected"),
    [
        ("POST", 402, {"type": "card_error", "code": "card_declined"}, PermanentError),
        ("POST", 400, {"type": "idempotency_error"}, PermanentError),
        (
            "POST",
            409,
            {"type": "invalid_request_error", "code": "idempotency_key_in_use"},
            RetryableError,
        ),
        ("POST", 429, {"type": "invalid_request_error", "code": "lock_timeout"}, RetryableError),
        ("POST", 429, {"type": "invalid_request_error", "code": "rate_limit"}, RateLimitedError),
        ("POST", 500, {"type": "api_error"}, OutcomeUnknownError),
        ("GET", 500, {"type": "api_error"}, RetryableError),
    ],
)
def test_stripe_errors_map_onto_the_taxonomy(
    method: str, status: int, error: dict[str, str], expected: type[Exception]
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"error": {"message": "no", **error}})

    client = httpx.Client(transport=httpx.MockTransport(answer))
    payments = StripePayments(API_KEY, base_url="https://api.stripe.test", client=client)
    with pytest.raises(expected) as raised:
        if method == "POST":
            _charge(payments, "k-1")
        else:
            payments.retrieve("pi_1")
    assert type(raised.value) is expected
    client.close()


# -- secrets ------------------------------------------------------------


@pytest.mark.parametrize("failure", ["wrong_key", "server_error"])
def test_the_api_key_never_reaches_errors_events_or_logs(
    simulator: PaymentsSimulator,
    journal: list[str],
    harness_for: HarnessFor,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
    failure: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    key = WRONG_KEY if failure == "wrong_key" else API_KEY
    if failure == "server_error":  # every attempt at the charge
        simulator.inject(Fault(FaultKind.ERROR, operation="create_payment_intent", times=3))
    with StripePayments(key, base_url=simulator.url, clock=clock) as payments:
        saga = order_saga(payments, journal)
        h = harness_for(saga)
        run = h.run(saga, Order())
        assert drive(h, run.id) is RunStatus.COMPENSATED
        simulator.inject(Fault(FaultKind.ERROR, operation="retrieve_payment_intent"))
        with pytest.raises(PermanentError if failure == "wrong_key" else RetryableError) as direct:
            payments.retrieve("pi_1")

    events = json.dumps([[e.payload, e.error] for e in h.events(run.id)], default=str)
    stored = h.log.get_run(run.id)
    where = {
        "events": events,
        "run": json.dumps([stored.last_error, stored.blocked_reason], default=str),
        "logs": caplog.text,
        "error": f"{direct.value} {direct.value!r} {getattr(direct.value, 'details', '')}",
    }
    # The failure is recorded in each place (so the check below reads real text)...
    expected = "401" if failure == "wrong_key" else "500"
    assert expected in where["events"] and expected in where["error"]
    # ...and no key, whole, appears anywhere
    for place, text in where.items():
        for secret in (API_KEY, WRONG_KEY):
            assert secret not in text, f"a key leaked into the {place}"


def test_a_key_echoed_back_by_the_remote_side_is_masked() -> None:
    # A proxy or a misbehaving server that repeats the request's credentials
    def echo(request: httpx.Request) -> httpx.Response:
        said = f"refused {request.headers['Authorization']}"
        return httpx.Response(
            400, json={"error": {"type": "invalid_request_error", "code": said, "message": said}}
        )

    with (
        httpx.Client(transport=httpx.MockTransport(echo)) as client,
        StripePayments(API_KEY, base_url="https://api.stripe.test", client=client) as payments,
        pytest.raises(PermanentError) as refused,
    ):
        payments.retrieve("pi_1")

    shown = f"{refused.value} {refused.value.details}"
    assert "refused Bearer ***" in shown
    assert API_KEY not in shown


def test_an_authorization_can_be_canceled_but_not_captured_afterwards(
    payments: StripePayments, simulator: PaymentsSimulator
) -> None:
    held = payments.create_payment(
        amount=2500,
        currency="usd",
        payment_method="pm_card_visa",
        idempotency_key="k-hold",
        capture_method="manual",
    )
    assert (held.status, held.amount_capturable, held.landed) == ("requires_capture", 2500, True)

    canceled = payments.cancel(held.id, idempotency_key="k-release")

    assert (canceled.status, canceled.landed) == ("canceled", False)
    with pytest.raises(PermanentError, match="payment_intent_unexpected_state"):
        payments.capture(held.id, idempotency_key="k-capture")
    assert [(e.operation, e.amount) for e in simulator.ledger.effects()] == [
        ("authorize", 2500),
        ("cancel", 2500),
    ]
