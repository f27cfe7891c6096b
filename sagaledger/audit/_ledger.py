"""The compensation ledger: each effect a run had elsewhere, and what undid it.

Read from the saga log alone. Each forward effect a step recorded (see
``_effects``) is one entry, paired with the effects its step's compensation
recorded, and given a status:

``kept``
    the run completed, or parked going forward (past a pivot): the effect
    stands, as intended;
``undone``
    its step's compensation recorded effects that net it to zero (the refund
    of exactly the amount charged, the release of exactly what was reserved);
``partly undone``
    the compensation's effects do not net it to zero;
``undone, not itemised``
    the compensation ran but recorded no effect: nobody can tell from the log
    what it undid;
``outstanding``
    the run is being undone (or was, and parked) and this step's compensation
    has not completed;
``not compensatable``
    the run is being undone but the step has no compensation (a pivot, or a
    step declared to need none): the reason says which;
``stranded``
    an attempt made the effect and then failed, and no completed attempt of
    the step stands for it: nothing will undo it;
``in progress``
    the run is still going forward;
``resolved by hand``
    it would be outstanding, stranded or not netted, but an operator resolved
    the run by hand (a manual refund, say): the reason says who and why.

A run *balances* when none of its entries is outstanding, partly undone,
undone but not itemised, or stranded.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sagaledger.audit._effects import Effect
from sagaledger.sagas._context import idempotency_key
from sagaledger.store import SagaLog
from sagaledger.store._audit_log import LedgerRun, ledger_runs

#: Statuses of entries that leave their run unbalanced.
UNBALANCED = ("outstanding", "partly undone", "undone, not itemised", "stranded")


@dataclass(frozen=True)
class Undo:
    """An effect a compensation recorded, and when."""

    effect: Effect
    at: datetime
    idempotency_key: str


@dataclass(frozen=True)
class LedgerEntry:
    """One forward effect of a run, and what became of it."""

    run_id: str
    saga: str
    version: int
    business_key: str
    step: str
    effect: Effect
    idempotency_key: str
    at: datetime
    status: str
    reason: str = ""
    undone_by: tuple[Undo, ...] = ()

    def row(self) -> dict[str, Any]:
        """The entry as one flat record (for CSV and JSON lines)."""
        e = self.effect
        undone_at = max((u.at for u in self.undone_by), default=None)
        return {
            "run_id": self.run_id,
            "saga": self.saga,
            "version": self.version,
            "business_key": self.business_key,
            "step": self.step,
            "system": e.system,
            "operation": e.operation,
            "reference": e.reference,
            "amount": None if e.amount is None else str(e.amount),
            "currency": e.currency,
            "unit": e.unit,
            "idempotency_key": self.idempotency_key,
            "at": self.at.isoformat(),
            "status": self.status,
            "reason": self.reason or None,
            "undone_by": "; ".join(
                f"{u.effect.operation} {u.effect.reference}"
                + (f" {u.effect.amount}" if u.effect.amount is not None else "")
                for u in self.undone_by
            )
            or None,
            "undone_amount": _sum_text(u.effect for u in self.undone_by),
            "undone_at": None if undone_at is None else undone_at.isoformat(),
        }


@dataclass(frozen=True)
class RunBalance:
    """Whether one run's effects balance, and what is left open if not."""

    run_id: str
    saga: str
    business_key: str
    status: str
    balanced: bool
    #: For each measure (a currency, a unit, ``records``): made minus undone,
    #: over the effects that should have been undone.
    open: dict[str, Decimal]
    why: str = ""


@dataclass
class Ledger:
    """The ledger of runs started in a period."""

    since: datetime | None
    until: datetime | None
    entries: list[LedgerEntry] = field(default_factory=list)
    runs: list[RunBalance] = field(default_factory=list)

    @property
    def unbalanced(self) -> list[RunBalance]:
        """The runs that do not balance."""
        return [r for r in self.runs if not r.balanced]

    def totals(self) -> dict[tuple[str, str, str], Decimal]:
        """Per (system, operation, measure): the sum of forward and of undoing effects."""
        sums: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
        for entry in self.entries:
            sums[_key(entry.effect)] += _size(entry.effect)
            for undo in entry.undone_by:
                sums[_key(undo.effect)] += _size(undo.effect)
        return dict(sorted(sums.items()))


def compensation_ledger(
    log: SagaLog, since: datetime | None = None, until: datetime | None = None
) -> Ledger:
    """The compensation ledger of the runs started in ``[since, until)``."""
    ledger = Ledger(since, until)
    for run in ledger_runs(log.engine, since, until):
        entries = list(_entries(run))
        ledger.entries.extend(entries)
        if entries:
            ledger.runs.append(_balance(run, entries))
    return ledger


def _entries(run: LedgerRun) -> Iterator[LedgerEntry]:
    made: dict[str, list[tuple[Effect, datetime, str]]] = defaultdict(list)
    failed: dict[str, list[tuple[Effect, datetime]]] = defaultdict(list)
    undos: dict[str, list[Undo]] = defaultdict(list)
    compensated: set[str] = set()
    undoing = False
    resolved = ""  # who resolved the run by hand, and why
    for kind, step, payload, actor, at in run.events:
        kept = payload if isinstance(payload, dict) else {}
        effects = [Effect.from_json(e) for e in kept.get("effects", ())]
        if kind == "compensation_started":
            undoing = True
        elif kind == "operator_action" and kept.get("action") == "resolve":
            resolved = f"resolved by hand by {actor}: {kept.get('reason')}"
        elif step is None:
            continue
        elif kind == "step_completed":
            undo = str(kept.get("undo", "compensate"))
            made[step].extend((e, at, undo) for e in effects)
        elif kind == "step_failed":
            failed[step].extend((e, at) for e in effects)
        elif kind in ("compensation_completed", "compensation_failed"):
            # A failed attempt's effects happened too (a refund made, then an error);
            # a later attempt that finds or repeats one records the same reference.
            if kind == "compensation_completed":
                compensated.add(step)
            key = idempotency_key(run.id, step, "compensate")
            seen = {_identity(u.effect) for u in undos[step]}
            undos[step].extend(Undo(e, at, key) for e in effects if _identity(e) not in seen)
    status = run.status

    def entry(step: str, effect: Effect, at: datetime, state: str, why: str = "") -> LedgerEntry:
        if resolved and state in UNBALANCED:  # a person settled what the run left open
            state, why = "resolved by hand", f"{resolved} (was {state})"
        key = idempotency_key(run.id, step, "forward")
        return LedgerEntry(
            run.id,
            run.saga,
            run.version,
            run.business_key,
            step,
            effect,
            key,
            at,
            state,
            why,
            tuple(undos.get(step, ())) if state != "stranded" else (),
        )

    for step, forward in made.items():
        nets = _nets(e for e, _, _ in forward) == _nets(u.effect for u in undos.get(step, ()))
        for effect, at, undo in forward:
            if step in compensated:
                if not undos.get(step):
                    yield entry(step, effect, at, "undone, not itemised", "its compensation "
                                "ran but recorded no effect")  # fmt: skip
                else:
                    yield entry(step, effect, at, "undone" if nets else "partly undone")
            elif undoing:
                if undo == "compensate" and undos.get(step):  # undone in part, then it failed
                    yield entry(step, effect, at, "undone" if nets else "partly undone")
                elif undo == "compensate":
                    why = run.blocked_reason or "its compensation has not completed"
                    yield entry(step, effect, at, "outstanding", why)
                else:
                    yield entry(step, effect, at, "not compensatable", _no_undo(undo))
            elif status == "completed":
                yield entry(step, effect, at, "kept")
            elif status in ("parked", "resolved"):  # going forward: it stands
                why = resolved or f"the run is parked: {run.blocked_reason}"
                yield entry(step, effect, at, "kept", why)
            else:
                yield entry(step, effect, at, "in progress")
    for step, effects_failed in failed.items():
        landed = {(e.system, e.operation, e.reference) for e, _, _ in made.get(step, ())}
        for effect, at in effects_failed:
            if (effect.system, effect.operation, effect.reference) in landed:
                continue  # the same effect, replayed by a later attempt that completed
            if status == "running" and not undoing and step not in made:
                yield entry(step, effect, at, "in progress")
            else:
                yield entry(
                    step,
                    effect,
                    at,
                    "stranded",
                    "an attempt made it and failed; no completed attempt stands for it",
                )


def _balance(run: LedgerRun, entries: list[LedgerEntry]) -> RunBalance:
    open_: dict[str, Decimal] = defaultdict(Decimal)
    counted: set[str] = set()
    for entry in entries:
        if entry.status in ("undone", "partly undone", "outstanding", "stranded"):
            open_[_measure(entry.effect)] += _size(entry.effect)
            if entry.step not in counted:  # a step's undoing effects, once
                counted.add(entry.step)
                for undo in entry.undone_by:
                    open_[_measure(undo.effect)] -= _size(undo.effect)
    left = {measure: value for measure, value in open_.items() if value != 0}
    bad = [e for e in entries if e.status in UNBALANCED]
    why = "; ".join(f"{e.step} {e.effect.operation} {e.effect.reference}: {e.status}" for e in bad)
    return RunBalance(
        run.id, run.saga, run.business_key, run.status, not bad, dict(sorted(left.items())), why
    )


def _identity(effect: Effect) -> tuple[str, str, str]:
    return (effect.system, effect.operation, effect.reference)


def _nets(effects: Iterable[Effect]) -> dict[str, Decimal]:
    sums: dict[str, Decimal] = defaultdict(Decimal)
    for effect in effects:
        sums[_measure(effect)] += _size(effect)
    return dict(sums)


def _measure(effect: Effect) -> str:
    """What an effect is counted in: its currency, its unit, or records."""
    return effect.currency or effect.unit or "records"


def _size(effect: Effect) -> Decimal:
    return effect.amount if effect.amount is not None else Decimal(1)


def _key(effect: Effect) -> tuple[str, str, str]:
    return (effect.system, effect.operation, _measure(effect))


def _sum_text(effects: Iterable[Effect]) -> str | None:
    sums = _nets(effects)
    return "; ".join(f"{v} {k}" for k, v in sums.items()) or None


def _no_undo(undo: str) -> str:
    if undo == "pivot":
        return "a pivot: past it the saga only goes forward"
    return f"the step has no compensation: {undo.removeprefix('none: ')}"
