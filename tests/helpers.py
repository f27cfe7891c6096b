"""Small helpers shared by tests."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from sagaledger import SagaLog
from sagaledger.store import RunRecord


def run_row(run_id: str, wake_at: datetime | None, **changes: Any) -> dict[str, Any]:
    """A run as ``SagaLog.create_run`` takes it: saga "s" v1 (fingerprint "f"),
    running, on its first step "a", no lease; ``changes`` override any column.
    """
    return {
        "id": run_id,
        "saga_name": "s",
        "saga_version": 1,
        "fingerprint": "f",
        "business_key": run_id,
        "status": "running",
        "step_index": 0,
        "step": "a",
        "attempt": 1,
        "input": {},
        "lease_owner": None,
        "lease_token": 0,
        "wake_at": wake_at,
        "dispatched_at": None,
        "blocked_reason": None,
        "cancel_requested": None,
        "awaiting": None,
        "last_error": None,
        **changes,
    }


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
