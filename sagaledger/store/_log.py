"""The saga log API: the only code that reads or writes the store's tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Row, and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from sagaledger._errors import SchemaNotReadyError, StoreError, UnknownRunError
from sagaledger.store import _migrate
from sagaledger.store._engine import create_store_engine, read
from sagaledger.store._records import (
    ACTIVE_STATUSES,
    EventRecord,
    EventType,
    NewEvent,
    Phase,
    RunRecord,
    RunStatus,
)
from sagaledger.store._schema import events, runs


class SagaLog:
    """Durable runs and their append-only events.

    Every write that changes a run's state is *fenced*: it names the lease token
    it believes current and is refused (nothing written) when another claim has
    bumped it since. Events of one write are committed in one transaction with
    the run's new state, so the run row is always the projection of its events.

    Args:
        engine: A SQLAlchemy engine (see :func:`create_store_engine`).
    """

    def __init__(self, engine: Engine):
        self.engine = engine

    @classmethod
    def open(cls, url: str, *, upgrade: bool | None = None) -> SagaLog:
        """Open the log at ``url``, checking (or migrating) its schema.

        Args:
            url: A SQLAlchemy URL (``sqlite:///file.db``, ``postgresql://...``).
            upgrade: Apply pending migrations first. By default only SQLite files
                (the embedded mode) are migrated automatically; other databases
                must be migrated with ``sagaledger db upgrade``.

        Raises:
            StoreError: bad URL or unreachable database.
            SchemaNotReadyError: the schema is missing or out of date.
        """
        engine = create_store_engine(url)
        log = cls(engine)
        if upgrade is None:
            upgrade = engine.dialect.name == "sqlite"
        try:
            if upgrade:
                _migrate.upgrade(engine)
            log.check_schema()
        except OperationalError as exc:
            engine.dispose()
            raise StoreError(f"cannot use store {engine.url!r}: {exc.orig}") from None
        except BaseException:
            engine.dispose()
            raise
        return log

    def check_schema(self) -> None:
        """Raise :class:`SchemaNotReadyError` unless the schema is at the newest migration."""
        current, head = _migrate.current_revision(self.engine), _migrate.SCHEMA_REVISION
        if current != head:
            raise SchemaNotReadyError(
                f"store {self.engine.url!r} is at schema {current or 'none'}, this code needs "
                f"{head}: run `sagaledger db upgrade --store URL`"
            )

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()

    # -- writes ---------------------------------------------------------------

    def create_run(
        self, run: dict[str, Any], first: Sequence[NewEvent], now: datetime
    ) -> tuple[RunRecord, bool]:
        """Insert a run with its first events, or return the run its business key names.

        Returns:
            The run, and True when this call created it.
        """
        row = {**run, "last_seq": len(first), "created_at": now, "updated_at": now}
        event_rows = _event_rows(run["id"], 1, first, run["lease_token"], now)
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(runs), row)
                conn.execute(insert(events), event_rows)
        except IntegrityError:
            existing = self.find_by_key(run["saga_name"], run["business_key"])
            if existing is None:
                raise
            return existing, False
        return _run(row), True

    def append(
        self,
        run_id: str,
        token: int,
        new_events: Sequence[NewEvent],
        now: datetime,
        *,
        new_token: int | None = None,
        **changes: Any,
    ) -> bool:
        """Append events and apply ``changes`` to the run, fenced by ``token``.

        Args:
            run_id: The run.
            token: The lease token the caller holds; the write is refused unless it
                is still current.
            new_events: Events to append, in order.
            now: Commit time, stamped on the events and the run.
            new_token: Replace the token (a claim takes a new one).
            changes: Run columns to set.

        Returns:
            True if written; False if refused (nothing was written).
        """
        values: dict[str, Any] = {
            **changes,
            "last_seq": runs.c.last_seq + len(new_events),
            "updated_at": now,
        }
        if new_token is not None:
            values["lease_token"] = new_token
        statement = (
            update(runs)
            .where(runs.c.id == run_id, runs.c.lease_token == token)
            .values(values)
            .returning(runs.c.last_seq)
        )
        with self.engine.begin() as conn:
            last_seq = conn.execute(statement).scalar()
            if last_seq is None:
                return False
            if new_events:
                first_seq = last_seq - len(new_events) + 1
                writer = token if new_token is None else new_token
                conn.execute(
                    insert(events), _event_rows(run_id, first_seq, new_events, writer, now)
                )
        return True

    # -- reads ----------------------------------------------------------------

    def get_run(self, run_id: str) -> RunRecord:
        """Return the run ``run_id``.

        Raises:
            UnknownRunError: no such run.
        """
        with read(self.engine) as conn:
            row = conn.execute(select(runs).where(runs.c.id == run_id)).first()
        if row is None:
            raise UnknownRunError(run_id)
        return _run(row)

    def find_by_key(self, saga_name: str, business_key: str) -> RunRecord | None:
        """Return the run of ``saga_name`` started with ``business_key``, if any."""
        query = select(runs).where(
            runs.c.saga_name == saga_name, runs.c.business_key == business_key
        )
        with read(self.engine) as conn:
            row = conn.execute(query).first()
        return _run(row) if row is not None else None

    def find_runs(self, prefix: str) -> list[str]:
        """Return the ids of runs starting with ``prefix`` (for short ids typed by people)."""
        query = select(runs.c.id).where(runs.c.id.startswith(prefix, autoescape=True)).limit(5)
        with read(self.engine) as conn:
            return list(conn.execute(query).scalars())

    def list_runs(
        self,
        *,
        status: str | None = None,
        saga: str | None = None,
        limit: int = 100,
    ) -> list[RunRecord]:
        """Return runs, newest first, optionally filtered by status and saga name."""
        query = select(runs).order_by(runs.c.created_at.desc(), runs.c.id).limit(limit)
        if status is not None:
            query = query.where(runs.c.status == status)
        if saga is not None:
            query = query.where(runs.c.saga_name == saga)
        with read(self.engine) as conn:
            return [_run(row) for row in conn.execute(query)]

    def count_runs(self) -> dict[str, int]:
        """Return the number of runs in each status."""
        query = select(runs.c.status, func.count()).group_by(runs.c.status)
        with read(self.engine) as conn:
            return {status: count for status, count in conn.execute(query)}

    def events(self, run_id: str, *, types: Sequence[EventType] | None = None) -> list[EventRecord]:
        """Return the events of ``run_id`` in sequence order."""
        query = select(events).where(events.c.run_id == run_id).order_by(events.c.seq)
        if types is not None:
            query = query.where(events.c.type.in_([t.value for t in types]))
        with read(self.engine) as conn:
            return [_event(row) for row in conn.execute(query)]

    def due_runs(self, now: datetime, dispatch_grace: timedelta, limit: int = 500) -> list[str]:
        """Return runs the recovery pass must drive now.

        A run is due when its lease expired, or when it holds no lease and its
        wake-up time passed more than ``dispatch_grace`` ago: a run that was
        just dispatched, or whose back-off just ended, gets a message of its own
        first, and recovery steps in only if that message is lost.
        """
        query = (
            select(runs.c.id)
            .where(
                runs.c.status.in_(ACTIVE_STATUSES),
                runs.c.wake_at <= now,
                or_(
                    runs.c.lease_owner.is_not(None),
                    and_(runs.c.lease_owner.is_(None), runs.c.wake_at <= now - dispatch_grace),
                ),
            )
            .order_by(runs.c.wake_at)
            .limit(limit)
        )
        with read(self.engine) as conn:
            return list(conn.execute(query).scalars())


def _event_rows(
    run_id: str, first_seq: int, new_events: Sequence[NewEvent], token: int, now: datetime
) -> list[dict[str, Any]]:
    return [
        {
            "run_id": run_id,
            "seq": first_seq + offset,
            "type": e.type.value,
            "step": e.step,
            "phase": e.phase.value if e.phase is not None else None,
            "attempt": e.attempt,
            "payload": e.payload,
            "error": e.error,
            "actor": e.actor,
            "token": token,
            "created_at": now,
        }
        for offset, e in enumerate(new_events)
    ]


def _run(row: Row[Any] | dict[str, Any]) -> RunRecord:
    m = row if isinstance(row, dict) else row._mapping
    return RunRecord(
        id=m["id"],
        saga_name=m["saga_name"],
        saga_version=m["saga_version"],
        fingerprint=m["fingerprint"],
        business_key=m["business_key"],
        status=RunStatus(m["status"]),
        step_index=m["step_index"],
        step=m["step"],
        attempt=m["attempt"],
        input=m["input"],
        lease_owner=m["lease_owner"],
        lease_token=m["lease_token"],
        wake_at=m["wake_at"],
        last_seq=m["last_seq"],
        blocked_reason=m["blocked_reason"],
        last_error=m["last_error"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def _event(row: Row[Any]) -> EventRecord:
    m = row._mapping
    return EventRecord(
        run_id=m["run_id"],
        seq=m["seq"],
        type=EventType(m["type"]),
        step=m["step"],
        phase=Phase(m["phase"]) if m["phase"] is not None else None,
        attempt=m["attempt"],
        payload=m["payload"],
        error=m["error"],
        actor=m["actor"],
        token=m["token"],
        created_at=m["created_at"],
    )
