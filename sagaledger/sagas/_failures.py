"""What the driver makes of a failed attempt: how the log describes it, and what it implies."""

from __future__ import annotations

import traceback
from typing import Any

from sagaledger.sagas._policy import RetryPolicy


def describe_error(exc: BaseException, *, retryable: bool) -> dict[str, Any]:
    """The JSON the log keeps about an exception."""
    tb = "".join(traceback.format_exception(exc, limit=-5))
    described = {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc),
        "retryable": retryable,
        "traceback": tb[-4000:],
    }
    if may_have_landed(exc):
        described["outcome_unknown"] = True
    details = getattr(exc, "details", None)
    if isinstance(details, dict):
        described["details"] = details
    return described


def may_have_landed(exc: BaseException) -> bool:
    """True when the failed attempt's effect may have happened anyway.

    An :class:`~sagaledger.OutcomeUnknownError` (duck-typed) or an attempt whose
    worker died before recording its outcome.
    """
    return getattr(exc, "outcome_unknown", False) is True or isinstance(exc, LostAttemptError)


def is_non_retryable(exc: BaseException, policy: RetryPolicy) -> bool:
    """True when retrying ``exc`` cannot help (by flag or by the policy's types)."""
    # Duck-typed (like StepError's flag), so any library's errors can carry it.
    return getattr(exc, "non_retryable", False) is True or isinstance(exc, policy.non_retryable)


class Unknowable(Exception):
    """Nobody can tell whether a step's effect landed: the run must wait for a person."""


class LostAttemptError(Exception):
    """The worker running an attempt stopped before recording its outcome."""


def lost_attempt(attempt: int) -> LostAttemptError:
    return LostAttemptError(f"attempt {attempt} was lost: its worker stopped before checkpointing")
