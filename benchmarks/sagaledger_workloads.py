"""The sagaledger side of ``compare.py``: one workload, embedded (SQLite + EmbeddedWorker).

Runs in our own interpreter, in a fresh process per workload, and prints its
figures as one JSON line on stdout:

    python benchmarks/sagaledger_workloads.py latency --runs 200 --dir /tmp/x
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _workloads import STEPS, batch_figures, emit, journal_mode, parse_args, sequential, step_result
from pydantic import BaseModel

from sagaledger import (
    EmbeddedWorker,
    EventType,
    Hooks,
    Orchestrator,
    PermanentError,
    Registry,
    RetrySafety,
    Saga,
    SagaLog,
    step,
)

#: The events that end a run: W1 completes, W2 is compensated.
FINAL = (EventType.RUN_COMPLETED, EventType.RUN_COMPENSATED)


class Order(BaseModel):
    order_id: str


def _noop_step(name: str, fail: bool = False) -> Any:
    """A step that returns ~100 bytes, or (``fail``) fails permanently; undone by a no-op."""

    def action(ctx: Any) -> dict[str, Any]:
        if fail:
            raise PermanentError(f"{name} refused")
        return step_result(ctx.input.order_id, name)

    return step(name, compensate=lambda ctx: None, retry_safety=RetrySafety.IDEMPOTENCY_KEY)(action)


ORDER = Saga("bench_order", 1, Order, [_noop_step(name) for name in STEPS])
FAILING_ORDER = Saga(
    "bench_order_failing",
    1,
    Order,
    [_noop_step(name, fail=name == STEPS[-1]) for name in STEPS],
)


class Finished(Hooks):
    """Signals each run's end from the worker thread, right after the commit that records it.

    Waiting on this hook rather than polling the log keeps any polling interval
    out of the figures.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: dict[str, threading.Event] = defaultdict(threading.Event)
        self.count, self.target, self.all_done = 0, 0, threading.Event()
        self.last_at = 0.0

    def after_checkpoint(self, run_id: str, events: Sequence[Any]) -> None:
        if not any(e.type in FINAL for e in events):
            return
        with self.lock:
            self.runs[run_id].set()
            self.count += 1
            self.last_at = time.perf_counter()
            if self.count == self.target:
                self.all_done.set()

    def wait(self, run_id: str, timeout: float = 30.0) -> None:
        with self.lock:
            done = self.runs[run_id]
        if not done.wait(timeout):
            raise RuntimeError(f"run {run_id} did not finish within {timeout}s")


Runtime = tuple[SagaLog, Orchestrator, EmbeddedWorker, Finished]


def open_runtime(db_file: Path, threads: int) -> Runtime:
    """A fresh saga log, the real embedded runtime on it, and the hook that sees runs end."""
    log = SagaLog.open(f"sqlite:///{db_file}")
    finished = Finished()
    orchestrator = Orchestrator(
        log, Registry([ORDER, FAILING_ORDER]), hooks=[finished], worker_id="bench"
    )
    return log, orchestrator, EmbeddedWorker(orchestrator, threads=threads), finished


def run_sequential(
    orchestrator: Orchestrator, finished: Finished, saga: Saga, runs: int
) -> dict[str, float]:
    """W1 latency / W2: start a run, wait for its end, repeat."""

    def run_one(i: int) -> None:
        run = orchestrator.start(saga, {"order_id": f"S{i}"})
        finished.wait(run.id)

    return sequential(run_one, runs)


def run_batch(orchestrator: Orchestrator, finished: Finished, runs: int) -> dict[str, float]:
    """W1 throughput: start ``runs`` sagas back to back; time to the last one's completion."""
    finished.target = runs
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(runs):
        orchestrator.start(ORDER, {"order_id": f"T{i}"})
    if not finished.all_done.wait(60 + runs / 5):
        raise RuntimeError(f"only {finished.count}/{runs} sagas completed")
    cpu = time.process_time() - cpu0
    return batch_figures(runs, finished.last_at - t0, cpu)


def main() -> None:
    args = parse_args(__doc__.split("\n\n")[0])
    logging.basicConfig(level=logging.WARNING)
    db_file = args.dir / "sagaledger.db"
    log, orchestrator, worker, finished = open_runtime(db_file, args.threads)
    with worker:
        if args.workload == "throughput":
            figures = run_batch(orchestrator, finished, args.runs)
        else:
            saga = ORDER if args.workload == "latency" else FAILING_ORDER
            figures = run_sequential(orchestrator, finished, saga, args.runs)
    completed = log.count_runs()
    log.close()
    emit({**figures, "final_statuses": completed, "journal_mode": journal_mode(db_file)})


if __name__ == "__main__":
    main()
