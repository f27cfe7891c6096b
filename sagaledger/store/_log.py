"""The saga log API: the only code that reads or writes the store's tables."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Row, and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError

from sagaledger._errors import SchemaNotReadyError, StoreError, UnknownRunError
from sagaledger.store import _chain, _definitions, _migrate, _stats
from sagaledger.store._definitions import Definition as Definition
from sagaledger.store._definitions import DefinitionInUse
from sagaledger.store._engine import create_store_engine, read
from sagaledger.store._raw import RawStatements
from sagaledger.store._records import (
    ACTIVE_STATUSES,
    EventRecord,
    EventType,
    NewEvent,
    Phase,
    RunRecord,
    RunStatus,
    SignalRecord,
    Written,
)
from sagaledger.store._schema import events, runs, signals, workers
from sagaledger.store._stats import WaitingRuns
from sagaledger.store._tokens import Tokens


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
        self._raw = RawStatements.for_engine(engine)

    @classmethod
    def open(cls, url: str, *, upgrade: bool | None = None, **engine_options: Any) -> SagaLog:
        """Open the log at ``url``, checking (or migrating) its schema.

        Args:
            url: A SQLAlchemy URL (``sqlite:///file.db``, ``postgresql://...``).
            upgrade: Apply pending migrations first. By default only SQLite files
                (the embedded mode) are migrated automatically; other databases
                must be migrated with ``sagaledger db upgrade``.
            engine_options: Passed to :func:`create_store_engine` (``pool_size``...).

        Raises:
            StoreError: bad URL or unreachable database.
            SchemaNotReadyError: the schema is missing or out of date.
        """
        engine = create_store_engine(url, **engine_options)
        log = cls(engine)
        if upgrade is None:
            upgrade = engine.dialect.name == "sqlite"
        try:
            current = _migrate.current_revision(engine)
            # Alembic costs a fifth of a second to load: only when there is work for it.
            if upgrade and current != _migrate.SCHEMA_REVISION:
                _migrate.upgrade(engine)
                current = _migrate.current_revision(engine)
            log._require_schema(current)
        except OperationalError as exc:
            engine.dispose()
            raise StoreError(f"cannot use store {engine.url!r}: {exc.orig}") from None
        except BaseException:
            engine.dispose()
            raise
        return log

    def check_schema(self) -> None:
        """Raise :class:`SchemaNotReadyError` unless the schema is at the newest migration."""
        self._require_schema(_migrate.current_revision(self.engine))

    def _require_schema(self, current: str | None) -> None:
        head = _migrate.SCHEMA_REVISION
        if current != head:
            raise SchemaNotReadyError(
                f"store {self.engine.url!r} is at schema {current or 'none'}, this code needs "
                f"{head}: run `sagaledger db upgrade --store URL`"
            )

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()

    @property
    def tokens(self) -> Tokens:
        """The web dashboard's access tokens (see ``sagaledger tokens``)."""
        return Tokens(self.engine)

    # -- writes ---------------------------------------------------------------

    def create_run(
        self, run: dict[str, Any], first: Sequence[NewEvent], now: datetime
    ) -> tuple[RunRecord, bool]:
        """Insert a run with its first events, or return the run its business key names.

        Returns:
            The run, and True when this call created it.
        """
        event_rows = _event_rows(run["id"], 1, first, run["lease_token"], now)
        hashes = _chain.chain(_chain.genesis(run["id"]), event_rows)
        for event, value in zip(event_rows, hashes, strict=True):
            event["hash"] = value
        row = {
            **run,
            "last_seq": len(first),
            "last_hash": hashes[-1] if hashes else None,
            "created_at": now,
            "updated_at": now,
        }
        try:
            self._raw.create_run(row, event_rows)
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
    ) -> Written:
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
            Whether it was written (false when refused: nothing was), and whether
            the run has a cancel request (see :class:`Written`).
        """
        values = {**changes, "updated_at": now}
        if new_token is not None:
            values["lease_token"] = new_token
        writer = token if new_token is None else new_token
        rows = _event_rows(run_id, 0, new_events, writer, now)  # seq: set by the write
        return self._raw.append(run_id, token, values, rows)

    def record_signal(
        self, name: str, key: str, payload: Any, sender: str, now: datetime
    ) -> tuple[SignalRecord, bool]:
        """Keep an external event (or a decision) once per ``name`` and ``key``.

        Returns:
            The signal as kept, and True when this call delivered it (False: an
            earlier delivery of the same name and key is kept, and this one ignored).
        """
        row = {"name": name, "key": key, "payload": payload, "sender": sender, "received_at": now}
        try:
            with self.engine.begin() as conn:
                conn.execute(signals.insert().values(row))
        except IntegrityError:
            kept = self.find_signal(name, key)
            if kept is None:
                raise
            return kept, False
        return SignalRecord(**row), True

    def find_signal(self, name: str, key: str) -> SignalRecord | None:
        """The signal delivered as ``name`` and ``key``, if any."""
        columns = ("name", "key", "payload", "sender", "received_at")
        query = select(*(signals.c[c] for c in columns)).where(
            signals.c.name == name, signals.c.key == key
        )
        with read(self.engine) as conn:
            row = conn.execute(query).first()
        return SignalRecord(*row) if row is not None else None

    def wake_awaiting(
        self, awaiting: str, now: datetime, *, dispatched: bool, run_id: str | None = None
    ) -> list[DueRun]:
        """Make the runs waiting for ``awaiting`` due now; return them.

        Only runs no worker holds are woken: a driver that holds one looks for
        what it waits for again after it lets the run go (see
        ``sagaledger.sagas._waits``), so a delivery is never missed between the two.

        Args:
            dispatched: A message goes out for each (recovery leaves them alone
                for the dispatch grace); otherwise the next recovery pass takes them.
            run_id: Only this run.
        """
        waiting = and_(
            runs.c.awaiting == awaiting,
            runs.c.lease_owner.is_(None),
            runs.c.status.in_(ACTIVE_STATUSES),
        )
        if run_id is not None:
            waiting = and_(waiting, runs.c.id == run_id)
        statement = (
            update(runs)
            .where(waiting)
            .values(wake_at=now, dispatched_at=now if dispatched else None)
            .returning(*_DUE_COLUMNS)
        )
        with self.engine.begin() as conn:
            return [DueRun(*row) for row in conn.execute(statement)]

    # -- reads ----------------------------------------------------------------

    def get_run(self, run_id: str) -> RunRecord:
        """Return the run ``run_id``.

        Raises:
            UnknownRunError: no such run.
        """
        run = self._raw.get_run(run_id)
        if run is None:
            raise UnknownRunError(run_id)
        return run

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
        since: datetime | None = None,
        until: datetime | None = None,
        awaiting: str | None = None,
        business_key: str | None = None,
        limit: int = 100,
    ) -> list[RunRecord]:
        """Return runs, newest first, optionally filtered by status, saga name and start time.

        Args:
            status: Only runs in this status.
            saga: Only runs of this saga.
            since: Only runs started at or after this time (UTC-aware).
            until: Only runs started before this time (UTC-aware).
            awaiting: Only runs waiting for something whose key starts with this.
            business_key: Only runs started with this business key (of any saga).
            limit: At most this many.
        """
        query = select(runs).order_by(runs.c.created_at.desc(), runs.c.id).limit(limit)
        if status is not None:
            query = query.where(runs.c.status == status)
        if saga is not None:
            query = query.where(runs.c.saga_name == saga)
        if since is not None:
            query = query.where(runs.c.created_at >= since)
        if until is not None:
            query = query.where(runs.c.created_at < until)
        if awaiting is not None:
            query = query.where(runs.c.awaiting.startswith(awaiting, autoescape=True))
        if business_key is not None:
            query = query.where(runs.c.business_key == business_key)
        with read(self.engine) as conn:
            return [_run(row) for row in conn.execute(query)]

    def count_runs(self) -> dict[str, int]:
        """Return the number of runs in each status."""
        query = select(runs.c.status, func.count()).group_by(runs.c.status)
        with read(self.engine) as conn:
            return {status: count for status, count in conn.execute(query)}

    def run_counts(self, statuses: Collection[str] | None = None) -> dict[tuple[str, str], int]:
        """The number of runs per (status, saga name), of ``statuses`` only if given."""
        return _stats.counts(self.engine, statuses)

    def waiting_runs(self, now: datetime) -> list[WaitingRuns]:
        """Per saga, the runs that wait (a back-off, a timer, an approval, an event) at ``now``."""
        return _stats.waiting(self.engine, now)

    def events(self, run_id: str, *, types: Sequence[EventType] | None = None) -> list[EventRecord]:
        """Return the events of ``run_id`` in sequence order."""
        query = select(events).where(events.c.run_id == run_id).order_by(events.c.seq)
        if types is not None:
            query = query.where(events.c.type.in_([t.value for t in types]))
        with read(self.engine) as conn:
            return [_event(row) for row in conn.execute(query)]

    def _due(self, now: datetime, dispatch_grace: timedelta) -> Any:
        """Runs whose wake-up time has come and whose expected message is overdue.

        A run just dispatched, or whose back-off message is on its way, has a
        ``dispatched_at``; recovery steps in only ``dispatch_grace`` after it, if
        that message was lost. A claim clears it, so an expired lease is due at once.
        """
        return and_(
            runs.c.wake_at.is_not(None),
            runs.c.wake_at <= now,
            _unindexed(runs.c.status).in_(ACTIVE_STATUSES),
            or_(runs.c.dispatched_at.is_(None), runs.c.dispatched_at <= now - dispatch_grace),
        )

    def claim_due(
        self,
        now: datetime,
        dispatch_grace: timedelta,
        definitions: Collection[Definition],
        limit: int = 500,
    ) -> list[DueRun]:
        """Take up to ``limit`` due runs of these definitions, marking them dispatched now.

        Safe to run in every worker at once: rows another recovery pass is taking
        are skipped (``SKIP LOCKED`` on Postgres, the write lock on SQLite), and a
        taken run is not taken again until its dispatch grace has passed.
        """
        if not definitions:
            return []
        pick = (
            select(runs.c.id)
            .where(self._due(now, dispatch_grace), _of(definitions))
            .order_by(runs.c.wake_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        statement = (
            update(runs)
            .where(runs.c.id.in_(pick.scalar_subquery()))
            .values(dispatched_at=now)
            .returning(*_DUE_COLUMNS)
        )
        with self.engine.begin() as conn:
            return [DueRun(*row) for row in conn.execute(statement)]

    def unserved_due(
        self,
        now: datetime,
        dispatch_grace: timedelta,
        definitions: Collection[Definition],
        limit: int = 500,
    ) -> list[DueRun]:
        """Due runs of other definitions than these, not yet marked as waiting."""
        query = (
            select(*_DUE_COLUMNS)
            .where(self._due(now, dispatch_grace), runs.c.blocked_reason.is_(None))
            .order_by(runs.c.wake_at)
            .limit(limit)
        )
        if definitions:
            query = query.where(~_of(definitions))
        with read(self.engine) as conn:
            return [DueRun(*row) for row in conn.execute(query)]

    def heartbeat(
        self,
        worker_id: str,
        definitions: Collection[Definition],
        now: datetime,
        *,
        host_key: str | None = None,
        pid: int | None = None,
        events: Collection[str] = (),
    ) -> None:
        """Record that ``worker_id`` is alive and can run ``definitions``.

        Args:
            host_key: The host and PID namespace the worker runs in.
            pid: Its process id: with ``host_key``, neighbours can tell when it has died.
            events: The external events its sagas wait for.
        """
        row = {
            "id": worker_id,
            "definitions": sorted([list(d) for d in definitions]),
            "started_at": now,
            "seen_at": now,
            "host_key": host_key,
            "pid": pid,
            "events": sorted(events),
        }
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        upsert = dialect.insert(workers).values(row)
        refreshed = ("definitions", "seen_at", "host_key", "pid", "events")
        upsert = upsert.on_conflict_do_update(
            index_elements=[workers.c.id],
            set_={name: upsert.excluded[name] for name in refreshed},
        )
        with self.engine.begin() as conn:
            conn.execute(upsert)
            # Forget workers gone for a day; they say nothing about today's fleet.
            conn.execute(delete(workers).where(workers.c.seen_at < now - timedelta(days=1)))

    def workers_on(self, host_key: str) -> list[tuple[str, int]]:
        """The workers (id, pid) that last said they run under ``host_key``."""
        query = select(workers.c.id, workers.c.pid).where(
            workers.c.host_key == host_key, workers.c.pid.is_not(None)
        )
        with read(self.engine) as conn:
            return [(str(worker), int(pid)) for worker, pid in conn.execute(query)]

    def release_worker(self, worker_id: str, now: datetime) -> int:
        """Forget a worker known to be dead, making the runs it leased due now.

        Its leases are not waited out: its runs are re-driven by the next
        recovery pass, and each claim records the abandoned attempt as usual.

        Returns:
            How many leased runs were released.
        """
        leased = and_(
            runs.c.lease_owner == worker_id,
            runs.c.wake_at.is_not(None),  # the partial wake-up index: unfinished runs only
            runs.c.wake_at > now,
            runs.c.status.in_(ACTIVE_STATUSES),
        )
        with self.engine.begin() as conn:
            released = conn.execute(update(runs).where(leased).values(wake_at=now)).rowcount
            conn.execute(delete(workers).where(workers.c.id == worker_id))
        return int(released)

    def live_definitions(self, since: datetime) -> set[Definition]:
        """The definitions some worker seen since ``since`` can run."""
        query = select(workers.c.definitions).where(workers.c.seen_at >= since)
        with read(self.engine) as conn:
            rows = conn.execute(query).scalars()
            return {(str(n), int(v), str(f)) for definitions in rows for n, v, f in definitions}

    # -- definitions (see _definitions) --------------------------------------------

    def record_definitions(
        self, shapes: Iterable[tuple[Definition, dict[str, Any]]], now: datetime
    ) -> int:
        """Keep the shape of each definition (see ``Saga.shape``) once; return how many were new.

        A definition already recorded keeps its row (and its ``first_seen``).
        """
        return _definitions.record(self.engine, shapes, now)

    def definition_shape(self, definition: Definition) -> dict[str, Any] | None:
        """The shape some worker recorded for ``definition`` (name, version, fingerprint)."""
        return _definitions.shape_of(self.engine, definition)

    def definitions_in_use(self, sample: int = 3) -> list[DefinitionInUse]:
        """The definitions unfinished runs (running, compensating, parked) were started on."""
        return _definitions.in_use(self.engine, sample)

    def completed_by_unfinished(
        self, definition: Definition, step: str, sample: int = 3
    ) -> tuple[int, tuple[str, ...]]:
        """How many unfinished runs of ``definition`` have completed ``step``, and a few ids."""
        return _definitions.completed_by_unfinished(self.engine, definition, step, sample)

    def known_events(self, since: datetime) -> set[str]:
        """The external events the sagas of some worker seen since ``since`` wait for."""
        query = select(workers.c.events).where(workers.c.seen_at >= since)
        with read(self.engine) as conn:
            return {str(name) for names in conn.execute(query).scalars() for name in names or ()}



@dataclass(frozen=True)
class DueRun:
    """A run the recovery pass found due."""

    id: str
    saga_name: str
    saga_version: int
    fingerprint: str
    lease_token: int


_DUE_COLUMNS = (
    runs.c.id,
    runs.c.saga_name,
    runs.c.saga_version,
    runs.c.fingerprint,
    runs.c.lease_token,
)


def _of(definitions: Collection[Definition]) -> Any:
    """Runs of these definitions (a recovery-scan condition: see ``_unindexed``)."""
    return or_(
        *(
            and_(
                _unindexed(runs.c.saga_name) == n,
                runs.c.saga_version == v,
                runs.c.fingerprint == f,
            )
            for n, v, f in definitions
        )
    )


def _unindexed(column: Any) -> Any:
    """``column`` in a form no index can serve (``column || ''``).

    The recovery scan must read the due runs through the wake-up index. SQLite
    has no statistics unless ANALYZE has run, and would otherwise pick an index
    on status or saga name and read every unfinished run (80 ms a pass at
    100,000 waiting runs, instead of 3).
    """
    return column.concat("")


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
            "hash": None,  # chained where the write is made (see _chain)
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
        dispatched_at=m["dispatched_at"],
        last_seq=m["last_seq"],
        blocked_reason=m["blocked_reason"],
        last_error=m["last_error"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        cancel_requested=m["cancel_requested"],
        awaiting=m["awaiting"],
        last_hash=m["last_hash"],
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
        hash=m["hash"],
    )
