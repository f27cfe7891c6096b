"""Counts of runs for metrics: by status, and how many wait and since when.

Each is one grouped query an index serves, cheap enough for every scrape.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, and_, func, or_, select

from sagaledger.store._engine import read
from sagaledger.store._records import ACTIVE_STATUSES
from sagaledger.store._schema import runs


@dataclass(frozen=True)
class WaitingRuns:
    """The runs of one saga that wait (see :func:`waiting`)."""

    saga: str
    count: int
    #: The earliest time one of them last changed, i.e. began its wait.
    oldest_since: datetime


def counts(engine: Engine, statuses: Collection[str] | None) -> dict[tuple[str, str], int]:
    """Runs per (status, saga), of ``statuses`` only if given (the status index serves it)."""
    query = select(runs.c.status, runs.c.saga_name, func.count()).group_by(
        runs.c.status, runs.c.saga_name
    )
    if statuses is not None:
        query = query.where(runs.c.status.in_(list(statuses)))
    with read(engine) as conn:
        return {(status, saga): int(n) for status, saga, n in conn.execute(query)}


def waiting(engine: Engine, now: datetime) -> list[WaitingRuns]:
    """Per saga, the unfinished runs no worker holds that wait for a time or a delivery.

    A run waits when its wake-up time is still ahead (a back-off, a timer, a
    deadline) or when it awaits an approval or an event. Only unfinished runs
    have a wake-up time, so the partial index on it bounds the scan.
    """
    query = (
        select(runs.c.saga_name, func.count(), func.min(runs.c.updated_at))
        .where(
            runs.c.wake_at.is_not(None),
            runs.c.lease_owner.is_(None),
            runs.c.status.in_(ACTIVE_STATUSES),
            or_(runs.c.wake_at > now, and_(runs.c.awaiting.is_not(None))),
        )
        .group_by(runs.c.saga_name)
    )
    with read(engine) as conn:
        found = conn.execute(query).all()
    return [WaitingRuns(saga, int(n), oldest) for saga, n, oldest in found]
