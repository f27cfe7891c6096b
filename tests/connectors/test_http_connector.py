"""The HTTP connector base over real loopback HTTP: each outcome lands in the right error."""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from sagaledger import OutcomeUnknownError, PermanentError, RateLimitedError, RetryableError
from sagaledger.connectors._http import HttpConnector, retry_after
from sagaledger.connectors.simulators import (
    Effect,
    Fault,
    FaultKind,
    HttpSimulator,
    SimRequest,
    SimResponse,
)

KEY = "sk_test_4eC39HqLyjWDarjtT1zdp7dc"
AUTH = {"Authorization": f"Bearer {KEY}"}


class ThingService(HttpSimulator):
    """The smallest service: creates things once per idempotency key."""

    system = "things"

    def __init__(self) -> None:
        super().__init__()
        self._ids = itertools.count(1)
        self._by_key: dict[str, SimResponse] = {}

    def authenticate(self, request: SimRequest) -> SimResponse | None:
        if request.header("authorization") == f"Bearer {KEY}":
            return None
        return self.error(
            401, "invalid_api_key", f"Invalid API key: {request.header('authorization')}"
        )

    def route(self, request: SimRequest) -> Any:
        if (request.method, request.path) != ("POST", "/things"):
            return self.error(404, "not_found", f"no route {request.path}")
        key = request.header("idempotency-key") or ""

        def create() -> SimResponse:
            if key not in self._by_key:
                thing = self.ledger.record(Effect("create", f"t_{next(self._ids)}", key))
                self._by_key[key] = SimResponse(200, {"id": thing.ref})
            return self._by_key[key]

        return "create_thing", create

    def error(self, status: int, code: str, message: str) -> SimResponse:
        return SimResponse(status, {"error": {"code": code, "message": message}})

    def decline(self, operation: str, fault: Fault) -> SimResponse:
        return self.error(402, fault.code or "declined", "the thing was refused")


@pytest.fixture
def service() -> Iterator[ThingService]:
    with ThingService() as sim:
        yield sim


@pytest.fixture
def connector(service: ThingService) -> Iterator[HttpConnector]:
    timeout = httpx.Timeout(2.0, read=0.3)
    with HttpConnector("things", service.url, timeout=timeout, secrets=[KEY]) as made:
        yield made


def create(connector: HttpConnector, key: str = "k1", **headers: str) -> httpx.Response:
    return connector.send(
        "POST", "/things", "create_thing", headers={**AUTH, "Idempotency-Key": key, **headers}
    )


def test_a_success_returns_the_response(connector: HttpConnector, service: ThingService) -> None:
    assert create(connector).json() == {"id": "t_1"}
    assert create(connector).json() == {"id": "t_1"}  # the same key: the same thing
    assert [e.ref for e in service.ledger.effects()] == ["t_1"]


def test_a_5xx_is_retryable_and_says_where(connector: HttpConnector, service: ThingService) -> None:
    service.inject(Fault(FaultKind.ERROR, status=503))
    with pytest.raises(RetryableError) as caught:
        create(connector)
    assert type(caught.value) is RetryableError
    assert str(caught.value).startswith("things create_thing: HTTP 503 simulated_error")
    assert caught.value.details == {
        "system": "things",
        "operation": "create_thing",
        "status": 503,
        "code": "simulated_error",
    }
    assert service.ledger.effects() == []


def test_a_429_is_rate_limited_for_the_services_retry_after(
    connector: HttpConnector, service: ThingService
) -> None:
    service.inject(Fault(FaultKind.RATE_LIMIT, retry_after=7))
    with pytest.raises(RateLimitedError) as caught:
        create(connector)
    assert caught.value.retry_after == timedelta(seconds=7)


def test_a_refusal_is_permanent(connector: HttpConnector, service: ThingService) -> None:
    service.inject(Fault(FaultKind.DECLINE, code="thing_refused"))
    with pytest.raises(PermanentError) as caught:
        create(connector)
    assert caught.value.non_retryable is True
    assert caught.value.details is not None and caught.value.details["code"] == "thing_refused"


@pytest.mark.parametrize("kind", [FaultKind.TIMEOUT, FaultKind.LOST_RESPONSE])
def test_no_answer_after_sending_is_an_unknown_outcome(
    connector: HttpConnector, service: ThingService, kind: FaultKind
) -> None:
    service.inject(Fault(kind, delay=0.6))
    with pytest.raises(OutcomeUnknownError):
        create(connector)
    landed = kind is FaultKind.LOST_RESPONSE
    assert len(service.ledger.effects()) == (1 if landed else 0)
    # The retry with the same key finds the first thing, never a second one
    assert create(connector).json() == {"id": "t_1"}
    assert len(service.ledger.effects()) == 1


def test_a_request_that_cannot_be_sent_is_retried_within_the_call() -> None:
    # A port that refuses: every connection attempt fails before sending
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tries: list[httpx.Request] = []
    client = httpx.Client(event_hooks={"request": [tries.append]})
    connector = HttpConnector("things", f"http://127.0.0.1:{port}", client=client)
    with pytest.raises(RetryableError, match="could not connect"):
        connector.send("GET", "/things", "list_things")
    assert len(tries) == 3  # CONNECT_ATTEMPTS
    connector.close()
    assert not client.is_closed  # an injected client belongs to its owner
    client.close()


def test_secrets_never_reach_the_error(connector: HttpConnector, service: ThingService) -> None:
    # The service echoes the bad credential back, as some do
    with pytest.raises(PermanentError) as caught:
        connector.send(
            "POST", "/things", "create_thing", headers={"Authorization": f"Bearer {KEY}x"}
        )
    assert KEY not in str(caught.value)
    assert "***" in str(caught.value)


def test_retry_after_reads_seconds_and_dates() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert retry_after("120") == timedelta(seconds=120)
    assert retry_after("1.5") == timedelta(seconds=1.5)
    assert retry_after("Tue, 01 Jan 2030 00:00:30 GMT", now) == timedelta(seconds=30)
    assert retry_after("Mon, 31 Dec 2029 23:00:00 GMT", now) == timedelta(0)  # in the past
    assert retry_after(None) is None
    assert retry_after("soon") is None
