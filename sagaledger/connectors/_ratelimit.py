"""Per-connector rate limits that every worker shares.

A :class:`RateLimit` names a connector and bounds how hard all workers together
may use it: at most ``calls`` grants in any sliding window of ``per``, and/or at
most ``concurrency`` holders at once. A :class:`RateLimiter` decides, without
ever blocking, whether a caller may go now or how long it should wait before
asking again; :meth:`RateLimiter.block` honours a remote's 429 Retry-After for
everyone.

Two limiters share one behaviour: :class:`MemoryRateLimiter` for the embedded,
single-process worker, and :class:`RedisRateLimiter` for workers on many
machines. Limits are shared by name: two :class:`RateLimit` values with the same
name count against the same window, holders and block.
"""

from __future__ import annotations

import math
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    ModelWrapValidatorHandler,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails

if TYPE_CHECKING:
    import redis

#: Connector names become part of Redis keys, inside a ``{hash tag}``, so braces
#: and whitespace are out.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/\-]*")
#: A refused concurrency request cannot know when a holder will release, so it is
#: told to ask again after this (or when the first slot expires, if sooner).
DEFAULT_POLL_INTERVAL = timedelta(milliseconds=100)

_MICROSECOND = timedelta(microseconds=1)


def _describe(error: ErrorDetails) -> str:
    where = ".".join(map(str, error["loc"]))
    return f"{where}: {error['msg']}" if where else error["msg"]


class RateLimit(BaseModel):
    """How hard all workers together may use one connector.

    Set a window (``calls`` per ``per``), a ``concurrency`` bound, or both; a
    grant then counts against both at once.

    Args:
        name: The connector, e.g. ``"payments"``; limits are shared by name.
        calls: At most this many grants in any sliding window of length ``per``.
        per: The window's length (set with ``calls``).
        concurrency: At most this many holders at once.
        hold_timeout: A concurrency slot whose holder never released it (a
            worker that died) is freed this long after it was granted.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    calls: int | None = None
    per: timedelta | None = None
    concurrency: int | None = None
    hold_timeout: timedelta = timedelta(minutes=5)

    @model_validator(mode="wrap")
    @classmethod
    def _name_the_limit(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        # Limits are declared in bulk at start-up; every error says which one.
        name = data.get("name") if isinstance(data, dict) else getattr(data, "name", None)
        try:
            limit = handler(data)
        except ValidationError as error:
            problems = [_describe(e) for e in error.errors()]
        else:
            problems = limit._problems()
        if problems:
            raise ValueError(f"rate limit {name!r}: " + "; ".join(problems))
        return limit

    def _problems(self) -> list[str]:
        problems = []
        if not _NAME.fullmatch(self.name):
            problems.append("name must be letters, digits and _ . : / - (no spaces or braces)")
        if (self.calls is None) != (self.per is None):
            problems.append("set calls and per together (calls in any window of per), or neither")
        if self.calls is None and self.concurrency is None:
            problems.append("set a window (calls and per), concurrency, or both")
        if self.calls is not None and self.calls < 1:
            problems.append(f"calls must be at least 1, not {self.calls}")
        if self.per is not None and self.per <= timedelta(0):
            problems.append(f"per must be positive, not {self.per}")
        if self.concurrency is not None and self.concurrency < 1:
            problems.append(f"concurrency must be at least 1, not {self.concurrency}")
        if self.hold_timeout <= timedelta(0):
            problems.append(f"hold_timeout must be positive, not {self.hold_timeout}")
        return problems


class RateLimiter(Protocol):
    """Decides who may call a connector now; one instance is shared by every worker."""

    def acquire(self, limit: RateLimit, holder: str) -> timedelta | None:
        """Take one grant under ``limit`` if it is free now; never blocks.

        A grant counts against the window and takes a concurrency slot for
        ``holder``, both or neither. Acquiring again while ``holder`` holds a slot
        keeps that one slot (renewing its hold timeout), but counts against the
        window again: every grant is a call.

        Args:
            limit: The limit to respect.
            holder: Who holds the concurrency slot until :meth:`release`
                (unique per caller, e.g. an idempotency key).

        Returns:
            None if granted; otherwise how long to wait before asking again.
        """
        ...

    def release(self, limit: RateLimit, holder: str) -> None:
        """Free ``holder``'s concurrency slot; a no-op if it holds none."""
        ...

    def block(self, name: str, until_seconds: float) -> None:
        """Grant nothing under limit ``name`` for the next ``until_seconds`` seconds.

        For a remote's 429 Retry-After. A shorter block never shortens a longer
        one already in place.

        Raises:
            ValueError: ``name`` is not a valid limit name, or ``until_seconds``
                is not a finite number.
        """
        ...


def _check_block(name: str, until_seconds: float) -> None:
    if not _NAME.fullmatch(name):
        raise ValueError(f"block: {name!r} is not a rate limit name")
    if not math.isfinite(until_seconds):
        raise ValueError(f"block {name!r}: need a finite number of seconds, not {until_seconds}")


# --------------------------------------------------------------------------- in memory


@dataclass
class _State:
    grants: deque[float] = field(default_factory=deque)  # grant times, oldest first
    holders: dict[str, float] = field(default_factory=dict)  # holder -> slot expiry
    blocked_until: float = -math.inf


class MemoryRateLimiter:
    """A :class:`RateLimiter` for the threads of one process.

    Args:
        clock: Monotonic seconds; inject a fake one in tests.
        poll_interval: The longest wait a concurrency refusal returns.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        poll_interval: timedelta = DEFAULT_POLL_INTERVAL,
    ):
        self._clock = clock
        self._poll = poll_interval.total_seconds()
        self._states: dict[str, _State] = {}
        self._lock = threading.Lock()

    def acquire(self, limit: RateLimit, holder: str) -> timedelta | None:
        """See :meth:`RateLimiter.acquire`."""
        with self._lock:
            now = self._clock()
            state = self._states.setdefault(limit.name, _State())
            if state.blocked_until > now:
                return timedelta(seconds=state.blocked_until - now)
            wait = 0.0
            if limit.calls is not None and limit.per is not None:
                per = limit.per.total_seconds()
                while state.grants and state.grants[0] <= now - per:
                    state.grants.popleft()
                excess = len(state.grants) - limit.calls
                if excess >= 0:
                    wait = state.grants[excess] + per - now
            if limit.concurrency is not None:
                state.holders = {h: exp for h, exp in state.holders.items() if exp > now}
                if holder not in state.holders and len(state.holders) >= limit.concurrency:
                    wait = max(wait, min(self._poll, min(state.holders.values()) - now))
            if wait > 0:
                return timedelta(seconds=wait)
            if limit.calls is not None:
                state.grants.append(now)
            if limit.concurrency is not None:
                state.holders[holder] = now + limit.hold_timeout.total_seconds()
            return None

    def release(self, limit: RateLimit, holder: str) -> None:
        """See :meth:`RateLimiter.release`."""
        with self._lock:
            state = self._states.get(limit.name)
            if state is not None:
                state.holders.pop(holder, None)
                self._forget_if_idle(limit.name, state)

    def block(self, name: str, until_seconds: float) -> None:
        """See :meth:`RateLimiter.block`."""
        _check_block(name, until_seconds)
        if until_seconds <= 0:
            return
        with self._lock:
            state = self._states.setdefault(name, _State())
            state.blocked_until = max(state.blocked_until, self._clock() + until_seconds)

    def _forget_if_idle(self, name: str, state: _State) -> None:
        # Window grants are trimmed lazily, so only a state with nothing at all
        # left can go; the rest is bounded by `calls` per name.
        if not state.grants and not state.holders and state.blocked_until <= self._clock():
            del self._states[name]


# --------------------------------------------------------------------------- Redis

# Times are integer microseconds from the server's TIME, so workers with skewed
# clocks agree. They are written with %d: Lua would print 1.7e15 as 1.7e+15.
_LUA_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function us(x) return string.format('%d', x) end
local function extend(key, micros)
  -- TTLs only collect garbage; never cut one short that another grant needs.
  local ms = math.floor((micros + 999) / 1000)
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, us(ms)) end
end
"""

# KEYS: window, holders, block.
# ARGV: calls (0: no window), per_us, concurrency (0: none), hold_us, holder,
#       grant id, poll_us. Returns 0 when granted, else microseconds to wait.
_ACQUIRE = (
    _LUA_PRELUDE
    + """
local calls, per = tonumber(ARGV[1]), tonumber(ARGV[2])
local limit, hold = tonumber(ARGV[3]), tonumber(ARGV[4])
local holder, grant_id, poll = ARGV[5], ARGV[6], tonumber(ARGV[7])

local blocked = redis.call('GET', KEYS[3])
if blocked and tonumber(blocked) > now then return tonumber(blocked) - now end

local wait = 0
if calls > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', us(now - per))
  local excess = redis.call('ZCARD', KEYS[1]) - calls
  if excess >= 0 then
    local freed = redis.call('ZRANGE', KEYS[1], excess, excess, 'WITHSCORES')
    wait = tonumber(freed[2]) + per - now
  end
end
if limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', us(now))
  if not redis.call('ZSCORE', KEYS[2], holder)
     and redis.call('ZCARD', KEYS[2]) >= limit then
    local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    wait = math.max(wait, math.min(poll, tonumber(first[2]) - now))
  end
end
if wait > 0 then return wait end

if calls > 0 then
  redis.call('ZADD', KEYS[1], us(now), grant_id)
  extend(KEYS[1], per)
end
if limit > 0 then
  redis.call('ZADD', KEYS[2], us(now + hold), holder)
  extend(KEYS[2], hold)
end
return 0
"""
)

# KEYS: block. ARGV: block_us. Keeps the later of the current and the new block.
_BLOCK = (
    _LUA_PRELUDE
    + """
local block = tonumber(ARGV[1])
local current = redis.call('GET', KEYS[1])
if current and tonumber(current) >= now + block then return 0 end
redis.call('SET', KEYS[1], us(now + block), 'PX', us(math.floor((block + 999) / 1000)))
return 1
"""
)


def _micros(delta: timedelta) -> int:
    return delta // _MICROSECOND


class RedisRateLimiter:
    """A :class:`RateLimiter` shared by every worker connected to one Redis.

    Each call is one Lua script, so a decision and its bookkeeping are atomic
    and use the Redis server's clock. Per limit it keeps a sorted set of recent
    grant times (the window), a sorted set of holders scored by slot expiry, and
    a block-until key; every key expires once idle. Keys share a ``{name}`` hash
    tag, so one script's keys sit in one Redis Cluster slot.

    Args:
        client: The Redis client (any ``decode_responses`` setting).
        prefix: Prepended to every key.
        poll_interval: The longest wait a concurrency refusal returns.
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "sagaledger:rl",
        *,
        poll_interval: timedelta = DEFAULT_POLL_INTERVAL,
    ):
        self.client = client
        self.prefix = prefix
        self._poll_us = _micros(poll_interval)
        self._acquire = client.register_script(_ACQUIRE)
        self._block = client.register_script(_BLOCK)

    @classmethod
    def from_url(cls, url: str, prefix: str = "sagaledger:rl") -> Self:
        """Connect to the Redis at ``url`` (e.g. ``redis://host:6379/0``)."""
        import redis  # here, not at the top: a tenth of a second of start-up, only when used

        return cls(redis.Redis.from_url(url), prefix)

    def _key(self, name: str, kind: str) -> str:
        return f"{self.prefix}:{{{name}}}:{kind}"

    def acquire(self, limit: RateLimit, holder: str) -> timedelta | None:
        """See :meth:`RateLimiter.acquire`."""
        keys = [self._key(limit.name, k) for k in ("window", "holders", "block")]
        args: list[int | str] = [
            limit.calls or 0,
            _micros(limit.per) if limit.per is not None else 0,
            limit.concurrency or 0,
            _micros(limit.hold_timeout),
            holder,
            uuid.uuid4().hex,  # unique member: two grants in one microsecond both count
            self._poll_us,
        ]
        wait_us = int(self._acquire(keys=keys, args=args))
        return None if wait_us == 0 else timedelta(microseconds=wait_us)

    def release(self, limit: RateLimit, holder: str) -> None:
        """See :meth:`RateLimiter.release`."""
        if limit.concurrency is not None:
            # One atomic command; Redis deletes the set when its last holder goes.
            self.client.zrem(self._key(limit.name, "holders"), holder)

    def block(self, name: str, until_seconds: float) -> None:
        """See :meth:`RateLimiter.block`."""
        _check_block(name, until_seconds)
        block_us = math.ceil(until_seconds * 1_000_000)
        if block_us > 0:
            self._block(keys=[self._key(name, "block")], args=[block_us])
