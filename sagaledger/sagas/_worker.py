"""A worker process's runtime: the drive actor and its worker threads on any Dramatiq broker."""

from __future__ import annotations

import time
from datetime import timedelta
from types import TracebackType
from typing import Self

import dramatiq

from sagaledger.sagas._actors import QUEUE, Maintenance, MaintenanceMiddleware, declare_actors
from sagaledger.sagas._orchestrator import Orchestrator
from sagaledger.store import RunRecord

#: How long an idle consumer sleeps between polls (ms); it bounds one message hop.
WORKER_TIMEOUT_MS = 100


class SagaWorker:
    """Drives runs in this process, taking work from a Dramatiq broker.

    Any number of these, in any number of processes and machines, may share one
    broker and one saga log: the broker only carries "drive this run" hints,
    leases in the log make sure each run is driven by one worker at a time, and
    the recovery pass re-drives whatever a lost message or a dead worker left.

    Args:
        orchestrator: The orchestrator to run; its dispatches go to ``broker``.
        broker: A broker with no sagaledger actors declared yet (see
            :func:`~sagaledger.sagas.build_broker`).
        threads: Worker threads (runs driven at once).
        recovery_interval: How often the recovery pass looks for due runs.
        queue: Prefix of the queue names (one queue per saga version), so that
            several applications can share one Redis.
    """

    def __init__(
        self,
        orchestrator: Orchestrator,
        broker: dramatiq.Broker,
        *,
        threads: int = 4,
        recovery_interval: timedelta = timedelta(seconds=2),
        queue: str = QUEUE,
    ):
        self.orchestrator = orchestrator
        self.broker = broker
        self.maintenance = Maintenance(orchestrator, recovery_interval)
        # Middleware first: Dramatiq validates actor options against it at declaration.
        self.broker.add_middleware(MaintenanceMiddleware(self.maintenance))
        self.actor = declare_actors(self.broker, orchestrator, queue)
        # Built after the declaration and without queues=: it consumes every declared queue.
        self.worker = dramatiq.Worker(
            self.broker, worker_threads=threads, worker_timeout=WORKER_TIMEOUT_MS
        )

    def start(self) -> Self:
        """Start the worker threads and the maintenance thread."""
        self.worker.start()
        return self

    def stop(self, timeout_ms: int = 30_000) -> None:
        """Finish in-flight work and stop.

        Messages fetched but not started go back to the broker; either way the
        log still has every run they named.
        """
        self.worker.stop(timeout=timeout_ms)
        self.orchestrator.set_dispatcher(None)
        self.broker.close()

    def wait(self, run_id: str, timeout: float = 30.0, poll: float = 0.02) -> RunRecord:
        """Block until ``run_id`` stops being active (or ``timeout`` seconds pass).

        Returns:
            The run as the log has it then.
        """
        deadline = time.monotonic() + timeout
        while True:
            run = self.orchestrator.log.get_run(run_id)
            if not run.status.active or time.monotonic() > deadline:
                return run
            time.sleep(poll)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
