"""Recorded definition shapes, and check_deploy against the runs still in flight.

Every test that touches a store runs on SQLite and on a real PostgreSQL server.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete

from sagaledger import Orchestrator, Registry, RetrySafety, RunStatus, Saga, step
from sagaledger.sagas import ProblemKind, check_deploy
from sagaledger.store import RunRecord, SagaLog
from sagaledger.store._schema import definitions
from sagaledger.testing import SagaHarness
from tests.cli import waits_app
from tests.ledger_app import Order, order_saga, order_saga_v2


def without_compensation(saga: Saga, name: str) -> Saga:
    """``saga`` as a careless deploy ships it: step ``name`` no longer undone."""
    steps = [
        step(
            s.name,
            no_compensation="dropped",
            retry_safety=s.retry_safety,
            retry=s.retry,
        )(s.action)
        if s.name == name
        else s
        for s in saga.steps
    ]
    return Saga(saga.name, saga.version, saga.input, steps)


def test_the_fingerprint_is_the_digest_of_the_shape_and_has_not_moved() -> None:
    # Pinned: runs in existing logs recorded these, and must keep finding their definition.
    assert order_saga.fingerprint == "6c69aace695d1343"
    assert order_saga_v2.fingerprint == "bd52ac0cac7a9d76"
    assert waits_app.order_saga.fingerprint == "1b75e980e3e1a79a"
    blob = json.dumps(order_saga.shape, sort_keys=True, separators=(",", ":")).encode()
    assert hashlib.sha256(blob).hexdigest()[:16] == order_saga.fingerprint
    steps = order_saga.shape["steps"]
    assert [s["name"] for s in steps] == [s.name for s in order_saga.steps]
    assert steps[1] == {
        "name": "charge_payment",
        "compensable": True,
        "pivot": False,
        "retry_safety": "idempotency_key",
    }


def test_an_orchestrator_records_its_shapes_once_on_start_or_recovery(
    saga_log: SagaLog, tmp_path: Any
) -> None:
    calls: list[int] = []
    record = saga_log.record_definitions

    def counting(shapes: Any, now: Any) -> int:
        calls.append(1)
        return record(shapes, now)

    saga_log.record_definitions = counting  # type: ignore[method-assign]
    registry = Registry([order_saga, order_saga_v2])
    starter = Orchestrator(saga_log, registry)
    for n in range(3):
        starter.start(order_saga, {"order_id": f"A{n}", "ledger": str(tmp_path / "l.db")})
    assert len(calls) == 1
    worker = Orchestrator(saga_log, registry)
    worker.recover()
    worker.recover()
    assert len(calls) == 2
    # Recorded once each, as JSON equal to the shape
    definition = (order_saga.name, order_saga.version, order_saga.fingerprint)
    assert saga_log.definition_shape(definition) == order_saga.shape
    v2 = (order_saga_v2.name, order_saga_v2.version, order_saga_v2.fingerprint)
    assert saga_log.definition_shape(v2) == order_saga_v2.shape
    # A process with no sagas records nothing
    Orchestrator(saga_log, Registry([])).recover()
    assert len(calls) == 2


@pytest.fixture
def h(store_url: str) -> Iterator[SagaHarness]:
    harness = SagaHarness([order_saga], store_url=store_url)
    yield harness
    harness.close()


def in_flight(h: SagaHarness, ledger: str) -> tuple[RunRecord, RunRecord, RunRecord]:
    """A run compensating (it completed three steps), one waiting before its charge, one done."""
    unwinding = h.run(
        order_saga,
        {
            "order_id": "U1",
            "ledger": ledger,
            "fail_at": "send_email",
            "fail_compensation": "create_erp_order",
        },
    )
    early = h.run(order_saga, {"order_id": "E1", "ledger": ledger, "flaky": {"charge_payment": 1}})
    done = h.run(order_saga, {"order_id": "D1", "ledger": ledger})
    assert unwinding.status is RunStatus.COMPENSATING
    assert (early.status, early.step) == (RunStatus.RUNNING, "charge_payment")
    assert done.status is RunStatus.COMPLETED
    return unwinding, early, done


def test_the_same_registry_is_safe(h: SagaHarness, tmp_path: Any) -> None:
    assert check_deploy(h.log, Registry([order_saga])).summary == (
        "safe: all 0 definition(s) used by 0 unfinished run(s) are registered with the same shape"
    )
    in_flight(h, str(tmp_path / "ledger.db"))
    result = check_deploy(h.log, Registry([order_saga, order_saga_v2]))
    assert result.safe
    assert [(d.name, d.version, d.runs) for d in result.in_use] == [("order", 1, 2)]


def test_a_dropped_compensation_is_refused_naming_the_runs_that_completed_its_step(
    h: SagaHarness, tmp_path: Any
) -> None:
    # Given one run that has completed the charge and one that has not yet
    unwinding, _early, _ = in_flight(h, str(tmp_path / "ledger.db"))

    # When the deploy's registry drops the charge's compensation
    result = check_deploy(h.log, Registry([without_compensation(order_saga, "charge_payment")]))

    # Then it is unsafe, and the problem names the step and the run that needs the refund
    assert not result.safe
    (problem,) = result.problems
    assert problem.kind is ProblemKind.COMPENSATION_DROPPED
    assert (problem.saga, problem.version, problem.step) == ("order", 1, "charge_payment")
    assert (problem.runs, problem.run_ids) == (1, (unwinding.id,))
    assert problem.message == (
        "saga 'order' v1 step 'charge_payment': compensation dropped; 1 unfinished run has "
        f"completed it and needs its compensation ({unwinding.id})"
    )
    assert result.summary == (
        "unsafe: 1 problem(s) for the 1 definition(s) used by 2 unfinished run(s)"
    )


def test_a_missing_version_strands_every_unfinished_run_of_it(
    h: SagaHarness, tmp_path: Any
) -> None:
    unwinding, early, _ = in_flight(h, str(tmp_path / "ledger.db"))

    (problem,) = check_deploy(h.log, Registry([order_saga_v2])).problems

    assert problem.kind is ProblemKind.VERSION_MISSING
    assert problem.runs == 2
    assert set(problem.run_ids) == {unwinding.id, early.id}
    assert problem.message.startswith(
        "saga 'order' v1: version not registered (it has v2); 2 unfinished runs need this "
        "definition ("
    )


def test_removed_reordered_and_pivoted_steps_are_each_named(h: SagaHarness, tmp_path: Any) -> None:
    in_flight(h, str(tmp_path / "ledger.db"))
    reserve, charge, erp, _email = order_saga.steps
    pivot_erp = step("create_erp_order", pivot=True, retry_safety=RetrySafety.IDEMPOTENCY_KEY)(
        erp.action
    )
    changed = Saga("order", 1, Order, [charge, reserve, pivot_erp])

    problems = check_deploy(h.log, Registry([changed])).problems

    assert {(p.kind, p.step) for p in problems} == {
        (ProblemKind.STEP_REMOVED, "send_email"),
        (ProblemKind.COMPENSATION_DROPPED, "create_erp_order"),
        (ProblemKind.PIVOT_CHANGED, "create_erp_order"),
        (ProblemKind.STEPS_REORDERED, None),
    }
    reordered = next(p for p in problems if p.kind is ProblemKind.STEPS_REORDERED)
    assert "steps reordered (charge_payment -> reserve_inventory -> create_erp_order)" in (
        reordered.message
    )


def test_without_a_recorded_shape_the_change_is_still_refused(
    h: SagaHarness, tmp_path: Any
) -> None:
    in_flight(h, str(tmp_path / "ledger.db"))
    with h.log.engine.begin() as conn:
        conn.execute(delete(definitions))

    changed = without_compensation(order_saga, "charge_payment")
    (problem,) = check_deploy(h.log, Registry([changed])).problems

    assert problem.kind is ProblemKind.SHAPE_UNKNOWN
    assert problem.runs == 2
    assert f"fingerprint {order_saga.fingerprint} differs" in problem.message


def test_parked_runs_count_and_finished_ones_do_not(h: SagaHarness, tmp_path: Any) -> None:
    ledger = str(tmp_path / "ledger.db")
    unwinding, early, _done = in_flight(h, ledger)
    for _ in range(10):  # the failing compensation runs out of attempts: the run parks
        h.advance(timedelta(seconds=1))
        h.run_until_idle()
    assert h.status(unwinding.id) is RunStatus.PARKED
    assert h.status(early.id) is RunStatus.COMPLETED

    (used,) = check_deploy(h.log, Registry([order_saga])).in_use
    assert (used.runs, used.run_ids) == (1, (unwinding.id,))
    h.orchestrator.resolve(unwinding.id, by="alice", reason="undone by hand")
    assert check_deploy(h.log, Registry([])).safe
