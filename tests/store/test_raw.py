"""The hot statements sent on the DBAPI connection write what SQLAlchemy would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.exc import OperationalError

from sagaledger.store import EventType, NewEvent, SagaLog, _chain, create_store_engine
from sagaledger.store._schema import events, runs
from tests.helpers import run_row

WHOLE_SECOND = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)  # no microseconds: a format edge
ELSEWHERE = datetime(2031, 5, 6, 9, 8, 9, 250, tzinfo=timezone(timedelta(hours=2)))


def new_run(run_id: str) -> dict[str, object]:
    """A run as ``create_run`` takes it."""
    payload = {"amount": 12.5, "note": "é"}
    return run_row(run_id, WHOLE_SECOND, input=payload, dispatched_at=ELSEWHERE)


def stored_run(run_id: str) -> dict[str, object]:
    """The same run as the table holds it once created and appended to (below)."""
    return {**new_run(run_id), "last_seq": 1, "created_at": WHOLE_SECOND, "updated_at": ELSEWHERE}


#: Columns that name the run (or the row) and so differ between the two copies; the
#: hash chain starts from the run's id (its hashes are checked on their own below).
NAMING = ("id", "business_key", "run_id", "hash", "last_hash")


def stored(log: SagaLog, run_id: str) -> tuple[tuple[object, ...], list[tuple[object, ...]]]:
    """The run's row and events as the database holds them (as text), ids left out."""
    as_text = [text(f"CAST({c.name} AS TEXT)") for c in runs.columns if c.name not in NAMING]
    event_text = [text(f"CAST({c.name} AS TEXT)") for c in events.columns if c.name not in NAMING]
    with log.engine.connect() as conn:
        run = conn.execute(select(*as_text).select_from(runs).where(runs.c.id == run_id)).one()
        evs = conn.execute(
            select(*event_text).select_from(events).where(events.c.run_id == run_id)
        ).all()
    return tuple(run), [tuple(e) for e in evs]


def test_rows_written_on_the_dbapi_connection_match_sqlalchemys(saga_log: SagaLog) -> None:
    started = NewEvent(EventType.RUN_STARTED, "test", payload={"x": [1, None]})
    fast = new_run("fast")
    saga_log.create_run(fast, [started], WHOLE_SECOND)
    assert saga_log.append("fast", 0, [], ELSEWHERE, dispatched_at=ELSEWHERE)
    with saga_log.engine.begin() as conn:  # the same run, through SQLAlchemy's types
        conn.execute(insert(runs), stored_run("slow"))
        conn.execute(
            insert(events),
            {
                "run_id": "slow",
                "seq": 1,
                "type": "run_started",
                "step": None,
                "phase": None,
                "attempt": None,
                "payload": {"x": [1, None]},
                "error": None,
                "actor": "test",
                "token": 0,
                "created_at": WHOLE_SECOND,
            },
        )
    assert stored(saga_log, "fast") == stored(saga_log, "slow")
    (event,) = saga_log.events("fast")
    row = {f: getattr(event, f) for f in ("type", "step", "phase", "attempt", "payload")}
    row |= {"type": "run_started", "error": None, "actor": "test", "token": 0}
    row |= {"created_at": WHOLE_SECOND}
    assert event.hash == _chain.link(_chain.genesis("fast"), _chain.digest(row))
    run = saga_log.get_run("fast")
    assert run.last_hash == event.hash
    assert (run.wake_at, run.dispatched_at) == (WHOLE_SECOND, ELSEWHERE)
    assert run.wake_at is not None and run.wake_at.tzinfo is UTC
    assert run.input == {"amount": 12.5, "note": "é"} and run.last_error is None


def test_a_connection_the_server_dropped_fails_one_write_and_is_not_reused(
    postgres_url: str,
) -> None:
    log = SagaLog.open(postgres_url, upgrade=True, pool_size=1, max_overflow=0)
    try:
        log.create_run(new_run("r"), [NewEvent(EventType.RUN_STARTED, "test")], WHOLE_SECOND)
        killer = create_store_engine(postgres_url)  # outside the log's one-connection pool
        with killer.begin() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        killer.dispose()
        with pytest.raises(OperationalError):
            log.append("r", 0, [], WHOLE_SECOND, attempt=2)
        assert log.append("r", 0, [], WHOLE_SECOND, attempt=3)  # a fresh connection
        assert log.get_run("r").attempt == 3
    finally:
        log.close()
