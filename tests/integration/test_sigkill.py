"""Real worker processes SIGKILLed at chosen points, on SQLite and PostgreSQL.

Each test starts a run from this process, lets a worker process pick it up and
kill itself with SIGKILL at one point, then starts a fresh worker and checks the
invariants: the run finishes, no completed step runs again, and the step in
flight runs again with the same idempotency key and its effect applies once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sagaledger import Orchestrator, RunStatus, SagaLog
from sagaledger.store import EventType, RunRecord
from tests import ledger_app
from tests.helpers import wait_finished
from tests.ledger_app import STEPS, registry

ROOT = Path(__file__).resolve().parents[2]


def spawn_worker(
    store_url: str, crash: str | None = None, lease: float = 1
) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "tests.integration.crash_worker", store_url]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CRASH_WORKER_LEASE": str(lease)}
    return subprocess.Popen(args + ([crash] if crash else []), cwd=ROOT, env=env)


@pytest.fixture
def saga_log(store_url: str) -> Iterator[SagaLog]:
    log = SagaLog.open(store_url)
    yield log
    log.close()


def crash_then_recover(
    store_url: str, log: SagaLog, ledger: str, crash: str, lease: float = 1, **order: object
) -> RunRecord:
    # Given a run written to the log (no broker message: a worker's recovery finds it)
    starter = Orchestrator(log, registry)
    run = starter.start("order", {"order_id": "K1", "ledger": ledger, **order})

    # When a worker takes it and is SIGKILLed at the chosen point
    doomed = spawn_worker(store_url, crash, lease)
    assert doomed.wait(timeout=60) == -signal.SIGKILL

    # Then a fresh worker resumes it from its checkpoint
    survivor = spawn_worker(store_url, lease=lease)
    try:
        return wait_finished(log, [run.id], timeout=60)[0]
    finally:
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(timeout=30) == 0


@pytest.mark.parametrize(
    ("crash", "charge_calls"),
    [
        pytest.param("charge_payment:before_action", 1, id="a-before-effect"),
        pytest.param("charge_payment:after_action", 2, id="b-after-effect-before-checkpoint"),
        pytest.param("charge_payment:after_checkpoint", 1, id="c-after-checkpoint-before-dispatch"),
    ],
)
def test_sigkill_in_the_forward_phase(
    store_url: str, saga_log: SagaLog, tmp_path: Path, crash: str, charge_calls: int
) -> None:
    ledger = str(tmp_path / "ledger.db")
    run = crash_then_recover(store_url, saga_log, ledger, crash)

    assert run.status is RunStatus.COMPLETED
    calls = ledger_app.calls(ledger, run.id)
    per_step = {s: [c for c in calls if c[0] == s] for s in STEPS}
    # Completed steps ran once; the step in flight ran again with the same key
    assert len(per_step["reserve_inventory"]) == 1
    assert len(per_step["charge_payment"]) == charge_calls
    assert {c[2] for c in per_step["charge_payment"]} == {f"{run.id}:charge_payment:forward"}
    assert len(per_step["create_erp_order"]) == 1 and len(per_step["send_email"]) == 1
    assert sorted(ledger_app.effects(ledger, run.id)) == sorted((s, "forward") for s in STEPS)
    events = saga_log.events(run.id)
    assert [e.step for e in events if e.type is EventType.STEP_COMPLETED] == list(STEPS)
    started = [(e.step, e.attempt) for e in events if e.type is EventType.ATTEMPT_STARTED]
    if crash.endswith("after_checkpoint"):
        # The crash hit between two steps: the next one was started but never ran
        assert ("create_erp_order", 2) in started
    else:
        assert ("charge_payment", 2) in started
    assert sum(e.type is EventType.ATTEMPT_ABANDONED for e in events) == 1


def test_sigkill_in_the_middle_of_compensating(
    store_url: str, saga_log: SagaLog, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger.db")
    run = crash_then_recover(
        store_url, saga_log, ledger, "charge_payment:after_action:compensate", fail_at="send_email"
    )

    assert run.status is RunStatus.COMPENSATED
    undo = [c for c in ledger_app.calls(ledger, run.id) if c[1] == "compensate"]
    assert [c[0] for c in undo] == [
        "create_erp_order",
        "charge_payment",
        "charge_payment",
        "reserve_inventory",
    ]
    assert undo[1][2] == undo[2][2] == f"{run.id}:charge_payment:compensate"
    forward = [c[0] for c in ledger_app.calls(ledger, run.id) if c[1] == "forward"]
    assert forward == list(STEPS)  # nothing forward ran again
    effects = ledger_app.effects(ledger, run.id)
    assert effects.count(("charge_payment", "compensate")) == 1
    order = [e.step for e in saga_log.events(run.id) if e.type is EventType.COMPENSATION_COMPLETED]
    assert order == ["create_erp_order", "charge_payment", "reserve_inventory"]


def test_a_dead_neighbours_runs_resume_without_waiting_out_its_lease(
    store_url: str, saga_log: SagaLog, tmp_path: Path
) -> None:
    # Leases of 10 minutes: the run can only finish within the 60 s wait if the
    # fresh worker (same host) sees the killed one's process is gone and releases it.
    ledger = str(tmp_path / "ledger.db")
    run = crash_then_recover(store_url, saga_log, ledger, "charge_payment:after_action", lease=600)

    assert run.status is RunStatus.COMPLETED
    events = saga_log.events(run.id)
    abandoned = [e for e in events if e.type is EventType.ATTEMPT_ABANDONED]
    assert [(e.step, e.attempt) for e in abandoned] == [("charge_payment", 1)]
    assert ledger_app.effects(ledger, run.id).count(("charge_payment", "forward")) == 1
