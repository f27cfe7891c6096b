"""Sealing a period: one digest over every event written in it, kept as an anchor.

A run's hash chain shows a row edited, deleted or moved, unless whoever did it
rewrote the rest of that run's chain as well. An anchor covers the periods'
events across all runs: printed, mailed or filed where the database's users
cannot change it, it shows such a rewrite too (and a run deleted whole).
"""

from __future__ import annotations

from datetime import datetime

from sagaledger._errors import PeriodError
from sagaledger.store import SagaLog
from sagaledger.store._audit_log import Anchor, add_anchor, find_anchors, period_digest


def seal_period(log: SagaLog, start: datetime, end: datetime, *, by: str, now: datetime) -> Anchor:
    """Seal the events written in ``[start, end)`` with one digest, kept in the log.

    Raises:
        PeriodError: the period has not ended by ``now``, is empty or inverted,
            or was sealed already (the error gives the anchor kept).
    """
    if not end > start:
        raise PeriodError(f"period {start.isoformat()} to {end.isoformat()} is empty")
    if end > now:
        raise PeriodError(
            f"period {start.isoformat()} to {end.isoformat()} has not ended: events may "
            "still be written in it"
        )
    count, value = period_digest(log.engine, start, end)
    anchor = Anchor(start, end, count, value, now, by)
    if add_anchor(log.engine, anchor) is None:
        kept = next(a for a in find_anchors(log.engine, start, end) if a.period_start == start)
        raise PeriodError(
            f"the period starting {start.isoformat()} was sealed at {kept.sealed_at.isoformat()} "
            f"by {kept.sealed_by}: {kept.events} events, digest {kept.digest}"
        )
    return anchor
