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
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: The W1/W2 saga: four steps that do nothing but return a ~100-byte result.
STEPS = ("reserve_inventory", "charge_payment", "create_erp_order", "send_email")
#: The workloads a workload script can run, by the name ``compare.py`` passes.
WORKLOADS = ("latency", "throughput", "compensation")
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


def sequential(run_one: Callable[[int], None], runs: int) -> dict[str, float]:
    """Time ``runs`` calls of ``run_one(i)`` one after another, after a warm-up.

    Args:
        run_one: Starts saga number ``i`` and returns once it has finished.
        runs: Timed runs.

    Returns:
        p50/p99 end-to-end latency in ms and the process CPU ms per timed run
        (all threads: the worker's as well as the caller's).
    """
    for i in range(WARMUP_RUNS):
        run_one(-1 - i)  # negative ids keep warm-up runs apart from timed ones
    latencies = []
    cpu0 = time.process_time()
    for i in range(runs):
        t0 = time.perf_counter()
        run_one(i)
        latencies.append((time.perf_counter() - t0) * 1000)
    cpu = time.process_time() - cpu0
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


def parse_args(description: str) -> argparse.Namespace:
    """The command line every workload script takes (``compare.py`` builds it)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("workload", choices=WORKLOADS)
    parser.add_argument("--runs", type=int, required=True, help="timed sagas")
    parser.add_argument("--threads", type=int, default=4, help="worker threads")
    parser.add_argument("--dir", type=Path, required=True, help="directory for the database")
    parser.add_argument("--wal", action="store_true", help="DBOS only: put its file in WAL mode")
    return parser.parse_args()


def emit(figures: dict[str, Any]) -> None:
    """Print the figures as the one JSON line ``compare.py`` reads from stdout."""
    sys.stdout.write(json.dumps(figures) + "\n")
    sys.stdout.flush()
