"""Runs waiting for approvals and external events, with real worker processes.

A run at an approval or at an awaited event holds no lease, thread or message:
the decision or the event is kept in the log (once per run and step, or per
event name and key) and wakes the run, whichever worker is alive then, or the
next one to start. These tests stop and SIGKILL real ``sagaledger worker``
processes while refunds wait (``tests.integration.approvals_app``), decide
them with the ``sagaledger approve`` / ``reject`` commands and from this
process, deliver events early and twice, let a deadline pass with no worker
running, and read what happened in the saga log and in the ledger the steps
write. Every test runs on SQLite and on a real PostgreSQL server.
"""

from __future__ import annotations

import json
import os
import signal
from datetime import datetime
from pathlib import Path

import pytest

from sagaledger import (
    NotAllowedToDecideError,
    Orchestrator,
    RunNotWaitingError,
    RunStatus,
    SagaLog,
)
from sagaledger.store import EventRecord, EventType, RunRecord, utc_now
from sagaledger.testing import WorkerProcess
from tests.integration import approvals_app
from tests.integration._processes import PATIENCE, sagaledger, wait_until
from tests.integration._processes import worker as worker_on
from tests.integration.approvals_app import (
    APPROVAL,
    DIRECTORS,
    EVENT,
    MANAGERS,
    SETTLEMENT,
    refund_saga,
    registry,
    urgent_refund_saga,
)

APP = "tests.integration.approvals_app:registry"
#: What the ledger holds for a refund paid out, and for one rejected and undone.
PAID = [("open_case", "forward"), ("reserve_funds", "forward"), ("pay_out", "forward")]
UNDONE = [
    ("open_case", "forward"),
    ("reserve_funds", "forward"),
    ("reserve_funds", "compensate"),
    ("open_case", "compensate"),
]
#: Before the approval: the two steps that write, done once.
BEFORE = PAID[:2]


def worker(store_url: str) -> WorkerProcess:
    """A ``sagaledger worker`` process on the approvals app."""
    return worker_on(APP, store_url)


def refund(ledger: Path, order_id: str, amount_cents: int = 25_000) -> dict[str, object]:
    return {"ledger": str(ledger), "order_id": order_id, "amount_cents": amount_cents}


def is_waiting_at(run: RunRecord, step: str) -> bool:
    """Waiting at ``step`` for a decision or an event, holding no lease."""
    return (run.status, run.step, run.lease_owner) == (
        RunStatus.RUNNING,
        step,
        None,
    ) and run.awaiting is not None


def all_waiting_at(log: SagaLog, runs: list[RunRecord], step: str) -> bool:
    return all(is_waiting_at(log.get_run(run.id), step) for run in runs)


def ledger_of(ledger: Path, run_id: str) -> list[tuple[str, str]]:
    return [(c.step, c.phase) for c in approvals_app.calls(str(ledger), run_id)]


def events_of(log: SagaLog, run_id: str, kind: EventType) -> list[EventRecord]:
    return log.events(run_id, types=[kind])


def settlement_output(log: SagaLog, run_id: str) -> dict[str, object]:
    """The output of the run's settlement step: the event it took."""
    (settled,) = [
        e for e in events_of(log, run_id, EventType.STEP_COMPLETED) if e.step == SETTLEMENT
    ]
    output: dict[str, object] = settled.payload["output"]
    return output


def test_an_approval_sent_while_no_worker_runs_is_applied_when_one_starts(
    store_url: str, saga_log: SagaLog, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.db"
    api = Orchestrator(saga_log, registry)

    # Given two refunds a worker took to their approval, and that worker stopped
    with worker(store_url) as first:
        runs = [api.start(refund_saga, refund(ledger, f"A-{n}")) for n in range(2)]
        wait_until(lambda: all_waiting_at(saga_log, runs, APPROVAL), "both runs at the approval")
    assert first.returncode == 0

    # When a manager approves both with the CLI, one with a reason
    reasons = ["customer is a long-standing account", ""]
    for run, reason in zip(runs, reasons, strict=True):
        command = ["approve", run.id, "--as", "carol@managers.example", "--store", store_url]
        done = sagaledger(*command, *(["--reason", reason] if reason else []))
        assert done.returncode == 0, done.stdout + done.stderr

    # Then nothing moved yet: the decisions wait in the log for a worker
    for run in runs:
        assert saga_log.get_run(run.id).step == APPROVAL
        assert not events_of(saga_log, run.id, EventType.APPROVAL_DECIDED)
        assert ledger_of(ledger, run.id) == BEFORE

    # When a worker starts, the runs go on to wait for their payment, which then settles
    with worker(store_url) as second:
        wait_until(lambda: all_waiting_at(saga_log, runs, SETTLEMENT), "both runs at settlement")
        for n, run in enumerate(runs):
            receipt = api.signal(EVENT, f"A-{n}", {"settlement_id": f"S-A-{n}"}, by="psp:webhook")
            assert (receipt.new, receipt.woken) == (True, [run.id])
        finished = [second.wait_for_run(saga_log, run.id, timeout=PATIENCE) for run in runs]
    assert second.returncode == 0

    # Then both were paid out, each ledger effect once, the last by the new worker
    assert [run.status for run in finished] == [RunStatus.COMPLETED] * 2
    for run, reason in zip(runs, reasons, strict=True):
        assert ledger_of(ledger, run.id) == PAID
        made = approvals_app.calls(str(ledger), run.id)
        assert {c.pid for c in made[:2]} == {first.pid}
        assert made[2].pid == second.pid
        # And the log has the decision, by the manager, with the reason and what was shown
        (decided,) = events_of(saga_log, run.id, EventType.APPROVAL_DECIDED)
        assert decided.actor == "carol@managers.example"
        assert decided.step == APPROVAL
        assert decided.payload["decision"] == "approve"
        assert decided.payload["reason"] == reason
        assert decided.payload["shown"] == {
            "order_id": run.input["order_id"],
            "amount_cents": 25_000,
        }
        (requested,) = events_of(saga_log, run.id, EventType.APPROVAL_REQUESTED)
        assert requested.created_at < decided.created_at
        assert datetime.fromisoformat(decided.payload["decided_at"]) < decided.created_at


def test_a_worker_sigkilled_while_runs_wait_for_decisions_and_events_loses_none(
    store_url: str, saga_log: SagaLog, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.db"
    api = Orchestrator(saga_log, registry)
    orders = [f"B-{n:02}" for n in range(30)]

    # Given 30 refunds at their approval, a third of them approved and waiting for
    # their payment to settle
    with worker(store_url) as doomed:
        runs = [api.start(refund_saga, refund(ledger, order)) for order in orders]
        wait_until(lambda: all_waiting_at(saga_log, runs, APPROVAL), "all 30 at the approval")
        early, late, rejected = runs[:10], runs[10:20], runs[20:]
        for run in early:
            api.approve(run.id, by="dan@managers.example", reason="early")
        wait_until(lambda: all_waiting_at(saga_log, early, SETTLEMENT), "10 at settlement")

        # When the worker is SIGKILLed while they wait
        assert all_waiting_at(saga_log, late + rejected, APPROVAL)
        os.kill(doomed.pid, signal.SIGKILL)
        assert doomed.wait(timeout=PATIENCE) == -signal.SIGKILL

    # And a new worker starts, and decisions and events arrive: ten more approved,
    # ten rejected, and the payments of the twenty approved ones settle
    with worker(store_url) as survivor:
        for run in late:
            api.approve(run.id, by="erin@managers.example", reason="late")
        for run in rejected:
            api.reject(run.id, by="erin@managers.example", reason="over the limit")
        for run in early + late:
            order = run.input["order_id"]
            receipt = api.signal(EVENT, order, {"settlement_id": f"S-{order}"}, by="psp")
            assert receipt.new
        finished = {run.id: survivor.wait_for_run(saga_log, run.id, PATIENCE) for run in runs}
    assert survivor.returncode == 0

    # Then every approved run was paid out, and every rejected one undone in reverse;
    # each ledger effect exactly once, the ones after the kill by the new worker
    for run in early + late:
        assert finished[run.id].status is RunStatus.COMPLETED
        assert ledger_of(ledger, run.id) == PAID
        made = approvals_app.calls(str(ledger), run.id)
        assert [c.pid for c in made] == [doomed.pid, doomed.pid, survivor.pid]
        assert made[2].detail == f"S-{run.input['order_id']}"
        assert len(events_of(saga_log, run.id, EventType.EVENT_RECEIVED)) == 1
    for run in rejected:
        assert finished[run.id].status is RunStatus.COMPENSATED
        assert ledger_of(ledger, run.id) == UNDONE
        made = approvals_app.calls(str(ledger), run.id)
        assert [c.pid for c in made] == [doomed.pid, doomed.pid, survivor.pid, survivor.pid]
        assert not events_of(saga_log, run.id, EventType.EVENT_AWAITED)
    # And each run was asked once, decided once, and nothing was abandoned mid-step
    for run in runs:
        assert len(events_of(saga_log, run.id, EventType.APPROVAL_REQUESTED)) == 1
        (decided,) = events_of(saga_log, run.id, EventType.APPROVAL_DECIDED)
        assert decided.actor == ("dan" if run in early else "erin") + "@managers.example"
        assert not events_of(saga_log, run.id, EventType.ATTEMPT_ABANDONED)


def test_an_event_delivered_early_or_twice_counts_once(
    store_url: str, saga_log: SagaLog, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.db"
    api = Orchestrator(saga_log, registry)

    with worker(store_url) as live:
        # Given a refund whose payment settles right after it starts, long before its
        # approval, and another refund
        early = api.start(refund_saga, refund(ledger, "C-early"))
        receipt = api.signal(EVENT, "C-early", {"settlement_id": "S-1"}, by="psp:webhook")
        assert (receipt.new, receipt.woken) == (True, [])
        twice = api.start(refund_saga, refund(ledger, "C-twice"))
        runs = [early, twice]
        wait_until(lambda: all_waiting_at(saga_log, runs, APPROVAL), "both runs at the approval")

        # When the early event is delivered again (a retried webhook), with another payload
        command = ["signal", EVENT, "C-early", "--data", json.dumps({"settlement_id": "S-2"})]
        done = sagaledger(*command, "--as", "psp:retry", "--store", store_url)

        # Then the command says it was ignored
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ignored" in (done.stdout + done.stderr).lower(), done.stdout + done.stderr

        # When both are approved, and the other's event is delivered twice once it waits
        for run in runs:
            api.approve(run.id, by="frank@managers.example")
        wait_until(lambda: all_waiting_at(saga_log, [twice], SETTLEMENT), "the run at settlement")
        first = api.signal(EVENT, "C-twice", {"settlement_id": "S-3"}, by="psp:webhook")
        again = api.signal(EVENT, "C-twice", {"settlement_id": "S-4"}, by="psp:retry")
        finished = [live.wait_for_run(saga_log, run.id, PATIENCE) for run in runs]

    # Then the first delivery woke the run, and the second reports it was ignored
    assert (first.new, first.woken) == (True, [twice.id])
    assert not again.new
    assert again.received_at == first.received_at

    # And each run completed on the first delivery's payload, taken once
    assert [run.status for run in finished] == [RunStatus.COMPLETED] * 2
    for run, settled in [(early, "S-1"), (twice, "S-3")]:
        output = settlement_output(saga_log, run.id)
        assert output["received"] is True
        assert output["payload"] == {"settlement_id": settled}
        assert output["sender"] == "psp:webhook"
        (received,) = events_of(saga_log, run.id, EventType.EVENT_RECEIVED)
        assert received.actor == "psp:webhook"
        assert received.payload["payload"] == {"settlement_id": settled}
        assert ledger_of(ledger, run.id) == PAID
        assert approvals_app.calls(str(ledger), run.id)[-1].detail == settled
    # And the early event was found when its run got there: taken in the very write that
    # began the wait (the other run's came later, in the drive its delivery woke)
    (awaited,) = events_of(saga_log, early.id, EventType.EVENT_AWAITED)
    (received,) = events_of(saga_log, early.id, EventType.EVENT_RECEIVED)
    assert datetime.fromisoformat(received.payload["received_at"]) < awaited.created_at
    assert received.created_at == awaited.created_at
    (awaited,) = events_of(saga_log, twice.id, EventType.EVENT_AWAITED)
    (received,) = events_of(saga_log, twice.id, EventType.EVENT_RECEIVED)
    assert awaited.created_at < first.received_at < received.created_at


def test_a_rejection_from_the_cli_compensates_in_reverse(
    store_url: str, saga_log: SagaLog, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.db"
    api = Orchestrator(saga_log, registry)

    with worker(store_url) as live:
        # Given a refund waiting for a manager's approval
        run = api.start(refund_saga, refund(ledger, "D-1"))
        wait_until(lambda: all_waiting_at(saga_log, [run], APPROVAL), "the run at the approval")

        # When someone who is not a manager tries to approve it, the CLI refuses
        command = ["approve", run.id, "--as", "mallory@example.com", "--store", store_url]
        refused = sagaledger(*command)
        assert refused.returncode != 0, refused.stdout + refused.stderr
        assert "mallory@example.com" in refused.stdout + refused.stderr
        assert is_waiting_at(saga_log.get_run(run.id), APPROVAL)

        # And a manager rejects it with the CLI
        command = ["reject", run.id, "--as", "grace@managers.example"]
        done = sagaledger(*command, "--reason", "duplicate claim", "--store", store_url)
        assert done.returncode == 0, done.stdout + done.stderr
        undone = live.wait_for_run(saga_log, run.id, PATIENCE)

    # Then the run was compensated: the ledger shows the undoing in reverse
    assert undone.status is RunStatus.COMPENSATED
    assert ledger_of(ledger, run.id) == UNDONE
    # And the log says who rejected it and why
    (decided,) = events_of(saga_log, run.id, EventType.APPROVAL_DECIDED)
    assert decided.actor == "grace@managers.example"
    assert (decided.payload["decision"], decided.payload["reason"]) == (
        "reject",
        "duplicate claim",
    )
    (turned,) = events_of(saga_log, run.id, EventType.COMPENSATION_STARTED)
    assert "grace@managers.example" in turned.payload["reason"]
    assert "duplicate claim" in turned.payload["reason"]
    assert not events_of(saga_log, run.id, EventType.EVENT_AWAITED)


def test_an_approval_deadline_passed_with_no_worker_escalates_when_one_starts(
    store_url: str, saga_log: SagaLog, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.db"
    api = Orchestrator(saga_log, registry)

    # Given an urgent refund whose managers have a few seconds, and its worker killed
    # before they are up
    with worker(store_url) as first:
        run = api.start(urgent_refund_saga, refund(ledger, "E-1"))
        wait_until(lambda: all_waiting_at(saga_log, [run], APPROVAL), "the run at the approval")
        os.kill(first.pid, signal.SIGKILL)
        assert first.wait(timeout=PATIENCE) == -signal.SIGKILL
    (requested,) = events_of(saga_log, run.id, EventType.APPROVAL_REQUESTED)
    deadline = datetime.fromisoformat(requested.payload["deadline"])
    assert utc_now() < deadline, "the worker stopped only after the approval's deadline"

    # When the deadline passes with no worker running
    wait_until(lambda: utc_now() > deadline, "the approval's deadline", timeout=PATIENCE)

    # Then a manager can no longer decide, and nothing has happened to the run yet
    with pytest.raises(RunNotWaitingError, match="deadline"):
        api.approve(run.id, by="carol@managers.example")
    assert is_waiting_at(saga_log.get_run(run.id), APPROVAL)
    assert not events_of(saga_log, run.id, EventType.APPROVAL_ESCALATED)

    # When a worker starts
    with worker(store_url) as second:
        # Then it escalates the approval to the directors rather than dropping the run
        wait_until(
            lambda: (
                bool(events_of(saga_log, run.id, EventType.APPROVAL_ESCALATED))
                and is_waiting_at(saga_log.get_run(run.id), APPROVAL)
            ),
            "the approval escalated",
        )
        (escalated,) = events_of(saga_log, run.id, EventType.APPROVAL_ESCALATED)
        assert escalated.actor.endswith(f":{second.pid}")
        assert escalated.payload["level"] == 1
        assert escalated.payload["approvers"] == [DIRECTORS]
        assert escalated.payload["missed_deadline"] == requested.payload["deadline"]
        assert datetime.fromisoformat(escalated.payload["deadline"]) > utc_now()
        (pending,) = api.pending_approvals()
        assert (pending.run_id, pending.level, pending.approvers) == (run.id, 1, [DIRECTORS])

        # And the managers may no longer decide; a director may, and the run goes on
        with pytest.raises(NotAllowedToDecideError):
            api.approve(run.id, by="carol@managers.example")
        api.approve(run.id, by="heidi@directors.example", reason="escalated, checked")
        api.signal(EVENT, "E-1", {"settlement_id": "S-E-1"}, by="psp")
        done = second.wait_for_run(saga_log, run.id, PATIENCE)

    assert done.status is RunStatus.COMPLETED
    assert ledger_of(ledger, run.id) == PAID
    (decided,) = events_of(saga_log, run.id, EventType.APPROVAL_DECIDED)
    assert (decided.actor, decided.payload["level"]) == ("heidi@directors.example", 1)
    assert MANAGERS in requested.payload["approvers"]
