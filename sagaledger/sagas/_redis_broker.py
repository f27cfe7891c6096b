"""Dramatiq's Redis broker, with idle consumers woken by new messages instead of polling.

Dramatiq's Redis consumer sleeps after every empty poll, 5 ms doubling up to the
worker timeout, so a message sent to an idle worker waits that long before it is
fetched: most of a short saga's time in production mode. Here every enqueue also
pushes a token on a per-queue wake list, and an idle consumer waits on that list
(BLPOP) instead of sleeping, so it fetches the message within a round trip.

The wake list is only a hint: the message itself is enqueued by Dramatiq's own
script, and a lost or missing token (a producer on a plain ``RedisBroker``, a
message requeued from a dead worker) costs no more than Dramatiq's polling, since
the wait never outlasts the worker timeout.

Imported only when a Redis URL is used (redis takes a tenth of a second to import).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

#: Tokens kept per wake list: enough to wake every idle consumer of a queue at once,
#: few enough that tokens pushed while every consumer was busy cost only that
#: many empty fetches later.
WAKE_TOKENS = 64
#: How long (s) a consumer whose prefetch is full waits before fetching again:
#: a worker thread finishing frees a slot, and nothing signals that through Redis.
BUSY_POLL_S = 0.002

_log = logging.getLogger(__name__)


def wake_key(namespace: str, queue_name: str) -> str:
    """The Redis list whose tokens wake the consumers of ``queue_name``."""
    return f"{namespace}:{queue_name}.wake"


class WakingRedisBroker(RedisBroker):
    """A :class:`~dramatiq.brokers.redis.RedisBroker` whose idle consumers wake on enqueue.

    Takes the same arguments as ``RedisBroker``; messages, queues and the
    recovery of dead workers' messages are Dramatiq's own, so it shares a Redis
    with plain ``RedisBroker`` producers and consumers.
    """

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        # Dramatiq's consumer, told not to sleep (timeout 0); the wrapper waits instead.
        fetching = super().consume(queue_name, prefetch, timeout=0)
        return _WakingConsumer(self, fetching, queue_name, prefetch, timeout)

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        sent = super().enqueue(message, delay=delay)
        key = wake_key(self.namespace, sent.queue_name)  # the delay queue's, if delayed
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.rpush(key, 1)
                pipe.ltrim(key, -WAKE_TOKENS, -1)
                pipe.execute()
        except redis.RedisError as exc:
            # The message is enqueued; without the token it is fetched on the next poll.
            _log.warning("message %s enqueued, but its wake token failed: %s", sent, exc)
        return sent


class _WakingConsumer(Consumer):
    """Dramatiq's consumer of one queue, waiting on the queue's wake list when idle."""

    def __init__(
        self,
        broker: WakingRedisBroker,
        fetching: Any,  # Dramatiq's Redis consumer: a private, unannotated class
        queue_name: str,
        prefetch: int,
        timeout_ms: int,
    ):
        self.client = broker.client
        self.fetching = fetching
        self.prefetch = prefetch
        self.key = wake_key(broker.namespace, queue_name)
        self.timeout_s = timeout_ms / 1000

    def __next__(self) -> MessageProxy | None:
        # Only this thread fetches and acks only lower the count: a prefetch that is
        # not full now is not full when the inner consumer looks, so it fetches.
        full = self.fetching.outstanding_message_count >= self.prefetch
        message: MessageProxy | None = next(self.fetching)
        if message is not None:
            return message
        if full:
            time.sleep(BUSY_POLL_S)
            return None
        try:
            # The fetch found the queue empty: wait for a token (or the timeout, after
            # which the worker thread does its periodic work and polls again).
            self.client.blpop([self.key], timeout=self.timeout_s)
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        return None

    @property
    def outstanding_message_count(self) -> int:
        count: int = self.fetching.outstanding_message_count
        return count

    def ack(self, message: MessageProxy) -> None:
        self.fetching.ack(message)

    def nack(self, message: MessageProxy) -> None:
        self.fetching.nack(message)

    def requeue(self, messages: Any) -> None:
        self.fetching.requeue(messages)

    def close(self) -> None:
        self.fetching.close()
