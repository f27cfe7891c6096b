"""Durable timers at scale: 10,000 runs wait on a timer, and the worker's memory barely moves.

A worker process runs a dunning saga (first notice, a timer, second notice) on a
SQLite saga log in a temp dir. This process starts the runs with an
``Orchestrator`` on the same log and no dispatcher: the worker finds them by its
recovery pass, sends each first notice and leaves each run waiting in the log
for a common due time, carried in the runs' input. The script prints the
worker's memory (``VmRSS``) idle and with every run waiting, then the seconds
from the due time until every run has completed, and the memory at the end.
DBOS Transact runs the same workload in the same invocation (a workflow that
calls ``DBOS.sleep``, see ``dbos_timers.py``), with 1,000 workflows by default
(each sleeps in a thread of its own), and the table gives the ratio of the
figures that do not grow with the run count. See benchmarks/README.md,
"Durable timers".

    python benchmarks/timers.py [--runs 10000] [--dbos-runs 1000] [--no-dbos] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from _workloads import Child, child_env, pct, process_cpu_s, say_ready, wait_for_signal
from compare import DBOS_VENV, ensure_dbos_venv, python_of
from pydantic import BaseModel
from sqlalchemy import func, select

from sagaledger import (
    EmbeddedWorker,
    EventType,
    Orchestrator,
    Registry,
    RetrySafety,
    Saga,
    SagaLog,
    StepContext,
    step,
    timer,
)
from sagaledger._runner import open_store
from sagaledger.store._engine import read  # no write lock: the census polls the log
from sagaledger.store._schema import events, runs  # the census reads the tables directly

HERE = Path(__file__).resolve().parent
#: The timer step's name.
TIMER = "grace_period"
#: Runs whose timer is already due when they reach it, before the batch: they
#: take every code path once, so that "idle" memory is a warmed-up worker's.
WARMUP_RUNS = 200
#: Runs one recovery pass takes (``Orchestrator.recover``'s limit).
RECOVERY_LIMIT = 500
#: Seconds left for memory to settle before each sample (a pass, a GC).
SETTLE_S = 2.0
#: The due time: the time the batch is expected to take to be waiting, times
#: DUE_MARGIN, plus DUE_LEAD_S, after its first start.
DUE_MARGIN = 1.3
DUE_LEAD_S = 5.0
#: Seconds between two polls of the log for the batch's progress.
POLL_S = 0.25
#: A phase that takes longer than this is stuck, not slow.
PHASE_TIMEOUT_S = 600.0


class Notice(BaseModel):
    n: int
    due_at: datetime


@step(retry_safety=RetrySafety.NATURAL, no_compensation="a notice cannot be unsent")
def first_notice(ctx: StepContext[Notice]) -> dict[str, Any]:
    return {"sent": "first", "n": ctx.input.n}


@step(retry_safety=RetrySafety.NATURAL, no_compensation="a notice cannot be unsent")
def second_notice(ctx: StepContext[Notice]) -> dict[str, Any]:
    return {"sent": "second", "n": ctx.input.n}


DUNNING = Saga(
    "bench_dunning",
    1,
    Notice,
    [first_notice, timer(TIMER, until=lambda ctx: ctx.input.due_at), second_notice],
)
REGISTRY = Registry([DUNNING])


def run_worker(args: argparse.Namespace) -> None:
    """The worker process: ``sagaledger worker``'s runtime with a settable ``max_message_delay``.

    ``sagaledger worker`` is an ``EmbeddedWorker`` (a ``SagaWorker`` on the
    in-memory broker) on ``open_store``'s log when no broker is given; this is
    the same, with ``max_message_delay`` set so that the seconds-long waits of
    the benchmark are kept as the days-long waits of production are: in the log
    alone, with no delayed message.
    """
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    log = open_store(args.worker, args.threads)
    delay = timedelta(seconds=args.max_message_delay)
    orchestrator = Orchestrator(log, REGISTRY, max_message_delay=delay)
    interval = timedelta(seconds=args.recovery_interval)
    with EmbeddedWorker(orchestrator, threads=args.threads, recovery_interval=interval):
        say_ready()
        wait_for_signal()
    log.close()


# -- the two sides ---------------------------------------------------------------


class Side(Protocol):
    """One engine's worker process and its view of the runs, by batch prefix."""

    name: str
    worker: Child

    def start(self, prefix: str, count: int, due: datetime) -> float:
        """Start ``count`` runs due at ``due``; return the seconds it took."""

    def census(self, prefix: str) -> dict[str, int]:
        """Runs ``waiting`` on the timer and ``completed`` (sagaledger: and what they hold)."""

    def completions(self, prefix: str) -> list[float]:
        """Each completed run's completion time (epoch seconds), from the log."""

    def busy_s(self, prefix: str) -> float:
        """From the worker's first write for these runs to the last completion."""

    def pickup_s(self, count: int) -> float:
        """The least time the worker needs to find ``count`` runs started at once."""

    def notes(self, prefix: str) -> dict[str, int]:
        """Counts that say a figure went wrong (each should be 0), after the batch."""

    def close(self) -> None: ...


class Sagaledger:
    name = "sagaledger"

    def __init__(self, args: argparse.Namespace, directory: Path):
        self.url = f"sqlite:///{directory / 'sagaledger.db'}"
        self.log = SagaLog.open(self.url)
        self.orchestrator = Orchestrator(self.log, REGISTRY)  # no dispatcher: no message
        self.interval = args.recovery_interval
        command = [sys.executable, __file__, "--worker", self.url, "--threads", str(args.threads)]
        command += ["--recovery-interval", str(args.recovery_interval)]
        command += ["--max-message-delay", str(args.max_message_delay)]
        self.worker = Child(command, directory / "sagaledger-worker.log", env=child_env())
        self.worker.expect("ready")

    def start(self, prefix: str, count: int, due: datetime) -> float:
        t0 = time.perf_counter()
        for i in range(count):
            self.orchestrator.start(DUNNING, Notice(n=i, due_at=due), key=f"{prefix}{i}")
            if (i + 1) % 2000 == 0:
                say(f"  sagaledger: {i + 1} started")
        return time.perf_counter() - t0

    def census(self, prefix: str) -> dict[str, int]:
        mine = runs.c.business_key.like(f"{prefix}%")
        at_timer = mine & (runs.c.step == TIMER) & (runs.c.status == "running")
        waiting = at_timer & runs.c.lease_owner.is_(None)
        query = select(
            func.count().filter(waiting),
            func.count().filter(at_timer & runs.c.lease_owner.is_not(None)),
            func.count().filter(waiting & runs.c.dispatched_at.is_not(None)),
            func.count().filter(mine & (runs.c.status == "completed")),
        )
        with read(self.log.engine) as conn:
            row = conn.execute(query).one()
        return dict(
            zip(("waiting", "lease_held", "message_pending", "completed"), row, strict=True)
        )

    def _events(self, prefix: str, *columns: Any) -> Any:
        return (
            select(*columns)
            .join(runs, runs.c.id == events.c.run_id)
            .where(runs.c.business_key.like(f"{prefix}%"))
        )

    def completions(self, prefix: str) -> list[float]:
        query = self._events(prefix, events.c.created_at).where(
            events.c.type == EventType.RUN_COMPLETED.value
        )
        with read(self.log.engine) as conn:
            return [at.timestamp() for (at,) in conn.execute(query)]

    def busy_s(self, prefix: str) -> float:
        worker_events = self._events(prefix, func.min(events.c.created_at)).where(
            events.c.type != EventType.RUN_STARTED.value
        )
        with read(self.log.engine) as conn:
            first = conn.execute(worker_events).scalar_one()
        return max(self.completions(prefix)) - first.timestamp()

    def pickup_s(self, count: int) -> float:
        # One recovery pass takes up to RECOVERY_LIMIT runs, one pass per interval.
        return math.ceil(count / RECOVERY_LIMIT) * self.interval

    def notes(self, prefix: str) -> dict[str, int]:
        # A drive that fails leaves its lease to expire: the run goes on a lease later.
        abandoned = self._events(prefix, func.count(events.c.run_id.distinct())).where(
            events.c.type == EventType.ATTEMPT_ABANDONED.value
        )
        with read(self.log.engine) as conn:
            return {"runs re-driven after a lease expired": conn.execute(abandoned).scalar_one()}

    def close(self) -> None:
        self.worker.stop()
        self.log.close()


class Dbos:
    name = "DBOS"

    def __init__(self, args: argparse.Namespace, directory: Path):
        self.python = str(python_of(DBOS_VENV))
        self.script = str(HERE / "dbos_timers.py")
        self.db = directory / "dbos.sqlite"
        self.directory = directory
        # DBOS leaves SQLite's rollback journal; WAL, as sagaledger's log and as compare.py does.
        sqlite3.connect(self.db).execute("PRAGMA journal_mode = WAL").close()
        command = [self.python, self.script, "worker", "--db", str(self.db)]
        self.worker = Child(command, directory / "dbos-worker.log")
        self.worker.expect("ready")

    def start(self, prefix: str, count: int, due: datetime) -> float:
        command = [self.python, self.script, "enqueue", "--db", str(self.db)]
        command += ["--prefix", prefix, "--runs", str(count), "--due", str(due.timestamp())]
        with open(self.directory / "dbos-enqueue.log", "ab") as err:
            done = subprocess.run(command, stdout=subprocess.PIPE, stderr=err, check=True)
        return float(json.loads(done.stdout)["start_s"])

    def _query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        con = sqlite3.connect(self.db, timeout=30)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def census(self, prefix: str) -> dict[str, int]:
        # A workflow waits once its sleep is recorded and it has not finished.
        (waiting, completed), *_ = self._query(
            "SELECT count(*) FILTER (WHERE s.status = 'PENDING' AND o.workflow_uuid IS NOT NULL),"
            " count(*) FILTER (WHERE s.status = 'SUCCESS')"
            " FROM workflow_status s LEFT JOIN operation_outputs o"
            " ON o.workflow_uuid = s.workflow_uuid AND o.function_name = 'DBOS.sleep'"
            " WHERE s.workflow_uuid LIKE ?",
            f"{prefix}%",
        )
        return {"waiting": waiting, "completed": completed}

    def completions(self, prefix: str) -> list[float]:
        rows = self._query(
            "SELECT updated_at FROM workflow_status"
            " WHERE status = 'SUCCESS' AND workflow_uuid LIKE ?",
            f"{prefix}%",
        )
        return [ms / 1000 for (ms,) in rows]

    def busy_s(self, prefix: str) -> float:
        ((first,),) = self._query(
            "SELECT min(started_at_epoch_ms) FROM workflow_status WHERE workflow_uuid LIKE ?",
            f"{prefix}%",
        )
        return max(self.completions(prefix)) - first / 1000

    def pickup_s(self, count: int) -> float:
        return 1.0  # the queue's polling interval: one poll dequeues every workflow

    def notes(self, prefix: str) -> dict[str, int]:
        ((errors,),) = self._query(
            "SELECT count(*) FROM workflow_status"
            " WHERE status <> 'SUCCESS' AND workflow_uuid LIKE ?",
            f"{prefix}%",
        )
        return {"workflows not successful": errors}

    def close(self) -> None:
        self.worker.stop()


# -- measuring ---------------------------------------------------------------------


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def proc_status(pid: int) -> dict[str, float]:
    """RSS and peak RSS (MiB) and threads of a process, from ``/proc/PID/status``."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return {
        "rss_mib": int(fields["VmRSS"].split()[0]) / 1024,
        "hwm_mib": int(fields["VmHWM"].split()[0]) / 1024,
        "threads": int(fields["Threads"]),
    }


def wait_for(what: str, done: Callable[[], bool], side: Side, deadline: float) -> None:
    """Poll ``done`` until it holds; fail past ``deadline`` (epoch s).

    Polls are a quarter of a second apart: each counts the batch's rows, and
    a tighter loop would take CPU from the worker on a 2-core machine. No
    figure depends on the poll: the times are read from the log afterwards.
    """
    while not done():
        side.worker.check_alive()
        if time.time() > deadline:
            raise RuntimeError(f"{side.name}: {what} not reached in time:\n{side.worker.tail()}")
        time.sleep(POLL_S)


def measure(side: Side, runs_n: int) -> dict[str, Any]:
    """Warm up, start the batch, sample memory while it waits, time its resumption."""
    pid = side.worker.pid
    figures: dict[str, Any] = {"runs": runs_n, "ready": proc_status(pid)}

    say(f"{side.name}: warm-up, {WARMUP_RUNS} runs whose timer is already due")
    warm_s = side.start("w", WARMUP_RUNS, datetime.now(UTC) - timedelta(seconds=1))
    warm_done = lambda: side.census("w")["completed"] == WARMUP_RUNS  # noqa: E731
    wait_for("warm-up complete", warm_done, side, time.time() + PHASE_TIMEOUT_S)
    time.sleep(SETTLE_S)
    figures["idle"] = proc_status(pid)

    # The due time: after the batch is expected to be waiting, with a margin,
    # from the warm-up's start and drive rates and the worker's pick-up.
    expected = max(
        runs_n * warm_s / WARMUP_RUNS,
        runs_n * side.busy_s("w") / WARMUP_RUNS,
        side.pickup_s(runs_n),
    )
    t0 = time.time()
    due = datetime.fromtimestamp(t0 + expected * DUE_MARGIN + DUE_LEAD_S, UTC)
    say(f"{side.name}: starting {runs_n} runs due in {due.timestamp() - t0:.1f} s")
    cpu0 = process_cpu_s(pid)
    figures["start_s"] = side.start("n", runs_n, due)
    all_waiting = lambda: side.census("n")["waiting"] == runs_n  # noqa: E731
    wait_for("every run waiting before the due time", all_waiting, side, due.timestamp() - SETTLE_S)
    figures["all_waiting_s"] = time.time() - t0
    say(f"{side.name}: all {runs_n} waiting after {figures['all_waiting_s']:.1f} s")
    time.sleep(SETTLE_S)
    figures["waiting"] = proc_status(pid)
    figures["census"] = side.census("n")
    if time.time() >= due.timestamp():
        raise RuntimeError(f"{side.name}: the memory sample came after the due time")
    mib = figures["waiting"]["rss_mib"] - figures["idle"]["rss_mib"]
    figures["growth_mib"], figures["growth_kib_per_run"] = mib, mib * 1024 / runs_n

    say(f"{side.name}: waiting for the due time ({due.timestamp() - time.time():.1f} s)")
    time.sleep(max(0.0, due.timestamp() - time.time()))
    all_done = lambda: side.census("n")["completed"] == runs_n  # noqa: E731
    wait_for("every run completed", all_done, side, due.timestamp() + PHASE_TIMEOUT_S)
    figures["worker_cpu_s"] = process_cpu_s(pid) - cpu0
    after_due = [at - due.timestamp() for at in side.completions("n")]
    figures["resume_all_s"] = max(after_due)
    figures["resume_p50_s"], figures["resume_p99_s"] = pct(after_due, 50), pct(after_due, 99)
    figures["notes"] = side.notes("n")
    say(f"{side.name}: all {runs_n} completed {figures['resume_all_s']:.1f} s after the due time")
    time.sleep(SETTLE_S)
    figures["end"] = proc_status(pid)
    return figures


# -- reporting ---------------------------------------------------------------------

#: (label, the figure, its format, whether it may be compared between different
#: run counts: a per-run figure, or one taken before the batch)
ROWS: list[tuple[str, Callable[[dict[str, Any]], float], str, bool]] = [
    ("runs waiting on the timer", lambda f: f["census"]["waiting"], "{:,.0f}", False),
    ("worker RSS when ready (MiB)", lambda f: f["ready"]["rss_mib"], "{:.1f}", True),
    ("worker RSS idle, after warm-up (MiB)", lambda f: f["idle"]["rss_mib"], "{:.1f}", True),
    ("worker RSS, all runs waiting (MiB)", lambda f: f["waiting"]["rss_mib"], "{:.1f}", False),
    ("  growth while waiting (MiB)", lambda f: f["growth_mib"], "{:.1f}", False),
    ("  growth per waiting run (KiB)", lambda f: f["growth_kib_per_run"], "{:.2f}", True),
    ("worker threads idle", lambda f: f["idle"]["threads"], "{:.0f}", True),
    ("worker threads, all runs waiting", lambda f: f["waiting"]["threads"], "{:.0f}", False),
    ("starting the runs (s)", lambda f: f["start_s"], "{:.1f}", False),
    ("  per run (ms)", lambda f: f["start_s"] * 1000 / f["runs"], "{:.2f}", True),
    ("first start -> all waiting (s)", lambda f: f["all_waiting_s"], "{:.1f}", False),
    ("due time -> all runs completed (s)", lambda f: f["resume_all_s"], "{:.2f}", False),
    ("  a run completed after due, p50 (s)", lambda f: f["resume_p50_s"], "{:.2f}", False),
    ("  a run completed after due, p99 (s)", lambda f: f["resume_p99_s"], "{:.2f}", False),
    ("  runs completed per second", lambda f: f["runs"] / f["resume_all_s"], "{:.0f}", True),
    ("worker RSS at the end (MiB)", lambda f: f["end"]["rss_mib"], "{:.1f}", False),
    ("worker peak RSS, VmHWM (MiB)", lambda f: f["end"]["hwm_mib"], "{:.1f}", False),
    ("worker CPU, batch start to end (s)", lambda f: f["worker_cpu_s"], "{:.1f}", False),
    ("  per run (ms)", lambda f: f["worker_cpu_s"] * 1000 / f["runs"], "{:.2f}", True),
]


def table(context: dict[str, Any], sides: dict[str, dict[str, Any]]) -> str:
    """The figures side by side, with sagaledger / DBOS where the two compare."""
    names = list(sides)
    lines = ["durable timers: " + ", ".join(f"{k} {v}" for k, v in context.items())]
    width = max(len(label) for label, *_ in ROWS)
    ratio = ["sagaledger/DBOS"] if len(names) == 2 else []
    same_runs = len({f["runs"] for f in sides.values()}) == 1
    lines.append(" " * (width + 2) + "".join(f"{n:>16}" for n in [*names, *ratio]))
    for label, value, fmt, per_run in ROWS:
        values = [value(sides[n]) for n in names]
        cells = [f"{fmt.format(v):>16}" for v in values]
        if ratio:
            compares = (same_runs or per_run) and values[1]
            cells.append(f"{values[0] / values[1]:>16.2f}" if compares else f"{'-':>16}")
        lines.append(f"  {label:<{width}}" + "".join(cells))
    if "sagaledger" in sides:
        census = sides["sagaledger"]["census"]
        lines.append(
            f"sagaledger's waiting runs: {census['lease_held']} holding a lease, "
            f"{census['message_pending']} with a message pending"
        )
    for name, figures in sides.items():
        lines += [f"{name}: {label}: {n}" for label, n in figures["notes"].items()]
    if ratio and not same_runs:
        lines.append("ratios only for figures that do not grow with the number of runs")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000, help="runs that wait on the timer")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument(
        "--dbos-runs", type=int, default=1_000, help="workflows that DBOS runs (a thread each)"
    )
    parser.add_argument("--no-dbos", action="store_true", help="sagaledger alone")
    parser.add_argument("--threads", type=int, default=4, help="sagaledger worker threads")
    parser.add_argument(
        "--recovery-interval", type=float, default=2.0, help="sagaledger recovery pass, seconds"
    )
    parser.add_argument(
        "--max-message-delay", type=float, default=0.0, help="sagaledger: delayed messages up to"
    )
    parser.add_argument("--worker", metavar="STORE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return
    logging.basicConfig(level=logging.WARNING)
    context: dict[str, Any] = {
        "threads": args.threads,
        "recovery_interval_s": args.recovery_interval,
        "max_message_delay_s": args.max_message_delay,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "cpus": os.cpu_count(),
    }
    engines: list[type[Sagaledger] | type[Dbos]] = [Sagaledger]
    if not args.no_dbos:
        context["dbos"] = ensure_dbos_venv()
        engines.append(Dbos)
    sides: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="sagaledger-timers-") as tmp:
        for engine in engines:
            directory = Path(tmp) / engine.name
            directory.mkdir()
            side = engine(args, directory)
            try:
                runs_n = args.dbos_runs if engine is Dbos else args.runs
                sides[side.name] = measure(side, runs_n)
            finally:
                side.close()
    context["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        print(json.dumps({"context": context, **sides}, indent=2))
    else:
        print(table(context, sides))


if __name__ == "__main__":
    main()
