"""Saga and step definitions: frozen values, validated when built.

A definition touches no global state; a :class:`~sagaledger.sagas.Registry` handed
to the orchestrator is what makes sagas runnable.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from sagaledger._errors import DefinitionError
from sagaledger.connectors._ratelimit import RateLimit
from sagaledger.sagas._context import CompensationContext, StepContext
from sagaledger.sagas._policy import (
    DEFAULT_COMPENSATION_RETRY,
    DEFAULT_RETRY,
    RetryPolicy,
    RetrySafety,
)

if TYPE_CHECKING:
    from sagaledger.sagas._waits import Wait

#: Names are stored in the log and looked up on resume, so keep them plain.
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,99}$")

Action = Callable[[StepContext[Any]], Any]
Compensation = Callable[[CompensationContext[Any]], Any]


@dataclass(frozen=True)
class Step:
    """One step of a saga: a forward action and how to undo it.

    Exactly one of ``compensate``, ``pivot=True`` or ``no_compensation`` must be given:
    a step is either undone, or the point of no return (steps after a completed
    pivot are retried forward, never compensated), or needs no undoing (say why).

    Attributes:
        name: Stable name, stored in the log.
        action: Called with a :class:`StepContext`; returns a JSON-serialisable
            output (pydantic models are fine) that later steps and the compensation see.
        compensate: Called with a :class:`CompensationContext` to undo the action.
        pivot: The step cannot be undone; once it completes the saga must go forward.
        no_compensation: Why this step needs no compensation (a read, a notification).
        retry_safety: Why running the action again cannot double its effect (required).
        retry: Retry policy of the action.
        compensation_retry: Retry policy of the compensation.
        timeout: How long one attempt may run before another worker may take over.
        rate_limit: The limit of the connector the step calls, shared by every
            worker (and by every step naming the same limit).
        wait: Set on steps that wait instead of acting (see :func:`timer`,
            :func:`approval`, :func:`wait_for_event`).
    """

    name: str
    action: Action
    compensate: Compensation | None = None
    pivot: bool = False
    no_compensation: str | None = None
    retry_safety: RetrySafety | None = None
    retry: RetryPolicy = DEFAULT_RETRY
    compensation_retry: RetryPolicy = DEFAULT_COMPENSATION_RETRY
    timeout: timedelta = timedelta(minutes=5)
    rate_limit: RateLimit | None = None
    wait: Wait | None = None

    @property
    def compensable(self) -> bool:
        """True when a compensation runs for this step on unwind."""
        return self.compensate is not None


def step(
    name: str | None = None,
    *,
    compensate: Compensation | None = None,
    pivot: bool = False,
    no_compensation: str | None = None,
    retry_safety: RetrySafety | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
    compensation_retry: RetryPolicy = DEFAULT_COMPENSATION_RETRY,
    timeout: timedelta = timedelta(minutes=5),
    rate_limit: RateLimit | None = None,
) -> Callable[[Action], Step]:
    """Decorate a function to make it a step's forward action.

    The step's name defaults to the function's name. See :class:`Step` for the
    arguments; the definition is checked when a :class:`Saga` is built from it.
    """

    def wrap(action: Action) -> Step:
        return Step(
            name=name or action.__name__,
            action=action,
            compensate=compensate,
            pivot=pivot,
            no_compensation=no_compensation,
            retry_safety=retry_safety,
            retry=retry,
            compensation_retry=compensation_retry,
            timeout=timeout,
            rate_limit=rate_limit,
        )

    return wrap


@dataclass(frozen=True)
class Saga:
    """A named, versioned, ordered list of steps with a validated input model.

    Raises:
        DefinitionError: when any part is invalid; the message names the saga and step.
    """

    name: str
    version: int
    input: type[BaseModel]
    steps: Sequence[Step]
    description: str = ""
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise DefinitionError(f"invalid saga name {self.name!r} (letters, digits, _ . -)")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise DefinitionError(
                f"version must be an int >= 1, got {self.version!r}", saga=self.name
            )
        if not (isinstance(self.input, type) and issubclass(self.input, BaseModel)):
            raise DefinitionError("input must be a pydantic BaseModel subclass", saga=self.name)
        steps = tuple(self.steps)
        if not steps:
            raise DefinitionError("a saga needs at least one step", saga=self.name)
        index: dict[str, int] = {}
        for position, s in enumerate(steps):
            if not isinstance(s, Step):
                raise DefinitionError(
                    f"steps[{position}] is {type(s).__name__}, not a Step "
                    "(decorate the function with @step)",
                    saga=self.name,
                )
            _check_step(self.name, s)
            if s.name in index:
                raise DefinitionError("duplicate step name", saga=self.name, step=s.name)
            index[s.name] = position
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "_index", index)

    def step_named(self, name: str) -> Step:
        """Return the step called ``name``.

        Raises:
            DefinitionError: no such step (the message lists the saga's steps).
        """
        try:
            return self.steps[self._index[name]]
        except KeyError:
            raise DefinitionError(
                f"no step named {name!r}; steps are {list(self._index)}", saga=self.name
            ) from None

    def position(self, name: str) -> int:
        """The 0-based position of step ``name`` (see :meth:`step_named` for errors)."""
        return self.steps.index(self.step_named(name))

    @property
    def shape(self) -> dict[str, Any]:
        """What a resumed run depends on, as plain JSON: the fingerprint is its digest.

        The input schema, and for each step in order its name, whether it is
        compensable or the pivot, how it is safe to retry and whether it waits.
        Workers record it (``sagaledger_definitions``) so that ``check-deploy``
        can say what a new deploy changes for the runs still in flight. A fresh
        dict on each call: changing it changes nothing.
        """
        return {
            "name": self.name,
            "version": self.version,
            "input": self.input.model_json_schema(),
            "steps": [_step_shape(s) for s in self.steps],
        }

    @cached_property
    def fingerprint(self) -> str:
        """A digest of the definition's :attr:`shape`, recorded on every run.

        It covers what a resumed run depends on: the input schema, the steps' names
        and order, and how each is retried and undone. Editing an action's body does
        not change it; renaming, reordering or re-declaring a step does.
        """
        blob = json.dumps(self.shape, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _step_shape(s: Step) -> dict[str, Any]:
    shape = {
        "name": s.name,
        "compensable": s.compensable,
        "pivot": s.pivot,
        "retry_safety": s.retry_safety.kind.value if s.retry_safety else None,
    }
    if s.wait is not None:  # only then: the fingerprints of sagas without waits stay as they were
        shape["wait"] = type(s.wait).__name__
    return shape


def _check_step(saga: str, s: Step) -> None:
    if not isinstance(s.name, str) or not _NAME.match(s.name):
        raise DefinitionError(
            "invalid step name (letters, digits, _ . -)", saga=saga, step=str(s.name)
        )
    if not callable(s.action):
        raise DefinitionError("action is not callable", saga=saga, step=s.name)
    if s.retry_safety is None:
        raise DefinitionError(
            "no retry_safety declared; say how the step is safe to retry: "
            "RetrySafety.IDEMPOTENCY_KEY, RetrySafety.NATURAL or RetrySafety.probe(fn)",
            saga=saga,
            step=s.name,
        )
    if not isinstance(s.retry_safety, RetrySafety):
        raise DefinitionError("retry_safety must be a RetrySafety", saga=saga, step=s.name)
    declared = [s.compensate is not None, s.pivot, bool(s.no_compensation)]
    if sum(declared) != 1:
        raise DefinitionError(
            "declare exactly one of compensate=..., pivot=True or "
            "no_compensation='why no undo is needed'",
            saga=saga,
            step=s.name,
        )
    if s.compensate is not None and not callable(s.compensate):
        raise DefinitionError("compensate is not callable", saga=saga, step=s.name)
    if s.timeout <= timedelta(0):
        raise DefinitionError("timeout must be positive", saga=saga, step=s.name)
    if s.rate_limit is not None and not isinstance(s.rate_limit, RateLimit):
        raise DefinitionError("rate_limit must be a RateLimit", saga=saga, step=s.name)
