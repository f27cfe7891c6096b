"""Every exception sagaledger raises, under one root.

    SagaLedgerError
    ├── DefinitionError          a saga or step definition is invalid (names both)
    ├── RegistryError
    │   ├── DuplicateSagaError   the same (name, version) registered twice
    │   └── UnknownSagaError     no such saga or version (lists the known ones)
    ├── InputValidationError     start input failed validation (names the fields)
    ├── UnknownRunError          no run with this id
    ├── RunNotActiveError        the run has finished (or is parked): nothing to act on
    ├── RunNotWaitingError       the run does not wait for what was sent (an approval)
    ├── ActionRefusedError       an operator action does not apply to the run as it stands
    ├── NotAllowedToDecideError  this person may not decide the run's approval
    ├── UnknownEventError        no saga waits for an event of this name
    ├── PeriodError              an audit period cannot be sealed (not over, or sealed)
    ├── TokenError               a dashboard token cannot be added or revoked (names it)
    ├── StoreError               the saga log cannot be used
    │   └── SchemaNotReadyError  the database schema is missing or out of date
    ├── BrokerError              the broker URL is malformed or its server unreachable
    └── StepError                raised by step actions to steer the orchestrator
        ├── RetryableError       transient; retried with back-off (or after retry_after)
        │   ├── RateLimitedError the remote said 429: wait, without using up an attempt
        │   └── OutcomeUnknownError  the request may have landed: probe before going on
        └── PermanentError       not worth retrying; compensation starts

Exceptions cross Dramatiq and process boundaries, so each one pickles with its
attributes intact.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any


def _rebuild(cls: type[SagaLedgerError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class SagaLedgerError(Exception):
    """Root of every sagaledger exception."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, self.__dict__))


class DefinitionError(SagaLedgerError):
    """A saga or step definition is invalid.

    Args:
        message: What is wrong.
        saga: The saga at fault, when known.
        step: The step at fault, when known.
    """

    def __init__(self, message: str, *, saga: str | None = None, step: str | None = None):
        where = ""
        if saga is not None:
            where = f"saga {saga!r}"
            if step is not None:
                where += f" step {step!r}"
            where += ": "
        super().__init__(where + message)
        self.saga = saga
        self.step = step


class RegistryError(SagaLedgerError):
    """A registry lookup or registration failed."""


class DuplicateSagaError(RegistryError):
    """The same saga name and version was registered twice."""


class UnknownSagaError(RegistryError):
    """No saga with this name (or version) is registered."""


class InputValidationError(SagaLedgerError):
    """The input given to start a run does not validate against the saga's model.

    Args:
        saga: The saga being started.
        errors: Pydantic's error list, one entry per failing field.
    """

    def __init__(self, saga: str, errors: list[dict[str, Any]]):
        fields = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())) or '<input>'}: {e.get('msg')}"
            for e in errors
        )
        super().__init__(f"saga {saga!r}: invalid input: {fields}")
        self.saga = saga
        self.errors = errors


class UnknownRunError(SagaLedgerError):
    """No run with this id exists in the saga log."""

    def __init__(self, run_id: str):
        super().__init__(f"unknown run {run_id!r}")
        self.run_id = run_id


class RunNotActiveError(SagaLedgerError):
    """The run is no longer driven (completed, compensated or parked), so this cannot apply.

    Args:
        run_id: The run.
        status: Its status.
        action: What was asked (``cancel``).
    """

    def __init__(self, run_id: str, status: str, action: str):
        super().__init__(f"cannot {action} run {run_id!r}: it is {status}")
        self.run_id, self.status, self.action = run_id, status, action


class RunNotWaitingError(SagaLedgerError):
    """The run does not wait for what was sent (a decision on an approval).

    Args:
        run_id: The run.
        message: What it does instead, or why the decision no longer applies.
    """

    def __init__(self, run_id: str, message: str):
        super().__init__(f"run {run_id!r} {message}")
        self.run_id = run_id


class ActionRefusedError(SagaLedgerError):
    """An operator action does not apply to the run as it stands; the message says what would.

    Args:
        run_id: The run.
        action: What was asked (``resume``, ``force-compensate``...).
        why: Why not, and what to do instead.
    """

    def __init__(self, run_id: str, action: str, why: str):
        super().__init__(f"cannot {action} run {run_id!r}: {why}")
        self.run_id, self.action, self.why = run_id, action, why


class NotAllowedToDecideError(SagaLedgerError):
    """The person is not among those who may decide the run's approval now.

    Args:
        run_id: The run.
        step: The approval step.
        who: Who tried to decide.
        allowed: Who may (names or ``fnmatch`` patterns).
    """

    def __init__(self, run_id: str, step: str, who: str, allowed: list[str]):
        super().__init__(
            f"{who!r} may not decide approval {step!r} of run {run_id!r}; "
            f"it may be decided by: {', '.join(allowed)}"
        )
        self.run_id, self.step, self.who, self.allowed = run_id, step, who, allowed


class UnknownEventError(SagaLedgerError):
    """No saga known to this process or to a live worker waits for an event of this name.

    Args:
        name: The event's name.
        known: The names that are waited for.
    """

    def __init__(self, name: str, known: list[str]):
        listed = ", ".join(known) if known else "none (start a worker with the sagas first)"
        super().__init__(f"unknown event {name!r}: no saga waits for it; known events: {listed}")
        self.name, self.known = name, known


class PeriodError(SagaLedgerError):
    """An audit period cannot be sealed: it has not ended, or it was sealed already."""


class TokenError(SagaLedgerError):
    """A dashboard token cannot be added (the name has one) or revoked (it has none)."""


class StoreError(SagaLedgerError):
    """The saga log cannot be used (bad URL, unreachable server, ...)."""


class SchemaNotReadyError(StoreError):
    """The store's schema is missing or older than this code expects."""


class BrokerError(SagaLedgerError):
    """The broker cannot be used: a malformed or unsupported URL, an unreachable server.

    The message names the URL with any password masked.
    """


class StepError(SagaLedgerError):
    """Base for errors that step actions raise to tell the orchestrator what to do.

    Args:
        message: What happened.
        non_retryable: True when retrying cannot help.
        retry_after: For retryable errors, how long to wait before the next attempt
            (overrides the step's back-off; a remote ``Retry-After`` goes here).
        details: Plain JSON about the failure that the log keeps with the error
            (a connector puts the system, operation, HTTP status and the remote
            error code here). Never secrets.
    """

    def __init__(
        self,
        message: str,
        *,
        non_retryable: bool = False,
        retry_after: timedelta | None = None,
        details: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.non_retryable = non_retryable
        self.retry_after = retry_after
        self.details = details


class RetryableError(StepError):
    """A transient failure: the step is retried with back-off."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: timedelta | None = None,
        details: dict[str, Any] | None = None,
    ):
        super().__init__(message, non_retryable=False, retry_after=retry_after, details=details)


class RateLimitedError(RetryableError):
    """The remote side refused for now (HTTP 429); ``retry_after`` says for how long.

    The step waits durably and runs again without using up an attempt, and the
    step's shared rate limit (if it has one) is held for every worker meanwhile.
    """

    #: Read by the orchestrator (duck-typed, so other libraries' errors can say it too).
    rate_limited = True


class OutcomeUnknownError(RetryableError):
    """The request was sent but no answer came back: its effect may or may not have landed.

    A timeout after sending, or a connection dropped before the response. Before
    the step is tried again, and before a run that gives up on it compensates,
    the orchestrator asks the step's probe (see ``RetrySafety``) whether the
    effect landed: so a charge whose response was lost is neither made twice
    nor left out of the refunds.
    """

    #: Read by the orchestrator (duck-typed, so other libraries' errors can say it too).
    outcome_unknown = True


class PermanentError(StepError):
    """A failure that retrying cannot fix (a declined card, invalid data)."""

    def __init__(self, message: str, *, details: dict[str, Any] | None = None):
        super().__init__(message, non_retryable=True, details=details)
