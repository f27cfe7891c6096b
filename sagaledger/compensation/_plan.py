"""Planning compensations from what the log says was completed."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sagaledger.sagas._definition import Saga, Step


def compensation_plan(saga: Saga, completed: Sequence[str]) -> list[Step]:
    """The compensations to run, in reverse completion order.

    Args:
        saga: The run's definition.
        completed: Names of completed forward steps, in the order the log recorded them.

    Returns:
        The completed steps that have a compensation, last completed first.
        Steps declared ``no_compensation`` are skipped.
    """
    return [
        saga.step_named(name) for name in reversed(completed) if saga.step_named(name).compensable
    ]


def next_compensation(
    saga: Saga, completed: Sequence[str], compensated: Collection[str]
) -> Step | None:
    """The next compensation to run, or None when everything is undone."""
    return next((s for s in compensation_plan(saga, completed) if s.name not in compensated), None)


def completed_pivot(saga: Saga, completed: Sequence[str]) -> Step | None:
    """The pivot among the completed steps, if any: past it the run can only go forward."""
    return next((saga.step_named(n) for n in completed if saga.step_named(n).pivot), None)
