"""The saga log's hot statements, sent on the DBAPI connection directly.

Every step of every run costs one checkpoint (a fenced UPDATE and an event
INSERT) and every message one run lookup. Through SQLAlchemy's execution layer
(compiled-statement cache, events, type processors, result objects) these cost
several times what the database takes to run them, so they are written here
once as SQL text, with values converted the way the table types convert them:
rows written here and rows written through SQLAlchemy are the same bytes.
Everything else in the log goes through SQLAlchemy.

The two backends differ in what is cheap. SQLite runs in the process, so a
statement costs no round trip, but it has one write lock: concurrent writes
share transactions (group commit). Postgres is a round trip per statement and
groups concurrent commits itself: each write is one statement (data-modifying
CTEs) in autocommit, so a checkpoint is one round trip.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import JSON, Engine, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError

from sagaledger.store import _chain
from sagaledger.store._group import GroupCommit
from sagaledger.store._records import RunRecord, RunStatus, Written
from sagaledger.store._schema import CANCEL_ASKED, UTCDateTime, events, runs

T = TypeVar("T")


class RawStatements:
    """Creates runs, appends checkpoints and reads runs on pooled DBAPI connections.

    Errors are raised as SQLAlchemy's exception classes (``IntegrityError``,
    ``OperationalError``...), as the rest of the log raises them, and a
    connection the database dropped is thrown away rather than pooled again.
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        self._statements: dict[Any, str] = {}  # see _statement

    @classmethod
    def for_engine(cls, engine: Engine) -> RawStatements:
        """The statements for the engine's database."""
        if engine.dialect.name == "sqlite":
            return _SQLiteStatements(engine)
        return _PostgresStatements(engine)

    def create_run(self, row: dict[str, Any], event_rows: Sequence[dict[str, Any]]) -> None:
        """Insert a run and its first events in one committed transaction."""
        raise NotImplementedError

    def append(
        self, run_id: str, token: int, values: dict[str, Any], event_rows: Sequence[dict[str, Any]]
    ) -> Written:
        """Set ``values`` on the run and append its events if ``token`` is still current.

        The events' ``seq`` follows the run's ``last_seq``, advanced by the same
        write that checks the token; the ``seq`` given in ``event_rows`` is ignored.

        Returns:
            Whether it was committed (not when the token has moved), and whether
            the run then has a cancel request, which the same statement reports.
        """
        raise NotImplementedError

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run, or None."""
        with self._cursor(write=False) as cursor:
            cursor.execute(self._select_run, {"id": run_id})
            row = cursor.fetchone()
        return None if row is None else self._run(row)

    def _statement(self, shape: Any, build: Callable[[], str]) -> str:
        """The statement for ``shape`` (a set of columns, a number of events), built once."""
        statement = self._statements.get(shape)
        if statement is None:
            statement = self._statements[shape] = build()
        return statement

    # -- connections ------------------------------------------------------------

    @contextmanager
    def _cursor(self, *, write: bool) -> Iterator[Any]:
        """A cursor on a pooled connection; its work is committed at the end of the block."""
        connection = self.engine.raw_connection()
        cursor = connection.cursor()
        dialect = self.engine.dialect
        try:
            self._begin(connection, cursor, write)
            yield cursor
            connection.commit()
        except dialect.loaded_dbapi.Error as exc:
            invalidated = dialect.is_disconnect(exc, connection.dbapi_connection, cursor)
            if invalidated:
                connection.invalidate(exc)  # never hand a dead connection out again
            else:
                connection.rollback()
            raise DBAPIError.instance(
                None,
                None,
                exc,
                dialect.loaded_dbapi.Error,
                connection_invalidated=invalidated,
                dialect=dialect,
            ) from exc
        except BaseException:
            connection.rollback()
            raise
        finally:
            cursor.close()
            if connection.is_valid:
                self._end(connection)
            connection.close()  # back to the pool

    def _begin(self, connection: Any, cursor: Any, write: bool) -> None:
        """Start the block's transaction (the driver may start one by itself)."""

    def _end(self, connection: Any) -> None:
        """Leave the connection as the pool expects it."""

    # -- values -----------------------------------------------------------------

    def _encode(self, table: Table, row: dict[str, Any]) -> dict[str, Any]:
        times, payloads = _CONVERTED[table.name]
        encoded = dict(row)
        for name in times.intersection(row):
            if row[name] is not None:
                encoded[name] = self._time(row[name])
        for name in payloads.intersection(row):  # None too: JSON null, as the JSON type does
            encoded[name] = self._json(row[name])
        return encoded

    def _time(self, value: datetime) -> Any:
        raise NotImplementedError

    def _json(self, value: Any) -> Any:
        raise NotImplementedError

    def _read_time(self, value: Any) -> datetime:
        raise NotImplementedError

    def _read_json(self, value: Any) -> Any:
        raise NotImplementedError

    _select_run = f"SELECT {', '.join(c.name for c in runs.columns)} FROM sagaledger_runs"

    def _run(self, row: Sequence[Any]) -> RunRecord:
        (id_, saga_name, saga_version, fingerprint, business_key, status, step_index, step,
         attempt, input_, lease_owner, lease_token, wake_at, dispatched_at, last_seq,
         blocked_reason, last_error, created_at, updated_at, cancel_requested,
         awaiting, last_hash) = row  # fmt: skip
        read_time, read_json = self._read_time, self._read_json
        return RunRecord(
            id=id_,
            saga_name=saga_name,
            saga_version=saga_version,
            fingerprint=fingerprint,
            business_key=business_key,
            status=RunStatus(status),
            step_index=step_index,
            step=step,
            attempt=attempt,
            input=read_json(input_),
            lease_owner=lease_owner,
            lease_token=lease_token,
            wake_at=None if wake_at is None else read_time(wake_at),
            dispatched_at=None if dispatched_at is None else read_time(dispatched_at),
            last_seq=last_seq,
            blocked_reason=blocked_reason,
            last_error=read_json(last_error),
            created_at=read_time(created_at),
            updated_at=read_time(updated_at),
            cancel_requested=read_json(cancel_requested),
            awaiting=awaiting,
            last_hash=last_hash,
        )


class _SQLiteStatements(RawStatements):
    """SQLite: statements in ``BEGIN IMMEDIATE`` transactions, shared by concurrent writers."""

    _select_run = RawStatements._select_run + " WHERE id = :id"
    _get_head = "SELECT last_hash FROM sagaledger_runs WHERE id = :id AND lease_token = :token"
    _insert_run = f"INSERT INTO sagaledger_runs ({', '.join(c.name for c in runs.columns)})" + (
        f" VALUES ({', '.join(':' + c.name for c in runs.columns)})"
    )

    def __init__(self, engine: Engine):
        super().__init__(engine)
        self._group = GroupCommit(lambda: self._cursor(write=True))
        # The chain head of runs this process wrote last: the next write extends it
        # with no read (a conditional update finds out if another process wrote since).
        self._heads: dict[str, str] = {}
        self._last_time: tuple[datetime | None, str] = (None, "")
        self._insert_event = (
            f"INSERT INTO sagaledger_events ({', '.join(_EVENT_COLUMNS)})"
            f" VALUES ({', '.join(':' + name for name in _EVENT_COLUMNS)})"
        )

    def create_run(self, row: dict[str, Any], event_rows: Sequence[dict[str, Any]]) -> None:
        run = self._encode(runs, row)
        encoded = [self._encode(events, e) for e in event_rows]

        def write(cursor: Any) -> None:
            cursor.execute(self._insert_run, run)
            cursor.executemany(self._insert_event, encoded)
            if row.get("last_hash"):
                self._remember(str(row["id"]), str(row["last_hash"]))

        self._group.write(write)

    def append(
        self, run_id: str, token: int, values: dict[str, Any], event_rows: Sequence[dict[str, Any]]
    ) -> Written:
        columns = frozenset(values)
        chained = bool(event_rows)
        statement = self._statement(
            (columns, chained), lambda: _fenced_update(columns, ":{}", head=chained)
        )
        params = self._encode(runs, values)
        params.update(_run=run_id, _token=token, _added=len(event_rows))
        encoded = [self._encode(events, e) for e in event_rows]
        # Outside the write lock: the digests, and the hashes after the head this
        # process wrote last, if it knows it (the update checks it is still the head).
        digests = [_chain.digest(e) for e in event_rows]
        known = self._heads.get(run_id) if chained else None
        ready = self._chain_params(params, known, digests) if known is not None else []

        def write(cursor: Any) -> Written:
            hashes = ready
            if chained and not hashes:
                head = self._head(cursor, run_id, token)
                if head is None:
                    return Written.REFUSED
                hashes = self._chain_params(params, head, digests)
            cursor.execute(statement, params)
            row = cursor.fetchone()
            if row is None and chained:
                # The token moved, or another process extended the chain since: look.
                head = self._head(cursor, run_id, token)
                if head is None:
                    return Written.REFUSED
                hashes = self._chain_params(params, head, digests)
                cursor.execute(statement, params)
                row = cursor.fetchone()
            if row is None:
                return Written.REFUSED
            if chained:
                first_seq = int(row[0]) - len(encoded) + 1
                for offset, (event, value) in enumerate(zip(encoded, hashes, strict=True)):
                    event["seq"], event["hash"] = first_seq + offset, value
                cursor.executemany(self._insert_event, encoded)
                self._remember(run_id, hashes[-1])
            return _written(row[1])

        return self._group.write(write)

    def _head(self, cursor: Any, run_id: str, token: int) -> str | None:
        """The run's chain head, read under the write lock; None if the token moved."""
        cursor.execute(self._get_head, {"id": run_id, "token": token})
        row = cursor.fetchone()
        if row is None:
            return None
        return str(row[0]) if row[0] is not None else _chain.genesis(run_id)

    @staticmethod
    def _chain_params(params: dict[str, Any], head: str, digests: list[str]) -> list[str]:
        hashes = _chain.links(head, digests)
        params["_expected"], params["_head"] = head, hashes[-1]
        return hashes

    def _remember(self, run_id: str, head: str) -> None:
        # If the transaction is rolled back, the next write finds the head moved and reads it.
        if len(self._heads) > _HEADS_KEPT:
            self._heads.clear()
        self._heads[run_id] = head

    def _begin(self, connection: Any, cursor: Any, write: bool) -> None:
        # Writers take the write lock up front; a read is one statement in
        # autocommit, which WAL makes a consistent snapshot.
        if write:
            cursor.execute("BEGIN IMMEDIATE")

    def _time(self, value: datetime) -> str:
        # A checkpoint stamps one time on the run and all its events: convert it once.
        last = self._last_time
        if last[0] is value:
            return last[1]
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: sagaledger stores UTC-aware times only")
        utc = value if value.tzinfo is UTC else value.astimezone(UTC)
        # SQLAlchemy's SQLite DATETIME format, microseconds always written, so
        # that times compare correctly as text whichever path wrote them.
        text = utc.replace(tzinfo=None).isoformat(" ")
        text = text if utc.microsecond else text + ".000000"
        self._last_time = (value, text)  # one assignment: safe across threads
        return text

    @staticmethod
    def _json(value: Any) -> str:
        return "null" if value is None else json.dumps(value)

    @staticmethod
    def _read_time(value: str) -> datetime:
        return datetime.fromisoformat(value).replace(tzinfo=UTC)

    @staticmethod
    def _read_json(value: str | None) -> Any:
        return None if value is None else json.loads(value)


class _PostgresStatements(RawStatements):
    """Postgres: every write one statement in autocommit, so one round trip."""

    _select_run = RawStatements._select_run + " WHERE id = %(id)s"

    def __init__(self, engine: Engine):
        super().__init__(engine)
        from psycopg.types.json import Jsonb

        self._jsonb = Jsonb

    def create_run(self, row: dict[str, Any], event_rows: Sequence[dict[str, Any]]) -> None:
        params = self._encode(runs, row)
        params.update(_run=row["id"])
        statement = self._statement(
            ("create", len(event_rows)),
            lambda: (
                "WITH new_run AS (INSERT INTO sagaledger_runs"
                f" ({', '.join(c.name for c in runs.columns)})"
                f" VALUES ({', '.join(f'%({c.name})s' for c in runs.columns)}) RETURNING last_seq)"
                f"{_insert_events(len(event_rows), 'new_run')} SELECT last_seq FROM new_run"
            ),
        )
        self._add_events(params, event_rows)
        with self._cursor(write=True) as cursor:
            cursor.execute(statement, params)

    def append(
        self, run_id: str, token: int, values: dict[str, Any], event_rows: Sequence[dict[str, Any]]
    ) -> Written:
        columns = frozenset(values)
        statement = self._statement(
            (columns, len(event_rows)), lambda: _chained_append(columns, len(event_rows))
        )
        params = self._encode(runs, values)
        params.update(_run=run_id, _token=token, _added=len(event_rows))
        self._add_events(params, event_rows)
        if event_rows:
            params["_genesis"] = _chain.genesis(run_id)
            for n, event in enumerate(event_rows):
                params[f"e{n}_digest"] = _chain.digest(event)
        with self._cursor(write=True) as cursor:
            cursor.execute(statement, params)
            row = cursor.fetchone()
        return Written.REFUSED if row is None else _written(row[1])

    def _add_events(self, params: dict[str, Any], event_rows: Sequence[dict[str, Any]]) -> None:
        params["_added"] = len(event_rows)
        for n, event in enumerate(self._encode(events, e) for e in event_rows):
            for name in _EVENT_VALUES:
                params[f"e{n}_{name}"] = event[name]

    def _begin(self, connection: Any, cursor: Any, write: bool) -> None:
        # One statement per block: autocommit spares the BEGIN and COMMIT round trips.
        connection.dbapi_connection.autocommit = True

    def _end(self, connection: Any) -> None:
        connection.dbapi_connection.autocommit = False

    def _time(self, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: sagaledger stores UTC-aware times only")
        return value

    def _json(self, value: Any) -> Any:
        return self._jsonb(value)

    @staticmethod
    def _read_time(value: datetime) -> datetime:
        return value.astimezone(UTC)

    @staticmethod
    def _read_json(value: Any) -> Any:
        return value  # psycopg parses JSONB itself


def _fenced_update(
    columns: frozenset[str], placeholder: str, *, head: bool = False, chained: str = ""
) -> str:
    """The UPDATE that sets ``columns`` only while the lease token is unchanged.

    Args:
        head: Also set the chain head to ``_head``, only if it is still ``_expected``
            (SQLite: the writer chained from the head it knew).
        chained: The relation of the chain's new hashes (Postgres): the run's
            ``last_hash`` is set to its last one.
    """
    p = placeholder.format
    assignments = ", ".join(f"{name} = {p(name)}" for name in sorted(columns))
    extra, check = "", ""
    if head:
        extra, check = f", last_hash = {p('_head')}", f" AND last_hash IS {p('_expected')}"
    elif chained:
        extra = f", last_hash = {chained}.head FROM {chained}"
    return (
        f"UPDATE sagaledger_runs SET {assignments}, last_seq = last_seq + {p('_added')}{extra}"
        f" WHERE id = {p('_run')} AND lease_token = {p('_token')}{check}"
        f" RETURNING last_seq, {CANCEL_ASKED} AS cancel_asked"
    )


def _chained_append(columns: frozenset[str], count: int) -> str:
    """The Postgres append: one statement that also extends the run's hash chain.

    The chain head is read ``FOR UPDATE``, so a concurrent append to the same
    run (a cancel beside its driver's checkpoint) waits and then reads the head
    that one wrote; each event's hash is computed from the one before it.
    """
    fenced = _fenced_update(columns, "%({})s", chained="chained" if count else "")
    if count == 0:
        return f"WITH fenced AS ({fenced}) SELECT last_seq, cancel_asked FROM fenced"
    steps = ", ".join(
        f"LATERAL (SELECT {_pg_link(f'h{n}', f'%(e{n}_digest)s')} AS h{n + 1}) AS l{n + 1}"
        for n in range(count)
    )
    hashes = ", ".join(f"h{n + 1}" for n in range(count))
    return (
        "WITH head AS (SELECT COALESCE(last_hash, %(_genesis)s) AS h0 FROM sagaledger_runs"
        " WHERE id = %(_run)s AND lease_token = %(_token)s FOR UPDATE),"
        f" chained AS (SELECT {hashes}, h{count} AS head FROM head, {steps}),"
        f" fenced AS ({fenced})"
        f"{_insert_events(count, 'fenced', hashes_from='chained')}"
        " SELECT last_seq, cancel_asked FROM fenced"
    )


def _pg_value(n: int, name: str) -> str:
    return f"CAST(%(e{n}_{name})s AS {_PG_TYPES[name]})"


def _pg_link(previous: str, digest: str) -> str:
    """SQL for ``_chain.link``: sha256 of the previous hash and the digest, in hex."""
    return f"encode(sha256(convert_to({previous} || {digest}, 'UTF8')), 'hex')"


def _written(cancel_asked: Any) -> Written:
    return Written.CANCEL_ASKED if cancel_asked else Written.DONE


def _insert_events(count: int, source: str, *, hashes_from: str = "") -> str:
    """A CTE inserting ``count`` events numbered after ``source``'s ``last_seq`` (Postgres).

    Each value is cast to its column's type: in a VALUES list a NULL has none.

    Args:
        hashes_from: The relation whose ``h1``..``hN`` are the events' hashes;
            without it, the hashes are parameters like the other values.
    """
    if count == 0:
        return ""
    given = [name for name in _EVENT_VALUES if not (hashes_from and name == "hash")]
    rows = ", ".join(
        "(" + ", ".join([str(n + 1)] + [_pg_value(n, name) for name in given]) + ")"
        for n in range(count)
    )
    selected, inputs = ", ".join(given), source
    if hashes_from:
        cases = " ".join(f"WHEN {n + 1} THEN {hashes_from}.h{n + 1}" for n in range(count))
        selected += f", CASE e.n {cases} END"
        inputs += f", {hashes_from}"
    columns = ", ".join(given) + (", hash" if hashes_from else "")
    return (
        f", appended AS (INSERT INTO sagaledger_events (run_id, seq, {columns})"
        f" SELECT %(_run)s, {source}.last_seq - %(_added)s + e.n, {selected}"
        f" FROM {inputs}, (VALUES {rows}) AS e(n, {', '.join(given)}))"
    )


#: Chain heads a SQLite writer keeps in memory before it starts again from none.
_HEADS_KEPT = 100_000

#: Per table: the columns whose values are converted (times, JSON payloads).
_CONVERTED = {
    table.name: (
        frozenset(c.name for c in table.columns if isinstance(c.type, UTCDateTime)),
        frozenset(c.name for c in table.columns if isinstance(c.type, JSON)),
    )
    for table in (runs, events)
}
#: Every column of an event but its id (the database numbers events).
_EVENT_COLUMNS = [c.name for c in events.columns if c.name != "id"]
#: An event's columns that come from its values (run_id and seq come from the run).
_EVENT_VALUES = [name for name in _EVENT_COLUMNS if name not in ("run_id", "seq")]
#: The Postgres type of each event column, for casts.
_PG_TYPES = {
    c.name: c.type.compile(dialect=postgresql.dialect())  # type: ignore[no-untyped-call]
    for c in events.columns
}

if [c.name for c in runs.columns] != [field.name for field in dataclasses.fields(RunRecord)]:
    raise RuntimeError("RunRecord's fields must follow sagaledger_runs' columns, in order")
