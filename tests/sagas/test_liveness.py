"""Releasing the leases of a worker whose process died on this host."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from sagaledger import Orchestrator, Registry, SagaLog
from sagaledger.sagas._liveness import host_key, is_running
from sagaledger.store import EventType, NewEvent
from tests.helpers import run_row
from tests.ledger_app import order_saga

NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)
LEASE = timedelta(minutes=10)


def test_a_killed_process_is_not_running_even_before_it_is_reaped() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert is_running(child.pid)
        os.kill(child.pid, signal.SIGKILL)
        # A zombie until waited for: dead all the same.
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while is_running(child.pid):
            assert datetime.now(UTC) < deadline, "a killed child still looks alive"
    finally:
        child.kill()
        child.wait()
    assert not is_running(child.pid)
    assert is_running(os.getpid())


def test_the_host_key_is_shared_by_the_processes_of_one_host() -> None:
    code = "from sagaledger.sagas._liveness import host_key; print(host_key())"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert child.stdout.strip() == host_key()


def leased_run(log: SagaLog, run_id: str, owner: str) -> None:
    saga = {"saga_name": order_saga.name, "fingerprint": order_saga.fingerprint}
    row = run_row(run_id, NOW, saga_version=order_saga.version, **saga)
    log.create_run(row, [NewEvent(EventType.RUN_STARTED, "test")], NOW)
    assert log.append(run_id, 0, [], NOW, new_token=1, lease_owner=owner, wake_at=NOW + LEASE)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_only_a_dead_worker_of_this_host_has_its_leases_released(saga_log: SagaLog) -> None:
    here, gone = host_key(), dead_pid()
    saga_log.heartbeat("dead-here", [], NOW, host_key=here, pid=gone)
    saga_log.heartbeat("alive-here", [], NOW, host_key=here, pid=os.getpid())
    saga_log.heartbeat("dead-elsewhere", [], NOW, host_key="other-host/boot/ns", pid=gone)
    for owner in ("dead-here", "alive-here", "dead-elsewhere"):
        leased_run(saga_log, f"run-of-{owner}", owner)

    later = NOW + timedelta(seconds=5)
    orchestrator = Orchestrator(saga_log, Registry(), worker_id="me", clock=lambda: later)
    orchestrator.recover()

    assert saga_log.get_run("run-of-dead-here").wake_at == later  # due now, not in 10 min
    for owner in ("alive-here", "dead-elsewhere"):
        assert saga_log.get_run(f"run-of-{owner}").wake_at == NOW + LEASE
    assert {w for w, _ in saga_log.workers_on(here)} == {"alive-here", "me"}
    assert [w for w, _ in saga_log.workers_on("other-host/boot/ns")] == ["dead-elsewhere"]


def test_releasing_a_worker_leaves_finished_and_waiting_runs_alone(saga_log: SagaLog) -> None:
    leased_run(saga_log, "leased", "w")
    leased_run(saga_log, "finished", "w")
    saga_log.append("finished", 1, [], NOW, status="completed", lease_owner=None, wake_at=None)
    assert saga_log.release_worker("w", NOW + timedelta(seconds=1)) == 1
    assert saga_log.get_run("finished").wake_at is None


def test_a_dead_neighbours_undelivered_messages_are_not_waited_for(saga_log: SagaLog) -> None:
    # A run dispatched a second ago: its message may have died with the dead worker.
    leased_run(saga_log, "dispatched", "someone")
    saga_log.append("dispatched", 1, [], NOW, lease_owner=None, wake_at=NOW, dispatched_at=NOW)
    later = NOW + timedelta(seconds=1)
    registry = Registry([order_saga])
    orchestrator = Orchestrator(saga_log, registry, worker_id="me", clock=lambda: later)

    assert orchestrator.recover() == 0  # within the dispatch grace, nobody dead: wait
    saga_log.heartbeat("dead-here", [], NOW, host_key=host_key(), pid=dead_pid())
    assert orchestrator.recover() == 1  # a neighbour died: do not wait for the grace
