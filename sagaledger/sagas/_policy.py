"""Value objects that say how a step is retried and how it is safe to retry."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from sagaledger.sagas._context import StepContext


class RetryPolicy(BaseModel):
    """How often and how patiently a step (or a compensation) is retried.

    The delay before attempt ``n + 1`` is ``initial_backoff * multiplier ** (n - 1)``,
    capped at ``max_backoff``, then spread by ``jitter`` (a fraction: 0.2 means
    +/-20 %) so that runs failing together do not retry together.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    max_attempts: int = Field(default=5, ge=1)
    initial_backoff: timedelta = timedelta(seconds=1)
    max_backoff: timedelta = timedelta(minutes=5)
    multiplier: float = Field(default=2.0, ge=1.0)
    jitter: float = Field(default=0.2, ge=0.0, le=1.0)
    #: Exception types that fail the step at once, without retries.
    non_retryable: tuple[type[BaseException], ...] = ()

    @model_validator(mode="after")
    def _backoffs_are_ordered(self) -> RetryPolicy:
        if self.initial_backoff < timedelta(0) or self.max_backoff < self.initial_backoff:
            raise ValueError("need 0 <= initial_backoff <= max_backoff")
        return self

    def backoff(self, failed_attempt: int, rng: random.Random | None = None) -> timedelta:
        """Return the delay after attempt ``failed_attempt`` (1-based) failed."""
        base = self.initial_backoff.total_seconds() * self.multiplier ** (failed_attempt - 1)
        base = min(base, self.max_backoff.total_seconds())
        spread = (rng or random).uniform(1 - self.jitter, 1 + self.jitter)
        return timedelta(seconds=min(base * spread, self.max_backoff.total_seconds()))


#: The default for forward steps.
DEFAULT_RETRY = RetryPolicy()
#: Compensations are retried harder: giving up parks the run for a person.
DEFAULT_COMPENSATION_RETRY = RetryPolicy(max_attempts=8, max_backoff=timedelta(minutes=10))


class RetrySafetyKind(StrEnum):
    """The ways a step can be safe to run more than once."""

    IDEMPOTENCY_KEY = "idempotency_key"
    NATURAL = "natural"
    PROBE = "probe"


@dataclass(frozen=True)
class RetrySafety:
    """A step's declaration of why running it again cannot double its effect.

    Use one of:

    - ``RetrySafety.IDEMPOTENCY_KEY``: the step passes ``ctx.idempotency_key`` to the
      remote system, which applies the effect once per key.
    - ``RetrySafety.NATURAL``: doing it twice is the same as doing it once
      (setting a value, a read).
    - ``RetrySafety.probe(fn)``: before any attempt after the first, ``fn(ctx)`` asks
      the remote system whether the effect already landed; it returns the step's
      output if so (the step is then recorded as done without running again), or
      ``None``.
    - ``RetrySafety.IDEMPOTENCY_KEY.with_probe(fn)``: a key, and a probe asked
      before every retry too. It covers what the key cannot: a provider that
      forgets keys after a day, or a retry that comes after the key expired.

    Whatever the kind, a step with a probe is also probed when the run gives up
    on it after an :class:`~sagaledger.OutcomeUnknownError` (or a crash
    mid-attempt): if the effect landed, the step counts as completed and is
    compensated with the others. Earlier attempts need no such check: the probe
    before each retry, or the key's replay of a landed request, already
    answered for them. A compensable step without a probe whose last outcome is
    unknown parks the run instead, for a person to check; so does a probe that
    fails when the run gives up (a failing probe before a retry counts as an
    unknown outcome of that attempt).
    """

    kind: RetrySafetyKind
    probe_fn: Callable[[StepContext[Any]], Any] | None = None

    IDEMPOTENCY_KEY: ClassVar[RetrySafety]
    NATURAL: ClassVar[RetrySafety]

    @staticmethod
    def probe(fn: Callable[[StepContext[Any]], Any]) -> RetrySafety:
        """Declare a probe that tells whether a previous attempt's effect landed."""
        if not callable(fn):
            raise TypeError("RetrySafety.probe needs a callable")
        return RetrySafety(RetrySafetyKind.PROBE, fn)

    def with_probe(self, fn: Callable[[StepContext[Any]], Any]) -> RetrySafety:
        """This safety, plus a probe that tells whether a previous attempt's effect landed."""
        if not callable(fn):
            raise TypeError("RetrySafety.with_probe needs a callable")
        return RetrySafety(self.kind, fn)


RetrySafety.IDEMPOTENCY_KEY = RetrySafety(RetrySafetyKind.IDEMPOTENCY_KEY)
RetrySafety.NATURAL = RetrySafety(RetrySafetyKind.NATURAL)
