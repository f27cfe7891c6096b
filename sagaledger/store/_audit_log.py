"""The audit's reads of the saga log, and its anchors: runs with their chained events.

Beside ``_log.py``, the only code that touches the store's tables. Reads go
run by run, in batches, so a verification of a large log holds one batch of
runs in memory at a time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select, tuple_
from sqlalchemy.exc import IntegrityError

from sagaledger.store._engine import read
from sagaledger.store._schema import anchors, events, runs

#: Runs read per query while walking the log.
BATCH = 500


@dataclass(frozen=True)
class ChainedEvent:
    """An event row as the hash chain covers it (the digest's columns, and where it sits)."""

    id: int
    run_id: str
    seq: int
    hash: str | None
    row: dict[str, object]  # the columns _chain.digest reads


@dataclass(frozen=True)
class Anchor:
    """The digest of every event written in a period, as sealed."""

    period_start: datetime
    period_end: datetime
    events: int
    digest: str
    sealed_at: datetime
    sealed_by: str


_DIGESTED = ("type", "step", "phase", "attempt", "payload", "error", "actor", "token", "created_at")


def runs_with_events(
    engine: Engine,
    *,
    run_ids: Sequence[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[tuple[str, str | None, list[ChainedEvent]]]:
    """Each run's id, the chain head its row keeps, and its events in sequence order.

    Args:
        run_ids: Only these runs.
        since: Only runs started at or after this time.
        until: Only runs started before this time.
    """
    after = ""
    while True:
        query = (
            select(runs.c.id, runs.c.last_hash).where(runs.c.id > after).order_by(runs.c.id)
        ).limit(BATCH)
        if run_ids is not None:
            query = query.where(runs.c.id.in_(run_ids))
        if since is not None:
            query = query.where(runs.c.created_at >= since)
        if until is not None:
            query = query.where(runs.c.created_at < until)
        with read(engine) as conn:
            heads = conn.execute(query).all()
            if not heads:
                return
            first, last = heads[0][0], heads[-1][0]
            rows = conn.execute(
                select(events)
                .where(events.c.run_id >= first, events.c.run_id <= last)
                .order_by(events.c.run_id, events.c.seq)
            ).all()
        by_run: dict[str, list[ChainedEvent]] = {run_id: [] for run_id, _ in heads}
        for row in rows:
            m = row._mapping
            chained = by_run.get(m["run_id"])
            if chained is not None:  # runs outside the filter share the id range
                chained.append(
                    ChainedEvent(
                        m["id"], m["run_id"], m["seq"], m["hash"], {c: m[c] for c in _DIGESTED}
                    )
                )
        for run_id, head in heads:
            yield run_id, head, by_run[run_id]
        after = last


def period_digest(engine: Engine, start: datetime, end: datetime) -> tuple[int, str]:
    """How many events were written in ``[start, end)``, and the digest of their hashes."""
    query = (
        select(events.c.run_id, events.c.seq, events.c.hash)
        .where(events.c.created_at >= start, events.c.created_at < end)
        .order_by(events.c.run_id, events.c.seq)
    )
    total = hashlib.sha256()
    count = 0
    with read(engine) as conn:
        for run_id, seq, value in conn.execute(query):
            total.update(f"{run_id} {seq} {value}\n".encode())
            count += 1
    return count, total.hexdigest()


def add_anchor(engine: Engine, anchor: Anchor) -> Anchor | None:
    """Keep ``anchor``; None if its period was sealed already (the earlier one stands)."""
    try:
        with engine.begin() as conn:
            conn.execute(anchors.insert().values(**anchor.__dict__))
    except IntegrityError:
        return None
    return anchor


def find_anchors(
    engine: Engine, since: datetime | None = None, until: datetime | None = None
) -> list[Anchor]:
    """The anchors of periods starting in ``[since, until)``, oldest first."""
    query = select(*(anchors.c[f] for f in Anchor.__dataclass_fields__)).order_by(
        anchors.c.period_start
    )
    if since is not None:
        query = query.where(anchors.c.period_start >= since)
    if until is not None:
        query = query.where(anchors.c.period_start < until)
    with read(engine) as conn:
        return [Anchor(*row) for row in conn.execute(query)]


@dataclass(frozen=True)
class LedgerRun:
    """A run as the compensation ledger reads it: who it is, where it stands, its events."""

    id: str
    saga: str
    version: int
    business_key: str
    status: str
    blocked_reason: str | None
    created_at: datetime
    events: list[tuple[str, str | None, object, str, datetime]]  # type, step, payload, actor, time


#: The events the ledger reads: those that carry effects, and the turn to compensation.
_LEDGER_TYPES = (
    "step_completed",
    "step_failed",
    "compensation_started",
    "compensation_completed",
    "compensation_failed",
    "operator_action",
)


def ledger_runs(
    engine: Engine, since: datetime | None = None, until: datetime | None = None
) -> Iterator[LedgerRun]:
    """The runs started in ``[since, until)``, oldest first, with the events the ledger reads."""
    after: tuple[datetime, str] | None = None
    columns = (
        runs.c.id,
        runs.c.saga_name,
        runs.c.saga_version,
        runs.c.business_key,
        runs.c.status,
        runs.c.blocked_reason,
        runs.c.created_at,
    )
    while True:
        query = select(*columns).order_by(runs.c.created_at, runs.c.id).limit(BATCH)
        if since is not None:
            query = query.where(runs.c.created_at >= since)
        if until is not None:
            query = query.where(runs.c.created_at < until)
        if after is not None:
            query = query.where(tuple_(runs.c.created_at, runs.c.id) > tuple_(*after))
        with read(engine) as conn:
            found = conn.execute(query).all()
            if not found:
                return
            ids = [row[0] for row in found]
            rows = conn.execute(
                select(events.c.run_id, events.c.type, events.c.step, events.c.payload)
                .add_columns(events.c.actor, events.c.created_at)
                .where(events.c.run_id.in_(ids), events.c.type.in_(_LEDGER_TYPES))
                .order_by(events.c.run_id, events.c.seq)
            ).all()
        by_run: dict[str, list[tuple[str, str | None, object, str, datetime]]] = {
            i: [] for i in ids
        }
        for run_id, kind, step, payload, actor, at in rows:
            by_run[run_id].append((kind, step, payload, actor, at))
        for row in found:
            yield LedgerRun(*row, events=by_run[row[0]])
        after = (found[-1][6], found[-1][0])
