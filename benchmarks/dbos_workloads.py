"""The DBOS Transact side of ``compare.py``: one workload on a SQLite system database.

Runs in ``benchmarks/.venv-dbos`` (DBOS is not a dependency of sagaledger), in a
fresh process per workload, and prints its figures as one JSON line on stdout:

    benchmarks/.venv-dbos/bin/python benchmarks/dbos_workloads.py latency --runs 200 --dir /tmp/x

The saga is written the way DBOS documents it: a ``@DBOS.workflow()`` calling
one ``@DBOS.step()`` per step; W2's workflow catches the failing step's
exception and calls the compensation steps in reverse. Runs are started with
``DBOS.start_workflow`` (DBOS's executor threads, like our worker threads) and
awaited through their handles, which wait on an in-process future: no polling.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _workloads import (
    STEPS,
    StepFailed,
    batch_figures,
    emit,
    journal_mode,
    parse_args,
    sequential,
    step_result,
)
from dbos import DBOS, DBOSConfig


def _noop_step(name: str, fail: bool = False) -> Callable[[str], dict[str, Any]]:
    """A DBOS step named ``name`` returning ~100 bytes, or (``fail``) raising StepFailed.

    DBOS steps do not retry unless asked (``retries_allowed=False``), so the
    failure is permanent, as in sagaledger's W2.
    """

    def action(order_id: str) -> dict[str, Any]:
        if fail:
            raise StepFailed(f"{name} refused")
        return step_result(order_id, name)

    return DBOS.step(name=name)(action)


def _noop_compensation(name: str) -> Callable[[str], None]:
    """The compensation step of ``name``: does nothing, but is checkpointed like any step."""

    def undo(order_id: str) -> None:
        return None

    return DBOS.step(name=f"undo_{name}")(undo)


FORWARD = [_noop_step(name) for name in STEPS]
FAILING_FORWARD = [*FORWARD[:-1], _noop_step(f"{STEPS[-1]}_failing", fail=True)]
UNDO = [_noop_compensation(name) for name in STEPS]


@DBOS.workflow(name="bench_order")
def order_saga(order_id: str) -> list[dict[str, Any]]:
    """W1: the four steps, one after another."""
    return [action(order_id) for action in FORWARD]


@DBOS.workflow(name="bench_order_failing")
def failing_order_saga(order_id: str) -> str:
    """W2: the last step fails; the completed ones are compensated in reverse."""
    done = 0
    try:
        for action in FAILING_FORWARD:
            action(order_id)
            done += 1
    except StepFailed:
        for undo in reversed(UNDO[:done]):
            undo(order_id)
        return "compensated"
    return "completed"


def launch(directory: Path, threads: int, wal: bool) -> Path:
    """Configure DBOS on a fresh SQLite system database and launch it.

    Args:
        directory: Where the database file goes.
        threads: DBOS executor threads (``max_executor_threads``); unbounded by
            default, which would give each of 2,000 started workflows a thread.
        wal: Create the file in WAL mode first (DBOS leaves SQLite's default,
            a rollback journal; the mode persists in the file).

    Returns:
        The database file.
    """
    db_file = directory / "dbos.sqlite"
    if wal:
        sqlite3.connect(db_file).execute("PRAGMA journal_mode = WAL").fetchone()
    config: DBOSConfig = {
        "name": "sagaledger-bench",
        "system_database_url": f"sqlite:///{db_file}",
        "log_level": "WARNING",
        "max_executor_threads": threads,
    }
    DBOS(config=config)
    DBOS.launch()
    return db_file


def run_sequential(workflow: Callable[[str], Any], runs: int) -> dict[str, float]:
    """W1 latency / W2: start a workflow, wait for its result, repeat."""

    def run_one(i: int) -> None:
        DBOS.start_workflow(workflow, f"D{i}").get_result()

    return sequential(run_one, runs)


def run_batch(runs: int) -> dict[str, float]:
    """W1 throughput: start ``runs`` workflows back to back; time to the last result."""
    cpu0, t0 = time.process_time(), time.perf_counter()
    handles = [DBOS.start_workflow(order_saga, f"T{i}") for i in range(runs)]
    for handle in handles:  # they finish roughly in order: the last wait ends at the last one
        handle.get_result()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return batch_figures(runs, elapsed, cpu)


def final_statuses(db_file: Path) -> dict[str, int]:
    """Workflows by status, read from DBOS's system database after the run."""
    con = sqlite3.connect(db_file)
    try:
        rows = con.execute("SELECT status, count(*) FROM workflow_status GROUP BY status")
        return {str(status): count for status, count in rows}
    finally:
        con.close()


def main() -> None:
    args = parse_args(__doc__.split("\n\n")[0])
    logging.basicConfig(level=logging.WARNING)
    db_file = launch(args.dir, args.threads, args.wal)
    if args.workload == "throughput":
        figures = run_batch(args.runs)
    else:
        workflow = order_saga if args.workload == "latency" else failing_order_saga
        figures = run_sequential(workflow, args.runs)
    DBOS.destroy()
    emit(
        {
            **figures,
            "final_statuses": final_statuses(db_file),
            "journal_mode": journal_mode(db_file),
        }
    )


if __name__ == "__main__":
    main()
