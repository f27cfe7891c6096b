"""Tamper evidence: rows edited, deleted or reordered by hand in the database are named.

Each test writes a real log through sagaledger (runs that complete, retry and
compensate), then changes single event rows directly with SQL, the append-only
triggers set aside as a database administrator could, and checks what
``verify_log`` (and ``sagaledger audit verify``) says.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import text

from sagaledger import PermanentError, RetrySafety, Saga, StepContext, step
from sagaledger._errors import PeriodError
from sagaledger.audit import seal_period, verify_log
from sagaledger.store import EventType, SagaLog
from sagaledger.testing import ManualClock, SagaHarness

DAY = timedelta(days=1)
START = datetime(2026, 1, 5, 9, tzinfo=UTC)


class Order(BaseModel):
    order: str
    fail: bool = False


def order_saga() -> Saga:
    @step(retry_safety=RetrySafety.NATURAL, compensate=lambda ctx: {"refunded": 12.5})
    def charge(ctx: StepContext[Order]) -> dict[str, Any]:
        return {"charge": f"ch_{ctx.input.order}", "amount": 12.5, "big": 1e20}

    @step(retry_safety=RetrySafety.NATURAL, no_compensation="a read")
    def ship(ctx: StepContext[Order]) -> dict[str, str]:
        if ctx.input.fail:
            raise PermanentError("no stock")
        return {"parcel": "p-1", "note": "déjà"}

    return Saga("order", 1, Order, [charge, ship])


@pytest.fixture
def harness(store_url: str) -> Iterator[SagaHarness]:
    h = SagaHarness([order_saga()], store_url=store_url, clock=ManualClock(START))
    yield h
    h.close()


def write_runs(harness: SagaHarness) -> list[str]:
    """Three runs: two complete, one compensates; each has several events."""
    ids = []
    for order, fail in (("A", False), ("B", True), ("C", False)):
        ids.append(harness.run("order", {"order": order, "fail": fail}).id)
    return ids


def unguarded(log: SagaLog, statement: str, **params: Any) -> None:
    """Run ``statement`` with the events table's append-only triggers set aside."""
    with log.engine.begin() as conn:
        if log.engine.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        else:
            for verb in ("update", "delete"):
                conn.execute(text(f"DROP TRIGGER IF EXISTS sagaledger_events_no_{verb}"))
        conn.execute(text(statement), params)


def problems(log: SagaLog) -> list[tuple[str, str, int | None]]:
    return [(p.kind, p.run_id, p.seq) for p in verify_log(log).problems]


def test_an_untouched_log_verifies(harness: SagaHarness) -> None:
    ids = write_runs(harness)
    result = verify_log(harness.log)
    assert result.intact, result.problems
    assert result.runs == 3
    assert result.events == sum(len(harness.events(r)) for r in ids) > 15
    # Every event carries a hash, and each run's row keeps the last one
    for run_id in ids:
        events = harness.events(run_id)
        assert all(e.hash is not None for e in events)
        assert len({e.hash for e in events}) == len(events)
        assert harness.log.get_run(run_id).last_hash == events[-1].hash


def test_an_edited_payload_is_named(harness: SagaHarness) -> None:
    _, refunded, _ = write_runs(harness)
    done = next(e for e in harness.events(refunded) if e.type is EventType.STEP_COMPLETED)
    forged = json.dumps({"output": {"charge": "ch_B", "amount": 1.25, "big": 1e20}})
    as_json = "JSONB" if harness.log.engine.dialect.name == "postgresql" else "TEXT"
    unguarded(
        harness.log,
        f"UPDATE sagaledger_events SET payload = CAST(:p AS {as_json})"
        " WHERE run_id = :r AND seq = :s",
        p=forged,
        r=refunded,
        s=done.seq,
    )
    assert problems(harness.log) == [("edited", refunded, done.seq)]
    (problem,) = verify_log(harness.log).problems
    assert f"run {refunded} event seq {done.seq}" in problem.message
    assert "edited" in problem.message


@pytest.mark.parametrize("column", ["actor", "created_at", "type"])
def test_an_edited_actor_time_or_type_is_named(harness: SagaHarness, column: str) -> None:
    first, _, _ = write_runs(harness)
    values = {
        "actor": "operator:mallory",
        "created_at": (START + timedelta(hours=1)).replace(tzinfo=None).isoformat(" "),
        "type": "run_compensated",
    }
    unguarded(
        harness.log,
        f"UPDATE sagaledger_events SET {column} = :v WHERE run_id = :r AND seq = 2",
        v=values[column],
        r=first,
    )
    assert problems(harness.log) == [("edited", first, 2)]


def test_a_deleted_row_is_named(harness: SagaHarness) -> None:
    _, refunded, _ = write_runs(harness)
    unguarded(
        harness.log, "DELETE FROM sagaledger_events WHERE run_id = :r AND seq = 3", r=refunded
    )
    result = verify_log(harness.log)
    kinds = {(p.kind, p.seq) for p in result.problems}
    assert ("deleted", 4) in kinds  # the gap is found at the row after it
    assert {p.run_id for p in result.problems} == {refunded}
    deleted = next(p for p in result.problems if p.kind == "deleted")
    assert f"run {refunded} event seq 4" in deleted.message
    assert "seq 3 before it deleted" in deleted.message


def test_deleting_a_runs_last_rows_is_named(harness: SagaHarness) -> None:
    first, _, _ = write_runs(harness)
    last = harness.events(first)[-1].seq
    unguarded(
        harness.log, "DELETE FROM sagaledger_events WHERE run_id = :r AND seq = :s", r=first, s=last
    )
    assert problems(harness.log) == [("head", first, last - 1)]
    (problem,) = verify_log(harness.log).problems
    assert f"events after seq {last - 1} were deleted" in problem.message


def test_a_deleted_row_with_the_rest_renumbered_is_named(harness: SagaHarness) -> None:
    first, _, _ = write_runs(harness)
    count = len(harness.events(first))
    unguarded(harness.log, "DELETE FROM sagaledger_events WHERE run_id = :r AND seq = 2", r=first)
    for seq in range(3, count + 1):  # close the gap, as a careful forger would
        unguarded(
            harness.log,
            "UPDATE sagaledger_events SET seq = :n WHERE run_id = :r AND seq = :s",
            n=seq - 1,
            r=first,
            s=seq,
        )
    assert problems(harness.log) == [("edited", first, 2)]
    (problem,) = verify_log(harness.log).problems
    assert problem.message.endswith(
        "edited (or an event before it deleted, and the rest renumbered)"
    )


def test_two_rows_swapped_are_named_as_reordered(harness: SagaHarness) -> None:
    _, refunded, _ = write_runs(harness)
    swap = (
        "UPDATE sagaledger_events SET seq = CASE seq WHEN 2 THEN 3 ELSE 2 END"
        " WHERE run_id = :r AND seq IN (2, 3)"
    )
    if harness.log.engine.dialect.name == "sqlite":  # one row at a time past the unique key
        for old, new in ((2, -2), (3, 2), (-2, 3)):
            unguarded(
                harness.log,
                "UPDATE sagaledger_events SET seq = :n WHERE run_id = :r AND seq = :s",
                n=new,
                r=refunded,
                s=old,
            )
    else:
        unguarded(
            harness.log,
            "ALTER TABLE sagaledger_events DROP CONSTRAINT uq_sagaledger_events_run_seq",
        )
        unguarded(harness.log, swap, r=refunded)
    found = verify_log(harness.log).problems
    assert [(p.kind, p.run_id, p.seq) for p in found] == [
        ("reordered", refunded, 2),
        ("reordered", refunded, 3),
    ]
    # The rows after them are not blamed: they follow the rows they were written after
    assert found[0].message.endswith("moved: it was written right after seq 3")
    assert found[1].message.endswith("moved: it was written right after seq 1")


def test_a_row_moved_to_another_run_is_named_in_both(harness: SagaHarness) -> None:
    first, _, third = write_runs(harness)
    unguarded(
        harness.log,
        "UPDATE sagaledger_events SET run_id = :to, seq = 99 WHERE run_id = :r AND seq = 2",
        to=third,
        r=first,
    )
    assert {(kind, run) for kind, run, _ in problems(harness.log)} == {
        ("deleted", first),
        ("deleted", third),
        ("head", third),
    }


def test_a_sealed_day_shows_a_rewrite_of_a_whole_run(harness: SagaHarness) -> None:
    first, second, third = write_runs(harness)
    day = START.replace(hour=0)
    anchor = seal_period(harness.log, day, day + DAY, by="finance@example.com", now=day + 2 * DAY)
    assert anchor.events == sum(len(harness.events(r)) for r in (first, second, third))
    assert verify_log(harness.log).anchors == 1
    assert verify_log(harness.log).intact

    # A whole run deleted leaves no broken chain behind, only the anchor shows it
    unguarded(harness.log, "DELETE FROM sagaledger_events WHERE run_id = :r", r=second)
    unguarded(harness.log, "DELETE FROM sagaledger_runs WHERE id = :r", r=second)
    found = verify_log(harness.log).problems
    assert [p.kind for p in found] == ["anchor"]
    assert found[0].message.startswith(f"period {day.isoformat()} to {(day + DAY).isoformat()}")
    assert "sealed" in found[0].message and "finance@example.com" in found[0].message


def test_a_day_is_sealed_once_and_only_once_it_is_over(harness: SagaHarness) -> None:
    write_runs(harness)
    day = START.replace(hour=0)
    with pytest.raises(PeriodError, match="has not ended"):
        seal_period(harness.log, day, day + DAY, by="finance", now=START)
    seal_period(harness.log, day, day + DAY, by="finance", now=day + DAY)
    with pytest.raises(PeriodError, match=r"was sealed at .* by finance: \d+ events, digest"):
        seal_period(harness.log, day, day + DAY, by="mallory", now=day + 3 * DAY)


def test_concurrent_appends_to_one_run_keep_one_chain(saga_log: SagaLog) -> None:
    """Writers that share a run's token (a cancel beside its driver) append at once."""
    from concurrent.futures import ThreadPoolExecutor

    from sagaledger.store import NewEvent
    from tests.helpers import run_row

    saga_log.create_run(run_row("race", START), [NewEvent(EventType.RUN_STARTED, "t")], START)

    def append(n: int) -> bool:
        event = NewEvent(EventType.CANCEL_REQUESTED, f"writer-{n}", payload={"n": n})
        return bool(saga_log.append("race", 0, [event, event], START))

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(append, range(64)))
    assert len(saga_log.events("race")) == 1 + 128
    result = verify_log(saga_log)
    assert result.intact, result.problems[:3]


def test_the_cli_names_each_problem_and_exits_1(harness: SagaHarness, store_url: str) -> None:
    first, _, _ = write_runs(harness)

    def audit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sagaledger", "audit", *args, "--store", store_url],
            capture_output=True,
            text=True,
            timeout=60,
        )

    clean = audit("verify")
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.strip().endswith(
        f"verified 3 runs, {verify_log(harness.log).events} events and 0 sealed days: intact"
    )
    unguarded(
        harness.log,
        "UPDATE sagaledger_events SET actor = 'x' WHERE run_id = :r AND seq = 2",
        r=first,
    )
    tampered = audit("verify", "--json")
    assert tampered.returncode == 1
    report = json.loads(tampered.stdout)
    assert report["intact"] is False
    assert [(p["kind"], p["run_id"], p["seq"]) for p in report["problems"]] == [
        ("edited", first, 2)
    ]
    sealed = audit("seal", "--day", "2026-01-05", "--as", "finance")
    assert sealed.returncode == 0, sealed.stderr
    assert sealed.stdout.startswith("sealed 2026-01-05: ")
    again = audit("seal", "--day", "2026-01-05")
    assert again.returncode == 1
    assert again.stderr.startswith(
        "error: the period starting 2026-01-05T00:00:00+00:00 was sealed"
    )


def test_writers_in_two_processes_keep_one_chain(store_url: str) -> None:
    """Each log remembers the chain head it wrote last; the other's writes move it."""
    from sagaledger.store import NewEvent
    from tests.helpers import run_row

    mine, theirs = SagaLog.open(store_url), SagaLog.open(store_url)
    mine.create_run(run_row("two", START), [NewEvent(EventType.RUN_STARTED, "t")], START)
    for n in range(6):  # alternate, each time after the other has written
        writer = mine if n % 2 else theirs
        event = NewEvent(EventType.CANCEL_REQUESTED, f"writer-{n}", payload={"n": n})
        assert writer.append("two", 0, [event], START)
    assert not mine.append("two", 7, [event], START)  # a stale token is still refused
    assert [e.seq for e in mine.events("two")] == list(range(1, 8))
    result = verify_log(mine)
    assert result.intact, result.problems
    mine.close()
    theirs.close()
