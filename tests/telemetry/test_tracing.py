"""OpenTelemetry spans: one trace per run across drives days apart, links between drives."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from sagaledger import RetrySafety, RunStatus, Saga, StepContext, step
from sagaledger.sagas import idempotency_key
from sagaledger.telemetry import TracingHooks, run_span_id, run_trace_id
from sagaledger.testing import ManualClock, SagaHarness
from tests.telemetry.app import BACKOFF, COOLING_OFF, Trip, registry, trip_saga


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def tracing(exporter: InMemorySpanExporter) -> TracingHooks:
    """Tracing hooks on a provider of their own that hands every span to ``exporter``."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return TracingHooks(provider)


@pytest.fixture
def harness(store_url: str, exporter: InMemorySpanExporter) -> Iterator[SagaHarness]:
    h = SagaHarness(registry, store_url=store_url, hooks=[tracing(exporter)])
    yield h
    h.close()


def attrs(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


def drives(spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    found = [s for s in spans if s.name == "drive trip"]
    return sorted(found, key=lambda s: attrs(s)["sagaledger.lease_token"])  # type: ignore[arg-type, return-value]


def test_a_run_over_three_days_and_three_drives_is_one_trace(
    harness: SagaHarness, exporter: InMemorySpanExporter
) -> None:
    # Given a trip whose card charge fails once and whose confirmation fails for good
    run = harness.start(trip_saga, {"traveller": "ada", "refuse": True})

    # When it is driven: the first attempt fails, the retry comes 10 s later, the
    # timer waits three days, then confirm fails and the run compensates
    harness.run_until_idle()
    harness.advance(BACKOFF)
    harness.run_until_idle()
    harness.advance(COOLING_OFF)
    harness.run_until_idle()
    assert harness.status(run.id) is RunStatus.COMPENSATED

    # Then every span is in the trace whose id is the run id
    spans = exporter.get_finished_spans()
    assert {s.context.trace_id for s in spans} == {int(run.id, 16)} == {run_trace_id(run.id)}

    # ... the run's span is the root, from the run's start, emitted once it finished
    (root,) = [s for s in spans if s.parent is None]
    assert root.name == "run trip"
    assert root.context.span_id == run_span_id(run.id)
    assert attrs(root)["sagaledger.outcome"] == "compensated"
    assert root.start_time == int(harness.log.get_run(run.id).created_at.timestamp() * 1e9)

    # ... three drives, each a child of the run's span, each ended with how it ended
    d1, d2, d3 = drives(spans)
    for token, drive in enumerate((d1, d2, d3), start=1):
        assert drive.parent is not None and drive.parent.span_id == root.context.span_id
        assert drive.context.span_id == run_span_id(run.id, token)
        assert attrs(drive)["sagaledger.run_id"] == run.id
    assert [attrs(d)["sagaledger.outcome"] for d in (d1, d2, d3)] == [
        "waiting",
        "waiting",
        "compensated",
    ]

    # ... the drives' events say what the log recorded beyond their steps
    assert [e.name for e in d2.events] == ["timer_started"]
    assert [e.name for e in d3.events] == ["compensation_started"]

    # ... each drive links to the one before it, not to a span kept open
    assert d1.links == ()
    assert [link.context.span_id for link in d2.links] == [d1.context.span_id]
    assert [link.context.span_id for link in d3.links] == [d2.context.span_id]
    assert attrs(d2.links[0])["sagaledger.link"] == "previous_drive"  # type: ignore[arg-type]

    # ... and each step attempt is a child of its drive, with what became of it
    def steps_of(drive: ReadableSpan) -> list[tuple[str, object, object]]:
        children = [s for s in spans if s.parent and s.parent.span_id == drive.context.span_id]
        children.sort(key=lambda s: s.start_time or 0)
        return [
            (s.name, attrs(s)["sagaledger.attempt"], attrs(s)["sagaledger.outcome"])
            for s in children
        ]

    assert steps_of(d1) == [
        ("book_hotel forward", 1, "completed"),
        ("charge_card forward", 1, "retry"),
    ]
    assert steps_of(d2) == [("charge_card forward", 2, "completed")]
    assert steps_of(d3) == [
        ("confirm forward", 1, "compensate"),
        ("charge_card compensate", 1, "compensated"),
        ("book_hotel compensate", 1, "compensated"),
    ]


def test_step_spans_carry_their_attributes_and_errors(
    harness: SagaHarness, exporter: InMemorySpanExporter
) -> None:
    run = harness.start(trip_saga, {"traveller": "ada"})
    harness.run_until_idle()  # book_hotel, then charge_card's first attempt fails

    spans = exporter.get_finished_spans()
    (failed,) = [s for s in spans if s.name == "charge_card forward"]
    assert attrs(failed) == {
        "sagaledger.saga": "trip",
        "sagaledger.saga_version": 1,
        "sagaledger.step": "charge_card",
        "sagaledger.phase": "forward",
        "sagaledger.attempt": 1,
        "sagaledger.idempotency_key": idempotency_key(run.id, "charge_card", "forward"),
        "sagaledger.outcome": "retry",
    }
    assert failed.status.status_code is StatusCode.ERROR
    (exception,) = [e for e in failed.events if e.name == "exception"]
    assert str(attrs(exception)["exception.type"]).endswith("RetryableError")  # type: ignore[arg-type]
    assert "timed out" in str(attrs(exception)["exception.message"])  # type: ignore[arg-type]
    # The run is not finished: no root yet
    assert len(drives(spans)) == 1
    assert not [s for s in spans if s.parent is None]


def test_a_drive_on_another_worker_links_to_the_drive_before_it(
    store_url: str, exporter: InMemorySpanExporter
) -> None:
    # Given two workers (their own orchestrators and tracers) on one log and one clock
    other_spans = InMemorySpanExporter()
    clock = ManualClock()
    first = SagaHarness(registry, store_url=store_url, clock=clock, hooks=[tracing(exporter)])
    second = SagaHarness(registry, store_url=store_url, clock=clock, hooks=[tracing(other_spans)])
    try:
        # When the first drives the run up to its retry and the second takes it over
        run = first.start(trip_saga, {"traveller": "ada", "flaky": True})
        first.run_until_idle()
        clock.advance(BACKOFF + timedelta(seconds=11))  # the retry message is lost with `first`
        second.run_until_idle()
    finally:
        first.close()
        second.close()

    # Then the second's drive is in the same trace and links to the first's drive
    (d1,) = drives(exporter.get_finished_spans())
    (d2,) = drives(other_spans.get_finished_spans())
    assert d2.context.trace_id == d1.context.trace_id == int(run.id, 16)
    assert d2.parent is not None and d2.parent.span_id == run_span_id(run.id)
    assert [link.context.span_id for link in d2.links] == [d1.context.span_id]


def test_spans_of_libraries_a_step_calls_are_its_children(
    store_url: str, exporter: InMemorySpanExporter
) -> None:
    # Given a step that calls an instrumented library (it starts a span of its own)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    library = provider.get_tracer("some.http.client")

    @step(retry_safety=RetrySafety.NATURAL, no_compensation="a read")
    def look_up(ctx: StepContext[Trip]) -> None:
        with library.start_as_current_span("GET /rates"):
            pass

    saga = Saga("lookup", 1, Trip, [look_up])
    harness = SagaHarness([saga], store_url=store_url, hooks=[TracingHooks(provider)])
    try:
        # When it runs
        run = harness.run(saga, {"traveller": "ada"})
    finally:
        harness.close()

    # Then the library's span is a child of the step's span, in the run's trace
    spans = {s.name: s for s in exporter.get_finished_spans()}
    call, attempt = spans["GET /rates"], spans["look_up forward"]
    assert call.parent is not None and call.parent.span_id == attempt.context.span_id
    assert call.context.trace_id == int(run.id, 16)
