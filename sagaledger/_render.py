"""How the CLI shows runs and their events: rich tables for people, JSON for programs.

Kept apart from the click commands so that ``sagaledger demo`` prints timelines
exactly as ``sagaledger runs show`` does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from sagaledger.sagas import PendingApproval
from sagaledger.sagas._waits import APPROVAL_AWAITING
from sagaledger.store import EventRecord, EventType, RunRecord, RunStatus, SignalRecord

#: How each run status is coloured.
STATUS_STYLES = {
    RunStatus.RUNNING: "cyan",
    RunStatus.COMPENSATING: "magenta",
    RunStatus.COMPLETED: "green",
    RunStatus.COMPENSATED: "yellow",
    RunStatus.PARKED: "bold red",
    RunStatus.RESOLVED: "blue",
}

#: How each event type is coloured in a timeline: failures red, undoing magenta.
EVENT_STYLES = {
    EventType.RUN_STARTED: "bold",
    EventType.ATTEMPT_STARTED: "dim",
    EventType.ATTEMPT_ABANDONED: "bold yellow",
    EventType.STEP_COMPLETED: "green",
    EventType.STEP_DEFERRED: "yellow",
    EventType.STEP_FAILED: "red",
    EventType.COMPENSATION_STARTED: "bold magenta",
    EventType.COMPENSATION_COMPLETED: "magenta",
    EventType.COMPENSATION_FAILED: "red",
    EventType.RUN_COMPLETED: "bold green",
    EventType.RUN_COMPENSATED: "bold yellow",
    EventType.RUN_PARKED: "bold red",
    EventType.VERSION_UNAVAILABLE: "yellow",
    EventType.TIMER_STARTED: "cyan",
    EventType.APPROVAL_REQUESTED: "cyan",
    EventType.APPROVAL_ESCALATED: "bold yellow",
    EventType.APPROVAL_DECIDED: "bold",
    EventType.EVENT_AWAITED: "cyan",
    EventType.EVENT_RECEIVED: "green",
    EventType.OPERATOR_ACTION: "bold blue",
}

#: How a decision kept in the signals table reads.
_DECIDED = {"approve": "approved", "reject": "rejected"}

#: Characters of a run id shown to people; ``runs show`` accepts any unique prefix.
SHORT_ID = 8


# -- JSON -------------------------------------------------------------------------


def iso(value: datetime | None) -> str | None:
    """An ISO 8601 UTC timestamp, or None."""
    return value.astimezone(UTC).isoformat() if value is not None else None


def run_json(run: RunRecord) -> dict[str, Any]:
    """Everything the log holds about a run, as JSON-ready values."""
    return {
        "id": run.id,
        "saga": run.saga_name,
        "version": run.saga_version,
        "fingerprint": run.fingerprint,
        "business_key": run.business_key,
        "status": run.status.value,
        "step_index": run.step_index,
        "step": run.step,
        "attempt": run.attempt,
        "input": run.input,
        "lease_owner": run.lease_owner,
        "lease_token": run.lease_token,
        "wake_at": iso(run.wake_at),
        "last_seq": run.last_seq,
        "blocked_reason": run.blocked_reason,
        "awaiting": run.awaiting,
        "last_error": run.last_error,
        "created_at": iso(run.created_at),
        "updated_at": iso(run.updated_at),
    }


def approval_json(pending: PendingApproval) -> dict[str, Any]:
    """A pending approval (see ``sagaledger approvals --json``), as JSON-ready values."""
    return {
        "run_id": pending.run_id,
        "saga": pending.saga,
        "step": pending.step,
        "level": pending.level,
        "approvers": pending.approvers,
        "deadline": iso(pending.deadline),
        "shown": pending.shown,
        "requested_at": iso(pending.requested_at),
    }


def event_json(event: EventRecord) -> dict[str, Any]:
    """Everything the log holds about an event, as JSON-ready values."""
    return {
        "seq": event.seq,
        "type": event.type.value,
        "step": event.step,
        "phase": event.phase.value if event.phase is not None else None,
        "attempt": event.attempt,
        "actor": event.actor,
        "token": event.token,
        "created_at": iso(event.created_at),
        "payload": event.payload,
        "error": event.error,
    }


def display_url(store: str) -> str:
    """A store URL as it may be printed: without its password."""
    try:
        return make_url(store).render_as_string(hide_password=True)
    except ArgumentError:
        return store


def dumps(value: Any) -> str:
    """Pretty JSON for ``--json`` output."""
    return json.dumps(value, indent=2, sort_keys=False, default=str)


# -- summaries --------------------------------------------------------------------


def run_note(run: RunRecord) -> str:
    """Why a run is blocked, what it waits for, or the last error it recorded, in one line."""
    if run.blocked_reason:
        return _one_line(run.blocked_reason)
    if run.awaiting and run.status.active:
        if run.awaiting.startswith(APPROVAL_AWAITING):
            return f"waits for approval of {run.step!r}"
        name, _, key = run.awaiting.removeprefix("event:").partition("/")
        return f"waits for event {name!r} key {key!r}"
    if run.last_error:
        return error_summary(run.last_error)
    return ""


def error_summary(error: dict[str, Any] | None) -> str:
    """``Type: message`` of a recorded error, on one line."""
    if not error:
        return ""
    kind = str(error.get("type", "error")).rsplit(".", 1)[-1]
    return _one_line(f"{kind}: {error.get('message', '')}")


def event_summary(event: EventRecord, width: int = 90) -> str:
    """A short, one-line account of what an event says."""
    p = event.payload if isinstance(event.payload, dict) else {}
    kind = event.type
    if kind is EventType.RUN_STARTED:
        text = f"key {p.get('business_key')}, first step {p.get('first_step')}"
    elif kind is EventType.ATTEMPT_ABANDONED:
        text = f"{p.get('worker')} stopped; its lease expired {_clock(p.get('lease_expired_at'))}"
    elif kind is EventType.STEP_COMPLETED:
        text = _compact(p.get("output")) + (" (via probe)" if p.get("via_probe") else "")
    elif kind is EventType.COMPENSATION_COMPLETED:
        text = _compact(p.get("result"))
    elif kind in (EventType.STEP_FAILED, EventType.COMPENSATION_FAILED):
        outcome = p.get("outcome", "")
        then = f"retry at {_clock(p.get('retry_at'))}" if outcome == "retry" else str(outcome)
        text = f"{error_summary(event.error)} -> {then}"
    elif kind is EventType.STEP_DEFERRED:
        text = f"deferred until {_clock(p.get('until'))}: {p.get('reason', '')}"
    elif kind is EventType.RUN_COMPENSATED:
        text = "every compensation ran; the run is closed"
    elif kind is EventType.TIMER_STARTED:
        text = f"until {_moment(p.get('until'))}"
    elif kind in (EventType.APPROVAL_REQUESTED, EventType.APPROVAL_ESCALATED):
        text = _asked(p)
    elif kind is EventType.APPROVAL_DECIDED:
        text = _decided(p)
    elif kind is EventType.OPERATOR_ACTION:
        text = _operator_action(event.actor, p)
    elif kind is EventType.EVENT_AWAITED:
        text = f"event {p.get('event')!r} key {p.get('key')!r} until {_moment(p.get('deadline'))}"
    elif kind is EventType.EVENT_RECEIVED:
        text = f"event {p.get('event')!r} key {p.get('key')!r} sent by {p.get('sender')}"
        if p.get("payload") is not None:
            text += f": {_compact(p.get('payload'))}"
    elif kind in (
        EventType.COMPENSATION_STARTED,
        EventType.RUN_PARKED,
        EventType.VERSION_UNAVAILABLE,
    ):
        text = str(p.get("reason", ""))
    elif kind in (EventType.ATTEMPT_STARTED, EventType.RUN_COMPLETED):
        text = ""
    else:
        text = _compact(event.payload)
    return _truncate(_one_line(text), width)


def _asked(p: dict[str, Any]) -> str:
    """An approval request (or escalation): who may decide by when, and what they see."""
    who = ", ".join(str(a) for a in p.get("approvers") or ())
    text = f"level {p.get('level')}: {who} may decide until {_moment(p.get('deadline'))}"
    if p.get("missed_deadline"):
        text = f"no decision by {_moment(p.get('missed_deadline'))}; {text}"
    if p.get("shown") is not None:
        text += f"; shown {_compact(p.get('shown'))}"
    return text


def _operator_action(actor: str, p: dict[str, Any]) -> str:
    """An operator's action: what, by whom, why, and anything it left undone."""
    action = str(p.get("action", "")).replace("_", "-")
    text = f"{action} by {actor}: {p.get('reason', '')}"
    left = p.get("not_compensated")
    if isinstance(left, dict):
        text += f" (step {left.get('step')!r} not compensated: {left.get('why')})"
    return text


def _decided(p: dict[str, Any]) -> str:
    """A decision: by whom, and why (a deadline's default says so in its reason)."""
    reason = str(p.get("reason") or "")
    if p.get("by") is None:
        return reason or f"{_DECIDED.get(str(p.get('decision')), p.get('decision'))} by default"
    text = f"{_DECIDED.get(str(p.get('decision')), p.get('decision'))} by {p.get('by')}"
    return f"{text}: {reason}" if reason else text


def waiting_note(
    run: RunRecord, events: Sequence[EventRecord], delivered: SignalRecord | None = None
) -> str | None:
    """What a waiting run waits for, who may send it and until when; None if it waits for none.

    Args:
        run: The run; its ``awaiting`` says what it waits for.
        events: Its events: the latest request (or escalation, or awaited event)
            of its current step gives the people, the key and the deadline.
        delivered: What was delivered for it that no worker has taken yet.
    """
    if not run.awaiting or not run.status.active:
        return None
    mine = [e for e in events if e.step == run.step]
    if run.awaiting.startswith(APPROVAL_AWAITING):
        asked = _latest(mine, (EventType.APPROVAL_REQUESTED, EventType.APPROVAL_ESCALATED))
        text = f"for approval of {run.step!r}"
        if asked is not None:
            p = asked.payload
            who = ", ".join(str(a) for a in p.get("approvers") or ())
            text += f" by {who} until {_moment(p.get('deadline'))}"
            if int(p.get("level") or 0):
                text += f" (level {p['level']}, escalated)"
        if delivered is not None:
            decision = _DECIDED.get(str(delivered.payload.get("decision")), "decided")
            text += (
                f"; {decision} by {delivered.sender} at {stamp(delivered.received_at)}: "
                "a worker applies it"
            )
        return text
    awaited = _latest(mine, (EventType.EVENT_AWAITED,))
    if awaited is not None:
        p = awaited.payload
        name, key, until = p.get("event"), p.get("key"), f" until {_moment(p.get('deadline'))}"
    else:
        name, _, key = run.awaiting.removeprefix("event:").partition("/")
        until = ""
    text = f"for event {name!r} key {key!r}{until}"
    if delivered is not None:
        text += f"; sent by {delivered.sender} at {stamp(delivered.received_at)}: a worker takes it"
    return text


def _latest(events: Sequence[EventRecord], types: Sequence[EventType]) -> EventRecord | None:
    found = [e for e in events if e.type in types and isinstance(e.payload, dict)]
    return found[-1] if found else None


def age(value: datetime, now: datetime) -> str:
    """How long ago ``value`` was, for people: ``4s ago``, ``3m ago``, ``2d ago``."""
    seconds = max(0, int((now - value).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


# -- rich renderables ----------------------------------------------------------


def status_text(status: RunStatus) -> Text:
    """A run status, coloured."""
    return Text(status.value, style=STATUS_STYLES.get(status, ""))


class RunsTable:
    """Runs, one per row, for ``sagaledger runs list``.

    Like :class:`Timeline`, a console too narrow for one line per run gets the
    step and the note on a second, indented line.

    Args:
        runs: The runs.
        now: The time ages are counted from.
    """

    #: Columns the note needs beside the others to stay on the run's line.
    NOTE_MIN = 30
    _HEADERS = ("run", "status", "saga", "business key", "step", "att", "updated")

    def __init__(self, runs: Sequence[RunRecord], now: datetime):
        self.runs = list(runs)
        self.now = now

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        rows = [
            (
                run.id[:SHORT_ID],
                run.status.value,
                f"{run.saga_name} v{run.saga_version}",
                run.business_key,
                run.step,
                str(run.attempt),
                age(run.updated_at, self.now),
            )
            for run in self.runs
        ]
        widths = _widths(self._HEADERS, rows)
        if sum(widths) + 2 * len(widths) + self.NOTE_MIN <= options.max_width:
            yield self._table(rows)
            return
        first = (0, 1, 2, 3, 6)  # run, status, saga, key, updated
        yield _line([self._HEADERS[i] for i in first], [widths[i] for i in first], ["bold"] * 5)
        for run, row in zip(self.runs, rows, strict=True):
            styles = ["bold", STATUS_STYLES.get(run.status, ""), "", "", "dim"]
            yield _line([row[i] for i in first], [widths[i] for i in first], styles)
            second = Text(f"step {row[4]}, attempt {row[5]}")
            note = run_note(run)
            if note:
                second.append(f"  {note}", style=_note_style(run))
            yield Padding(second, (0, 0, 0, widths[0] + 2))

    def _table(self, rows: Sequence[Sequence[str]]) -> Table:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for header in self._HEADERS:
            table.add_column(header, no_wrap=True, justify="right" if header == "att" else "left")
        table.add_column("note", overflow="fold", ratio=1)
        for run, row in zip(self.runs, rows, strict=True):
            table.add_row(
                Text(row[0], style="bold"),
                Text(row[1], style=STATUS_STYLES.get(run.status, "")),
                *row[2:6],
                Text(row[6], style="dim"),
                Text(run_note(run), style=_note_style(run)),
            )
        return table


def _note_style(run: RunRecord) -> str:
    return "red" if run.status is RunStatus.PARKED or run.blocked_reason else "dim"


def runs_table(runs: Sequence[RunRecord], now: datetime) -> RunsTable:
    """Runs for ``sagaledger runs list`` (see :class:`RunsTable`)."""
    return RunsTable(runs, now)


def run_header(run: RunRecord, waiting: str | None = None) -> Panel:
    """A panel with what the run row says: identity, status, position, lease, problems.

    Args:
        run: The run.
        waiting: What it waits for (see :func:`waiting_note`), shown instead of
            when it is due: its deadline is.
    """
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    grid.add_row("run", run.id)
    grid.add_row("saga", f"{run.saga_name} v{run.saga_version} (fingerprint {run.fingerprint})")
    grid.add_row("business key", run.business_key)
    status = status_text(run.status)
    if run.status.active:
        status.append(
            f"  at {run.step or f'step #{run.step_index}'}, attempt {run.attempt}", style=""
        )
    grid.add_row("status", status)
    if run.lease_owner is not None:
        grid.add_row(
            "lease", f"{run.lease_owner} (token {run.lease_token}) until {stamp(run.wake_at)}"
        )
    elif waiting is not None:
        grid.add_row("waiting", Text(waiting, style="cyan"))
    elif run.status.active and run.wake_at is not None:
        grid.add_row("due", stamp(run.wake_at))
    grid.add_row("started", stamp(run.created_at))
    grid.add_row("updated", stamp(run.updated_at))
    if run.blocked_reason:
        grid.add_row("blocked", Text(run.blocked_reason, style="red"))
    if run.last_error:
        grid.add_row("last error", Text(error_summary(run.last_error), style="red"))
    grid.add_row("input", _compact(run.input, 200))
    return Panel(grid, title=f"run {run.id[:SHORT_ID]}", title_align="left", expand=False)


class Timeline:
    """A run's events, one per line, coloured by type.

    Wide consoles get one table row per event. Narrow ones (a pipe is 80
    columns) get the detail on a second, indented line: squeezing eight columns
    into 80 would fold every cell into an unreadable ribbon.

    Args:
        events: The run's events, in order.
    """

    #: Columns the detail needs beside the others to stay on the event's line.
    DETAIL_MIN = 40

    def __init__(self, events: Sequence[EventRecord]):
        self.events = list(events)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        rows = [_row(e) for e in self.events]
        widths = _widths(_HEADERS, rows)
        if sum(widths) + 2 * len(widths) + self.DETAIL_MIN <= options.max_width:
            yield self._table(rows)
        else:
            # The actor moves to the second line, where it is shown when it changes.
            yield from self._two_line(rows, widths[:-1], options.max_width)

    def _table(self, rows: Sequence[Sequence[str]]) -> Table:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for header in _HEADERS:
            right = header in ("#", "att")
            table.add_column(
                header, no_wrap=header != "actor", justify="right" if right else "left"
            )
        table.add_column("detail", overflow="fold", ratio=1)
        for e, row in zip(self.events, rows, strict=True):
            style = EVENT_STYLES.get(e.type, "")
            table.add_row(
                Text(row[0], style="dim"),
                Text(row[1], style="dim"),
                Text(row[2], style=style),
                row[3],
                Text(row[4], style="dim"),
                row[5],
                Text(row[6], style="dim"),
                Text(event_summary(e), style=style if e.error else ""),
            )
        return table

    def _two_line(self, rows: list[tuple[str, ...]], widths: list[int], width: int) -> RenderResult:
        yield _line(_HEADERS[:-1], widths, ["bold"] * 6, right=(0, 5))
        indent = widths[0] + 2
        actor = None
        for e, row in zip(self.events, rows, strict=True):
            style = EVENT_STYLES.get(e.type, "")
            yield _line(row[:6], widths, ["dim", "dim", style, "", "dim", ""], right=(0, 5))
            detail = Text()
            if row[6] != actor:
                detail.append(f"by {row[6]}  ", style="dim")
                actor = row[6]
            detail.append(
                event_summary(e, width=3 * (width - indent)), style=style if e.error else ""
            )
            if detail.plain.strip():
                yield Padding(detail, (0, 0, 0, indent))


_HEADERS = ("#", "time (UTC)", "event", "step", "phase", "att", "actor")


def _row(e: EventRecord) -> tuple[str, ...]:
    return (
        str(e.seq),
        e.created_at.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3],
        e.type.value,
        e.step or "",
        e.phase.value if e.phase is not None else "",
        str(e.attempt) if e.attempt is not None else "",
        e.actor,
    )


def _widths(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[int]:
    return [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]


def _line(
    cells: Sequence[str], widths: Sequence[int], styles: Sequence[str], right: Sequence[int] = ()
) -> Text:
    """Cells padded to ``widths`` on one line, cut (never wrapped) at the console's edge."""
    text = Text(no_wrap=True, overflow="ellipsis")
    for i, (cell, w, style) in enumerate(zip(cells, widths, styles, strict=False)):
        text.append("  " if i else "")
        text.append(cell.rjust(w) if i in right else cell.ljust(w), style=style)
    return text


def timeline(events: Sequence[EventRecord]) -> Timeline:
    """A run's events, coloured by type (see :class:`Timeline`)."""
    return Timeline(events)


def run_view(
    run: RunRecord, events: Sequence[EventRecord], delivered: SignalRecord | None = None
) -> RenderableType:
    """The header and the timeline of a run, as ``sagaledger runs show`` prints them.

    Args:
        run: The run.
        events: Its events, in order.
        delivered: What its wait received that no worker has taken yet (an
            approval's decision, an event), if any.
    """
    return Group(run_header(run, waiting_note(run, events, delivered)), timeline(events))


class ApprovalsTable:
    """Pending approvals, one per row, for ``sagaledger approvals``.

    Like :class:`RunsTable`, a console too narrow for one line per approval
    gets who may decide and what they are shown on indented lines below it.

    Args:
        pending: The approvals runs wait for.
        now: The time deadlines are counted to.
    """

    #: Columns who may decide and what is shown need beside the others.
    DETAIL_MIN = 50
    _HEADERS = ("run", "saga", "step", "level", "deadline (UTC)")

    def __init__(self, pending: Sequence[PendingApproval], now: datetime):
        self.pending = list(pending)
        self.now = now

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        rows = [
            (
                p.run_id[:SHORT_ID],
                p.saga,
                p.step,
                f"{p.level} (escalated)" if p.level else str(p.level),
                f"{p.deadline.astimezone(UTC):%Y-%m-%d %H:%M} ({until(p.deadline, self.now)})",
            )
            for p in self.pending
        ]
        widths = _widths(self._HEADERS, rows)
        if sum(widths) + 2 * len(widths) + self.DETAIL_MIN <= options.max_width:
            yield self._table(rows)
            return
        yield _line(self._HEADERS, widths, ["bold"] * len(widths))
        for p, row in zip(self.pending, rows, strict=True):
            yield _line(row, widths, ["bold", "", "", "", self._deadline_style(p)])
            detail = Text("may decide: ", style="dim")
            detail.append(", ".join(p.approvers))
            if p.shown is not None:
                detail.append("\nshown: ", style="dim")
                detail.append(_compact(p.shown, 200))
            yield Padding(detail, (0, 0, 0, widths[0] + 2))

    def _table(self, rows: Sequence[Sequence[str]]) -> Table:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for header in self._HEADERS[:4]:
            table.add_column(header, no_wrap=True)
        table.add_column("who may decide", overflow="fold")
        table.add_column(self._HEADERS[4], no_wrap=True)
        table.add_column("shown", overflow="fold", ratio=1)
        for p, row in zip(self.pending, rows, strict=True):
            table.add_row(
                Text(row[0], style="bold"),
                *row[1:4],
                ", ".join(p.approvers),
                Text(row[4], style=self._deadline_style(p)),
                _compact(p.shown, 200),
            )
        return table

    def _deadline_style(self, pending: PendingApproval) -> str:
        return "red" if pending.deadline <= self.now else ""


def approvals_table(pending: Sequence[PendingApproval], now: datetime) -> ApprovalsTable:
    """Pending approvals for ``sagaledger approvals`` (see :class:`ApprovalsTable`)."""
    return ApprovalsTable(pending, now)


def until(value: datetime, now: datetime) -> str:
    """How long until ``value``, for people: ``in 4s``, ``in 3h``, or ``passed``."""
    seconds = int((value - now).total_seconds())
    if seconds <= 0:
        return "passed"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"in {seconds // size}{unit}"
    return f"in {seconds}s"


# -- helpers ---------------------------------------------------------------------


def _compact(value: Any, width: int = 90) -> str:
    if value is None:
        return ""
    return _truncate(json.dumps(value, separators=(", ", ": "), default=str), width)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def stamp(value: datetime | None) -> str:
    """A time for people: ``2030-01-01 12:00:00.000 UTC`` (``-`` for none)."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _moment(value: Any) -> str:
    """An ISO timestamp from a payload, shown to the second (deadlines may be weeks away)."""
    if not isinstance(value, str):
        return "?"
    try:
        return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return value


def _clock(value: Any) -> str:
    """An ISO timestamp from a payload, shown as a UTC time of day."""
    if not isinstance(value, str):
        return "?"
    try:
        return datetime.fromisoformat(value).astimezone(UTC).strftime("%H:%M:%S.%f")[:-3]
    except ValueError:
        return value
