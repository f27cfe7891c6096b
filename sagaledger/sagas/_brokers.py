"""Choosing the Dramatiq broker from a URL: in memory, or Redis tuned for fast recovery."""

from __future__ import annotations

import re
import sys

import dramatiq
from dramatiq.brokers.stub import StubBroker

from sagaledger._errors import BrokerError
from sagaledger.connectors import MemoryRateLimiter, RateLimiter, RedisRateLimiter

#: What ``build_broker`` accepts, for error messages and docs.
BROKER_URLS = "memory, redis://HOST[:PORT][/DB], rediss://... or unix:///PATH"
#: Schemes served by Redis.
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

#: A broker process whose Redis heartbeat is older than this (ms) counts as dead,
#: and the messages it fetched but never acknowledged go back on their queue
#: (Dramatiq's default: 60 s). A live process heartbeats on every poll of every
#: queue, over ten times a second when idle, however long its steps run; only a
#: dead or frozen one (a C call holding the GIL) misses 10 s of them. Calling a
#: frozen process dead costs a duplicate "drive this run" message, which the run's
#: lease turns into a no-op: a step never runs twice for it.
HEARTBEAT_TIMEOUT_MS = 10_000
#: How many Redis calls in a million also requeue dead processes' messages.
#: Dramatiq's default, 1 000, left them waiting 25 min on an idle queue (measured).
#: Each live worker polls each queue over ten times a second, so at 10 % they come
#: back about a second after the heartbeat timeout. A pass costs one ZRANGEBYSCORE
#: while no process is dead, plus a KEYS scan per dead one (our keys are few).
MAINTENANCE_CHANCE = 100_000
#: Seconds to wait for a TCP connection to Redis: a wrong host fails in seconds.
CONNECT_TIMEOUT = 3.0
#: Seconds to wait for a reply: every Dramatiq call is one short Lua script.
SOCKET_TIMEOUT = 10.0


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (in the userinfo or the query)."""
    url = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url)


def build_broker(url: str | None) -> dramatiq.Broker:
    """The Dramatiq broker ``url`` names, ready to use.

    It has none of Dramatiq's default middleware: sagaledger retries from the
    log, not from messages; a step's timeout is enforced through its lease, not
    by killing the thread (Dramatiq's default time limit is 10 minutes); and
    callbacks and pipelines are not used. Each middleware costs every message
    two hook calls.

    Args:
        url: ``None`` or ``"memory"`` for an in-process broker (messages die with
            the process; the log re-drives them), ``redis://``, ``rediss://`` or
            ``unix://`` for Redis, shared by every worker on any machine; its idle
            consumers wake when a message is enqueued instead of polling (see
            :mod:`sagaledger.sagas._redis_broker`).

    Returns:
        A broker with no actors declared yet.

    Raises:
        BrokerError: the URL is malformed or unsupported, or Redis does not
            answer a PING (the message names the URL, password masked).
    """
    if url is None or url.strip().lower() == "memory":
        return StubBroker(middleware=[])
    if not url.lower().startswith(REDIS_SCHEMES):
        raise BrokerError(f"unsupported broker URL {mask_url(url)!r}: use {BROKER_URLS}")
    # Imported here: redis costs a tenth of a second at start, wasted in embedded mode.
    import redis

    from sagaledger.sagas._redis_broker import WakingRedisBroker

    try:
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=SOCKET_TIMEOUT,
            socket_keepalive=True,
        )
    except ValueError as exc:
        raise BrokerError(f"malformed broker URL {mask_url(url)!r}: {exc}") from None
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        client.close()
        raise BrokerError(f"cannot reach broker {mask_url(url)}: {exc}") from None
    # Dramatiq leaves this constructor unannotated.
    return WakingRedisBroker(  # type: ignore[no-untyped-call]
        client=client,
        middleware=[],
        heartbeat_timeout=HEARTBEAT_TIMEOUT_MS,
        maintenance_chance=MAINTENANCE_CHANCE,
    )


def rate_limiter_for(broker: dramatiq.Broker) -> RateLimiter:
    """Rate limits shared through the broker's Redis, or kept in this process."""
    # Not imported, then no RedisBroker exists (it is imported only when needed).
    redis_brokers = sys.modules.get("dramatiq.brokers.redis")
    if redis_brokers is not None and isinstance(broker, redis_brokers.RedisBroker):
        return RedisRateLimiter(broker.client)
    return MemoryRateLimiter()
