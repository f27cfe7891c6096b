"""What the dashboard's pages show, built from the log: redacted, in words.

The wording is the CLI's (``sagaledger._render``): an event reads the same in
``sagaledger runs show`` and on a run's page. Every input, output, payload and
error passes through the :class:`~sagaledger._redact.Redactor` before it is
worded or serialised, so nothing a page or the JSON API shows escapes it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sagaledger import _render
from sagaledger._redact import Redactor
from sagaledger.audit import Ledger
from sagaledger.sagas import PendingApproval
from sagaledger.sagas._operator import parked_phase
from sagaledger.sagas._waits import APPROVAL_AWAITING
from sagaledger.store import EventRecord, EventType, Phase, RunRecord, RunStatus, SignalRecord


@dataclass(frozen=True)
class Action:
    """An action a run's state allows, as a form on its page."""

    #: The URL segment (``retry-compensation``) and the Orchestrator method it calls.
    name: str
    label: str
    #: What it does, in a sentence beside the button.
    help: str
    #: Styled as one that cannot be taken back.
    danger: bool = False


#: Every action the dashboard offers, by name.
ACTIONS = {
    a.name: a
    for a in (
        Action(
            "retry-compensation",
            "Retry compensation",
            "retry the compensation the run parked on, from attempt 1; it then unwinds on",
        ),
        Action("resume", "Resume", "retry forward the step the run parked on, from attempt 1"),
        Action(
            "force-compensate",
            "Force-compensate",
            "undo the completed steps now, last first (never past a completed pivot)",
            danger=True,
        ),
        Action(
            "resolve",
            "Resolve by hand",
            "close the run as resolved: say what was done by hand",
            danger=True,
        ),
        Action("cancel", "Cancel", "a worker compensates the completed steps", danger=True),
        Action("approve", "Approve", "approve the approval the run waits for"),
        Action(
            "reject",
            "Reject",
            "reject it: a worker compensates the completed steps",
            danger=True,
        ),
    )
}


def actions_for(
    run: RunRecord, events: Sequence[EventRecord], awaits_decision: bool
) -> list[Action]:
    """The actions that apply to ``run`` as it stands (the orchestrator still checks)."""
    names: list[str] = []
    if run.status is RunStatus.PARKED:
        if parked_phase(events) is Phase.COMPENSATE:
            names = ["retry-compensation", "resolve"]
        else:
            names = ["resume", "force-compensate", "resolve"]
    elif run.status is RunStatus.RUNNING:
        if awaits_decision:
            names = ["approve", "reject"]
        names += ["force-compensate", "cancel"]
    return [ACTIONS[n] for n in names]


def awaits_approval(run: RunRecord) -> bool:
    """True when a running run waits for a person's decision."""
    return bool(run.status.active and run.awaiting and run.awaiting.startswith(APPROVAL_AWAITING))


def pretty(value: Any) -> str:
    """JSON for people: indented, or empty for nothing."""
    if value is None:
        return ""
    return json.dumps(value, indent=2, sort_keys=True, default=str)


@dataclass(frozen=True)
class EventView:
    """One line of a run's timeline."""

    seq: int
    at: str
    type: str
    words: str
    step: str
    phase: str
    attempt: str
    actor: str
    summary: str
    payload: str
    error: str
    failed: bool


@dataclass(frozen=True)
class RunView:
    """A run as its page shows it."""

    run: RunRecord
    status: str
    saga: str
    note: str
    waiting: str | None
    input: str
    last_error: str
    started: str
    updated: str


class Views:
    """Builds what pages and the JSON API show, through one redactor.

    Args:
        redact: What hides sensitive fields.
    """

    def __init__(self, redact: Redactor):
        self.redact = redact

    def event(self, event: EventRecord) -> EventView:
        """An event, redacted, in the CLI's words."""
        hidden = self.redact.event(event)
        return EventView(
            seq=event.seq,
            at=_render.stamp(event.created_at),
            type=event.type.value,
            words=event.type.value.replace("_", " "),
            step=event.step or "",
            phase=event.phase.value if event.phase is not None else "",
            attempt=str(event.attempt) if event.attempt is not None else "",
            actor=event.actor,
            summary=_render.event_summary(hidden, width=240),
            payload=pretty(hidden.payload),
            error=pretty(hidden.error),
            failed=event.error is not None
            or event.type in (EventType.RUN_PARKED, EventType.STEP_FAILED),
        )

    def run(
        self,
        run: RunRecord,
        events: Sequence[EventRecord] = (),
        delivered: SignalRecord | None = None,
    ) -> RunView:
        """A run, redacted: its header and what it waits for."""
        hidden = self.redact.run(run)
        return RunView(
            run=hidden,
            status=run.status.value,
            saga=f"{run.saga_name} v{run.saga_version}",
            note=_render.run_note(hidden),
            waiting=_render.waiting_note(hidden, events, delivered) if events else None,
            input=pretty(hidden.input),
            last_error=_render.error_summary(hidden.last_error),
            started=_render.stamp(run.created_at),
            updated=_render.stamp(run.updated_at),
        )

    # -- JSON ----------------------------------------------------------------------

    def run_json(self, run: RunRecord) -> dict[str, Any]:
        """A run for programs, redacted."""
        return _render.run_json(self.redact.run(run))

    def event_json(self, event: EventRecord) -> dict[str, Any]:
        """An event for programs, redacted."""
        return _render.event_json(self.redact.event(event))

    def approval_json(self, pending: PendingApproval) -> dict[str, Any]:
        """A pending approval for programs, what approvers are shown redacted."""
        data = _render.approval_json(pending)
        data["shown"] = self.redact(pending.shown)
        return data

    def ledger_json(self, ledger: Ledger) -> dict[str, Any]:
        """The compensation ledger for programs: its entries and each run's balance."""
        return {
            "since": _render.iso(ledger.since),
            "until": _render.iso(ledger.until),
            "entries": [e.row() for e in ledger.entries],
            "runs": [
                {
                    "run_id": r.run_id,
                    "saga": r.saga,
                    "business_key": r.business_key,
                    "status": r.status,
                    "balanced": r.balanced,
                    "open": {k: str(v) for k, v in r.open.items()},
                    "why": r.why,
                }
                for r in ledger.runs
            ],
            "unbalanced": [r.run_id for r in ledger.unbalanced],
        }

    def shown(self, pending: PendingApproval) -> str:
        """What approvers of ``pending`` are shown, redacted."""
        return pretty(self.redact(pending.shown))
