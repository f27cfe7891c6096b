"""Checking a deploy: would the sagas it registers strand the runs still in flight?

A run finishes on the definition it started on (name, version, fingerprint): a
worker without it leaves the run waiting. So a deploy whose registry lacks a
definition that unfinished runs (running, compensating or parked) use strands
every one of them once the old workers are gone, whatever changed. For each such
definition :func:`check_deploy` says what changed, against the shape a worker
recorded (``sagaledger_definitions``) when there is one:

- the version is not registered at all;
- a step was removed (or renamed), added, or the steps were reordered;
- a step lost its compensation: the runs that have completed that step are
  counted apart, since they are the ones whose effect would have to be undone;
- a pivot moved, the input schema or a step's retry safety or wait changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sagaledger.sagas._registry import Registry
from sagaledger.store import SagaLog
from sagaledger.store._definitions import DefinitionInUse


class ProblemKind(StrEnum):
    """What a deploy changes for unfinished runs."""

    VERSION_MISSING = "version_missing"
    SHAPE_UNKNOWN = "shape_unknown"  # the fingerprint differs; no worker recorded the old shape
    INPUT_CHANGED = "input_changed"
    STEP_REMOVED = "step_removed"
    STEP_ADDED = "step_added"
    STEPS_REORDERED = "steps_reordered"
    COMPENSATION_DROPPED = "compensation_dropped"
    PIVOT_CHANGED = "pivot_changed"
    STEP_CHANGED = "step_changed"  # its retry safety or its wait


@dataclass(frozen=True)
class DeployProblem:
    """One thing a deploy changes that unfinished runs depend on.

    Attributes:
        kind: What changed.
        saga: The saga's name.
        version: The version the runs started on.
        fingerprint: The fingerprint they recorded.
        step: The step concerned, if one is.
        runs: How many unfinished runs need what changed (for a dropped
            compensation: those that have completed the step; else every
            unfinished run of the definition).
        run_ids: A few of them, oldest first.
        detail: What changed, in words.
    """

    kind: ProblemKind
    saga: str
    version: int
    fingerprint: str
    step: str | None
    runs: int
    run_ids: tuple[str, ...]
    detail: str
    #: For a dropped compensation: ``runs`` counts the runs that completed the step.
    completed: bool = False

    @property
    def message(self) -> str:
        """One line naming the saga, version, step and the runs that need it."""
        where = f"saga {self.saga!r} v{self.version}"
        if self.step is not None:
            where += f" step {self.step!r}"
        one = self.runs == 1
        runs = "1 unfinished run" if one else f"{self.runs} unfinished runs"
        if self.kind is ProblemKind.COMPENSATION_DROPPED and self.completed:
            need = (
                "has completed it and needs" if one else "have completed it and need"
            ) + " its compensation"
        else:
            need = "needs this definition" if one else "need this definition"
        ids = ", ".join(self.run_ids) + (", ..." if self.runs > len(self.run_ids) else "")
        return f"{where}: {self.detail}; {runs} {need} ({ids})"


@dataclass(frozen=True)
class DeployCheck:
    """The definitions unfinished runs use, and what a registry would strand of them."""

    in_use: list[DefinitionInUse]
    problems: list[DeployProblem] = field(default_factory=list)

    @property
    def safe(self) -> bool:
        """True when every definition in use is registered with the same fingerprint."""
        return not self.problems

    @property
    def summary(self) -> str:
        """One line: safe (with what was checked) or how many problems."""
        runs = sum(d.runs for d in self.in_use)
        used = f"{len(self.in_use)} definition(s) used by {runs} unfinished run(s)"
        if self.safe:
            return f"safe: all {used} are registered with the same shape"
        return f"unsafe: {len(self.problems)} problem(s) for the {used}"


def check_deploy(log: SagaLog, registry: Registry, sample: int = 3) -> DeployCheck:
    """Compare ``registry`` (a deploy's sagas) with what the log's unfinished runs need.

    Args:
        log: The saga log.
        registry: The sagas the deploy registers.
        sample: How many run ids each problem names.
    """
    in_use = log.definitions_in_use(sample)
    problems: list[DeployProblem] = []
    for used in in_use:
        problems.extend(_problems(log, registry, used, sample))
    return DeployCheck(in_use, problems)


def _problems(
    log: SagaLog, registry: Registry, used: DefinitionInUse, sample: int
) -> list[DeployProblem]:
    definition = (used.name, used.version, used.fingerprint)

    def problem(kind: ProblemKind, detail: str, step: str | None = None) -> DeployProblem:
        return DeployProblem(
            kind, used.name, used.version, used.fingerprint, step, used.runs, used.run_ids, detail
        )

    here = registry.find(used.name, used.version)
    if here is not None and here.fingerprint == used.fingerprint:
        return []
    if here is None:
        versions = sorted(s.version for s in registry if s.name == used.name)
        has = ", ".join(f"v{v}" for v in versions) or "no version of it"
        return [problem(ProblemKind.VERSION_MISSING, f"version not registered (it has {has})")]
    recorded = log.definition_shape(definition)
    if recorded is None:
        detail = (
            f"fingerprint {used.fingerprint} differs from the registry's {here.fingerprint}, "
            "and no worker recorded its shape, so what changed is unknown"
        )
        return [problem(ProblemKind.SHAPE_UNKNOWN, detail)]
    found: list[DeployProblem] = []
    for kind, step, detail in _diff(recorded, here.shape):
        if kind is ProblemKind.COMPENSATION_DROPPED and step is not None:
            count, ids = log.completed_by_unfinished(definition, step, sample)
            if count:
                found.append(
                    DeployProblem(
                        kind,
                        used.name,
                        used.version,
                        used.fingerprint,
                        step,
                        count,
                        ids,
                        detail,
                        completed=True,
                    )
                )
                continue
            detail += " (no unfinished run has completed the step yet)"
        found.append(problem(kind, detail, step))
    if not found:  # the shapes differ where no rule looks: still stranded
        found.append(problem(ProblemKind.STEP_CHANGED, "the definition's shape differs"))
    return found


def _diff(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[ProblemKind, str | None, str]]:
    """What changed from the recorded shape ``old`` to ``new``: (kind, step, detail)."""
    changes: list[tuple[ProblemKind, str | None, str]] = []
    if old.get("input") != new.get("input"):
        changes.append((ProblemKind.INPUT_CHANGED, None, "the input schema changed"))
    before = {s["name"]: s for s in old["steps"]}
    after = {s["name"]: s for s in new["steps"]}
    for name, was in before.items():
        now = after.get(name)
        if now is None:
            what = "step removed or renamed"
            if was.get("compensable"):
                what += ", with its compensation"
                # Its compensation is gone too: count the runs that completed it.
                changes.append((ProblemKind.COMPENSATION_DROPPED, name, what))
            else:
                changes.append((ProblemKind.STEP_REMOVED, name, what))
            continue
        if was.get("compensable") and not now.get("compensable"):
            changes.append((ProblemKind.COMPENSATION_DROPPED, name, "compensation dropped"))
        elif now.get("compensable") and not was.get("compensable"):
            changes.append((ProblemKind.STEP_CHANGED, name, "compensation added"))
        if bool(was.get("pivot")) != bool(now.get("pivot")):
            detail = "no longer the pivot" if was.get("pivot") else "made the pivot"
            changes.append((ProblemKind.PIVOT_CHANGED, name, detail))
        for key, label in (("retry_safety", "retry safety"), ("wait", "wait")):
            if was.get(key) != now.get(key):
                detail = f"{label} changed from {was.get(key)} to {now.get(key)}"
                changes.append((ProblemKind.STEP_CHANGED, name, detail))
    for name in after.keys() - before.keys():
        changes.append((ProblemKind.STEP_ADDED, name, "step added"))
    common_before = [n for n in before if n in after]
    common_after = [n for n in after if n in before]
    if common_before != common_after:
        order = " -> ".join(common_after)
        changes.append((ProblemKind.STEPS_REORDERED, None, f"steps reordered ({order})"))
    return changes
