"""The DBOS Transact side of ``timers.py``: workflows that wait in ``DBOS.sleep``.

Runs in ``benchmarks/.venv-dbos`` (DBOS is not a dependency of sagaledger), in
two roles, on a SQLite system database ``--db``:

    .venv-dbos/bin/python benchmarks/dbos_timers.py worker --db FILE
    .venv-dbos/bin/python benchmarks/dbos_timers.py enqueue --db FILE --runs N --due EPOCH

``worker`` is the process whose memory ``timers.py`` measures: it launches DBOS
with a queue and works until SIGTERM. ``enqueue`` is a client in another
process (``DBOSClient.enqueue``), as a service that starts workflows is; the
worker dequeues them on its next queue poll. The workflow is the dunning saga
of ``timers.py`` written the way DBOS documents a durable wait: a step,
``DBOS.sleep`` until the common due time, a step. ``DBOS.sleep`` records its
end time once, then sleeps in the workflow's thread.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from _workloads import emit, say_ready, wait_for_signal
from dbos import DBOS, DBOSClient, DBOSConfig  # type: ignore[import-not-found]

#: The queue the client enqueues on: no limits, polled every second (DBOS's defaults).
QUEUE = "bench_timers"
#: The workflow's registered name, which the client names.
WORKFLOW = "bench_dunning"

F = TypeVar("F", bound=Callable[..., Any])


def _step(name: str) -> Callable[[F], F]:
    """``@DBOS.step(name=...)``, typed (DBOS is not installed where mypy runs)."""
    return cast(Callable[[F], F], DBOS.step(name=name))


@_step("first_notice")
def first_notice(n: int) -> dict[str, Any]:
    return {"sent": "first", "n": n}


@_step("second_notice")
def second_notice(n: int) -> dict[str, Any]:
    return {"sent": "second", "n": n}


@cast(Callable[[F], F], DBOS.workflow(name=WORKFLOW))
def dunning(n: int, due: float) -> dict[str, Any]:
    """First notice, a durable sleep until ``due`` (epoch seconds), second notice.

    The sleep's length is computed once: DBOS records its end time at the first
    execution and a recovered workflow sleeps until that time.
    """
    first_notice(n)
    DBOS.sleep(max(0.0, due - time.time()))
    return second_notice(n)


def worker(args: argparse.Namespace) -> None:
    """Launch DBOS (unbounded executor threads: its default) and work until SIGTERM."""
    config: DBOSConfig = {
        "name": "sagaledger-bench-timers",
        "system_database_url": f"sqlite:///{args.db}",
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    DBOS.register_queue(QUEUE)  # a queue lives in the system database since DBOS 3
    say_ready()
    wait_for_signal()
    DBOS.destroy()


def enqueue(args: argparse.Namespace) -> None:
    """Enqueue ``--runs`` workflows (ids ``PREFIX0``, ``PREFIX1``, ...); print the time it took."""
    client = DBOSClient(system_database_url=f"sqlite:///{args.db}")
    t0 = time.perf_counter()
    for i in range(args.runs):
        options = {
            "queue_name": QUEUE,
            "workflow_name": WORKFLOW,
            "workflow_id": f"{args.prefix}{i}",
        }
        client.enqueue(options, i, args.due)
    elapsed = time.perf_counter() - t0
    client.destroy()
    emit({"start_s": elapsed})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=("worker", "enqueue"))
    parser.add_argument("--db", type=Path, required=True, help="the SQLite system database file")
    parser.add_argument("--prefix", default="n", help="enqueue: workflow id prefix")
    parser.add_argument("--runs", type=int, default=0, help="enqueue: workflows to enqueue")
    parser.add_argument("--due", type=float, default=0.0, help="enqueue: wake-up time, epoch s")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.role == "worker":
        worker(args)
    else:
        enqueue(args)


if __name__ == "__main__":
    main()
