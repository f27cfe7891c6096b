"""Keeping the leases of in-flight runs alive while their attempts are healthy."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, update

from sagaledger.store import SagaLog
from sagaledger.store._schema import runs


@dataclass
class _Held:
    token: int
    deadline: datetime  # when the current attempt overruns its step timeout


class LeaseKeeper:
    """Renews this worker's leases in one statement, until an attempt times out.

    A lease is short (seconds) so that a crashed worker's runs are picked up
    quickly; a live worker renews its leases. An attempt that runs past its
    step's timeout is no longer renewed: its lease expires, another attempt
    takes over, and the overrunning one's checkpoint is refused by the fence.

    Args:
        log: The saga log.
        lease: How long a lease lasts from its last renewal.
        clock: Returns the current UTC time.
    """

    def __init__(self, log: SagaLog, lease: timedelta, clock: Callable[[], datetime]):
        self._log, self._lease, self._clock = log, lease, clock
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()

    def hold(self, run_id: str, token: int, now: datetime, timeout: timedelta) -> None:
        """Start (or restart, for a new attempt) renewing ``run_id`` under ``token``."""
        with self._lock:
            self._held[run_id] = _Held(token, now + timeout)

    def release(self, run_id: str, token: int) -> None:
        """Stop renewing ``run_id`` (if ``token`` is still what is held)."""
        with self._lock:
            held = self._held.get(run_id)
            if held is not None and held.token == token:
                del self._held[run_id]

    def renew(self) -> int:
        """Push the wake-up time of every healthy held lease; return how many."""
        now = self._clock()
        with self._lock:
            healthy = [(r, h.token) for r, h in self._held.items() if h.deadline > now]
        if not healthy:
            return 0
        fence = or_(*(and_(runs.c.id == r, runs.c.lease_token == t) for r, t in healthy))
        with self._log.engine.begin() as conn:
            result = conn.execute(update(runs).where(fence).values(wake_at=now + self._lease))
        return int(result.rowcount)

    def __len__(self) -> int:
        return len(self._held)
