"""``sagaledger cancel`` as an operator runs it, against a log a worker then acts on."""

from __future__ import annotations

from pathlib import Path

from sagaledger import Orchestrator, Registry, RunStatus
from sagaledger.store import EventType, SagaLog
from sagaledger.testing import SagaHarness
from tests.cli.test_cli import sagaledger
from tests.ledger_app import order_saga


def test_an_operator_cancels_a_run_and_a_worker_undoes_it(tmp_path: Path) -> None:
    # Given a run written to the log and not yet driven (no worker running)
    store = f"sqlite:///{tmp_path}/saga.db"
    log = SagaLog.open(store)
    run = Orchestrator(log, Registry([order_saga])).start(
        order_saga, {"order_id": "A1", "ledger": str(tmp_path / "ledger.db")}
    )

    # When an operator cancels it by a prefix of its id
    result = sagaledger(
        tmp_path, "cancel", run.id[:10], "--reason", "duplicate", "--as", "alice", "--store", store
    )

    # Then the request is in the log, and a worker compensates instead of starting it
    assert result.returncode == 0, result.stderr
    assert f"run {run.id} is cancelling" in result.stdout
    asked = log.get_run(run.id).cancel_requested
    assert asked is not None and (asked["by"], asked["reason"]) == ("alice", "duplicate")
    log.close()
    harness = SagaHarness([order_saga], store_url=store)
    harness.run_until_idle()
    assert harness.status(run.id) is RunStatus.COMPENSATED
    kinds = [e.type for e in harness.events(run.id)]
    assert EventType.STEP_COMPLETED not in kinds
    assert kinds[-1] is EventType.RUN_COMPENSATED
    harness.close()


def test_cancelling_a_finished_run_is_one_error_line(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/saga.db"
    harness = SagaHarness([order_saga], store_url=store)
    run = harness.run(order_saga, {"order_id": "A1", "ledger": str(tmp_path / "ledger.db")})
    harness.close()

    result = sagaledger(
        tmp_path, "cancel", run.id, "--reason", "late", "--as", "alice", "--store", store
    )

    assert result.returncode == 1
    assert result.stderr.strip() == f"error: cannot cancel run '{run.id}': it is completed"


def test_a_cancel_needs_a_reason_and_a_known_run(tmp_path: Path) -> None:
    no_reason = sagaledger(tmp_path, "cancel", "abc")
    assert no_reason.returncode == 2
    assert "Missing option '--reason'" in no_reason.stderr

    unknown = sagaledger(tmp_path, "cancel", "abc", "--reason", "typo")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "error: unknown run 'abc'"
