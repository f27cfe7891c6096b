"""The NetSuite-style ERP connector against its simulator, over real loopback HTTP.

OAuth 1.0a signing is checked against RFC 5849's own example; everything else
runs the connector (alone, or inside sagas driven by the test harness) against
a live simulator and checks what the simulator received and applied.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from sagaledger import (
    OutcomeUnknownError,
    PermanentError,
    RateLimitedError,
    Registry,
    RetryableError,
    RetryPolicy,
    RetrySafety,
    RunStatus,
    Saga,
)
from sagaledger.connectors._oauth1 import (
    OAuth1Credentials,
    OAuth1Signer,
    base_string_uri,
    hmac_sha256_signature,
    normalized_parameters,
    parse_authorization,
    signature_base_string,
)
from sagaledger.connectors.erp import (
    NetSuiteErp,
    NewInvoice,
    NewSalesOrder,
    OrderLine,
    RecordRef,
    external_id,
)
from sagaledger.connectors.simulators import Fault, FaultKind
from sagaledger.connectors.simulators.erp import ErpSimulator
from sagaledger.sagas import CompensationContext, Step, StepContext
from sagaledger.store import EventType
from sagaledger.testing import ManualClock, SagaHarness

CONSUMER_SECRET = "cs-9f2e1d7c-CONSUMER-SECRET"
TOKEN_SECRET = "ts-4b8a6e0f-TOKEN-SECRET"
CREDENTIALS = OAuth1Credentials(
    realm="7654321_SB1",
    consumer_key="ck-sagaledger-tests",
    consumer_secret=CONSUMER_SECRET,
    token_id="tid-sagaledger-tests",
    token_secret=TOKEN_SECRET,
)
STOCK = {"widget": 10, "gadget": 2}
#: A short read timeout so that timeouts and lost responses cost a fraction of a second.
FAST = httpx.Timeout(2.0, read=0.3)
#: Retries without jitter, so that back-offs are exact.
RETRY = RetryPolicy(max_attempts=4, initial_backoff=timedelta(seconds=1), jitter=0.0)

# RFC 5849 section 3.4.1.1's example request, and the secrets of its section 3.1.
RFC_URL = "http://example.com/request?b5=%3D%253D&a3=a&c%40=&a2=r%20b"
RFC_OAUTH = {
    "realm": "Example",
    "oauth_consumer_key": "9djdj82h48djs9d2",
    "oauth_token": "kkk9d7dh3k39sjv7",
    "oauth_signature_method": "HMAC-SHA1",
    "oauth_timestamp": "137131201",
    "oauth_nonce": "7d8f3e4a",
    "oauth_signature": "bYT5CMsGcbgUdFHObYMEfcx6bsw%3D",
}
RFC_BODY = [("c2", ""), ("a3", "2 q")]
RFC_BASE_STRING = (
    "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q"
    "%26a3%3Da%26b5%3D%253D%25253D%26c%2540%3D%26c2%3D%26oauth_consumer_"
    "key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a%26oauth_signature_m"
    "ethod%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk"
    "9d7dh3k39sjv7"
)
RFC_NORMALIZED = (
    "a2=r%20b&a3=2%20q&a3=a&b5=%3D%253D&c%40=&c2=&oauth_consumer_key=9dj"
    "dj82h48djs9d2&oauth_nonce=7d8f3e4a&oauth_signature_method=HMAC-SHA1"
    "&oauth_timestamp=137131201&oauth_token=kkk9d7dh3k39sjv7"
)


def independent_hmac_sha256(key: str, message: str) -> str:
    return base64.b64encode(
        hmac.new(key.encode(), message.encode(), hashlib.sha256).digest()
    ).decode()


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture
def erp_simulator() -> Iterator[ErpSimulator]:
    """A simulated account with 10 widgets and 2 gadgets, stopped after the test."""
    with ErpSimulator(CREDENTIALS, stock=STOCK) as sim:
        yield sim
    # No server thread outlives its test.
    assert not [t for t in threading.enumerate() if t.name == "erp-simulator" and t.is_alive()]


@pytest.fixture
def erp(erp_simulator: ErpSimulator) -> Iterator[NetSuiteErp]:
    """A connector with the right credentials, pointed at the simulator."""
    with NetSuiteErp(CREDENTIALS, base_url=erp_simulator.url, timeout=FAST) as connector:
        yield connector


def connector_for(sim: ErpSimulator, **changes: Any) -> NetSuiteErp:
    """A connector whose credentials differ from the account's by ``changes``."""
    signer_options = {k: changes.pop(k) for k in ("nonce", "clock") if k in changes}
    credentials = OAuth1Credentials(**{**dict(CREDENTIALS), **changes})
    signer = OAuth1Signer(credentials, **signer_options)
    return NetSuiteErp(credentials, base_url=sim.url, timeout=FAST, signer=signer)


# -- a saga over the connector ------------------------------------------------------------


class Order(BaseModel):
    order_id: str
    customer: str = "CUST-42"
    widgets: int = 3
    gadgets: int = 1
    #: The last step (shipping) refuses the order: everything before it is undone.
    fail_at_end: bool = False


def order_saga(erp: NetSuiteErp, *, order_retry: RetryPolicy = RETRY) -> Saga:
    """reserve widgets -> sales order -> reserve gadgets -> invoice -> ship."""

    def key(ctx: StepContext[Any] | CompensationContext[Any]) -> str:
        return external_id(ctx.idempotency_key)

    def reserve(item: str, field: str) -> Callable[[StepContext[Order]], RecordRef]:
        return lambda ctx: erp.reserve(key(ctx), item, getattr(ctx.input, field))

    def release(ctx: CompensationContext[Order]) -> None:
        erp.release(ctx.output_as(RecordRef).id)

    def find_reservation(ctx: StepContext[Order]) -> RecordRef | None:
        return erp.find_reservation(key(ctx))

    def create_order(ctx: StepContext[Order]) -> RecordRef:
        lines = (OrderLine(item="widget", quantity=ctx.input.widgets, rate="12.50"),)
        return erp.upsert_sales_order(
            key(ctx), NewSalesOrder(customer=ctx.input.customer, lines=lines)
        )

    def cancel_order(ctx: CompensationContext[Order]) -> None:
        erp.cancel_sales_order(ctx.output_as(RecordRef).id)

    def invoice(ctx: StepContext[Order]) -> RecordRef:
        order = ctx.output("create_sales_order", RecordRef)
        lines = (
            OrderLine(item="widget", quantity=ctx.input.widgets, rate="12.50"),
            OrderLine(item="gadget", quantity=ctx.input.gadgets, rate="30"),
        )
        new = NewInvoice(customer=ctx.input.customer, lines=lines, sales_order=order.id)
        return erp.upsert_invoice(key(ctx), new)

    def void(ctx: CompensationContext[Order]) -> RecordRef:
        return erp.void_invoice(ctx.output_as(RecordRef).id, external_id=key(ctx))

    def ship(ctx: StepContext[Order]) -> dict[str, str]:
        if ctx.input.fail_at_end:
            raise PermanentError(f"carrier refused order {ctx.input.order_id}")
        return {"shipped": ctx.input.order_id}

    keyed = RetrySafety.IDEMPOTENCY_KEY
    return Saga(
        "erp_order",
        1,
        Order,
        [
            Step(
                "reserve_widgets",
                reserve("widget", "widgets"),
                compensate=release,
                retry_safety=keyed.with_probe(find_reservation),
                retry=RETRY,
                compensation_retry=RETRY,
            ),
            Step(
                "create_sales_order",
                create_order,
                compensate=cancel_order,
                retry_safety=keyed.with_probe(lambda ctx: erp.find_sales_order(key(ctx))),
                retry=order_retry,
                compensation_retry=RETRY,
            ),
            Step(
                "reserve_gadgets",
                reserve("gadget", "gadgets"),
                compensate=release,
                retry_safety=keyed.with_probe(find_reservation),
                retry=RETRY,
                compensation_retry=RETRY,
            ),
            Step(
                "invoice",
                invoice,
                compensate=void,
                retry_safety=keyed.with_probe(lambda ctx: erp.find_invoice(key(ctx))),
                retry=RETRY,
                compensation_retry=RETRY,
            ),
            Step(
                "ship",
                ship,
                no_compensation="the last step: nothing after it can fail",
                retry_safety=RetrySafety.NATURAL,
                retry=RETRY,
            ),
        ],
    )


HarnessFor = Callable[[Saga], SagaHarness]
RunSaga = Callable[..., tuple[SagaHarness, str]]


@pytest.fixture
def harness_for() -> Iterator[HarnessFor]:
    """Makes a harness (SQLite log, manual clock) for a saga; closes them all after the test."""
    made: list[SagaHarness] = []

    def make(saga: Saga) -> SagaHarness:
        made.append(SagaHarness(Registry([saga]), clock=ManualClock()))
        return made[-1]

    yield make
    for harness in made:
        harness.close()


@pytest.fixture
def run_saga(harness_for: HarnessFor) -> RunSaga:
    """Runs the order saga on a connector and drives it, a second of manual time at a time."""

    def run(erp: NetSuiteErp, order: Order, **options: Any) -> tuple[SagaHarness, str]:
        saga = order_saga(erp, **options)
        harness = harness_for(saga)
        run = harness.start(saga, order)
        harness.run_until_idle()
        for _ in range(120):
            if not harness.status(run.id).active:
                return harness, run.id
            harness.advance(timedelta(seconds=1))
            harness.run_until_idle()
        raise AssertionError(f"run {run.id} did not settle: {harness.status(run.id)}")

    return run


def ledger(sim: ErpSimulator) -> list[tuple[str, str | None, int | None]]:
    """(operation, item or None, amount) of every effect, in order."""
    return [(e.operation, e.detail.get("item"), e.amount) for e in sim.ledger.effects()]


def requests_to(sim: ErpSimulator, method: str, path_part: str) -> list[Any]:
    return [r for r in sim.requests if r.method == method and path_part in r.path]


def events_of(harness: SagaHarness, run_id: str, kind: EventType, step: str) -> list[Any]:
    return [e for e in harness.events(run_id) if e.type is kind and e.step == step]


# -- OAuth 1.0a -------------------------------------------------------------------------


def test_the_signature_base_string_of_rfc5849s_example_is_exact() -> None:
    # Given RFC 5849's example request: query, oauth parameters and a form body
    # When its base string is built (realm and oauth_signature are left out)
    base = signature_base_string("post", RFC_URL, RFC_OAUTH, RFC_BODY)

    # Then it is the RFC's, character for character
    assert base == RFC_BASE_STRING
    params = urllib.parse.parse_qsl(urllib.parse.urlsplit(RFC_URL).query, keep_blank_values=True)
    oauth = [(k, v) for k, v in RFC_OAUTH.items() if k not in ("realm", "oauth_signature")]
    assert normalized_parameters(params + oauth + RFC_BODY) == RFC_NORMALIZED


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTP://EXAMPLE.COM:80/r%20v/X?id=123", "http://example.com/r%20v/X"),
        ("https://www.example.net:8080/?q=1", "https://www.example.net:8080/"),
        ("https://Acct.SuiteTalk.example:443/a#frag", "https://acct.suitetalk.example/a"),
        ("http://127.0.0.1:8123", "http://127.0.0.1:8123/"),
    ],
)
def test_the_base_string_uri_drops_query_fragment_and_default_port(url: str, expected: str) -> None:
    assert base_string_uri(url) == expected


def test_the_hmac_sha256_signature_matches_an_independent_computation() -> None:
    # The key is enc(consumer secret) & enc(token secret): a secret with '&' and
    # a space shows the encoding is applied
    consumer_secret, token_secret = "j49sk3j29djd", "dh8&93 hd/asih9"
    expected = independent_hmac_sha256("j49sk3j29djd&dh8%2693%20hd%2Fasih9", RFC_BASE_STRING)

    assert hmac_sha256_signature(RFC_BASE_STRING, consumer_secret, token_secret) == expected


def test_the_authorization_header_carries_realm_and_a_signature_over_the_query() -> None:
    # Given a signer with a fixed nonce and clock
    signer = OAuth1Signer(CREDENTIALS, nonce=lambda: "n0nce42", clock=lambda: 1_700_000_000.9)
    base_uri = (
        "https://7654321-sb1.suitetalk.api.netsuite.com/services/rest/record/v1/salesOrder/eid:k1"
    )
    url = base_uri + "?replace=item"

    # When it signs a PUT
    header = signer.authorization("PUT", url)

    # Then the header is OAuth, realm first, every value quoted
    assert header.startswith('OAuth realm="7654321_SB1", ')
    params = parse_authorization(header)
    assert params is not None
    assert {k: v for k, v in params.items() if k != "oauth_signature"} == {
        "realm": "7654321_SB1",
        "oauth_consumer_key": "ck-sagaledger-tests",
        "oauth_token": "tid-sagaledger-tests",
        "oauth_signature_method": "HMAC-SHA256",
        "oauth_timestamp": "1700000000",
        "oauth_nonce": "n0nce42",
        "oauth_version": "1.0",
    }
    # ...and the signature is over the query parameter too, computed here by hand
    normalized = (
        "oauth_consumer_key=ck-sagaledger-tests&oauth_nonce=n0nce42"
        "&oauth_signature_method=HMAC-SHA256&oauth_timestamp=1700000000"
        "&oauth_token=tid-sagaledger-tests&oauth_version=1.0&replace=item"
    )
    base = "&".join(
        ["PUT", urllib.parse.quote(base_uri, safe=""), urllib.parse.quote(normalized, safe="")]
    )
    key = f"{CONSUMER_SECRET}&{TOKEN_SECRET}"  # nothing to encode in these two
    assert params["oauth_signature"] == independent_hmac_sha256(key, base)
    assert '", oauth_signature="' in header and "%3D" in header.split("oauth_signature=")[1]
    assert CONSUMER_SECRET not in header and TOKEN_SECRET not in header
    assert "**" in repr(CREDENTIALS) and TOKEN_SECRET not in repr(CREDENTIALS)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"token_secret": "ts-wrong"}, "signature mismatch"),
        ({"consumer_secret": "cs-wrong"}, "signature mismatch"),
        ({"realm": "1111111"}, "realm '1111111' is not this account"),
        ({"clock": lambda: time.time() - 3600}, "stale timestamp"),
    ],
    ids=["wrong-token-secret", "wrong-consumer-secret", "wrong-account", "stale-timestamp"],
)
def test_the_simulator_refuses_a_bad_signature_with_401_invalid_login(
    erp_simulator: ErpSimulator, changes: dict[str, Any], reason: str
) -> None:
    with connector_for(erp_simulator, **changes) as bad, pytest.raises(PermanentError) as refused:
        bad.reserve("k-auth", "widget", 1)

    assert refused.value.details == {
        "system": "netsuite",
        "operation": "reserve",
        "status": 401,
        "code": "INVALID_LOGIN",
    }
    assert "Invalid login attempt" in str(refused.value)
    assert erp_simulator.login_audit_trail[-1].startswith(reason)
    assert erp_simulator.ledger.effects() == []


def test_the_simulator_refuses_a_reused_nonce(erp_simulator: ErpSimulator) -> None:
    # Given a client that (wrongly) sends the same nonce every time
    with connector_for(erp_simulator, nonce=lambda: "always-the-same") as replaying:
        # Then the first request passes and the replay is refused
        first = replaying.reserve("k-nonce", "widget", 1)
        with pytest.raises(PermanentError, match="INVALID_LOGIN"):
            replaying.release(first.id)

    assert erp_simulator.login_audit_trail == ["nonce already used"]
    assert [e.operation for e in erp_simulator.ledger.effects()] == ["reserve"]


# -- requests as sent ---------------------------------------------------------------------


def test_requests_arrive_as_netsuite_documents_them(
    erp: NetSuiteErp, erp_simulator: ErpSimulator
) -> None:
    # When the connector reserves, upserts an order and probes for it
    erp.reserve("run1:reserve:forward", "widget", 2)
    order = NewSalesOrder(
        customer="CUST-7", lines=(OrderLine(item="widget", quantity=2, rate="12.5"),), memo="A1"
    )
    erp.upsert_sales_order("run1:order:forward", order)
    erp.find_sales_order("run1:order:forward")

    # Then the simulator received three signed JSON requests on the documented paths
    reserve, upsert, query = erp_simulator.requests
    assert (reserve.method, reserve.path) == (
        "PUT",
        "/services/rest/record/v1/customrecord_sl_reservation/eid:run1:reserve:forward",
    )
    assert reserve.json() == {"custrecord_sl_item": {"id": "widget"}, "custrecord_sl_quantity": 2}
    assert (upsert.method, upsert.path, upsert.query) == (
        "PUT",
        "/services/rest/record/v1/salesOrder/eid:run1:order:forward",
        {"replace": ["item"]},
    )
    assert upsert.json() == {
        "entity": {"id": "CUST-7"},
        "item": {"items": [{"item": {"id": "widget"}, "quantity": 2, "rate": 12.5}]},
        "memo": "A1",
    }
    assert (query.method, query.path) == ("POST", "/services/rest/query/v1/suiteql")
    assert query.header("prefer") == "transient"
    assert query.json() == {
        "q": "SELECT id, externalid FROM transaction "
        "WHERE externalid = 'run1:order:forward' AND type = 'SalesOrd'"
    }
    for request in erp_simulator.requests:
        assert request.header("content-type") == "application/json"
        assert (request.header("authorization") or "").startswith('OAuth realm="7654321_SB1", ')
        assert 'oauth_signature_method="HMAC-SHA256"' in (request.header("authorization") or "")
    nonces = {
        (parse_authorization(r.headers["authorization"]) or {}).get("oauth_nonce")
        for r in erp_simulator.requests
    }
    assert len(nonces) == 3


def test_the_simulators_suiteql_refuses_other_query_shapes_clearly(erp: NetSuiteErp) -> None:
    with pytest.raises(PermanentError) as refused:
        erp.suiteql("SELECT * FROM customer")

    assert refused.value.details is not None
    assert refused.value.details["code"] == "INVALID_PARAMETER"
    assert "WHERE externalid = '...'" in str(refused.value)


@pytest.mark.parametrize(
    ("fault", "error", "code"),
    [
        (Fault(FaultKind.ERROR, status=503), RetryableError, "UNEXPECTED_ERROR"),
        (Fault(FaultKind.RATE_LIMIT, retry_after=7), RateLimitedError, "rate_limit"),
        (
            Fault(FaultKind.DECLINE, code="SSS_REQUEST_LIMIT_EXCEEDED"),
            RateLimitedError,
            "SSS_REQUEST_LIMIT_EXCEEDED",
        ),
        (Fault(FaultKind.DECLINE), PermanentError, "SL_INSUFFICIENT_STOCK"),
        (Fault(FaultKind.TIMEOUT, delay=0.5), OutcomeUnknownError, None),
        (Fault(FaultKind.LOST_RESPONSE), OutcomeUnknownError, None),
    ],
    ids=["5xx", "429", "400-concurrency", "400-refused", "timeout", "lost-response"],
)
def test_each_way_a_call_ends_maps_onto_the_taxonomy(
    erp: NetSuiteErp,
    erp_simulator: ErpSimulator,
    fault: Fault,
    error: type[Exception],
    code: str | None,
) -> None:
    erp_simulator.inject(fault)

    with pytest.raises(error) as raised:
        erp.reserve("k-taxonomy", "widget", 1)

    assert type(raised.value) is error
    assert getattr(raised.value, "details", {}).get("code") == code
    if fault.kind is FaultKind.RATE_LIMIT:
        assert raised.value.retry_after == timedelta(seconds=7)  # type: ignore[attr-defined]


# -- upsert by external id ------------------------------------------------------------------


def test_upserting_twice_with_one_external_id_leaves_one_order_with_its_lines(
    erp: NetSuiteErp, erp_simulator: ErpSimulator
) -> None:
    order = NewSalesOrder(customer="C", lines=(OrderLine(item="widget", quantity=2, rate="5"),))

    first = erp.upsert_sales_order("k-twice", order)
    second = erp.upsert_sales_order("k-twice", order)

    assert first == second
    assert [e.operation for e in erp_simulator.ledger.effects()] == ["order_created"]
    stored = erp.get_sales_order(first.id)
    assert [(x.item, x.quantity) for x in stored.lines] == [("widget", 2)]
    assert (stored.status, stored.total) == ("Pending Fulfillment", 10)


def test_after_a_lost_response_the_probe_finds_the_order_that_landed(
    erp: NetSuiteErp, erp_simulator: ErpSimulator
) -> None:
    # Given the order is created but its response is lost
    erp_simulator.inject(Fault(FaultKind.LOST_RESPONSE, operation="upsert_sales_order"))
    order = NewSalesOrder(customer="C", lines=(OrderLine(item="widget", quantity=1, rate="5"),))
    with pytest.raises(OutcomeUnknownError):
        erp.upsert_sales_order("k-lost", order)

    # Then the probe finds it, and an unknown external id finds nothing
    found = erp.find_sales_order("k-lost")
    assert found is not None
    assert found == RecordRef(
        record_type="salesOrder", id=erp_simulator.sales_orders()[0].id, external_id="k-lost"
    )
    assert erp.find_sales_order("k-never") is None


# -- faults through saga runs -----------------------------------------------------------------


def test_a_5xx_is_retried_after_its_back_off_and_the_run_completes(
    erp: NetSuiteErp, erp_simulator: ErpSimulator, run_saga: RunSaga
) -> None:
    # Given the ERP answers 503 twice to the sales order
    erp_simulator.inject(
        Fault(FaultKind.ERROR, operation="upsert_sales_order", status=503, times=2)
    )

    harness, run_id = run_saga(erp, Order(order_id="A1"))

    # Then the step succeeded on its third attempt, and one order exists
    assert harness.status(run_id) is RunStatus.COMPLETED
    failed = events_of(harness, run_id, EventType.STEP_FAILED, "create_sales_order")
    assert [e.payload["outcome"] for e in failed] == ["retry", "retry"]
    assert failed[0].error["details"]["status"] == 503
    assert failed[0].error["details"]["code"] == "UNEXPECTED_ERROR"
    done = events_of(harness, run_id, EventType.STEP_COMPLETED, "create_sales_order")
    assert done[0].attempt == 3
    assert len(requests_to(erp_simulator, "PUT", "/salesOrder/")) == 3
    assert [e.operation for e in erp_simulator.ledger.effects("order_created")] == ["order_created"]


def test_a_429_waits_its_retry_after_without_using_an_attempt(
    erp: NetSuiteErp, erp_simulator: ErpSimulator, harness_for: HarnessFor
) -> None:
    # Given the account's concurrency limit answers 429 with Retry-After: 7
    erp_simulator.inject(Fault(FaultKind.RATE_LIMIT, operation="upsert_sales_order", retry_after=7))
    saga = order_saga(erp)
    harness = harness_for(saga)
    run = harness.start(saga, Order(order_id="A2"))
    started = harness.clock()

    # When the run is driven
    harness.run_until_idle()

    # Then it waits exactly 7 s, recorded as a deferral, not a failure
    assert harness.log.get_run(run.id).wake_at == started + timedelta(seconds=7)
    deferred = events_of(harness, run.id, EventType.STEP_DEFERRED, "create_sales_order")
    assert len(deferred) == 1
    harness.advance(timedelta(seconds=6))
    harness.run_until_idle()
    assert len(requests_to(erp_simulator, "PUT", "/salesOrder/")) == 1  # not before its time
    harness.advance(timedelta(seconds=1))
    harness.run_until_idle()
    assert harness.status(run.id) is RunStatus.COMPLETED
    # ...and the retry was still the step's first attempt
    done = events_of(harness, run.id, EventType.STEP_COMPLETED, "create_sales_order")
    assert done[0].attempt == 1
    assert events_of(harness, run.id, EventType.STEP_FAILED, "create_sales_order") == []


def test_a_reservation_beyond_stock_is_permanent_and_earlier_steps_compensate_in_reverse(
    erp: NetSuiteErp, erp_simulator: ErpSimulator, run_saga: RunSaga
) -> None:
    # Given more gadgets are ordered than the 2 in stock
    harness, run_id = run_saga(erp, Order(order_id="A3", widgets=3, gadgets=5))

    # Then the refusal was not retried, and what was done is undone last-first
    assert harness.status(run_id) is RunStatus.COMPENSATED
    assert len(requests_to(erp_simulator, "PUT", "/customrecord_sl_reservation/")) == 2
    failed = events_of(harness, run_id, EventType.STEP_FAILED, "reserve_gadgets")
    assert [e.payload["outcome"] for e in failed] == ["compensate"]
    assert failed[0].error["details"]["code"] == "SL_INSUFFICIENT_STOCK"
    assert ledger(erp_simulator) == [
        ("reserve", "widget", 3),
        ("order_created", None, 3750),
        ("order_cancelled", None, 3750),
        ("release", "widget", 3),
    ]
    assert erp_simulator.available("widget") == 10


def test_a_lost_response_on_the_sales_order_leaves_one_order_found_by_the_probe(
    erp: NetSuiteErp, erp_simulator: ErpSimulator, run_saga: RunSaga
) -> None:
    erp_simulator.inject(Fault(FaultKind.LOST_RESPONSE, operation="upsert_sales_order"))

    harness, run_id = run_saga(erp, Order(order_id="A4"))

    assert harness.status(run_id) is RunStatus.COMPLETED
    done = events_of(harness, run_id, EventType.STEP_COMPLETED, "create_sales_order")
    assert done[0].payload["via_probe"] is True
    assert done[0].payload["output"]["id"] == erp_simulator.sales_orders()[0].id
    assert len(erp_simulator.sales_orders()) == 1
    assert len(requests_to(erp_simulator, "PUT", "/salesOrder/")) == 1  # never sent again


def test_a_timeout_that_applied_nothing_is_probed_then_retried_into_one_order(
    erp: NetSuiteErp, erp_simulator: ErpSimulator, run_saga: RunSaga
) -> None:
    erp_simulator.inject(Fault(FaultKind.TIMEOUT, operation="upsert_sales_order", delay=0.5))

    harness, run_id = run_saga(erp, Order(order_id="A5"))

    assert harness.status(run_id) is RunStatus.COMPLETED
    done = events_of(harness, run_id, EventType.STEP_COMPLETED, "create_sales_order")
    assert (done[0].attempt, done[0].payload["via_probe"]) == (2, False)
    failed = events_of(harness, run_id, EventType.STEP_FAILED, "create_sales_order")
    assert failed[0].error["outcome_unknown"] is True
    assert len(erp_simulator.sales_orders()) == 1
    assert len(requests_to(erp_simulator, "PUT", "/salesOrder/")) == 2


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (
            Fault(FaultKind.LOST_RESPONSE, operation="upsert_sales_order"),
            [
                ("reserve", "widget", 3),
                ("order_created", None, 3750),
                ("order_cancelled", None, 3750),
                ("release", "widget", 3),
            ],
        ),
        (
            Fault(FaultKind.TIMEOUT, operation="upsert_sales_order", delay=0.5),
            [("reserve", "widget", 3), ("release", "widget", 3)],
        ),
    ],
    ids=["landed", "did-not-land"],
)
def test_giving_up_on_an_unknown_outcome_compensates_the_order_only_if_it_landed(
    erp: NetSuiteErp,
    erp_simulator: ErpSimulator,
    run_saga: RunSaga,
    fault: Fault,
    expected: list[Any],
) -> None:
    # Given the sales order step gets one attempt, and its outcome is unknown
    erp_simulator.inject(fault)

    harness, run_id = run_saga(erp, Order(order_id="A6"), order_retry=RetryPolicy(max_attempts=1))

    # Then the probe decides: an order that landed is cancelled, one that did not is left alone
    assert harness.status(run_id) is RunStatus.COMPENSATED
    assert ledger(erp_simulator) == expected
    cancels = requests_to(erp_simulator, "PATCH", "/salesOrder/")
    assert len(cancels) == (1 if fault.kind is FaultKind.LOST_RESPONSE else 0)


def test_a_late_failure_voids_cancels_and_releases_in_reverse(
    erp: NetSuiteErp, erp_simulator: ErpSimulator, run_saga: RunSaga
) -> None:
    # Given every ERP step succeeds and the last step fails
    harness, run_id = run_saga(erp, Order(order_id="A7", widgets=3, gadgets=2, fail_at_end=True))

    # Then the ledger shows each effect undone, in exact reverse order, for the same amounts
    assert harness.status(run_id) is RunStatus.COMPENSATED
    assert ledger(erp_simulator) == [
        ("reserve", "widget", 3),
        ("order_created", None, 3750),
        ("reserve", "gadget", 2),
        ("invoice_created", None, 9750),
        ("invoice_voided", None, 9750),
        ("release", "gadget", 2),
        ("order_cancelled", None, 3750),
        ("release", "widget", 3),
    ]
    compensated = [
        e.step for e in harness.events(run_id) if e.type is EventType.COMPENSATION_COMPLETED
    ]
    assert compensated == ["invoice", "reserve_gadgets", "create_sales_order", "reserve_widgets"]
    assert erp_simulator.available("widget") == 10 and erp_simulator.available("gadget") == 2
    assert [t.status for t in erp_simulator.transactions.values()] == ["C", "B", "B"]


# -- secrets ------------------------------------------------------------------------------------


def test_secrets_never_reach_errors_events_or_logs(
    erp: NetSuiteErp,
    erp_simulator: ErpSimulator,
    run_saga: RunSaga,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # Given a run refused for a wrong token secret...
    with connector_for(erp_simulator, token_secret=TOKEN_SECRET + "-old") as stale:
        refused, refused_id = run_saga(stale, Order(order_id="S1"))
    # ...and one where the ERP echoes the token secret back in its error code
    erp_simulator.inject(Fault(FaultKind.DECLINE, operation="reserve", code=TOKEN_SECRET))
    echoed, echoed_id = run_saga(erp, Order(order_id="S2"))

    # Then both runs failed with the ERP's errors recorded...
    logged = []
    for h, run_id in ((refused, refused_id), (echoed, echoed_id)):
        assert h.status(run_id) is RunStatus.COMPENSATED
        run = h.log.get_run(run_id)
        events = [(e.payload, e.error) for e in h.events(run_id)]
        logged.append(json.dumps([events, run.last_error, run.blocked_reason], default=str))
    assert "INVALID_LOGIN" in logged[0]
    assert '"code": "***"' in logged[1]  # the echoed secret, masked
    assert "/services/rest/record/v1/" in caplog.text  # the HTTP calls were logged
    # ...and no secret appears in the events, the run rows or the captured logs
    for text in [*logged, caplog.text]:
        assert CONSUMER_SECRET not in text
        assert TOKEN_SECRET not in text
