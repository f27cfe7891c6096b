"""Saga definitions in the store: the shapes workers ran, and the ones unfinished runs use.

``check-deploy`` reads both: which (saga, version, fingerprint) the unfinished
runs were started on, and the shape each had, to say what a new deploy changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, exists, func, select
from sqlalchemy.dialects import postgresql, sqlite

from sagaledger.store._engine import read
from sagaledger.store._records import UNFINISHED_STATUSES, EventType
from sagaledger.store._schema import definitions, events, runs

#: (saga name, version, fingerprint): what a worker can run.
Definition = tuple[str, int, str]


@dataclass(frozen=True)
class DefinitionInUse:
    """A definition unfinished runs were started on (running, compensating or parked)."""

    name: str
    version: int
    fingerprint: str
    #: How many unfinished runs use it.
    runs: int
    #: A few of their ids, oldest first.
    run_ids: tuple[str, ...]


def record(
    engine: Engine, shapes: Iterable[tuple[Definition, dict[str, Any]]], now: datetime
) -> int:
    """Insert each definition's shape unless it is there already; return how many were new."""
    rows = [
        {"name": n, "version": v, "fingerprint": f, "shape": shape, "first_seen": now}
        for (n, v, f), shape in shapes
    ]
    if not rows:
        return 0
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    insert = dialect.insert(definitions).values(rows).on_conflict_do_nothing()
    with engine.begin() as conn:
        return int(conn.execute(insert).rowcount)


def shape_of(engine: Engine, definition: Definition) -> dict[str, Any] | None:
    """The shape recorded for ``definition``, if a worker has recorded it."""
    name, version, fingerprint = definition
    query = select(definitions.c.shape).where(
        definitions.c.name == name,
        definitions.c.version == version,
        definitions.c.fingerprint == fingerprint,
    )
    with read(engine) as conn:
        shape = conn.execute(query).scalar()
    return dict(shape) if shape is not None else None


def _of(definition: Definition) -> Any:
    name, version, fingerprint = definition
    return and_(
        runs.c.status.in_(UNFINISHED_STATUSES),
        runs.c.saga_name == name,
        runs.c.saga_version == version,
        runs.c.fingerprint == fingerprint,
    )


def _sample(conn: Any, where: Any, sample: int) -> tuple[str, ...]:
    query = select(runs.c.id).where(where).order_by(runs.c.created_at, runs.c.id).limit(sample)
    return tuple(conn.execute(query).scalars())


def in_use(engine: Engine, sample: int = 3) -> list[DefinitionInUse]:
    """The definitions of unfinished runs, with how many use each and a few of their ids."""
    key = (runs.c.saga_name, runs.c.saga_version, runs.c.fingerprint)
    query = (
        select(*key, func.count())
        .where(runs.c.status.in_(UNFINISHED_STATUSES))
        .group_by(*key)
        .order_by(*key)
    )
    with read(engine) as conn:
        groups = list(conn.execute(query))
        return [
            DefinitionInUse(n, v, f, count, _sample(conn, _of((n, v, f)), sample))
            for n, v, f, count in groups
        ]


def completed_by_unfinished(
    engine: Engine, definition: Definition, step: str, sample: int = 3
) -> tuple[int, tuple[str, ...]]:
    """How many unfinished runs of ``definition`` have completed ``step``, and a few ids."""
    # Correlated: read through each unfinished run's events, never the whole table.
    done = exists().where(
        events.c.run_id == runs.c.id,
        events.c.type == EventType.STEP_COMPLETED.value,
        events.c.step == step,
    )
    where = and_(_of(definition), done)
    with read(engine) as conn:
        count = conn.execute(select(func.count()).where(where)).scalar()
        return int(count or 0), _sample(conn, where, sample)
