"""Engine benchmark: a 4-step no-op saga on SQLite through the real embedded runtime.

Prints throughput, end-to-end latency, per-step overhead, durable commits and
statements per step, and beside them the floor: what one committed single-row
insert costs on this machine, measured in the same run. Only ratios against that
floor travel between machines. See benchmarks/README.md for what each figure means.

    python benchmarks/engine.py [--runs 500] [--threads 4] [--json] [--profile FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import json
import logging
import math
import os
import platform
import pstats
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import event, text

from sagaledger import (
    EmbeddedWorker,
    EventType,
    Hooks,
    Orchestrator,
    Registry,
    RetrySafety,
    Saga,
    SagaLog,
    step,
)
from sagaledger.store import create_store_engine

STEPS = ("reserve_inventory", "charge_payment", "create_erp_order", "send_email")
LATENCY_RUNS, WARMUP_RUNS = 200, 20


class Order(BaseModel):
    order_id: str


def _noop_step(name: str) -> Any:
    def action(ctx: Any) -> dict[str, Any]:  # ~100 bytes of JSON
        return {"ref": ctx.idempotency_key, "status": "ok", "amount_cents": 1999, "currency": "EUR"}

    return step(name, compensate=lambda ctx: None, retry_safety=RetrySafety.IDEMPOTENCY_KEY)(action)


SAGA = Saga("bench_order", 1, Order, [_noop_step(name) for name in STEPS])


class Recorder(Hooks):
    """Timestamps each checkpoint in the worker thread, right after its commit."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.finished: dict[str, threading.Event] = defaultdict(threading.Event)
        self.step_times: dict[str, list[float]] = defaultdict(list)
        self.completed = 0
        self.target, self.all_done = 0, threading.Event()

    def after_checkpoint(self, run_id: str, events: Any) -> None:
        now = time.perf_counter()
        with self.lock:
            for e in events:
                if e.type is EventType.STEP_COMPLETED:
                    self.step_times[run_id].append(now)
                elif e.type is EventType.RUN_COMPLETED:
                    self.finished[run_id].set()
                    self.completed += 1
                    if self.completed == self.target:
                        self.all_done.set()

    def wait(self, run_id: str, timeout: float = 30.0) -> None:
        with self.lock:
            done = self.finished[run_id]
        if not done.wait(timeout):
            raise RuntimeError(f"run {run_id} did not complete within {timeout}s")


class SqlCounter:
    """Counts what reaches SQLite: statements by verb, commits, rollbacks.

    SQLite's own trace hook sees every statement, whichever layer sent it (the
    log sends its hot statements on the DBAPI connection, past SQLAlchemy's events).
    """

    def __init__(self, engine: Any) -> None:
        self.verbs: Counter[str] = Counter()
        self._lock = threading.Lock()
        event.listen(
            engine, "connect", lambda dbapi_conn, _: dbapi_conn.set_trace_callback(self._seen)
        )
        engine.dispose()  # connections opened from now on are traced

    def _seen(self, statement: str) -> None:
        words = statement.split(None, 2)  # "BEGIN IMMEDIATE" takes the write lock, "BEGIN" not
        verb = " ".join(words[:2]).upper() if words[0].upper() == "BEGIN" else words[0].upper()
        with self._lock:
            self.verbs[verb] += 1

    @property
    def commits(self) -> int:
        return self.verbs["COMMIT"]

    @property
    def rollbacks(self) -> int:
        return self.verbs["ROLLBACK"]


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def dist(name: str, values: list[float], *qs: int) -> dict[str, float]:
    """``{name}_p{q}_ms`` for each percentile ``q`` of ``values`` (in ms)."""
    return {f"{name}_p{q}_ms": pct(values, q) for q in qs}


class Floor:
    """One committed single-row insert (WAL, synchronous=FULL), timed between sagas.

    Sampled interleaved with the latency runs, so that disk hiccups hit both alike:
    ``raw`` is plain sqlite3, ``engine`` the same insert through the store's engine.
    """

    def __init__(self, directory: Path) -> None:
        self.con = sqlite3.connect(directory / "floor.db", isolation_level=None)
        self.con.execute("PRAGMA journal_mode = WAL")
        self.con.execute("PRAGMA synchronous = FULL")
        self.con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        self.engine = create_store_engine(f"sqlite:///{directory}/floor_engine.db")
        with self.engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)"))
        self.raw: list[float] = []
        self.via_engine: list[float] = []

    def sample(self, keep: bool) -> None:
        t0 = time.perf_counter()
        self.con.execute("BEGIN IMMEDIATE")
        self.con.execute("INSERT INTO t (body) VALUES (?)", ("x" * 100,))
        self.con.execute("COMMIT")
        t1 = time.perf_counter()
        with self.engine.begin() as conn:
            conn.execute(text("INSERT INTO t (body) VALUES (:b)"), {"b": "x" * 100})
        if keep:
            self.raw.append((t1 - t0) * 1000)
            self.via_engine.append((time.perf_counter() - t1) * 1000)

    def close(self) -> None:
        self.con.close()
        self.engine.dispose()


Runtime = tuple[SagaLog, Orchestrator, EmbeddedWorker, Recorder]


def runtime(directory: Path, name: str, threads: int) -> Runtime:
    """A fresh store and the real embedded runtime (Orchestrator + EmbeddedWorker) on it."""
    log = SagaLog.open(f"sqlite:///{directory}/{name}.db")
    recorder = Recorder()
    orchestrator = Orchestrator(log, Registry([SAGA]), hooks=[recorder], worker_id=f"bench-{name}")
    return log, orchestrator, EmbeddedWorker(orchestrator, threads=threads), recorder


def latency(directory: Path, threads: int) -> dict[str, float]:
    log, orchestrator, worker, recorder = runtime(directory, "latency", threads)
    e2e, first_step, spacing = [], [], []
    floor = Floor(directory)
    with worker:
        for i in range(WARMUP_RUNS + LATENCY_RUNS):
            floor.sample(keep=i >= WARMUP_RUNS)
            t0 = time.perf_counter()
            run = orchestrator.start(SAGA, {"order_id": f"L{i}"})
            recorder.wait(run.id)
            if i >= WARMUP_RUNS:
                e2e.append((time.perf_counter() - t0) * 1000)
                times = recorder.step_times[run.id]
                first_step.append((times[0] - t0) * 1000)
                spacing += [(b - a) * 1000 for a, b in itertools.pairwise(times)]
    log.close()
    floor.close()
    return {
        **dist("floor_sqlite3", floor.raw, 50),
        **dist("floor_store_engine", floor.via_engine, 50),
        **dist("latency", e2e, 50, 99),
        "per_step_p50_ms": pct(e2e, 50) / len(STEPS),
        **dist("start_to_first_step", first_step, 50),
        **dist("step_spacing", spacing, 50, 90, 99),
    }


def throughput(directory: Path, runs: int, threads: int, profile: str | None) -> dict[str, Any]:
    log, orchestrator, worker, recorder = runtime(directory, "throughput", threads)
    counter, recorder.target = SqlCounter(log.engine), runs
    profiles: list[cProfile.Profile] = []
    if profile:  # cProfile sees one thread: give each thread its own, timing CPU, not waits

        def profile_thread(*_: Any) -> None:
            profiles.append(thread_profile := cProfile.Profile(time.thread_time))
            thread_profile.enable()  # replaces this function for the rest of the thread

        threading.setprofile(profile_thread)
        profile_thread()
    worker.start()
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(runs):
        orchestrator.start(SAGA, {"order_id": f"T{i}"})
    submitted = time.perf_counter() - t0
    if not recorder.all_done.wait(60 + runs / 10):
        raise RuntimeError(f"only {recorder.completed}/{runs} sagas completed")
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    worker.stop()
    if profile:
        threading.setprofile(None)
        stats = pstats.Stats(*profiles, stream=sys.stderr)
        stats.dump_stats(profile)
        stats.sort_stats("cumulative").print_stats(30)
    done = log.count_runs().get("completed", 0)
    assert done == runs, f"count_runs() says {done} completed, expected {runs}"
    log.close()
    steps = runs * len(STEPS)
    return {
        "sagas_per_s": runs / elapsed,
        "batch_s": elapsed,
        "submit_s": submitted,
        "cpu_ms_per_saga": cpu * 1000 / runs,
        "commits_per_step": counter.commits / steps,
        "statements_per_step": sum(counter.verbs.values()) / steps,
        "write_locks_per_step": counter.verbs["BEGIN IMMEDIATE"] / steps,
        "statements_by_verb": dict(counter.verbs),
        "rollbacks": counter.rollbacks,
    }


ROWS = [  # (key, label, unit)
    ("sagas_per_s", "throughput ({runs} sagas started at once)", "sagas/s"),
    ("cpu_ms_per_saga", "CPU per saga (all threads)", "ms"),
    ("latency_p50_ms", "end-to-end latency p50 (sequential)", "ms"),
    ("latency_p99_ms", "end-to-end latency p99", "ms"),
    ("per_step_p50_ms", "per-step overhead p50 (latency / 4)", "ms"),
    ("floor_sqlite3_p50_ms", "floor: 1 committed insert, sqlite3", "ms"),
    ("per_step_over_floor", "per-step overhead / floor", "x"),
    ("floor_store_engine_p50_ms", "floor via the store engine", "ms"),
    ("start_to_first_step_p50_ms", "start() -> first step checkpoint p50", "ms"),
    ("step_spacing_p50_ms", "step_completed spacing p50", "ms"),
    ("step_spacing_p99_ms", "step_completed spacing p99", "ms"),
    ("commits_per_step", "durable commits per step", "commits"),
    ("write_locks_per_step", "write locks per step (BEGIN IMMEDIATE)", "locks"),
    ("statements_per_step", "statements per step", "stmts"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=500, help="sagas in the throughput batch")
    parser.add_argument("--threads", type=int, default=4, help="EmbeddedWorker threads")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the throughput batch (CPU)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="sagaledger-bench-") as tmp:
        directory = Path(tmp)
        figures: dict[str, Any] = latency(directory, args.threads)
        figures["per_step_over_floor"] = (
            figures["per_step_p50_ms"] / figures["floor_sqlite3_p50_ms"]
        )
        figures.update(throughput(directory, args.runs, args.threads, args.profile))
    context = {
        "runs": args.runs,
        "threads": args.threads,
        "latency_runs": LATENCY_RUNS,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    if args.json:
        print(json.dumps({**context, **figures}, indent=2))
        return
    print("sagaledger engine benchmark: " + ", ".join(f"{k} {v}" for k, v in context.items()))
    width = max(len(label.format(**context)) for _, label, _ in ROWS)
    for key, label, unit in ROWS:
        print(f"  {label.format(**context):<{width}}  {figures[key]:>9.2f}  {unit}")
    print(f"  statements: {figures['statements_by_verb']}, rollbacks {figures['rollbacks']}")


if __name__ == "__main__":
    main()
