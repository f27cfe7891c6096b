"""Embedded mode: the production actors on Dramatiq's in-memory broker, in this process."""

from __future__ import annotations

import time
from datetime import timedelta
from types import TracebackType

from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker

from sagaledger.sagas._actors import Maintenance, MaintenanceMiddleware, declare_actors
from sagaledger.sagas._orchestrator import Orchestrator
from sagaledger.store import RunRecord


class EmbeddedWorker:
    """Runs sagas in this process: no server needed.

    Messages live in memory and die with the process; that is safe because the
    saga log re-drives anything they carried (the recovery pass starts at once).

    Args:
        orchestrator: The orchestrator to run.
        threads: Worker threads (runs driven at once).
        recovery_interval: How often the recovery pass looks for due runs.
    """

    def __init__(
        self,
        orchestrator: Orchestrator,
        *,
        threads: int = 4,
        recovery_interval: timedelta = timedelta(seconds=2),
    ):
        self.orchestrator = orchestrator
        self.broker = StubBroker()
        self.maintenance = Maintenance(orchestrator, recovery_interval)
        self.broker.add_middleware(MaintenanceMiddleware(self.maintenance))
        self.actor = declare_actors(self.broker, orchestrator)
        self.worker = Worker(self.broker, worker_threads=threads, worker_timeout=100)

    def start(self) -> EmbeddedWorker:
        """Start the worker threads and the maintenance thread."""
        self.worker.start()
        return self

    def stop(self, timeout_ms: int = 30_000) -> None:
        """Finish in-flight work and stop (what is queued stays in the log)."""
        self.worker.stop(timeout=timeout_ms)
        self.orchestrator.set_dispatcher(None)
        self.broker.close()

    def wait(self, run_id: str, timeout: float = 30.0, poll: float = 0.02) -> RunRecord:
        """Block until ``run_id`` stops being active (or ``timeout`` seconds pass)."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.orchestrator.log.get_run(run_id)
            if not run.status.active or time.monotonic() > deadline:
                return run
            time.sleep(poll)

    def __enter__(self) -> EmbeddedWorker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
