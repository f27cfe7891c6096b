"""The sagas sagaledger runs in ``compare.py``, and how its processes see runs end.

Imported by ``sagaledger_workloads.py`` (which starts runs) and by
``sagaledger_worker.py`` (the worker process of production mode and of W3):
both must register the same definitions.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from _recovery import W3_STEP_S, Ledger
from _workloads import STEPS, step_result
from pydantic import BaseModel

from sagaledger import (
    EventType,
    Hooks,
    PermanentError,
    Registry,
    RetrySafety,
    Saga,
    SagaLog,
    StepContext,
    step,
)

#: The events that end a run: W1 and W3 complete, W2 is compensated.
FINAL = (EventType.RUN_COMPLETED, EventType.RUN_COMPENSATED)


class Order(BaseModel):
    order_id: str


class LedgerOrder(BaseModel):
    """W3's input: the order, and the ledger file its steps record effects in."""

    order_id: str
    ledger: str


def _noop_step(name: str, fail: bool = False) -> Any:
    """A step that returns ~100 bytes, or (``fail``) fails permanently; undone by a no-op."""

    def action(ctx: StepContext[Order]) -> dict[str, Any]:
        if fail:
            raise PermanentError(f"{name} refused")
        return step_result(ctx.input.order_id, name)

    return step(name, compensate=lambda ctx: None, retry_safety=RetrySafety.IDEMPOTENCY_KEY)(action)


_ledgers: dict[str, Ledger] = {}
_ledgers_lock = threading.Lock()


def ledger_at(path: str) -> Ledger:
    """The ledger in ``path``, opened once per process."""
    with _ledgers_lock:
        if path not in _ledgers:
            _ledgers[path] = Ledger(path)
        return _ledgers[path]


def _ledger_step(name: str) -> Any:
    """W3's step: a 10 ms remote call whose effect the ledger applies once per key."""

    def action(ctx: StepContext[LedgerOrder]) -> dict[str, Any]:
        time.sleep(W3_STEP_S)
        ledger_at(ctx.input.ledger).record(ctx.idempotency_key, ctx.input.order_id, name)
        return step_result(ctx.input.order_id, name)

    return step(name, compensate=lambda ctx: None, retry_safety=RetrySafety.IDEMPOTENCY_KEY)(action)


ORDER = Saga("bench_order", 1, Order, [_noop_step(name) for name in STEPS])
FAILING_ORDER = Saga(
    "bench_order_failing",
    1,
    Order,
    [_noop_step(name, fail=name == STEPS[-1]) for name in STEPS],
)
RECOVERY_ORDER = Saga("bench_recovery", 1, LedgerOrder, [_ledger_step(name) for name in STEPS])
REGISTRY = Registry([ORDER, FAILING_ORDER, RECOVERY_ORDER])


class Finished(Hooks):
    """Signals each run's end, right after the commit that records it.

    In embedded mode it is a hook of the worker in this process; in production
    mode the worker process's :class:`Report` lines call :meth:`mark`. Waiting on
    it rather than polling the log keeps any polling interval out of the figures.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: dict[str, threading.Event] = defaultdict(threading.Event)
        self.count, self.target, self.all_done = 0, 0, threading.Event()
        self.last_at = 0.0

    def after_checkpoint(self, run_id: str, events: Sequence[Any]) -> None:
        if any(e.type in FINAL for e in events):
            self.mark(run_id)

    def mark(self, run_id: str) -> None:
        """Run ``run_id`` has ended."""
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


class Report(Hooks):
    """In a worker process: prints ``done RUN_ID`` on stdout right after a run's final commit."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def after_checkpoint(self, run_id: str, events: Sequence[Any]) -> None:
        if any(e.type in FINAL for e in events):
            with self.lock:
                sys.stdout.write(f"done {run_id}\n")
                sys.stdout.flush()


def store_url(args: argparse.Namespace) -> str:
    """The saga log's URL: a fresh SQLite file in ``--dir``, or the fresh ``--db-url``."""
    if args.backend == "sqlite":
        return f"sqlite:///{Path(args.dir) / 'sagaledger.db'}"
    return str(args.db_url)


def open_log(url: str, threads: int) -> SagaLog:
    """Open (and migrate) the log; on Postgres, a pool with a connection per thread and spare."""
    if url.startswith("sqlite"):
        return SagaLog.open(url)
    return SagaLog.open(url, upgrade=True, pool_size=threads + 3, max_overflow=2)


def recovery_options(args: argparse.Namespace) -> dict[str, Any]:
    """The Orchestrator options given on the command line (unset ones keep their defaults)."""
    given = {"lease": args.lease, "dispatch_grace": args.dispatch_grace}
    return {name: timedelta(seconds=s) for name, s in given.items() if s is not None}
