"""Rate limits shared by workers: in Redis across processes, in memory across threads.

Workers read ``time.time()`` right before asking and right after a grant, so a
grant happened between those two reads; the window check tolerates exactly that
uncertainty (a few milliseconds at most, of clock reads and the round trip) and
nothing more. Holding intervals are read after the grant and before the release, so they
lie inside the real holding time and are checked exactly.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

import freezegun
import pytest
from pydantic import ValidationError

from sagaledger.connectors import MemoryRateLimiter, RateLimit, RateLimiter, RedisRateLimiter

#: A grant's time is known to within its asked-to-granted reads, typically a few
#: ms; past this (median) the window check would be too loose to mean anything.
MAX_TYPICAL_UNCERTAINTY = 0.02
#: Threads give up the GIL this often, so that clock reads are prompt.
GIL_SWITCH_INTERVAL = 0.0005
#: Waits longer than this are cut short, so refused callers keep asking.
MAX_NAP = 0.01


class Grant(NamedTuple):
    """One grant, as ``time.time()`` read it in the worker."""

    asked: float  # just before the acquire that was granted
    granted: float  # just after it
    released: float  # just before the release


class FakeClock:
    """Monotonic seconds that only move when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --------------------------------------------------------------------------- workers


def hammer(
    limiter: RateLimiter,
    limit: RateLimit,
    threads: int,
    start_at: float,
    seconds: float,
    hold: float,
) -> list[Grant]:
    """From ``start_at`` (wall time) for ``seconds``, ``threads`` threads acquire in a loop.

    Each grant is held for a random time up to ``hold`` seconds, then released.
    """
    grants: list[Grant] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        holder = f"{os.getpid()}-{n}"
        time.sleep(max(0.0, start_at - time.time()))
        while time.time() < start_at + seconds:
            asked = time.time()
            wait = limiter.acquire(limit, holder)
            if wait is not None:
                time.sleep(min(wait.total_seconds(), MAX_NAP))
                continue
            granted = time.time()
            time.sleep(random.uniform(0, hold))
            released = time.time()
            limiter.release(limit, holder)
            with lock:
                grants.append(Grant(asked, granted, released))

    # A thread handed its grant must not wait the default 5 ms for the GIL
    # before it can read the clock.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    try:
        pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    finally:
        sys.setswitchinterval(switch_interval)
    return grants


def hammer_in_process(
    url: str, limit: RateLimit, threads: int, start_at: float, seconds: float, hold: float
) -> tuple[int, list[Grant]]:
    """:func:`hammer` on a Redis limiter of this process; returns (pid, grants)."""
    limiter = RedisRateLimiter.from_url(url)
    return os.getpid(), hammer(limiter, limit, threads, start_at, seconds, hold)


def wait_for_all(barrier: Any) -> None:
    """Pool initializer: a process is ready once all of them are up and imported."""
    barrier.wait(timeout=60)


def hold_and_die(url: str, limit: RateLimit, holders: int, report: Connection) -> None:
    """Take ``holders`` slots, report when, and die by SIGKILL without releasing them."""
    limiter = RedisRateLimiter.from_url(url)
    before = time.time()
    granted = [limiter.acquire(limit, f"doomed-{n}") for n in range(holders)]
    report.send((before, time.time(), granted))  # a pipe sends at once; a queue may not
    os.kill(os.getpid(), signal.SIGKILL)


def run_doomed_holder(url: str, limit: RateLimit, holders: int) -> tuple[Any, ...]:
    """Run :func:`hold_and_die` in a child process; return its report and exit code.

    Called in a (single-threaded) pool worker, which forks the child: that is fast,
    since the child starts with everything imported.
    """
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    doomed = context.Process(target=hold_and_die, args=(url, limit, holders, sender))
    doomed.start()
    report = receiver.recv() if receiver.poll(timeout=30) else None
    doomed.join(timeout=30)
    return report, doomed.exitcode


# --------------------------------------------------------------------------- checks


def assert_window_respected(grants: list[Grant], limit: RateLimit) -> None:
    """No sliding window of ``limit.per`` holds more than ``limit.calls`` grants.

    A grant happened between its ``asked`` and ``granted`` reads, so ``calls + 1``
    consecutive grants that all fit within less than ``per`` are a violation for
    sure: that is what is checked, with no other slack.
    """
    assert limit.calls is not None and limit.per is not None
    per = limit.per.total_seconds()
    ordered = sorted(grants, key=lambda g: g.granted)
    for i in range(len(ordered) - limit.calls):
        run = ordered[i : i + limit.calls + 1]
        earliest = min(g.asked for g in run)
        assert run[-1].granted - earliest >= per, (
            f"{limit.calls + 1} grants within {run[-1].granted - earliest:.4f}s "
            f"(< {per}s), from {earliest:.4f}: {run}"
        )
    uncertainty = sorted(g.granted - g.asked for g in grants)
    median = uncertainty[len(uncertainty) // 2]
    assert median < MAX_TYPICAL_UNCERTAINTY, f"grant times known only to {median:.4f}s"


def most_at_once(grants: list[Grant]) -> int:
    """The largest number of holders at one instant."""
    # At equal times a release (-1) sorts before a grant (+1): touching is not overlapping.
    events = sorted([(g.granted, 1) for g in grants] + [(g.released, -1) for g in grants])
    current = peak = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def redis_limiter(redis_url: str) -> Iterator[RedisRateLimiter]:
    """A Redis limiter on an emptied database."""
    limiter = RedisRateLimiter.from_url(redis_url)
    limiter.client.flushdb()
    yield limiter
    limiter.client.close()


@pytest.fixture(scope="module")
def worker_processes() -> Iterator[concurrent.futures.ProcessPoolExecutor]:
    """Three spawned worker processes, started up front so that jobs start together."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(3)
    with concurrent.futures.ProcessPoolExecutor(
        3, mp_context=context, initializer=wait_for_all, initargs=(barrier,)
    ) as pool:
        # Three jobs at once start three processes; none runs until all are up.
        for job in [pool.submit(os.getpid) for _ in range(3)]:
            job.result(timeout=90)
        yield pool


@pytest.fixture(params=["memory", "redis"])
def limiter(request: pytest.FixtureRequest) -> RateLimiter:
    """Each limiter, on the real clock."""
    if request.param == "memory":
        return MemoryRateLimiter()
    redis_limiter: RedisRateLimiter = request.getfixturevalue("redis_limiter")
    return redis_limiter


def run_in_processes(
    pool: concurrent.futures.ProcessPoolExecutor,
    url: str,
    limit: RateLimit,
    seconds: float,
    hold: float = 0.0,
) -> list[Grant]:
    start_at = time.time() + 0.2
    jobs = [
        pool.submit(hammer_in_process, url, limit, 4, start_at, seconds, hold) for _ in range(3)
    ]
    results = [job.result(timeout=seconds + 30) for job in jobs]
    assert len({pid for pid, _ in results}) == 3, "the jobs did not run in three processes"
    return [grant for _, grants in results for grant in grants]


# --------------------------------------------------------------------------- Redis, processes


def test_window_holds_across_processes_and_grants_near_the_maximum(
    redis_limiter: RedisRateLimiter,
    redis_url: str,
    worker_processes: concurrent.futures.ProcessPoolExecutor,
) -> None:
    # Given 5 calls per second, shared by 3 processes of 4 threads each
    limit = RateLimit(name="payments", calls=5, per=timedelta(seconds=1))

    # When all 12 threads hammer acquire for 3 seconds
    grants = run_in_processes(worker_processes, redis_url, limit, seconds=3)

    # Then no 1 s window holds more than 5 grants, and about 15 were granted
    assert_window_respected(grants, limit)
    assert 12 <= len(grants) <= 20


def test_concurrency_holds_across_processes(
    redis_limiter: RedisRateLimiter,
    redis_url: str,
    worker_processes: concurrent.futures.ProcessPoolExecutor,
) -> None:
    # Given at most 2 holders at once, shared by 3 processes of 4 threads each
    limit = RateLimit(name="erp", concurrency=2)

    # When all 12 threads acquire, hold up to 20 ms and release, for 1 second
    grants = run_in_processes(worker_processes, redis_url, limit, seconds=1.0, hold=0.02)

    # Then never more than 2 hold at once, and both slots were used
    assert most_at_once(grants) == 2
    assert len(grants) >= 20
    assert redis_limiter.client.zcard("sagaledger:rl:{erp}:holders") == 0


def test_slots_of_a_killed_holder_are_freed_after_the_hold_timeout(
    redis_limiter: RedisRateLimiter,
    redis_url: str,
    worker_processes: concurrent.futures.ProcessPoolExecutor,
) -> None:
    # Given a process that takes both slots and is killed without releasing them
    limit = RateLimit(name="erp", concurrency=2, hold_timeout=timedelta(seconds=0.5))
    job = worker_processes.submit(run_doomed_holder, redis_url, limit, 2)
    report, exitcode = job.result(timeout=60)
    assert exitcode == -signal.SIGKILL
    before, after, granted = report
    assert granted == [None, None]

    # When another worker keeps asking, sleeping as told
    while (wait := redis_limiter.acquire(limit, "survivor")) is not None:
        assert wait <= timedelta(milliseconds=100)
        time.sleep(wait.total_seconds())
    granted_at = time.time()

    # Then it gets a slot once the hold timeout has passed, and not before
    assert before + 0.5 <= granted_at <= after + 0.5 + 0.1


# --------------------------------------------------------------------------- Redis, one process


def test_block_applies_to_every_worker_and_is_never_shortened(
    redis_limiter: RedisRateLimiter, redis_url: str
) -> None:
    # Given two workers with their own Redis connections
    other = RedisRateLimiter.from_url(redis_url)
    payments = RateLimit(name="payments", calls=100, per=timedelta(seconds=1))
    erp = RateLimit(name="erp", concurrency=5)

    # When one is told 429 Retry-After 0.6 s, then Retry-After 0.1 s
    redis_limiter.block("payments", 0.6)
    redis_limiter.block("payments", 0.1)

    # Then the other waits out the longer block, and other connectors are unaffected
    wait = other.acquire(payments, "a")
    assert wait is not None and timedelta(seconds=0.5) < wait <= timedelta(seconds=0.6)
    assert other.acquire(erp, "a") is None
    time.sleep(wait.total_seconds())
    assert other.acquire(payments, "a") is None
    other.client.close()


def test_decisions_use_the_redis_clock_not_the_callers(redis_limiter: RedisRateLimiter) -> None:
    # Given a worker whose own clock stands still
    limit = RateLimit(name="payments", calls=1, per=timedelta(seconds=0.3))
    with freezegun.freeze_time("2030-01-01"):
        assert redis_limiter.acquire(limit, "a") is None
        assert redis_limiter.acquire(limit, "a") is not None

        # When real time moves past the window
        time.sleep(0.35)  # freezegun leaves sleep alone

        # Then the window has moved on for it too
        assert redis_limiter.acquire(limit, "a") is None


def test_every_key_expires_so_idle_limits_leave_nothing(redis_limiter: RedisRateLimiter) -> None:
    # Given grants of a window and a slot never released, and a block
    both = RateLimit(
        name="payments",
        calls=3,
        per=timedelta(seconds=0.2),
        concurrency=2,
        hold_timeout=timedelta(seconds=0.3),
    )
    assert redis_limiter.acquire(both, "never-released") is None
    redis_limiter.block("erp", 0.2)
    client = redis_limiter.client

    # Then every key has a TTL no longer than it must be
    keys = sorted(k.decode() for k in client.keys("sagaledger:rl:*"))
    assert keys == [
        "sagaledger:rl:{erp}:block",
        "sagaledger:rl:{payments}:holders",
        "sagaledger:rl:{payments}:window",
    ]
    assert all(0 < client.pttl(key) <= 300 for key in keys)

    # When the limits stay idle past those TTLs
    time.sleep(0.35)

    # Then nothing is left behind
    assert client.keys("sagaledger:rl:*") == []


# --------------------------------------------------------------------------- memory, threads


def test_memory_window_holds_across_threads_and_grants_near_the_maximum() -> None:
    # Given 5 calls per 0.3 s on a memory limiter shared by 12 threads
    limit = RateLimit(name="payments", calls=5, per=timedelta(seconds=0.3))
    limiter = MemoryRateLimiter()

    # When they all hammer acquire for 0.9 s
    grants = hammer(limiter, limit, 12, time.time(), seconds=0.9, hold=0.0)

    # Then no 0.3 s window holds more than 5 grants, and about 15 were granted
    assert_window_respected(grants, limit)
    assert 12 <= len(grants) <= 20


def test_memory_concurrency_holds_across_threads() -> None:
    # Given at most 2 holders at once, shared by 12 threads
    limit = RateLimit(name="erp", concurrency=2)
    limiter = MemoryRateLimiter()

    # When they all acquire, hold up to 20 ms and release, for 0.6 s
    grants = hammer(limiter, limit, 12, time.time(), seconds=0.6, hold=0.02)

    # Then never more than 2 hold at once, and both slots were used
    assert most_at_once(grants) == 2
    assert len(grants) >= 12


def test_memory_grants_exactly_the_limit_to_racing_threads() -> None:
    # Given a clock that stands still, so nothing frees up during the race
    limiter = MemoryRateLimiter(FakeClock())
    window = RateLimit(name="payments", calls=5, per=timedelta(seconds=1))
    slots = RateLimit(name="erp", concurrency=3)
    granted = {"payments": 0, "erp": 0}
    lock = threading.Lock()
    start = threading.Barrier(8)

    def race(n: int) -> None:
        start.wait()
        for i in range(200):
            for limit in (window, slots):
                if limiter.acquire(limit, f"{n}-{i}") is None:
                    with lock:
                        granted[limit.name] += 1

    # When 8 threads race 200 acquires each on both limits
    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then exactly the limits were granted
    assert granted == {"payments": 5, "erp": 3}


# --------------------------------------------------------------------------- memory, fake clock


def test_memory_window_slides_exactly() -> None:
    # Given 5 calls per second, granted 0.1 s apart
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock)
    limit = RateLimit(name="payments", calls=5, per=timedelta(seconds=1))
    for _ in range(5):
        assert limiter.acquire(limit, "a") is None
        clock.advance(0.1)

    # When a sixth call asks at 0.5 s
    wait = limiter.acquire(limit, "a")

    # Then it waits for the first grant to leave the window, and no longer
    assert wait == timedelta(seconds=0.5)
    clock.advance(0.5 - 1e-6)
    assert limiter.acquire(limit, "a") is not None
    clock.advance(1e-6)
    assert limiter.acquire(limit, "a") is None
    # The window slides: the next opening is when the second grant (at 0.1 s) leaves.
    assert limiter.acquire(limit, "a") == timedelta(seconds=0.1)


def test_memory_hold_timeout_frees_a_dead_holders_slot_exactly() -> None:
    # Given both slots taken by holders that never release
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock)
    limit = RateLimit(name="erp", concurrency=2, hold_timeout=timedelta(seconds=30))
    assert limiter.acquire(limit, "dead-1") is None
    clock.advance(10)
    assert limiter.acquire(limit, "dead-2") is None

    # When another asks just before and at the first slot's hold timeout
    clock.advance(20 - 1e-6)
    before = limiter.acquire(limit, "alive")
    clock.advance(1e-6)
    at = limiter.acquire(limit, "alive")

    # Then it is refused, told to ask again shortly, then granted
    assert before is not None and before <= timedelta(milliseconds=100)
    assert at is None
    assert limiter.acquire(limit, "late") is not None  # dead-2 still holds its slot


def test_memory_block_waits_exactly_and_is_never_shortened() -> None:
    # Given a 30 s block
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock)
    limit = RateLimit(name="payments", calls=10, per=timedelta(seconds=1), concurrency=1)
    limiter.block("payments", 30)
    assert limiter.acquire(limit, "a") == timedelta(seconds=30)

    # When 10 s later a 5 s block arrives
    clock.advance(10)
    limiter.block("payments", 5)

    # Then the 30 s block still holds, to the end, and then grants resume
    assert limiter.acquire(limit, "a") == timedelta(seconds=20)
    clock.advance(20)
    assert limiter.acquire(limit, "a") is None


# --------------------------------------------------------------------------- both limiters


def test_a_grant_takes_window_and_slot_together_or_neither(limiter: RateLimiter) -> None:
    # Given 2 calls per minute and 1 slot; the slot also counts for a slotless
    # view of the same connector, since limits are shared by name
    both = RateLimit(name="payments", calls=2, per=timedelta(minutes=1), concurrency=1)
    slot_only = RateLimit(name="payments", concurrency=1)

    # When a call is refused for want of a slot
    assert limiter.acquire(both, "a") is None
    assert limiter.acquire(both, "b") is not None

    # Then it took no window grant: after the release there is one left
    limiter.release(both, "a")
    assert limiter.acquire(both, "b") is None
    limiter.release(both, "b")

    # And when a call is refused for want of a window grant, it took no slot
    assert limiter.acquire(both, "c") is not None
    assert limiter.acquire(slot_only, "d") is None


def test_reacquiring_a_held_slot_keeps_one_slot(limiter: RateLimiter) -> None:
    # Given a holder of the only slot
    limit = RateLimit(name="erp", concurrency=1)
    assert limiter.acquire(limit, "a") is None

    # When it acquires again
    again = limiter.acquire(limit, "a")

    # Then it still holds it, others wait, and one release frees it
    assert again is None
    assert limiter.acquire(limit, "b") is not None
    limiter.release(limit, "a")
    assert limiter.acquire(limit, "b") is None


def test_release_is_a_no_op_for_unknown_holders_and_windows(limiter: RateLimiter) -> None:
    # Given one slot held, and a window used up
    slots = RateLimit(name="erp", concurrency=1)
    window = RateLimit(name="payments", calls=1, per=timedelta(minutes=1))
    assert limiter.acquire(slots, "a") is None
    assert limiter.acquire(window, "a") is None

    # When strangers release, and a window grant is "released"
    limiter.release(slots, "stranger")
    limiter.release(RateLimit(name="email", concurrency=1), "stranger")
    limiter.release(window, "a")

    # Then nothing was freed
    assert limiter.acquire(slots, "b") is not None
    assert limiter.acquire(window, "b") is not None


def test_refusals_say_how_long_to_wait(limiter: RateLimiter) -> None:
    # Given a used-up window of one minute, and a taken slot
    window = RateLimit(name="payments", calls=1, per=timedelta(minutes=1))
    slots = RateLimit(name="erp", concurrency=1)
    assert limiter.acquire(window, "a") is None
    assert limiter.acquire(slots, "a") is None

    # Then the window says when it opens; the slot says to ask again soon
    wait = limiter.acquire(window, "b")
    assert wait is not None and timedelta(seconds=59) < wait <= timedelta(minutes=1)
    wait = limiter.acquire(slots, "b")
    assert wait is not None and timedelta(0) < wait <= timedelta(milliseconds=100)


def test_a_shorter_block_never_shortens_a_longer_one(limiter: RateLimiter) -> None:
    # Given a 60 s block on payments
    payments = RateLimit(name="payments", concurrency=1)
    limiter.block("payments", 60)

    # When a 1 s block, a zero block and a block of another connector follow
    limiter.block("payments", 1)
    limiter.block("payments", 0)
    limiter.block("erp", 1)

    # Then payments still waits about 60 s
    wait = limiter.acquire(payments, "a")
    assert wait is not None and timedelta(seconds=59) < wait <= timedelta(seconds=60)


@pytest.mark.parametrize(
    ("name", "seconds"), [("payments", float("inf")), ("payments", float("nan")), ("{x}", 1.0)]
)
def test_block_refuses_nonsense(limiter: RateLimiter, name: str, seconds: float) -> None:
    with pytest.raises(ValueError, match="block"):
        limiter.block(name, seconds)


# --------------------------------------------------------------------------- definitions


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({}, "set a window"),
        ({"calls": 5}, "set calls and per together"),
        ({"per": timedelta(seconds=1)}, "set calls and per together"),
        ({"calls": 0, "per": timedelta(seconds=1)}, "calls must be at least 1"),
        ({"calls": 5, "per": timedelta(0)}, "per must be positive"),
        ({"concurrency": 0}, "concurrency must be at least 1"),
        ({"concurrency": 1, "hold_timeout": timedelta(seconds=-1)}, "hold_timeout must be"),
        ({"calls": 5, "per": "soon"}, "per: Input should be a valid timedelta"),
    ],
)
def test_invalid_limits_are_refused_naming_the_limit(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError) as error:
        RateLimit(name="payments", **fields)
    assert "rate limit 'payments'" in str(error.value)
    assert problem in str(error.value)


def test_limit_names_must_fit_in_redis_keys() -> None:
    with pytest.raises(ValidationError, match=r"rate limit 'pay\{ments\}'.*name must be"):
        RateLimit(name="pay{ments}", concurrency=1)


def test_a_limit_is_a_frozen_value() -> None:
    limit = RateLimit(name="payments", calls=5, per=timedelta(seconds=1))
    with pytest.raises(ValidationError):
        limit.calls = 6  # type: ignore[misc]
    assert limit == RateLimit(name="payments", calls=5, per=timedelta(seconds=1))
    assert limit.hold_timeout == timedelta(minutes=5)
