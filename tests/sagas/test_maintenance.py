"""The worker's maintenance thread: a full recovery pass is followed by another at once."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

from sagaledger.sagas import Maintenance
from sagaledger.sagas._orchestrator import RECOVERY_BATCH


class Backlog:
    """An orchestrator stand-in whose log has ``due`` runs, handed out a batch per pass."""

    def __init__(self, due: int):
        self.due, self.passes = due, 0
        self.lease = timedelta(hours=1)  # no renewal during the test
        self.drained = threading.Event()
        self.leases: Any = self

    def renew(self) -> int:
        return 0

    def recover(self) -> int:
        self.passes += 1
        taken = min(self.due, RECOVERY_BATCH)
        self.due -= taken
        if self.due == 0:
            self.drained.set()
        return taken


def test_a_backlog_of_due_runs_is_taken_in_back_to_back_passes() -> None:
    # Given 1,250 runs due at once (timers firing together) and a long interval
    backlog = Backlog(1250)
    maintenance = Maintenance(backlog, recovery_interval=timedelta(hours=1))  # type: ignore[arg-type]

    # When the thread runs
    maintenance.start()
    drained = backlog.drained.wait(10)
    maintenance.stop()

    # Then three passes took them all, without waiting an interval between full ones
    assert drained, f"still {backlog.due} due after {backlog.passes} passes"
    assert backlog.passes == 3
