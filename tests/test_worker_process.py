"""WorkerProcess: a real ``sagaledger worker`` process around a block, for integration tests.

Each test starts a real worker on ``tests.ledger_app`` (whose steps write what
they did to a ledger file) and a SQLite saga log it shares with the test.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sagaledger import Orchestrator, RunStatus, SagaLog
from sagaledger.testing import WorkerProcess, WorkerProcessError
from tests import ledger_app
from tests.ledger_app import STEPS, order_saga, registry

ROOT = Path(__file__).resolve().parents[1]
APP = "tests.ledger_app:registry"


@pytest.fixture
def saga_log(sqlite_url: str) -> Iterator[SagaLog]:
    log = SagaLog.open(sqlite_url)  # creates the schema before a worker opens the file
    yield log
    log.close()


@pytest.fixture
def order(tmp_path: Path) -> dict[str, Any]:
    return {"order_id": "A1", "ledger": str(tmp_path / "ledger.db")}


def test_a_worker_drives_a_run_then_stops_cleanly_on_sigterm(
    sqlite_url: str, saga_log: SagaLog, order: dict[str, Any], tmp_path: Path
) -> None:
    # Given a worker process that said it is ready
    log_path = tmp_path / "worker.log"
    with WorkerProcess(APP, store=sqlite_url, cwd=ROOT, log_path=log_path) as worker:
        assert "ready: order v1" in worker.output

        # When this process starts a run (no broker is shared: the worker finds it in the log)
        run = Orchestrator(saga_log, registry).start(order_saga, order, key="A1")

        # Then the worker drives it to the end
        done = worker.wait_for_run(saga_log, run.id, timeout=60)
        assert done.status is RunStatus.COMPLETED
        assert [call[0] for call in ledger_app.calls(order["ledger"], run.id)] == list(STEPS)

    # And leaving the block stopped it with SIGTERM: it finished cleanly
    assert worker.returncode == 0
    assert "stopped" in worker.output
    assert log_path.read_text() == worker.output


def test_a_crash_point_kills_the_worker_with_sigkill(
    sqlite_url: str, saga_log: SagaLog, order: dict[str, Any]
) -> None:
    # Given a worker that kills itself after charge_payment's effect
    crash = "charge_payment:after_action"
    with WorkerProcess(APP, store=sqlite_url, crash_at=crash, cwd=ROOT) as worker:
        # When it takes a run
        run = Orchestrator(saga_log, registry).start(order_saga, order, key="A1")

        # Then it dies by SIGKILL, and waiting for the run says so at once
        assert worker.wait(timeout=60) == -signal.SIGKILL
        with pytest.raises(WorkerProcessError, match="exited with -9") as caught:
            worker.wait_for_run(saga_log, run.id, timeout=60)
        assert caught.value.returncode == -signal.SIGKILL

    # And the run stands where the crash left it: charged, the charge not checkpointed
    stuck = saga_log.get_run(run.id)
    assert (stuck.status, stuck.step) == (RunStatus.RUNNING, "charge_payment")
    assert ledger_app.effects(order["ledger"], run.id)[-1] == ("charge_payment", "forward")


def test_an_app_the_worker_cannot_load_is_reported_with_its_output(
    sqlite_url: str, tmp_path: Path
) -> None:
    worker = WorkerProcess("no_such_module:registry", store=sqlite_url, cwd=tmp_path)
    with pytest.raises(WorkerProcessError, match="before it was ready") as caught:
        worker.start()
    assert caught.value.returncode == 1
    assert "no_such_module" in caught.value.output
    assert "no_such_module" in str(caught.value)


def test_a_worker_not_ready_in_time_is_stopped(sqlite_url: str) -> None:
    worker = WorkerProcess(APP, store=sqlite_url, cwd=ROOT, start_timeout=0.01)
    with pytest.raises(WorkerProcessError, match=r"not ready within 0\.01 s"):
        worker.start()
    assert worker.returncode is not None  # not left running


def test_the_worker_gets_the_settings_given_not_this_process_s(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given settings exported here that the worker would refuse
    monkeypatch.setenv("SAGALEDGER_THREADS", "many")
    monkeypatch.setenv("SAGALEDGER_STORE", "nosuchdb://host/db")

    # When a worker is started with settings of its own
    with WorkerProcess(APP, store=sqlite_url, threads=2, cwd=ROOT) as worker:
        # Then it runs on those
        assert "threads=2" in worker.output
        assert "nosuchdb" not in worker.output
