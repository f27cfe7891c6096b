"""``approve``, ``reject``, ``signal``, ``approvals`` and ``runs show`` on waiting runs.

Runs of ``tests.cli.waits_app`` are started and driven in this process by a
:class:`SagaHarness` (the worker) on a real store; the commands run as an
operator runs them, in another process, on the same store. The harness's clock
starts at the real time, so the deadlines the runs record are real ones; after
a command, the harness moves its clock a minute on (past the wake-up the
command wrote, in real time) before it drives again.
"""

from __future__ import annotations

import getpass
import json
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sagaledger import RunStatus
from sagaledger.sagas._waits import APPROVAL_SIGNAL, approval_key
from sagaledger.store import EventRecord, EventType, RunRecord, utc_now
from sagaledger.testing import ManualClock, SagaHarness
from tests.cli.test_cli import assert_one_line_error, sagaledger
from tests.cli.waits_app import DEADLINE, EVENT, order_saga

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.cli.waits_app:registry"
MANAGER = "bob@managers.example"


class Operator:
    """Runs ``sagaledger`` on one store, as a person at a terminal would."""

    def __init__(self, cwd: Path, store: str):
        self.cwd, self.store = cwd, store

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        # PYTHONPATH: --app names a module of the tests; COLUMNS: no wrapped lines.
        return sagaledger(
            self.cwd, *args, "--store", self.store, PYTHONPATH=str(ROOT), COLUMNS="250"
        )


@pytest.fixture
def harness(store_url: str) -> Iterator[SagaHarness]:
    """A worker, driven by hand, on a fresh store (SQLite, then PostgreSQL)."""
    harness = SagaHarness([order_saga], store_url=store_url, clock=ManualClock(utc_now()))
    yield harness
    harness.close()


@pytest.fixture
def sqlite_harness(sqlite_url: str) -> Iterator[SagaHarness]:
    """A worker, driven by hand, on a fresh SQLite store."""
    harness = SagaHarness([order_saga], store_url=sqlite_url, clock=ManualClock(utc_now()))
    yield harness
    harness.close()


def operator_of(harness: SagaHarness, tmp_path: Path) -> Operator:
    return Operator(tmp_path, harness.log.engine.url.render_as_string(hide_password=False))


def at_approval(harness: SagaHarness, order_id: str = "o-1") -> RunRecord:
    """A run that waits for the manager's approval."""
    run = harness.run(order_saga, {"order_id": order_id, "amount_cents": 12_500})
    assert run.awaiting == f"approval:{run.id}/manager", run
    return run


def at_settlement(harness: SagaHarness, order_id: str = "o-1") -> RunRecord:
    """A run, approved, that waits for its payment to settle."""
    run = at_approval(harness, order_id)
    harness.orchestrator.approve(run.id, by=MANAGER)
    harness.run_until_idle()
    run = harness.log.get_run(run.id)
    assert run.awaiting == f"event:{EVENT}/{order_id}", run
    return run


def worker_runs(harness: SagaHarness) -> None:
    """The worker drives what is due, a minute after the commands ran."""
    harness.advance(timedelta(minutes=1))
    harness.run_until_idle()


def of(harness: SagaHarness, run: RunRecord, kind: EventType) -> list[EventRecord]:
    return [e for e in harness.events(run.id) if e.type is kind]


def flat(text: str) -> str:
    return " ".join(text.split())


def moment(iso: Any) -> str:
    """A deadline as ``runs show`` prints it."""
    return datetime.fromisoformat(str(iso)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# -- approve and reject --------------------------------------------------------------


def test_an_approval_is_kept_then_applied_by_a_worker(harness: SagaHarness, tmp_path: Path) -> None:
    # Given a run waiting for the manager's approval
    run = at_approval(harness)
    operator = operator_of(harness, tmp_path)

    # When a manager approves it by a prefix of its id
    result = operator("approve", run.id[:8], "--as", MANAGER, "--reason", "within budget")

    # Then the decision is kept, and applied only once a worker runs
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"run {run.id}: approval 'manager' approved by {MANAGER}; a worker applies it\n"
    )
    assert of(harness, run, EventType.APPROVAL_DECIDED) == []
    worker_runs(harness)
    (decided,) = of(harness, run, EventType.APPROVAL_DECIDED)
    assert decided.actor == MANAGER
    assert decided.payload["decision"] == "approve"
    assert decided.payload["reason"] == "within budget"
    assert decided.payload["shown"] == {"order": "o-1", "amount_cents": 12_500}
    assert harness.log.get_run(run.id).step == "settled"

    # And once its payment settles, the run completes with the event's payload
    settled = operator("signal", EVENT, "o-1", "--data", '{"settlement": "s-9"}', "--app", APP)
    assert settled.returncode == 0, settled.stderr
    worker_runs(harness)
    assert harness.status(run.id) is RunStatus.COMPLETED
    (shipped,) = [e for e in of(harness, run, EventType.STEP_COMPLETED) if e.step == "ship"]
    assert shipped.payload["output"]["settlement"] == {"settlement": "s-9"}


def test_a_rejection_compensates_the_completed_steps(harness: SagaHarness, tmp_path: Path) -> None:
    run = at_approval(harness)

    result = operator_of(harness, tmp_path)(
        "reject", run.id, "--as", "alice@x.example", "--reason", "over budget"
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"run {run.id}: approval 'manager' rejected by alice@x.example; "
        "a worker compensates its completed steps\n"
    )
    worker_runs(harness)
    assert harness.status(run.id) is RunStatus.COMPENSATED
    (decided,) = of(harness, run, EventType.APPROVAL_DECIDED)
    assert (decided.actor, decided.payload["decision"]) == ("alice@x.example", "reject")
    assert decided.payload["reason"] == "over budget"
    (undone,) = of(harness, run, EventType.COMPENSATION_COMPLETED)
    assert (undone.step, undone.payload["result"]) == ("reserve", {"released": "o-1"})


def test_a_rejection_needs_a_reason(sqlite_harness: SagaHarness, tmp_path: Path) -> None:
    run = at_approval(sqlite_harness)
    operator = operator_of(sqlite_harness, tmp_path)

    missing = operator("reject", run.id, "--as", "alice@x.example")
    assert missing.returncode == 2
    assert "Missing option '--reason'" in missing.stderr

    blank = assert_one_line_error(
        operator("reject", run.id, "--as", "alice@x.example", "--reason", "  ")
    )
    assert blank == f"error: rejecting run {run.id!r} needs a reason"
    assert sqlite_harness.log.find_signal(APPROVAL_SIGNAL, approval_key(run.id, "manager")) is None


def test_someone_not_named_is_told_who_may_decide(
    sqlite_harness: SagaHarness, tmp_path: Path
) -> None:
    run = at_approval(sqlite_harness)
    operator = operator_of(sqlite_harness, tmp_path)

    named = assert_one_line_error(operator("approve", run.id, "--as", "mallory@x.example"))
    # --as defaults to the login name, who is not a manager either
    by_default = assert_one_line_error(operator("approve", run.id))

    allowed = "it may be decided by: alice@x.example, *@managers.example"
    assert named == (
        f"error: 'mallory@x.example' may not decide approval 'manager' of run {run.id!r}; "
        + allowed
    )
    assert by_default.startswith(f"error: {getpass.getuser()!r} may not decide")
    assert by_default.endswith(allowed)
    assert sqlite_harness.log.find_signal(APPROVAL_SIGNAL, approval_key(run.id, "manager")) is None


def test_a_run_waiting_for_no_approval_cannot_be_decided(
    sqlite_harness: SagaHarness, tmp_path: Path
) -> None:
    run = at_settlement(sqlite_harness)

    line = assert_one_line_error(operator_of(sqlite_harness, tmp_path)("approve", run.id[:6]))

    assert line == (
        f"error: run {run.id!r} is not waiting for an approval: it is running, at step 'settled'"
    )


def test_an_approval_is_decided_once(sqlite_harness: SagaHarness, tmp_path: Path) -> None:
    run = at_approval(sqlite_harness)
    operator = operator_of(sqlite_harness, tmp_path)
    first = operator("approve", run.id, "--as", MANAGER)
    assert first.returncode == 0, first.stderr

    second = assert_one_line_error(
        operator("reject", run.id, "--as", "alice@x.example", "--reason", "too late")
    )

    assert second.startswith(
        f"error: run {run.id!r} approval 'manager' was already decided: approve by {MANAGER} at "
    )
    worker_runs(sqlite_harness)
    (decided,) = of(sqlite_harness, run, EventType.APPROVAL_DECIDED)
    assert (decided.actor, decided.payload["decision"]) == (MANAGER, "approve")


def test_a_finished_run_cannot_be_decided(sqlite_harness: SagaHarness, tmp_path: Path) -> None:
    run = at_settlement(sqlite_harness)
    sqlite_harness.orchestrator.signal(EVENT, "o-1", {"settlement": "s-1"})
    sqlite_harness.run_until_idle()
    assert sqlite_harness.status(run.id) is RunStatus.COMPLETED

    line = assert_one_line_error(
        operator_of(sqlite_harness, tmp_path)("approve", run.id, "--as", MANAGER)
    )

    assert line == f"error: cannot decide an approval of run {run.id!r}: it is completed"


# -- signal ----------------------------------------------------------------------------


def test_an_event_wakes_the_run_waiting_for_it(harness: SagaHarness, tmp_path: Path) -> None:
    run = at_settlement(harness)
    at_settlement(harness, "o-2")  # waits for another key: not woken

    result = operator_of(harness, tmp_path)(
        "signal", EVENT, "o-1", "--data", '{"settlement": "s-9"}', "--as", "webhook:psp"
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"event {EVENT!r} key 'o-1' delivered; woke 1 run: {run.id}\n"
    worker_runs(harness)
    assert harness.status(run.id) is RunStatus.COMPLETED
    (received,) = of(harness, run, EventType.EVENT_RECEIVED)
    assert received.actor == "webhook:psp"
    assert received.payload["payload"] == {"settlement": "s-9"}


def test_a_second_delivery_is_ignored(sqlite_harness: SagaHarness, tmp_path: Path) -> None:
    run = at_settlement(sqlite_harness)
    operator = operator_of(sqlite_harness, tmp_path)
    first = operator("signal", EVENT, "o-1", "--data", '{"settlement": "s-1"}')
    assert first.returncode == 0, first.stderr

    again = operator("signal", EVENT, "o-1", "--data", '{"settlement": "s-2"}')

    # Then the second is ignored; --as defaults to cli:<login name>
    assert again.returncode == 0, again.stderr
    kept = sqlite_harness.log.find_signal(EVENT, "o-1")
    assert kept is not None and kept.payload == {"settlement": "s-1"}
    when = kept.received_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"
    assert again.stdout == (
        f"event {EVENT!r} key 'o-1' was already delivered at {when} "
        f"by cli:{getpass.getuser()}; this one is ignored\n"
    )
    worker_runs(sqlite_harness)
    (received,) = of(sqlite_harness, run, EventType.EVENT_RECEIVED)
    assert received.payload["payload"] == {"settlement": "s-1"}


def test_an_event_sent_before_the_run_waits_is_kept_for_it(
    sqlite_harness: SagaHarness, tmp_path: Path
) -> None:
    # Given a run still waiting for its approval, before it waits for the settlement
    run = at_approval(sqlite_harness)
    data = tmp_path / "settlement.json"
    data.write_text('{"settlement": "early"}')

    # When the settlement arrives (no --app: the worker has said which events it knows)
    result = operator_of(sqlite_harness, tmp_path)("signal", EVENT, "o-1", "--data-file", str(data))

    # Then it is kept, and the run takes it when it gets to its wait
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"event {EVENT!r} key 'o-1' delivered; no run waits for it yet: "
        "it is kept for the run that will\n"
    )
    sqlite_harness.orchestrator.approve(run.id, by=MANAGER)
    worker_runs(sqlite_harness)
    assert sqlite_harness.status(run.id) is RunStatus.COMPLETED
    kinds = [e.type for e in sqlite_harness.events(run.id) if e.step == "settled"]
    assert EventType.EVENT_AWAITED in kinds
    assert kinds.index(EventType.EVENT_AWAITED) < kinds.index(EventType.EVENT_RECEIVED)
    (received,) = of(sqlite_harness, run, EventType.EVENT_RECEIVED)
    assert received.payload["payload"] == {"settlement": "early"}


def test_an_unknown_event_lists_the_known_ones(sqlite_url: str, tmp_path: Path) -> None:
    # Given a store no worker has run on
    operator = Operator(tmp_path, sqlite_url)

    with_app = assert_one_line_error(operator("signal", "payment.setled", "o-1", "--app", APP))
    without = assert_one_line_error(operator("signal", EVENT, "o-1"))

    assert with_app == (
        f"error: unknown event 'payment.setled': no saga waits for it; known events: {EVENT}"
    )
    assert without == (
        f"error: unknown event {EVENT!r}: no saga waits for it; "
        "known events: none (start a worker with the sagas first)"
    )
    # With the app, the name it knows is delivered
    known = operator("signal", EVENT, "o-1", "--app", APP)
    assert known.returncode == 0, known.stderr
    assert "kept for the run that will" in known.stdout


def test_bad_payloads_and_keys_are_one_line_errors(sqlite_url: str, tmp_path: Path) -> None:
    operator = Operator(tmp_path, sqlite_url)
    bad_file = tmp_path / "bad.json"
    bad_file.write_text("{'single': 'quotes'}")

    inline = assert_one_line_error(operator("signal", EVENT, "o-1", "--data", "{oops"))
    from_file = assert_one_line_error(
        operator("signal", EVENT, "o-1", "--data-file", str(bad_file))
    )
    empty_key = assert_one_line_error(operator("signal", EVENT, "", "--app", APP))
    both = operator("signal", EVENT, "o-1", "--data", "1", "--data-file", str(bad_file))

    assert inline.startswith("error: --data is not JSON: Expecting property name")
    assert from_file.startswith(f"error: --data-file {bad_file} is not JSON: ")
    assert empty_key.startswith("error: an event's correlation key must be a non-empty string")
    assert both.returncode == 2 and "give --data or --data-file, not both" in both.stderr


# -- approvals and runs show -------------------------------------------------------------


def test_approvals_lists_exactly_the_pending_ones(
    sqlite_harness: SagaHarness, tmp_path: Path
) -> None:
    # Given an approval escalated past its first deadline, a fresh one, and runs past theirs
    escalated = at_approval(sqlite_harness, "o-1")
    sqlite_harness.advance(DEADLINE + timedelta(minutes=1))
    sqlite_harness.run_until_idle()
    fresh = at_approval(sqlite_harness, "o-2")
    settling = at_settlement(sqlite_harness, "o-3")
    rejected = at_approval(sqlite_harness, "o-4")
    sqlite_harness.orchestrator.reject(rejected.id, by=MANAGER, reason="no")
    sqlite_harness.run_until_idle()
    operator = operator_of(sqlite_harness, tmp_path)

    listed = operator("approvals", "--json")
    table = operator("approvals")

    assert listed.returncode == 0, listed.stderr
    pending = {p["run_id"]: p for p in json.loads(listed.stdout)}
    assert set(pending) == {escalated.id, fresh.id}
    assert pending[escalated.id]["level"] == 1
    assert pending[escalated.id]["approvers"] == ["cfo@x.example"]
    assert pending[fresh.id]["level"] == 0
    assert pending[fresh.id]["approvers"] == ["alice@x.example", "*@managers.example"]
    assert pending[fresh.id]["shown"] == {"order": "o-2", "amount_cents": 12_500}
    assert pending[fresh.id]["saga"] == "cli_order" and pending[fresh.id]["step"] == "manager"
    asked = of(sqlite_harness, fresh, EventType.APPROVAL_REQUESTED)[-1].payload
    assert datetime.fromisoformat(pending[fresh.id]["deadline"]) == datetime.fromisoformat(
        asked["deadline"]
    )
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line for line in table.stdout.splitlines()[1:] if line.strip()}
    assert set(rows) == {escalated.id[:8], fresh.id[:8]}
    assert "1 (escalated)" in rows[escalated.id[:8]] and "cfo@x.example" in rows[escalated.id[:8]]
    assert "alice@x.example, *@managers.example" in rows[fresh.id[:8]]
    assert settling.id[:8] not in table.stdout and rejected.id[:8] not in table.stdout


def test_approvals_says_when_none_is_pending(sqlite_url: str, tmp_path: Path) -> None:
    operator = Operator(tmp_path, sqlite_url)

    assert operator("approvals").stdout == "no approvals pending\n"
    assert json.loads(operator("approvals", "--json").stdout) == []


def test_runs_show_says_what_a_waiting_run_waits_for(
    sqlite_harness: SagaHarness, tmp_path: Path
) -> None:
    escalated = at_approval(sqlite_harness, "o-1")
    sqlite_harness.advance(DEADLINE + timedelta(minutes=1))
    sqlite_harness.run_until_idle()
    settling = at_settlement(sqlite_harness, "o-2")
    operator = operator_of(sqlite_harness, tmp_path)

    approval = operator("runs", "show", escalated.id[:8])
    event = operator("runs", "show", settling.id[:8])

    assert approval.returncode == 0, approval.stderr
    raised = of(sqlite_harness, escalated, EventType.APPROVAL_ESCALATED)[-1].payload
    assert (
        f"waiting for approval of 'manager' by cfo@x.example until {moment(raised['deadline'])} "
        "(level 1, escalated)"
    ) in flat(approval.stdout)
    awaited = of(sqlite_harness, settling, EventType.EVENT_AWAITED)[-1].payload
    assert f"waiting for event {EVENT!r} key 'o-2' until {moment(awaited['deadline'])}" in flat(
        event.stdout
    )
    as_json = json.loads(operator("runs", "show", settling.id, "--json").stdout)
    assert as_json["run"]["awaiting"] == f"event:{EVENT}/o-2"


def test_runs_show_tells_a_kept_decision_from_an_applied_one(
    sqlite_harness: SagaHarness, tmp_path: Path
) -> None:
    run = at_approval(sqlite_harness)
    operator = operator_of(sqlite_harness, tmp_path)
    approved = operator("approve", run.id, "--as", MANAGER, "--reason", "fine")
    assert approved.returncode == 0, approved.stderr

    kept = flat(operator("runs", "show", run.id).stdout)
    worker_runs(sqlite_harness)
    applied = operator("runs", "show", run.id).stdout

    assert "waiting for approval of 'manager' by alice@x.example, *@managers.example until" in kept
    assert f"; approved by {MANAGER} at " in kept and ": a worker applies it" in kept
    assert "waiting for event 'payment.settled' key 'o-1'" in flat(applied)
    # The timeline names the approver as the decision's actor, and says why
    (decided,) = [line for line in applied.splitlines() if "approval_decided" in line]
    assert re.search(rf"{re.escape(MANAGER)}\s+approved by {re.escape(MANAGER)}: fine", decided)
    (requested,) = [line for line in applied.splitlines() if "approval_requested" in line]
    assert "level 0: alice@x.example, *@managers.example may decide until" in requested


def test_an_approval_past_its_deadline_is_not_decided(sqlite_url: str, tmp_path: Path) -> None:
    # Given a run that reached its approval longer ago than the deadline, with no worker since
    long_ago = ManualClock(utc_now() - DEADLINE - timedelta(hours=1))
    harness = SagaHarness([order_saga], store_url=sqlite_url, clock=long_ago)
    run = at_approval(harness)
    harness.close()
    operator = Operator(tmp_path, sqlite_url)

    line = assert_one_line_error(operator("approve", run.id, "--as", MANAGER))
    table = operator("approvals")

    assert line.startswith(f"error: run {run.id!r} approval 'manager': its deadline (")
    assert line.endswith("has passed; the run escalates or decides by default")
    assert run.id[:8] in table.stdout and "(passed)" in table.stdout
