"""Small helpers shared by tests."""

from __future__ import annotations

import time

from sagaledger import SagaLog
from sagaledger.store import RunRecord


def wait_finished(log: SagaLog, run_ids: list[str], timeout: float = 60) -> list[RunRecord]:
    """Wait until none of ``run_ids`` is active; return the runs as they ended."""
    deadline = time.monotonic() + timeout
    while True:
        found = [log.get_run(r) for r in run_ids]
        if not any(run.status.active for run in found):
            return found
        if time.monotonic() > deadline:
            stuck = {run.id: run.status.value for run in found if run.status.active}
            raise AssertionError(f"runs still active after {timeout}s: {stuck}")
        time.sleep(0.05)
