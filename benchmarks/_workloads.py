"""What both sides of ``compare.py`` share: the workloads' shape, statistics, the floor.

Standard library only: this module is imported by ``sagaledger_workloads.py``
(our interpreter) *and* by ``dbos_workloads.py`` (the DBOS virtualenv, where
sagaledger is not installed). Both scripts live beside it, so Python puts this
directory on ``sys.path`` when it runs them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: The W1/W2 saga: four steps that do nothing but return a ~100-byte result.
STEPS = ("reserve_inventory", "charge_payment", "create_erp_order", "send_email")
#: The workloads a workload script can run, by the name ``compare.py`` passes.
WORKLOADS = ("latency", "throughput", "compensation", "recovery")
#: Where a workload script keeps its runs: sagaledger embedded on SQLite or
#: Postgres, or in production mode (Postgres + Redis); DBOS takes the first two.
BACKENDS = ("sqlite", "postgres", "redis")
#: W1 latency and W2: sequential runs, after this many untimed warm-up runs.
WARMUP_RUNS = 20


def step_result(order_id: str, step_name: str) -> dict[str, Any]:
    """The ~100-byte dict every no-op step returns (as JSON, about 100 bytes)."""
    return {"ref": f"{order_id}:{step_name}", "status": "ok", "amount_cents": 1999, "cur": "EUR"}


class StepFailed(Exception):
    """The permanent failure of W2's last step (DBOS side; sagaledger uses PermanentError)."""


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def sequential(
    run_one: Callable[[int], None], runs: int, cpu_time: Callable[[], float] = time.process_time
) -> dict[str, float]:
    """Time ``runs`` calls of ``run_one(i)`` one after another, after a warm-up.

    Args:
        run_one: Starts saga number ``i`` and returns once it has finished.
        runs: Timed runs.
        cpu_time: CPU seconds used so far by every process doing the work: this
            process's own (all threads, the worker's as well as the caller's) by
            default; add the worker process's when it runs in another.

    Returns:
        p50/p99 end-to-end latency in ms and the CPU ms per timed run.
    """
    for i in range(WARMUP_RUNS):
        run_one(-1 - i)  # negative ids keep warm-up runs apart from timed ones
    latencies = []
    cpu0 = cpu_time()
    for i in range(runs):
        t0 = time.perf_counter()
        run_one(i)
        latencies.append((time.perf_counter() - t0) * 1000)
    cpu = cpu_time() - cpu0
    return {
        "latency_p50_ms": pct(latencies, 50),
        "latency_p99_ms": pct(latencies, 99),
        "cpu_ms_per_saga": cpu * 1000 / runs,
    }


def batch_figures(runs: int, elapsed_s: float, cpu_s: float) -> dict[str, float]:
    """W1 throughput figures from a batch of ``runs`` sagas."""
    return {
        "sagas_per_s": runs / elapsed_s,
        "batch_s": elapsed_s,
        "batch_cpu_ms_per_saga": cpu_s * 1000 / runs,
    }


def floor_ms(directory: Path, samples: int = 200) -> float:
    """p50 of one committed single-row insert (100 bytes) in SQLite, WAL, synchronous=FULL.

    Plain ``sqlite3`` with no ORM: the physical cost of one durable checkpoint,
    which neither engine can beat.
    """
    con = sqlite3.connect(directory / "floor.db", isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode = WAL")
        con.execute("PRAGMA synchronous = FULL")
        con.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        timings = []
        for _ in range(samples):
            t0 = time.perf_counter()
            con.execute("BEGIN IMMEDIATE")
            con.execute("INSERT INTO t (body) VALUES (?)", ("x" * 100,))
            con.execute("COMMIT")
            timings.append((time.perf_counter() - t0) * 1000)
    finally:
        con.close()
    return pct(timings, 50)


def journal_mode(db_file: Path) -> str:
    """The journal mode a SQLite file was left in (``wal`` persists in the file)."""
    con = sqlite3.connect(db_file)
    try:
        return str(con.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        con.close()


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) another process has used so far.

    Read from ``/proc/PID/stat`` in clock ticks (10 ms on Linux): precise enough
    over the hundreds of sagas of a workload.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Child:
    """A process a workload script starts, whose stdout lines it reads as they come.

    The child's stderr goes to ``log``, so that a failure can be shown.

    Args:
        command: The command line.
        log: File for the child's stderr.
        env: Its environment (this process's by default).
    """

    def __init__(self, command: Sequence[str], log: Path, env: dict[str, str] | None = None):
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
                text=True,
                env=env,
            )
        self.log = log
        self.lines: queue.Queue[str | None] = queue.Queue()  # None: stdout closed
        self.on_line: Callable[[str], None] = self.lines.put
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.on_line(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix: str, timeout: float = 120.0) -> str:
        """The next stdout line, which must start with ``prefix``.

        Raises:
            RuntimeError: the child exited, printed something else, or said nothing in time.
        """
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"no {prefix!r} line after {timeout}s:\n{self.tail()}") from None
        if line is None:
            self.proc.wait()
            raise RuntimeError(f"exited ({self.proc.returncode}) before {prefix!r}:\n{self.tail()}")
        if not line.startswith(prefix):
            raise RuntimeError(f"expected {prefix!r}, got {line!r}:\n{self.tail()}")
        return line

    def check_alive(self) -> None:
        """Raise RuntimeError (with its stderr) if the child has exited."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"child exited ({self.proc.returncode}):\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        """The end of the child's stderr."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL, as in a crash, and reap it."""
        self.proc.kill()
        self.proc.wait()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (a graceful stop), wait, SIGKILL if it will not go; return its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reader.join(5)
        return self.proc.returncode


def child_env() -> dict[str, str]:
    """This environment without ``SAGALEDGER_*``: a worker takes its settings from its options."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SAGALEDGER_")}


def say_ready(settings: dict[str, float] | None = None) -> None:
    """Tell the parent on stdout that this child is up: ``ready WALL_TIME [SETTINGS_JSON]``."""
    extra = f" {json.dumps(settings)}" if settings else ""
    sys.stdout.write(f"ready {time.time()}{extra}\n")
    sys.stdout.flush()


def wait_for_signal() -> None:
    """Block until SIGTERM or SIGINT."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass


def parse_args(description: str) -> argparse.Namespace:
    """The command line every workload script takes (``compare.py`` builds it)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("workload", choices=WORKLOADS)
    parser.add_argument("--runs", type=int, required=True, help="timed sagas")
    parser.add_argument("--threads", type=int, default=4, help="worker threads")
    parser.add_argument("--dir", type=Path, required=True, help="directory for files")
    parser.add_argument("--backend", choices=BACKENDS, default="sqlite")
    parser.add_argument("--db-url", help="postgresql://... of a fresh database (postgres, redis)")
    parser.add_argument("--redis-url", help="redis://... (sagaledger, backend redis)")
    parser.add_argument("--wal", action="store_true", help="DBOS only: put its file in WAL mode")
    parser.add_argument("--kill-at", type=int, help="W3: SIGKILL the worker at this many effects")
    # sagaledger's recovery settings; unset, the Orchestrator's and worker's defaults hold.
    parser.add_argument("--lease", type=float, help="sagaledger: lease seconds")
    parser.add_argument("--dispatch-grace", type=float, help="sagaledger: dispatch grace seconds")
    parser.add_argument(
        "--recovery-interval", type=float, help="sagaledger: recovery pass every N seconds"
    )
    parser.add_argument("--child", choices=("first", "restart"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backend != "sqlite" and not args.db_url:
        parser.error(f"--backend {args.backend} needs --db-url")
    if args.backend == "redis" and not args.redis_url:
        parser.error("--backend redis needs --redis-url")
    return args


def emit(figures: dict[str, Any]) -> None:
    """Print the figures as the one JSON line ``compare.py`` reads from stdout."""
    sys.stdout.write(json.dumps(figures) + "\n")
    sys.stdout.flush()
