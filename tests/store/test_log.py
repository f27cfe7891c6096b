"""The saga log on SQLite and PostgreSQL: fencing, append-only events, UTC, migrations."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError

from sagaledger import SchemaNotReadyError, StoreError
from sagaledger.store import EventType, NewEvent, SagaLog, Written, create_store_engine, upgrade
from sagaledger.store._migrate import VERSION_TABLE
from sagaledger.store._schema import metadata
from tests.helpers import run_row

NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)


def new_run(log: SagaLog, run_id: str = "r1", key: str = "k1") -> None:
    row = run_row(run_id, NOW, business_key=key, input={"a": 1})
    log.create_run(row, [NewEvent(EventType.RUN_STARTED, "test", payload={"a": 1})], NOW)


def test_writes_are_fenced_by_the_lease_token(saga_log: SagaLog) -> None:
    new_run(saga_log)
    claim = NewEvent(EventType.ATTEMPT_STARTED, "A")
    assert saga_log.append("r1", 0, [claim], NOW, new_token=1, lease_owner="A")
    # A second claimant still holding token 0 is refused and writes nothing
    assert not saga_log.append("r1", 0, [claim], NOW, new_token=1, lease_owner="B")
    assert not saga_log.append("r1", 0, [NewEvent(EventType.STEP_COMPLETED, "B")], NOW)
    run = saga_log.get_run("r1")
    assert (run.lease_owner, run.lease_token, run.last_seq) == ("A", 1, 2)
    assert [(e.seq, e.type, e.actor, e.token) for e in saga_log.events("r1")] == [
        (1, EventType.RUN_STARTED, "test", 0),
        (2, EventType.ATTEMPT_STARTED, "A", 1),
    ]


def test_times_come_back_utc_aware_and_naive_ones_are_refused(saga_log: SagaLog) -> None:
    new_run(saga_log)
    run = saga_log.get_run("r1")
    assert run.wake_at == NOW and run.wake_at.tzinfo is not None
    assert saga_log.events("r1")[0].created_at == NOW
    with pytest.raises(Exception, match="naive datetime"):
        saga_log.append("r1", 0, [], NOW, wake_at=datetime(2030, 1, 1))  # noqa: DTZ001


MINE = [("s", 1, "f")]


def test_recovery_takes_due_runs_once_per_grace_period(saga_log: SagaLog) -> None:
    new_run(saga_log, "fresh", "k1")
    new_run(saga_log, "leased", "k2")
    saga_log.append(
        "leased", 0, [], NOW, new_token=1, lease_owner="A", wake_at=NOW + timedelta(seconds=30)
    )
    saga_log.append("fresh", 0, [], NOW, dispatched_at=NOW)  # its message is on its way
    grace = timedelta(seconds=10)

    def take(at: timedelta) -> list[str]:
        return sorted(r.id for r in saga_log.claim_due(NOW + at, grace, MINE))

    assert take(timedelta(seconds=5)) == []  # the message may still arrive
    assert take(timedelta(seconds=11)) == ["fresh"]  # it did not: recovery sends another
    assert take(timedelta(seconds=12)) == []  # ...and waits a grace period for that one
    assert take(timedelta(seconds=31)) == ["fresh", "leased"]  # the lease expired too
    assert saga_log.claim_due(NOW + timedelta(hours=1), grace, [("other", 1, "f")]) == []


def test_runs_no_worker_can_run_are_reported_until_flagged(saga_log: SagaLog) -> None:
    new_run(saga_log, "r1", "k1")
    later = NOW + timedelta(minutes=1)
    assert [r.id for r in saga_log.unserved_due(later, timedelta(0), [("s", 2, "g")])] == ["r1"]
    assert saga_log.unserved_due(later, timedelta(0), MINE) == []
    saga_log.append("r1", 0, [], later, blocked_reason="no worker has s v1")
    assert saga_log.unserved_due(later, timedelta(0), [("s", 2, "g")]) == []


def test_worker_heartbeats_say_which_definitions_are_live(saga_log: SagaLog) -> None:
    saga_log.heartbeat("w1", [("s", 1, "f")], NOW)
    saga_log.heartbeat("w2", [("s", 2, "g")], NOW - timedelta(minutes=5))
    saga_log.heartbeat("w1", [("s", 1, "f"), ("t", 1, "h")], NOW)  # upsert, not a second row
    assert saga_log.live_definitions(NOW - timedelta(seconds=30)) == {("s", 1, "f"), ("t", 1, "h")}
    assert ("s", 2, "g") in saga_log.live_definitions(NOW - timedelta(minutes=10))


def test_events_are_append_only_in_the_database(saga_log: SagaLog) -> None:
    new_run(saga_log)
    for statement in ("UPDATE sagaledger_events SET actor = 'x'", "DELETE FROM sagaledger_events"):
        with pytest.raises(DBAPIError, match="append-only"), saga_log.engine.begin() as conn:
            conn.execute(text(statement))
    assert len(saga_log.events("r1")) == 1


def test_the_migrations_build_exactly_the_declared_schema(saga_log: SagaLog) -> None:
    with saga_log.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        diff = compare_metadata(context, metadata)
    assert diff == []


def test_an_unmigrated_postgres_database_is_refused_with_the_fix(postgres_url: str) -> None:
    with pytest.raises(SchemaNotReadyError, match="run `sagaledger db upgrade"):
        SagaLog.open(postgres_url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nonsense", "malformed store URL"),
        ("mysql://u@h/db", "unsupported store URL"),
        ("postgresql://nobody@127.0.0.1:1/none", "cannot use store"),
    ],
)
def test_bad_store_urls_get_one_clear_error(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        SagaLog.open(url, upgrade=False)


def test_sqlite_is_tuned_for_durability(sqlite_url: str) -> None:
    engine = create_store_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    engine.dispose()


def test_the_schema_revision_the_code_checks_is_the_newest_migration() -> None:
    from sagaledger.store import head_revision
    from sagaledger.store._migrate import SCHEMA_REVISION

    assert head_revision() == SCHEMA_REVISION


def test_a_short_id_prefix_matches_literally(saga_log: SagaLog) -> None:
    new_run(saga_log, "ab_1", "k1")
    new_run(saga_log, "abx2", "k2")
    assert saga_log.find_runs("ab_") == ["ab_1"]


def test_concurrent_recovery_passes_never_take_the_same_run(saga_log: SagaLog) -> None:
    # Given 200 due runs and four recovery passes running at the same moment
    for i in range(200):
        new_run(saga_log, f"r{i}", f"k{i}")
    later = NOW + timedelta(minutes=1)
    taken: list[list[str]] = [[] for _ in range(4)]
    barrier = threading.Barrier(4)

    def recover(slot: int) -> None:
        barrier.wait()
        while batch := saga_log.claim_due(later, timedelta(seconds=10), MINE, limit=20):
            taken[slot].extend(run.id for run in batch)

    threads = [threading.Thread(target=recover, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # Then every run was taken exactly once
    everything = [run_id for batch in taken for run_id in batch]
    assert sorted(everything) == sorted(f"r{i}" for i in range(200))
    assert sum(1 for batch in taken if batch) >= 2  # the passes really overlapped


def test_runs_are_listed_by_status_within_a_period_newest_first(saga_log: SagaLog) -> None:
    # Given runs started an hour apart over three days, every third one compensated
    day = timedelta(days=1)
    for i in range(72):
        started = NOW - 2 * day + timedelta(hours=i)
        status = "compensated" if i % 3 == 0 else "completed"
        row = run_row(f"r{i:02d}", None, business_key=f"k{i}", status=status)
        saga_log.create_run(row, [NewEvent(EventType.RUN_STARTED, "test")], started)

    # When the middle day's compensations are listed
    found = saga_log.list_runs(status="compensated", since=NOW - day, until=NOW, limit=100)

    # Then they are the runs started that day (the start is in, the end is out), newest first
    assert [run.id for run in found] == [f"r{i:02d}" for i in range(45, 23, -3)]
    assert all(NOW - day <= run.created_at < NOW for run in found)
    assert [r.id for r in saga_log.list_runs(since=NOW, limit=2)] == ["r71", "r70"]
    assert [r.id for r in saga_log.list_runs(until=NOW - 2 * day + day / 24)] == ["r00"]


def test_runs_are_found_by_business_key_across_sagas(saga_log: SagaLog) -> None:
    # Given two sagas' runs with the same key, and one with another
    for run_id, saga, key in (("a", "shop", "O-1"), ("b", "refund", "O-1"), ("c", "shop", "O-2")):
        row = {**run_row(run_id, None, business_key=key), "saga_name": saga}
        saga_log.create_run(row, [NewEvent(EventType.RUN_STARTED, "test")], NOW)

    # Then the key finds both of its runs, and with the saga only that saga's
    assert sorted(r.id for r in saga_log.list_runs(business_key="O-1")) == ["a", "b"]
    assert [r.id for r in saga_log.list_runs(business_key="O-1", saga="shop")] == ["a"]
    assert saga_log.list_runs(business_key="O-") == []


def test_an_analyzed_sqlite_log_keeps_statistics_for_the_status_start_index(
    sqlite_url: str,
) -> None:
    # Given a SQLite log at schema 0001 with one run, analyzed once
    engine = create_store_engine(sqlite_url)
    upgrade(engine, "0001")
    with engine.begin() as conn:
        # Written as 0001 had it: today's code writes columns 0001 did not have.
        conn.execute(
            text(
                "INSERT INTO sagaledger_runs (id, saga_name, saga_version, fingerprint,"
                " business_key, status, step_index, step, attempt, input, lease_token,"
                " wake_at, last_seq, created_at, updated_at) VALUES ('r1', 's', 1, 'f', 'k1',"
                " 'running', 0, 'a', 1, '{}', 0, :now, 1, :now, :now)"
            ),
            {"now": NOW.replace(tzinfo=None).isoformat(sep=" ")},
        )
        conn.execute(text("ANALYZE"))

    # When it is upgraded
    upgrade(engine)

    # Then the new index has statistics too, so the planner weighs it like the others
    with engine.connect() as conn:
        indexes = conn.execute(text("SELECT idx FROM sqlite_stat1")).scalars().all()
    engine.dispose()
    assert "ix_sagaledger_runs_status_created_at" in indexes
    assert "ix_sagaledger_runs_wake_at" in indexes


def test_the_recovery_scan_reads_the_wake_up_index_even_without_statistics(
    sqlite_url: str,
) -> None:
    # Many unfinished runs waiting far ahead, a log never analyzed: the scan must
    # still go through the wake-up index, not read every run of a status or saga.
    log = SagaLog.open(sqlite_url)
    later = NOW + timedelta(days=3)
    with log.engine.begin() as conn:
        conn.execute(
            text(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)"
                " INSERT INTO sagaledger_runs (id, saga_name, saga_version, fingerprint,"
                " business_key, status, step_index, step, attempt, input, lease_token,"
                " wake_at, dispatched_at, last_seq, created_at, updated_at)"
                " SELECT 'w' || i, 's', 1, 'f', 'k' || i, 'running', 0, 'a', 1, '{}', 0,"
                " :later, :later, 1, :now, :now FROM n"
            ),
            {"later": later.replace(tzinfo=None), "now": NOW.replace(tzinfo=None)},
        )
    sent: list[tuple[str, object]] = []

    def catch(conn: object, cursor: object, statement: str, params: object, *_: object) -> None:
        if "wake_at" in statement:
            sent.append((statement, params))

    event.listen(log.engine, "before_cursor_execute", catch)
    try:
        assert log.claim_due(NOW, timedelta(seconds=10), [("s", 1, "f")]) == []
        assert log.unserved_due(NOW, timedelta(seconds=10), []) == []
    finally:
        event.remove(log.engine, "before_cursor_execute", catch)
    assert len(sent) == 2
    with log.engine.connect() as conn:
        for statement, params in sent:
            plan = " | ".join(
                row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)
            )
            assert "ix_sagaledger_runs_wake_at" in plan, plan
            assert "status" not in plan.replace("ix_sagaledger_runs_wake_at", ""), plan
    log.close()


def test_a_write_says_whether_the_run_has_a_cancel_request(saga_log: SagaLog) -> None:
    new_run(saga_log)
    step = NewEvent(EventType.ATTEMPT_STARTED, "A")
    assert saga_log.append("r1", 0, [step], NOW) is Written.DONE
    asked = {"by": "alice", "reason": "duplicate", "at": NOW.isoformat()}
    assert saga_log.append("r1", 0, [], NOW, cancel_requested=asked) is Written.CANCEL_ASKED
    assert saga_log.append("r1", 0, [step], NOW) is Written.CANCEL_ASKED
    assert saga_log.append("r1", 0, [], NOW, cancel_requested=None) is Written.DONE
    assert saga_log.append("r1", 7, [step], NOW) is Written.REFUSED
    assert not Written.REFUSED and Written.DONE and Written.CANCEL_ASKED
