"""The sagaledger side of ``compare.py``: one workload, embedded or in production mode.

Runs in our own interpreter, in a fresh process per workload, and prints its
figures as one JSON line on stdout:

    python benchmarks/sagaledger_workloads.py latency --runs 200 --dir /tmp/x
    python benchmarks/sagaledger_workloads.py latency --runs 100 --dir /tmp/x \\
        --backend redis --db-url postgresql://... --redis-url redis://...

Backends: ``sqlite`` and ``postgres`` run the embedded runtime (``Orchestrator``
+ ``EmbeddedWorker``) in this process; ``redis`` is production mode: this
process starts runs with ``Orchestrator.start()`` on the Redis broker, and one
worker process (``sagaledger_worker.py``) drives them. W3 (``recovery``) always
runs its worker in a child process, to SIGKILL it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from _recovery import W3_RUNS, Ledger, counter, measure_recovery
from _sagaledger_app import (
    FAILING_ORDER,
    ORDER,
    RECOVERY_ORDER,
    REGISTRY,
    Finished,
    open_log,
    store_url,
)
from _workloads import (
    STEPS,
    Child,
    batch_figures,
    child_env,
    emit,
    journal_mode,
    parse_args,
    process_cpu_s,
    sequential,
)

from sagaledger import EmbeddedWorker, Orchestrator, Saga, SagaLog
from sagaledger.sagas import build_broker, declare_actors

HERE = Path(__file__).resolve().parent
WORKER = HERE / "sagaledger_worker.py"


def run_sequential(
    orchestrator: Orchestrator,
    finished: Finished,
    saga: Saga,
    runs: int,
    cpu_time: Callable[[], float] = time.process_time,
) -> dict[str, float]:
    """W1 latency / W2: start a run, wait for its end, repeat."""

    def run_one(i: int) -> None:
        run = orchestrator.start(saga, {"order_id": f"S{i}"})
        finished.wait(run.id)

    return sequential(run_one, runs, cpu_time)


def run_batch(
    orchestrator: Orchestrator,
    finished: Finished,
    runs: int,
    cpu_time: Callable[[], float] = time.process_time,
) -> dict[str, float]:
    """W1 throughput: start ``runs`` sagas back to back; time to the last one's completion."""
    finished.target = runs
    cpu0, t0 = cpu_time(), time.perf_counter()
    for i in range(runs):
        orchestrator.start(ORDER, {"order_id": f"T{i}"})
    if not finished.all_done.wait(60 + runs / 5):
        raise RuntimeError(f"only {finished.count}/{runs} sagas completed")
    cpu = cpu_time() - cpu0
    return batch_figures(runs, finished.last_at - t0, cpu)


def run_workload(
    args: argparse.Namespace,
    orchestrator: Orchestrator,
    finished: Finished,
    cpu_time: Callable[[], float] = time.process_time,
) -> dict[str, float]:
    """W1 latency, W1 throughput or W2 on a running worker."""
    if args.workload == "throughput":
        return run_batch(orchestrator, finished, args.runs, cpu_time)
    saga = ORDER if args.workload == "latency" else FAILING_ORDER
    return run_sequential(orchestrator, finished, saga, args.runs, cpu_time)


def embedded(args: argparse.Namespace, log: SagaLog) -> dict[str, float]:
    """W1/W2 with the worker in this process, its hook signalling each run's end."""
    finished = Finished()
    orchestrator = Orchestrator(log, REGISTRY, hooks=[finished], worker_id="bench")
    with EmbeddedWorker(orchestrator, threads=args.threads):
        return run_workload(args, orchestrator, finished)


def worker_command(args: argparse.Namespace, *extra: str) -> list[str]:
    """The command line of a worker process with this run's store and settings."""
    command = [sys.executable, str(WORKER), "--store", store_url(args), *extra]
    if args.backend == "redis":
        command += ["--broker", args.redis_url]
    for option in ("lease", "dispatch_grace", "recovery_interval"):
        if getattr(args, option) is not None:
            command += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    return command


def starter(args: argparse.Namespace, log: SagaLog) -> Orchestrator:
    """An Orchestrator that starts runs and sends them to the workers over Redis."""
    orchestrator = Orchestrator(log, REGISTRY)
    declare_actors(build_broker(args.redis_url), orchestrator)
    return orchestrator


def production(args: argparse.Namespace, log: SagaLog) -> dict[str, float]:
    """W1/W2 in production mode: runs started here over Redis, driven by one worker process.

    The worker prints ``done RUN_ID`` right after each run's final commit; a
    thread here reads those lines, so a run's end is seen about a pipe write
    later. CPU figures add the worker process's CPU to this one's.
    """
    command = worker_command(args, "--threads", str(args.threads), "--report")
    worker = Child(command, args.dir / "worker.log", env=child_env())
    try:
        worker.expect("ready")
        finished = Finished()
        worker.on_line = lambda line: finished.mark(line.split()[1])

        def cpu_time() -> float:
            return time.process_time() + process_cpu_s(worker.pid)

        return run_workload(args, starter(args, log), finished, cpu_time)
    finally:
        if worker.stop() != 0:
            print(worker.tail(), file=sys.stderr)


def recovery(args: argparse.Namespace, log: SagaLog) -> dict[str, Any]:
    """W3: 500 sagas in a worker process, SIGKILLed halfway; a new worker finishes them."""
    ledger = Ledger(args.dir / "ledger.db")
    url = store_url(args)
    finished = counter(url, "SELECT count(*) FROM sagaledger_runs WHERE status = 'completed'")
    redis = args.backend == "redis"

    def spawn(phase: str) -> Child:
        extra = ["--threads", str(args.threads)]
        if phase == "first" and not redis:  # an embedded app starts its own runs
            extra += ["--start", str(W3_RUNS), "--ledger", ledger.path]
        return Child(worker_command(args, *extra), args.dir / f"worker-{phase}.log", child_env())

    def submit() -> None:
        # Production: the runs wait in Redis (and in the log) for the first worker.
        orchestrator = starter(args, log)
        for i in range(W3_RUNS):
            orchestrator.start(RECOVERY_ORDER, {"order_id": f"R{i}", "ledger": ledger.path})

    kill_at = args.kill_at or W3_RUNS * len(STEPS) // 2
    return measure_recovery(spawn, finished, ledger, kill_at, submit if redis else None)


def main() -> None:
    args = parse_args(__doc__.split("\n\n")[0])
    logging.basicConfig(level=logging.WARNING)
    url = store_url(args)
    # Migrates the fresh database (on Postgres, as `sagaledger db upgrade` would).
    with closing(open_log(url, args.threads)) as log:
        if args.workload == "recovery":
            figures = recovery(args, log)
        elif args.backend == "redis":
            figures = production(args, log)
        else:
            figures = embedded(args, log)
        statuses = log.count_runs()
    extra = {}
    if args.backend == "sqlite":
        extra["journal_mode"] = journal_mode(Path(url.removeprefix("sqlite:///")))
    emit({**figures, "final_statuses": statuses, **extra})


if __name__ == "__main__":
    main()
