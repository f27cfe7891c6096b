"""The saga log's hot statements, sent on the DBAPI connection directly.

Every step of every run costs one checkpoint (a fenced UPDATE and an event
INSERT) and every message one run lookup. Through SQLAlchemy's execution layer
(compiled-statement cache, events, type processors, result objects) these cost
several times what SQLite itself takes to run them, so they are written here
once as SQL text, with values converted the way the table types convert them:
rows written here and rows written through SQLAlchemy are the same bytes.
Everything else in the log goes through SQLAlchemy.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import JSON, Engine, Table
from sqlalchemy.exc import DBAPIError

from sagaledger.store._group import GroupCommit
from sagaledger.store._records import RunRecord, RunStatus
from sagaledger.store._schema import UTCDateTime, events, runs

T = TypeVar("T")


class RawStatements:
    """Runs the log's hot statements on pooled DBAPI connections of ``engine``.

    Errors are raised as SQLAlchemy's exception classes (``IntegrityError``,
    ``OperationalError``...), as the rest of the log raises them, and a
    connection the database dropped is thrown away rather than pooled again.
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        self.sqlite = engine.dialect.name == "sqlite"
        self._codec = _SQLiteCodec() if self.sqlite else _PostgresCodec()
        self._insert_run = self._sql(_insert(runs))
        self._insert_event = self._sql(_insert(events, skip=("id",)))
        self._get_run = self._sql(
            f"SELECT {', '.join(_RUN_COLUMNS)} FROM sagaledger_runs WHERE id = :id"
        )
        self._updates: dict[frozenset[str], str] = {}  # fenced UPDATEs by column set
        self._group = GroupCommit(self.transaction) if self.sqlite else None

    # -- statements -------------------------------------------------------------

    def create_run(self, row: dict[str, Any], event_rows: Sequence[dict[str, Any]]) -> None:
        """Insert a run and its first events in one committed transaction."""
        run = self._encode(runs, row)
        encoded = [self._encode(events, e) for e in event_rows]

        def write(cursor: Any) -> None:
            cursor.execute(self._insert_run, run)
            cursor.executemany(self._insert_event, encoded)

        self.write(write)

    def append(
        self, run_id: str, token: int, values: dict[str, Any], event_rows: Sequence[dict[str, Any]]
    ) -> bool:
        """Set ``values`` on the run and append its events if ``token`` is still current.

        The events' ``seq`` is taken from the run's ``last_seq``, advanced by the
        same UPDATE that checks the token.

        Returns:
            True if committed; False when the token has moved (nothing written).
        """
        statement = self._fenced_update(frozenset(values))
        params = self._encode(runs, values)
        params.update(_run=run_id, _token=token, _added=len(event_rows))
        encoded = [self._encode(events, e) for e in event_rows]

        def write(cursor: Any) -> bool:
            cursor.execute(statement, params)
            row = cursor.fetchone()
            if row is None:
                return False
            first_seq = int(row[0]) - len(encoded) + 1
            for offset, event in enumerate(encoded):
                event["seq"] = first_seq + offset
            if encoded:
                cursor.executemany(self._insert_event, encoded)
            return True

        return self.write(write)

    def get_run(self, cursor: Any, run_id: str) -> RunRecord | None:
        cursor.execute(self._get_run, {"id": run_id})
        row = cursor.fetchone()
        return None if row is None else self._run(row)

    # -- transactions -------------------------------------------------------------

    def write(self, write: Callable[[Any], T]) -> T:
        """Run ``write(cursor)`` in a committed writing transaction.

        On SQLite, concurrent writes share transactions (see :class:`GroupCommit`);
        Postgres commits concurrent transactions together by itself.
        """
        if self._group is not None:
            return self._group.write(write)
        with self.transaction() as cursor:
            return write(cursor)

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Any]:
        """A cursor in one transaction, committed at the end of the block.

        On SQLite a writing transaction takes the write lock up front (``BEGIN
        IMMEDIATE``, like every writer of the log); a reading one is a single
        statement in autocommit, which WAL makes a consistent snapshot.
        """
        connection = self.engine.raw_connection()
        cursor = connection.cursor()
        statement = "BEGIN IMMEDIATE"
        try:
            if self.sqlite and write:
                cursor.execute(statement)
            statement = "(transaction body)"
            yield cursor
            statement = "COMMIT"
            connection.commit()
        except self.engine.dialect.loaded_dbapi.Error as exc:
            dialect = self.engine.dialect
            invalidated = dialect.is_disconnect(exc, connection.dbapi_connection, cursor)
            if invalidated:
                connection.invalidate(exc)  # never hand a dead connection out again
            else:
                connection.rollback()
            raise DBAPIError.instance(
                statement,
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
            connection.close()  # back to the pool

    # -- helpers ----------------------------------------------------------------

    def _sql(self, text: str) -> str:
        """``:name`` placeholders, in the driver's own paramstyle."""
        return text if self.sqlite else re.sub(r":(\w+)", r"%(\1)s", text)

    def _fenced_update(self, columns: frozenset[str]) -> str:
        """The UPDATE setting ``columns``; a checkpoint sets one of a handful of sets."""
        statement = self._updates.get(columns)
        if statement is None:
            assignments = ", ".join(f"{name} = :{name}" for name in sorted(columns))
            statement = self._updates[columns] = self._sql(
                f"UPDATE sagaledger_runs SET {assignments}, last_seq = last_seq + :_added"
                " WHERE id = :_run AND lease_token = :_token RETURNING last_seq"
            )
        return statement

    def _encode(self, table: Table, row: dict[str, Any]) -> dict[str, Any]:
        times, payloads = _CONVERTED[table.name]
        encoded = dict(row)
        for name in times.intersection(row):
            if row[name] is not None:
                encoded[name] = self._codec.time(row[name])
        for name in payloads.intersection(row):  # None too: JSON null, as the JSON type does
            encoded[name] = self._codec.json(row[name])
        return encoded

    def _run(self, row: Sequence[Any]) -> RunRecord:
        (id_, saga_name, saga_version, fingerprint, business_key, status, step_index, step,
         attempt, input_, lease_owner, lease_token, wake_at, dispatched_at, last_seq,
         blocked_reason, last_error, created_at, updated_at) = row  # fmt: skip
        read_time, read_json = self._codec.read_time, self._codec.read_json
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
        )


class _SQLiteCodec:
    """Values as SQLAlchemy's SQLite types store them: naive-UTC text times, JSON text."""

    @staticmethod
    def time(value: datetime) -> str:
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: sagaledger stores UTC-aware times only")
        if value.tzinfo is not UTC:
            value = value.astimezone(UTC)
        # SQLAlchemy's SQLite DATETIME format, microseconds always written, so
        # that times compare correctly as text whichever path wrote them.
        text = value.replace(tzinfo=None).isoformat(" ")
        return text if value.microsecond else text + ".000000"

    @staticmethod
    def json(value: Any) -> str:
        return "null" if value is None else json.dumps(value)

    @staticmethod
    def read_time(value: str) -> datetime:
        return datetime.fromisoformat(value).replace(tzinfo=UTC)

    @staticmethod
    def read_json(value: str | None) -> Any:
        return None if value is None else json.loads(value)


class _PostgresCodec:
    """Values as psycopg takes them: aware datetimes, JSONB through its adapter."""

    def __init__(self) -> None:
        from psycopg.types.json import Jsonb

        self._jsonb = Jsonb

    @staticmethod
    def time(value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: sagaledger stores UTC-aware times only")
        return value

    def json(self, value: Any) -> Any:
        return self._jsonb(value)

    @staticmethod
    def read_time(value: datetime) -> datetime:
        return value.astimezone(UTC)

    @staticmethod
    def read_json(value: Any) -> Any:
        return value  # psycopg parses JSONB itself


#: Per table: the columns whose values are converted (times, JSON payloads).
_CONVERTED = {
    table.name: (
        frozenset(c.name for c in table.columns if isinstance(c.type, UTCDateTime)),
        frozenset(c.name for c in table.columns if isinstance(c.type, JSON)),
    )
    for table in (runs, events)
}
#: The runs table's columns, in the order RunRecord takes them.
_RUN_COLUMNS = [c.name for c in runs.columns]
if [field.name for field in dataclasses.fields(RunRecord)] != _RUN_COLUMNS:
    raise RuntimeError("RunRecord's fields must follow sagaledger_runs' columns, in order")


def _insert(table: Table, skip: Sequence[str] = ()) -> str:
    names = [c.name for c in table.columns if c.name not in skip]
    return (
        f"INSERT INTO {table.name} ({', '.join(names)})"
        f" VALUES ({', '.join(':' + name for name in names)})"
    )
