"""The Redis broker's wake lists, on a real Redis: idle consumers wake on enqueue."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.errors import ConnectionClosed

from sagaledger.sagas import build_broker
from sagaledger.sagas._redis_broker import WAKE_TOKENS, WakingRedisBroker, wake_key

QUEUE = "sagaledger.test.v1"


@pytest.fixture
def broker(redis_url: str) -> Iterator[WakingRedisBroker]:
    built = build_broker(redis_url)
    assert isinstance(built, WakingRedisBroker)
    built.declare_queue(QUEUE)
    yield built
    built.close()
    built.client.close()


def _message(body: str) -> dramatiq.Message[Any]:
    return dramatiq.Message(
        queue_name=QUEUE, actor_name="drive", args=(body,), kwargs={}, options={}
    )


def _tokens(broker: WakingRedisBroker, queue: str = QUEUE) -> int:
    return int(broker.client.llen(wake_key(broker.namespace, queue)))


def test_an_idle_consumer_is_woken_by_an_enqueue_not_by_its_timeout(
    broker: WakingRedisBroker,
) -> None:
    # A timeout far longer than the join below: only the enqueue can end the wait.
    consumer = broker.consume(QUEUE, prefetch=4, timeout=120_000)
    returned = threading.Event()

    def wait_idle() -> None:
        assert next(consumer) is None  # empty queue: waits on the wake list
        returned.set()

    waiting = threading.Thread(target=wait_idle, daemon=True)
    waiting.start()
    # Give the consumer time to reach its wait; the test holds even if it has not
    # (then the token is already there when it looks).
    returned.wait(0.2)
    broker.enqueue(_message("run-1"))
    waiting.join(30)
    assert returned.is_set(), "the consumer slept through the enqueue"

    fetched = next(consumer)
    assert fetched is not None and fetched.args == ("run-1",)
    assert _tokens(broker) == 0  # the woken consumer took the token
    consumer.ack(fetched)
    consumer.close()


def test_tokens_are_capped_while_no_consumer_listens(broker: WakingRedisBroker) -> None:
    for n in range(WAKE_TOKENS + 36):
        broker.enqueue(_message(f"run-{n}"))
    assert _tokens(broker) == WAKE_TOKENS
    # Every message is there, whatever happened to the tokens.
    assert broker.client.llen(f"{broker.namespace}:{QUEUE}") == WAKE_TOKENS + 36


def test_a_delayed_message_wakes_the_delay_queue(broker: WakingRedisBroker) -> None:
    sent = broker.enqueue(_message("later"), delay=60_000)
    assert sent.queue_name == f"{QUEUE}.DQ"
    assert _tokens(broker, f"{QUEUE}.DQ") == 1
    assert _tokens(broker) == 0


def test_a_consumer_with_a_full_prefetch_leaves_the_tokens_to_idle_ones(
    broker: WakingRedisBroker,
) -> None:
    consumer = broker.consume(QUEUE, prefetch=1, timeout=120_000)
    broker.enqueue(_message("run-1"))
    broker.enqueue(_message("run-2"))
    first = next(consumer)
    assert first is not None
    # Its one slot is taken: it returns without fetching and without taking a token.
    assert next(consumer) is None
    assert _tokens(broker) == 2
    consumer.ack(first)
    second = next(consumer)
    assert second is not None and second.args == ("run-2",)
    consumer.ack(second)
    consumer.close()


def test_messages_from_a_plain_redis_broker_are_still_fetched(
    broker: WakingRedisBroker, redis_url: str
) -> None:
    plain = RedisBroker(url=redis_url, middleware=[])  # type: ignore[no-untyped-call]
    plain.declare_queue(QUEUE)
    plain.enqueue(_message("from-plain"))
    assert _tokens(broker) == 0
    consumer = broker.consume(QUEUE, prefetch=1, timeout=10)  # no token: polls
    fetched = next(consumer)
    assert fetched is not None and fetched.args == ("from-plain",)
    consumer.ack(fetched)
    consumer.close()
    plain.close()


def test_a_failed_wake_token_loses_no_message(
    broker: WakingRedisBroker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_pipeline(**_: Any) -> Any:
        raise redis.ConnectionError("connection reset by peer")

    monkeypatch.setattr(broker.client, "pipeline", broken_pipeline)
    with caplog.at_level(logging.WARNING, logger="sagaledger.sagas._redis_broker"):
        broker.enqueue(_message("run-1"))
    assert "wake token failed" in caplog.text
    monkeypatch.undo()
    consumer = broker.consume(QUEUE, prefetch=1, timeout=10)
    fetched = next(consumer)
    assert fetched is not None and fetched.args == ("run-1",)
    consumer.ack(fetched)
    consumer.close()


def test_a_lost_connection_while_waiting_is_reported_as_closed(
    broker: WakingRedisBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer = broker.consume(QUEUE, prefetch=1, timeout=10)

    def dropped(*_: Any, **__: Any) -> Any:
        raise redis.ConnectionError("Connection closed by server.")

    monkeypatch.setattr(broker.client, "blpop", dropped)
    # Dramatiq's worker restarts a consumer that raises ConnectionClosed.
    with pytest.raises(ConnectionClosed):
        next(consumer)
