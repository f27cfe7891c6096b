"""What telemetry costs per step: the same runs with tracing and metrics hooks off and on.

A 4-step saga whose steps do nothing (``engine.py``'s), started and driven one
run at a time in this thread by an ``Orchestrator`` on a SQLite log in a
temporary file (WAL, ``synchronous=FULL``), so that everything timed is the
engine, its commits, and the hooks under test:

- off:      no hooks
- metrics:  ``MetricsHooks`` on a fresh prometheus ``CollectorRegistry``
- tracing:  ``TracingHooks`` on an OpenTelemetry SDK ``TracerProvider`` with a
            ``BatchSpanProcessor`` and an exporter that drops the spans (the
            export thread's CPU time is counted: it is part of the cost)
- both:     both

Modes are interleaved round by round; each figure is the median over rounds.
Wall time per step includes the fsync of each commit; CPU per step is what the
hooks add to the process, whatever the disk. A script, not a test::

    python benchmarks/telemetry_overhead.py [--runs 300] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _workloads import STEPS, step_result
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from sagaledger import Hooks, Orchestrator, Registry, RetrySafety, Saga, SagaLog, StepContext, step
from sagaledger.telemetry import MetricsHooks, TracingHooks

MODES = ("off", "metrics", "tracing", "both")


class Order(BaseModel):
    order_id: str


def _noop(name: str) -> Any:
    def action(ctx: StepContext[Order]) -> dict[str, Any]:
        return step_result(ctx.input.order_id, name)

    return step(name, compensate=lambda ctx: None, retry_safety=RetrySafety.IDEMPOTENCY_KEY)(action)


SAGA = Saga("bench_order", 1, Order, [_noop(name) for name in STEPS])


class _Drop(SpanExporter):
    """Takes spans and drops them: the export's cost without a collector's."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def hooks_for(mode: str) -> tuple[list[Hooks], Callable[[], None]]:
    """The hooks of ``mode``, and what to call when its runs are over (flush spans)."""
    hooks: list[Hooks] = []
    done: Callable[[], None] = lambda: None  # noqa: E731
    if mode in ("metrics", "both"):
        hooks.append(MetricsHooks(CollectorRegistry()))
    if mode in ("tracing", "both"):
        provider = TracerProvider(shutdown_on_exit=False)
        provider.add_span_processor(BatchSpanProcessor(_Drop()))
        hooks.append(TracingHooks(provider))
        done = provider.shutdown
    return hooks, done


def measure(mode: str, runs: int, directory: Path) -> dict[str, float]:
    """Start and drive ``runs`` runs one after another; per-step wall and CPU time (µs)."""
    log = SagaLog.open(f"sqlite:///{directory}/{mode}-{time.monotonic_ns()}.db")
    hooks, done = hooks_for(mode)
    orchestrator = Orchestrator(log, Registry([SAGA]), hooks=hooks, worker_id="bench")
    for i in range(20):  # warm-up: caches, prepared statements, label children
        orchestrator.drive(orchestrator.start(SAGA, {"order_id": f"w{i}"}).id)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(runs):
        orchestrator.drive(orchestrator.start(SAGA, {"order_id": f"o{i}"}).id)
    done()  # the batch processor's last export is part of the cost
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    log.close()
    steps = runs * len(STEPS)
    return {"wall_us": wall / steps * 1e6, "cpu_us": cpu / steps * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300, help="runs per mode per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (medians are reported)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    samples: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="sagaledger-telemetry-bench-") as tmp:
        for _ in range(args.rounds):
            for mode in MODES:
                samples[mode].append(measure(mode, args.runs, Path(tmp)))
    figures: dict[str, dict[str, float]] = {}
    for mode in MODES:
        wall = statistics.median(s["wall_us"] for s in samples[mode])
        cpu = statistics.median(s["cpu_us"] for s in samples[mode])
        figures[mode] = {"wall_us_per_step": round(wall, 1), "cpu_us_per_step": round(cpu, 1)}
    base = figures["off"]
    for mode in MODES:
        f = figures[mode]
        f["wall_ratio"] = round(f["wall_us_per_step"] / base["wall_us_per_step"], 3)
        f["cpu_ratio"] = round(f["cpu_us_per_step"] / base["cpu_us_per_step"], 3)
        f["cpu_added_us_per_step"] = round(f["cpu_us_per_step"] - base["cpu_us_per_step"], 1)
    if args.json:
        print(json.dumps({"runs": args.runs, "rounds": args.rounds, "modes": figures}, indent=2))
        return
    print(f"{args.runs} runs x {len(STEPS)} steps per mode, median of {args.rounds} rounds")
    head = ("mode", "wall µs/step", "ratio", "CPU µs/step", "ratio", "+CPU µs")
    print("{:<9} {:>13} {:>6} {:>12} {:>6} {:>8}".format(*head))
    for mode in MODES:
        f = figures[mode]
        row = (f["wall_us_per_step"], f["wall_ratio"], f["cpu_us_per_step"], f["cpu_ratio"])
        added = f["cpu_added_us_per_step"]
        print("{:<9} {:>13.1f} {:>6.3f} {:>12.1f} {:>6.3f} {:>8.1f}".format(mode, *row, added))


if __name__ == "__main__":
    main()
