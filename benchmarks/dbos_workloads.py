"""The DBOS Transact side of ``compare.py``: one workload on a SQLite or Postgres system database.

Runs in ``benchmarks/.venv-dbos`` (DBOS is not a dependency of sagaledger), in a
fresh process per workload, and prints its figures as one JSON line on stdout:

    benchmarks/.venv-dbos/bin/python benchmarks/dbos_workloads.py latency --runs 200 --dir /tmp/x
    benchmarks/.venv-dbos/bin/python benchmarks/dbos_workloads.py latency --runs 100 \\
        --dir /tmp/x --backend postgres --db-url postgresql://...

The saga is written the way DBOS documents it: a ``@DBOS.workflow()`` calling
one ``@DBOS.step()`` per step; W2's workflow catches the failing step's
exception and calls the compensation steps in reverse. Runs are started with
``DBOS.start_workflow`` (DBOS's executor threads, like our worker threads) and
awaited through their handles, which wait on an in-process future: no polling.
W3 (``recovery``) runs DBOS in a child process (this script with ``--child``),
SIGKILLs it, and launches a new one, which recovers the pending workflows.
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from _recovery import W3_RUNS, W3_STEP_S, Ledger, counter, measure_recovery
from _workloads import (
    STEPS,
    Child,
    StepFailed,
    batch_figures,
    emit,
    journal_mode,
    parse_args,
    say_ready,
    sequential,
    step_result,
    wait_for_signal,
)
from dbos import DBOS, DBOSConfig, SetWorkflowID  # type: ignore[import-not-found]

F = TypeVar("F", bound=Callable[..., Any])


def _step(name: str) -> Callable[[F], F]:
    """``@DBOS.step(name=...)``, typed (DBOS is not installed where mypy runs)."""
    return cast(Callable[[F], F], DBOS.step(name=name))


def _workflow(name: str) -> Callable[[F], F]:
    """``@DBOS.workflow(name=...)``, typed."""
    return cast(Callable[[F], F], DBOS.workflow(name=name))


def _noop_step(name: str, fail: bool = False) -> Callable[[str], dict[str, Any]]:
    """A DBOS step named ``name`` returning ~100 bytes, or (``fail``) raising StepFailed.

    DBOS steps do not retry unless asked (``retries_allowed=False``), so the
    failure is permanent, as in sagaledger's W2.
    """

    def action(order_id: str) -> dict[str, Any]:
        if fail:
            raise StepFailed(f"{name} refused")
        return step_result(order_id, name)

    return _step(name)(action)


def _noop_compensation(name: str) -> Callable[[str], None]:
    """The compensation step of ``name``: does nothing, but is checkpointed like any step."""

    def undo(order_id: str) -> None:
        return None

    return _step(f"undo_{name}")(undo)


#: W3: opened once the first worker has started all 500 workflows. DBOS runs a
#: workflow as soon as it is started, and starting 500 takes longer than running
#: half of them: without the gate the crash would land after the last start,
#: with nearly every effect done. (sagaledger's worker starts its runs before
#: its worker threads, to the same end.)
_GATE = threading.Event()


def _ledger_step(name: str) -> Callable[[str, str], dict[str, Any]]:
    """W3's step: a 10 ms remote call whose effect the ledger applies once per key.

    The key is the workflow id and the step name: stable across a recovery.
    """

    def action(order_id: str, ledger: str) -> dict[str, Any]:
        _GATE.wait()
        time.sleep(W3_STEP_S)
        _ledger(ledger).record(f"{DBOS.workflow_id}:{name}", order_id, name)
        return step_result(order_id, name)

    return _step(f"w3_{name}")(action)


_ledgers: dict[str, Ledger] = {}


def _ledger(path: str) -> Ledger:
    if path not in _ledgers:  # a race only opens a second handle on the same file
        _ledgers[path] = Ledger(path)
    return _ledgers[path]


FORWARD = [_noop_step(name) for name in STEPS]
FAILING_FORWARD = [*FORWARD[:-1], _noop_step(f"{STEPS[-1]}_failing", fail=True)]
UNDO = [_noop_compensation(name) for name in STEPS]
LEDGER_STEPS = [_ledger_step(name) for name in STEPS]


@_workflow("bench_order")
def order_saga(order_id: str) -> list[dict[str, Any]]:
    """W1: the four steps, one after another."""
    return [action(order_id) for action in FORWARD]


@_workflow("bench_order_failing")
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


@_workflow("bench_recovery")
def recovery_saga(order_id: str, ledger: str) -> list[dict[str, Any]]:
    """W3: four steps that each call the ledger."""
    return [action(order_id, ledger) for action in LEDGER_STEPS]


def system_database(args: argparse.Namespace) -> str:
    """The system database's URL: a SQLite file in ``--dir``, or the fresh ``--db-url``."""
    if args.backend == "sqlite":
        return f"sqlite:///{Path(args.dir) / 'dbos.sqlite'}"
    return str(args.db_url)


def launch(args: argparse.Namespace) -> None:
    """Configure DBOS on the system database and launch it (which recovers pending workflows).

    ``max_executor_threads`` is ``--threads``: DBOS's default is unbounded,
    which would give each of 2,000 started workflows a thread. With ``--wal``
    a new SQLite file is created in WAL mode first (DBOS leaves SQLite's
    default, a rollback journal; the mode persists in the file).
    """
    url = system_database(args)
    if args.backend == "sqlite" and args.wal:
        sqlite3.connect(url.removeprefix("sqlite:///")).execute("PRAGMA journal_mode = WAL")
    config: DBOSConfig = {
        "name": "sagaledger-bench",
        "system_database_url": url,
        "log_level": "WARNING",
        "max_executor_threads": args.threads,
    }
    DBOS(config=config)
    DBOS.launch()


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


def status_table(args: argparse.Namespace) -> str:
    """DBOS's workflow table, schema-qualified on Postgres."""
    return "workflow_status" if args.backend == "sqlite" else "dbos.workflow_status"


def final_statuses(args: argparse.Namespace) -> dict[str, int]:
    """Workflows by status, read from DBOS's system database after the run."""
    url, table = system_database(args), status_table(args)
    counts = {}
    for status in ("SUCCESS", "ERROR", "PENDING", "ENQUEUED", "CANCELLED"):
        query = f"SELECT count(*) FROM {table} WHERE status = '{status}'"
        counts[status] = counter(url, query)()
    return {status: n for status, n in counts.items() if n}


def recovery(args: argparse.Namespace) -> dict[str, Any]:
    """W3: 500 workflows in a DBOS process, SIGKILLed halfway; a new DBOS process recovers them."""
    ledger = Ledger(args.dir / "ledger.db")
    if args.backend == "sqlite" and args.wal:  # the children find the file in WAL mode
        url = system_database(args)
        sqlite3.connect(url.removeprefix("sqlite:///")).execute("PRAGMA journal_mode = WAL")

    def spawn(phase: str) -> Child:
        command = [sys.executable, __file__, "recovery", "--child", phase, "--runs", "0"]
        command += ["--threads", str(args.threads), "--dir", str(args.dir)]
        command += ["--backend", args.backend]
        if args.db_url:
            command += ["--db-url", args.db_url]
        return Child(command, args.dir / f"dbos-{phase}.log")

    finished = counter(
        system_database(args), f"SELECT count(*) FROM {status_table(args)} WHERE status = 'SUCCESS'"
    )
    kill_at = args.kill_at or W3_RUNS * len(STEPS) // 2
    return measure_recovery(spawn, finished, ledger, kill_at)


def recovery_child(args: argparse.Namespace) -> None:
    """A W3 worker: launch DBOS (recovering what is pending), start the runs if first."""
    if args.child == "restart":
        _GATE.set()
    launch(args)
    if args.child == "first":
        ledger = str(args.dir / "ledger.db")
        for i in range(W3_RUNS):
            with SetWorkflowID(f"w3-R{i}"):
                DBOS.start_workflow(recovery_saga, f"R{i}", ledger)
        _GATE.set()
    say_ready()
    wait_for_signal()
    DBOS.destroy()


def main() -> None:
    args = parse_args(__doc__.split("\n\n")[0])
    logging.basicConfig(level=logging.WARNING)
    if args.child:
        recovery_child(args)
        return
    if args.workload == "recovery":
        figures = recovery(args)
    else:
        launch(args)
        if args.workload == "throughput":
            figures = run_batch(args.runs)
        else:
            workflow = order_saga if args.workload == "latency" else failing_order_saga
            figures = run_sequential(workflow, args.runs)
        DBOS.destroy()
    extra = {}
    if args.backend == "sqlite":
        extra["journal_mode"] = journal_mode(args.dir / "dbos.sqlite")
    emit({**figures, "final_statuses": final_statuses(args), **extra})


if __name__ == "__main__":
    main()
