"""Embedded mode: the production actors on Dramatiq's in-memory broker, in this process."""

from __future__ import annotations

from datetime import timedelta

from sagaledger.sagas._brokers import build_broker
from sagaledger.sagas._orchestrator import Orchestrator
from sagaledger.sagas._worker import SagaWorker


class EmbeddedWorker(SagaWorker):
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
        super().__init__(
            orchestrator, build_broker(None), threads=threads, recovery_interval=recovery_interval
        )
