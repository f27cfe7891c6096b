"""OpenTelemetry spans: one trace per run, a span per drive, a child span per step attempt.

A run may wait for days between two drives, on other workers. No span is kept
open meanwhile: every drive's span is a child of the run's span, whose ids are
derived from the run id (see ``_ids``), and links to the drive before it. The
run's span itself is emitted when the run finishes, with the run's start as its
start time, so a finished run is one tree::

    run order_fulfilment                     (emitted when the run finishes)
    |-- drive order_fulfilment   token 1     (claim to release, on worker A)
    |   |-- reserve_stock forward #1
    |   `-- charge_card forward #1           outcome retry
    `-- drive order_fulfilment   token 2     links to token 1 (worker B, 3 days later)
        `-- charge_card forward #2
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    Status,
    StatusCode,
    TraceFlags,
    TracerProvider,
)

from sagaledger.sagas._hooks import ActionCall, DriveCall, DriveOutcome, Hooks
from sagaledger.store import EventType, NewEvent
from sagaledger.telemetry._ids import pin_ids, pinned, run_span_id, run_trace_id

#: The instrumentation scope of every span sagaledger emits.
SCOPE = "sagaledger"

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
#: What a step attempt's checkpoint says became of it, by the event that says so.
_OUTCOMES = {
    EventType.STEP_COMPLETED: "completed",
    EventType.COMPENSATION_COMPLETED: "compensated",
    EventType.STEP_DEFERRED: "deferred",
}
_FAILED = (EventType.STEP_FAILED, EventType.COMPENSATION_FAILED)
#: Events a drive's span does not repeat: its step spans and outcome already say them.
_ROUTINE = frozenset(
    {
        EventType.ATTEMPT_STARTED,
        EventType.STEP_COMPLETED,
        EventType.COMPENSATION_COMPLETED,
        *_FAILED,
        EventType.RUN_COMPLETED,
        EventType.RUN_COMPENSATED,
    }
)


@dataclass
class _Drive:
    """The spans of the drive this thread runs."""

    call: DriveCall
    span: Span
    attached: object
    step: Span | None = None
    step_attached: object | None = None
    notes: list[str] = field(default_factory=list)


class TracingHooks(Hooks):
    """Hooks that emit OpenTelemetry spans of drives and step attempts.

    Span names: ``run <saga>``, ``drive <saga>``, ``<step> <phase>``. Attributes
    are under ``sagaledger.`` (see docs/telemetry.md). A step's span is current
    while its action runs, so spans of instrumented libraries it calls (httpx...)
    are its children.

    Args:
        tracer_provider: Where spans go; the global provider by default.
    """

    def __init__(self, tracer_provider: TracerProvider | None = None):
        self.tracer = trace.get_tracer(SCOPE, version("sagaledger"), tracer_provider)
        #: Span ids derived from run ids (the SDK): links reach drives of other workers.
        self.derived_ids = pin_ids(self.tracer)
        self._drive: ContextVar[_Drive | None] = ContextVar("sagaledger_drive", default=None)

    # -- drives ----------------------------------------------------------------------

    def drive_started(self, drive: DriveCall) -> None:
        trace_id = run_trace_id(drive.run_id)
        run_span = SpanContext(trace_id, run_span_id(drive.run_id), True, _SAMPLED)
        parent = trace.set_span_in_context(NonRecordingSpan(run_span), otel_context.Context())
        links = []
        if self.derived_ids and drive.token > 1:
            previous = run_span_id(drive.run_id, drive.token - 1)
            before = SpanContext(trace_id, previous, True, _SAMPLED)
            links.append(Link(before, {"sagaledger.link": "previous_drive"}))
        ids = pinned(trace_id, run_span_id(drive.run_id, drive.token))
        with ids if self.derived_ids else nullcontext():
            span = self.tracer.start_span(
                f"drive {drive.saga}",
                parent,
                attributes={
                    "sagaledger.run_id": drive.run_id,
                    "sagaledger.saga": drive.saga,
                    "sagaledger.saga_version": drive.version,
                    "sagaledger.lease_token": drive.token,
                },
                links=links,
                start_time=drive.started_ns,
            )
        attached = otel_context.attach(trace.set_span_in_context(span))
        self._drive.set(_Drive(drive, span, attached))

    def drive_finished(
        self, drive: DriveCall, outcome: DriveOutcome, error: BaseException | None
    ) -> None:
        state = self._drive.get()
        if state is None or state.call is not drive:
            return
        self._drive.set(None)
        if state.step is not None:
            self._end_step(state, "interrupted", error)
        span = state.span
        span.set_attribute("sagaledger.outcome", outcome.value)
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        elif outcome is DriveOutcome.PARKED:
            span.set_status(Status(StatusCode.ERROR, "the run is parked"))
        otel_context.detach(state.attached)  # type: ignore[arg-type]
        span.end()
        if outcome in (DriveOutcome.COMPLETED, DriveOutcome.COMPENSATED, DriveOutcome.PARKED):
            self._run_span(drive, outcome)

    def _run_span(self, drive: DriveCall, outcome: DriveOutcome) -> None:
        """The run's span, from its start to now: the parent every drive's span named."""
        if not self.derived_ids:
            return  # its id could not be the one the drives name
        start = int(drive.created_at.timestamp() * 1e9)
        with pinned(run_trace_id(drive.run_id), run_span_id(drive.run_id)):
            span = self.tracer.start_span(
                f"run {drive.saga}",
                otel_context.Context(),  # a root: no ambient span is its parent
                attributes={
                    "sagaledger.run_id": drive.run_id,
                    "sagaledger.saga": drive.saga,
                    "sagaledger.saga_version": drive.version,
                    "sagaledger.outcome": outcome.value,
                    "sagaledger.drives": drive.token,
                },
                start_time=start,
            )
        if outcome is DriveOutcome.PARKED:
            span.set_status(Status(StatusCode.ERROR, "the run is parked"))
        span.end(max(start, time.time_ns()))

    # -- step attempts ---------------------------------------------------------------

    def before_action(self, call: ActionCall) -> None:
        state = self._drive.get()
        if state is None:
            return
        if state.step is not None:
            self._end_step(state, "interrupted", None)
        step = self.tracer.start_span(
            f"{call.step} {call.phase.value}",
            trace.set_span_in_context(state.span),
            attributes={  # the run id is the trace id (and the drive's attribute)
                "sagaledger.saga": call.saga,
                "sagaledger.saga_version": call.version,
                "sagaledger.step": call.step,
                "sagaledger.phase": call.phase.value,
                "sagaledger.attempt": call.attempt,
                "sagaledger.idempotency_key": call.idempotency_key,
            },
        )
        state.step = step
        state.step_attached = otel_context.attach(trace.set_span_in_context(step))

    def after_action(self, call: ActionCall, output: Any) -> None:
        self._action_done()

    def action_failed(self, call: ActionCall, error: BaseException) -> None:
        state = self._action_done()
        if state is not None and state.step is not None:
            state.step.record_exception(error)
            state.step.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))

    def _action_done(self) -> _Drive | None:
        """The action returned: spans it starts are no longer the step's children."""
        state = self._drive.get()
        if state is not None and state.step_attached is not None:
            otel_context.detach(state.step_attached)  # type: ignore[arg-type]
            state.step_attached = None
        return state

    def after_checkpoint(self, run_id: str, events: Any) -> None:
        state = self._drive.get()
        if state is None:
            return
        for event in events:
            if event.type not in _ROUTINE:
                state.span.add_event(event.type.value, _event_attributes(event))
            if state.step is None or event.step is None:
                continue
            if event.type in _OUTCOMES:
                self._end_step(state, _OUTCOMES[event.type], None)
            elif event.type in _FAILED:
                self._end_step(state, str((event.payload or {}).get("outcome", "failed")), None)

    def write_refused(self, run_id: str, token: int, events: Any) -> None:
        state = self._drive.get()
        if state is not None and state.step is not None:
            self._end_step(state, "refused", None)

    def _end_step(self, state: _Drive, outcome: str, error: BaseException | None) -> None:
        self._action_done()
        step, state.step = state.step, None
        assert step is not None
        step.set_attribute("sagaledger.outcome", outcome)
        if error is not None:
            step.record_exception(error)
            step.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        step.end()


def _event_attributes(event: NewEvent) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if event.step is not None:
        found["sagaledger.step"] = event.step
    if event.attempt is not None:
        found["sagaledger.attempt"] = event.attempt
    return found
