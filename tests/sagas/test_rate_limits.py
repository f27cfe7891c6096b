"""Rate limits and 429s: steps wait, durably when it is long, without using up attempts."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from sagaledger import RateLimitedError, RetryPolicy, RetrySafety, RunStatus, Saga, step
from sagaledger.connectors import RateLimit
from sagaledger.store import EventType
from sagaledger.testing import SagaHarness


class Charge(BaseModel):
    amount: int
    throttled_calls: int = 0


def charging_saga(limit: RateLimit, calls: list[int]) -> Saga:
    runs_calls: Counter[str] = Counter()  # per run: which runs are driven first does not matter

    def charge(ctx: Any) -> dict[str, int]:
        calls.append(ctx.attempt)
        runs_calls[ctx.run_id] += 1
        if runs_calls[ctx.run_id] <= ctx.input.throttled_calls:
            raise RateLimitedError("429 Too Many Requests", retry_after=timedelta(minutes=2))
        return {"charged": ctx.input.amount}

    policy = RetryPolicy(max_attempts=2)
    return Saga(
        "charge",
        1,
        Charge,
        [
            step(
                retry_safety=RetrySafety.IDEMPOTENCY_KEY,
                no_compensation="test",
                rate_limit=limit,
                retry=policy,
            )(charge)
        ],
    )


def kinds(h: SagaHarness, run_id: str) -> list[str]:
    return [e.type.value for e in h.events(run_id) if e.step]


def test_a_long_wait_for_the_rate_limit_is_recorded_and_survives_restarts(store_url: str) -> None:
    calls: list[int] = []
    saga = charging_saga(RateLimit(name="payments", calls=1, per=timedelta(minutes=1)), calls)
    h = SagaHarness([saga], store_url=store_url)

    first = h.run(saga, {"amount": 1})
    second = h.run(saga, {"amount": 2})

    # The second charge waits for the window instead of calling the remote side
    assert (h.status(first.id), h.status(second.id)) == (RunStatus.COMPLETED, RunStatus.RUNNING)
    assert calls == [1]
    deferred = [e for e in h.events(second.id) if e.type is EventType.STEP_DEFERRED]
    assert len(deferred) == 1 and "rate limit 'payments'" in deferred[0].payload["reason"]
    assert h.log.get_run(second.id).wake_at == h.clock() + timedelta(minutes=1)

    h.advance(timedelta(minutes=1))
    h.run_until_idle()
    assert h.status(second.id) is RunStatus.COMPLETED
    assert calls == [1, 1]  # the same attempt ran: waiting used none up
    h.close()


def test_a_short_wait_for_the_rate_limit_happens_in_the_worker(store_url: str) -> None:
    calls: list[int] = []
    saga = charging_saga(
        RateLimit(name="payments", calls=1, per=timedelta(milliseconds=500)), calls
    )
    h = SagaHarness([saga], store_url=store_url)
    runs = [h.run(saga, {"amount": n}) for n in range(3)]
    assert [h.status(r.id) for r in runs] == [RunStatus.COMPLETED] * 3
    assert all("step_deferred" not in kinds(h, r.id) for r in runs)
    h.close()


def test_429s_wait_out_retry_after_without_using_up_attempts(store_url: str) -> None:
    calls: list[int] = []
    saga = charging_saga(RateLimit(name="payments", concurrency=10), calls)
    h = SagaHarness([saga], store_url=store_url)

    # Given the remote side answers 429 (Retry-After: 2 min) five times, with 2 attempts allowed
    run = h.run(saga, {"amount": 5, "throttled_calls": 5})
    other = h.run(saga, {"amount": 6})
    # Then every worker holds off the connector meanwhile
    assert h.status(other.id) is RunStatus.RUNNING and len(calls) == 1

    for _ in range(5):
        assert h.log.get_run(run.id).wake_at == h.clock() + timedelta(minutes=2)
        h.advance(timedelta(minutes=2))
        h.run_until_idle()

    assert (h.status(run.id), h.status(other.id)) == (RunStatus.COMPLETED, RunStatus.COMPLETED)
    assert kinds(h, run.id).count("step_deferred") == 5
    done = next(e for e in h.events(run.id) if e.type is EventType.STEP_COMPLETED)
    assert done.attempt == 1
    h.close()
