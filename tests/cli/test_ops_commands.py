"""``retry-compensation``, ``resume``, ``force-compensate``, ``resolve`` and ``check-deploy``.

Runs of ``tests.cli.ops_app`` are started and driven in this process by a
:class:`SagaHarness` (the worker) on a real store, SQLite then PostgreSQL; the
commands run as an operator runs them, in another process, on the same store.
The harness's clock starts at the real time, and moves a minute on after a
command (past the wake-up the command wrote) before it drives again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from sagaledger import RunStatus
from sagaledger.store import EventRecord, EventType, RunRecord, utc_now
from sagaledger.testing import ManualClock, SagaHarness
from tests.cli import ops_app
from tests.cli.test_cli import assert_one_line_error
from tests.cli.test_wait_commands import Operator


@pytest.fixture
def harness(store_url: str) -> Iterator[SagaHarness]:
    """The worker, driven by hand, on a fresh store; the remote systems mended."""
    ops_app.EFFECTS.clear()
    ops_app.BROKEN.clear()
    harness = SagaHarness(ops_app.registry, store_url=store_url, clock=ManualClock(utc_now()))
    yield harness
    harness.close()
    ops_app.BROKEN.clear()


@pytest.fixture
def operator(harness: SagaHarness, tmp_path: Path) -> Operator:
    return Operator(tmp_path, harness.log.engine.url.render_as_string(hide_password=False))


def worker_runs(harness: SagaHarness) -> None:
    harness.advance(timedelta(minutes=1))
    harness.run_until_idle()


def start(harness: SagaHarness, saga: str, order_id: str, *broken: str) -> RunRecord:
    ops_app.BROKEN.update(broken)
    run = harness.run(saga, {"order_id": order_id})
    ops_app.BROKEN.clear()  # mended by the time the operator acts
    return run


def acted(harness: SagaHarness, run: RunRecord) -> EventRecord:
    return [e for e in harness.events(run.id) if e.type is EventType.OPERATOR_ACTION][-1]


def test_an_operator_retries_a_parked_compensation(
    harness: SagaHarness, operator: Operator
) -> None:
    # Given a run parked because payments refused the refund (since mended)
    run = start(harness, "ops_shop", "A1", "email", "refund")
    assert (run.status, run.step) == (RunStatus.PARKED, "charge")

    # When an operator retries the compensation by a prefix of the run's id
    result = operator(
        "retry-compensation", run.id[:10], "--reason", "refunds work again", "--as", "alice"
    )

    # Then the command says what happens, and a worker unwinds the run to the end
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"run {run.id}: a worker retries the compensation of step 'charge', then unwinds on\n"
    )
    worker_runs(harness)
    assert harness.status(run.id) is RunStatus.COMPENSATED
    assert ops_app.EFFECTS[-2:] == [("charge", "compensate"), ("reserve", "compensate")]
    event = acted(harness, run)
    assert (event.actor, event.payload["reason"]) == ("alice", "refunds work again")


def test_an_operator_resumes_a_run_parked_past_its_pivot(
    harness: SagaHarness, operator: Operator
) -> None:
    run = start(harness, "ops_parcel", "B1", "email")
    assert (run.status, run.step) == (RunStatus.PARKED, "email")

    result = operator("resume", run.id, "--reason", "address fixed", "--as", "bob")

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"run {run.id}: a worker retries step 'email' forward, from attempt 1\n"
    worker_runs(harness)
    assert harness.status(run.id) is RunStatus.COMPLETED
    assert ops_app.EFFECTS[-1] == ("email", "forward")
    assert acted(harness, run).payload["action"] == "resume"


def test_an_operator_force_compensates_a_waiting_run_and_is_refused_a_finished_one(
    harness: SagaHarness, operator: Operator
) -> None:
    # Given a run whose email waits an hour for its retry
    run = start(harness, "ops_shop", "C1", "email_busy")
    assert (run.status, run.step) == (RunStatus.RUNNING, "email")

    result = operator("force-compensate", run.id, "--reason", "chargeback", "--as", "carol")

    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"run {run.id}: a worker compensates its completed steps, last first\n"
    )
    worker_runs(harness)  # a minute, not the hour of the back-off
    assert harness.status(run.id) is RunStatus.COMPENSATED
    assert ops_app.EFFECTS[-2:] == [("charge", "compensate"), ("reserve", "compensate")]

    # And once it has finished, it cannot be force-compensated
    again = operator("force-compensate", run.id, "--reason", "again")
    assert assert_one_line_error(again) == (
        f"error: cannot force-compensate run '{run.id}': it is compensated"
    )


def test_force_compensate_past_a_pivot_is_refused_naming_it(
    harness: SagaHarness, operator: Operator
) -> None:
    run = start(harness, "ops_parcel", "P1", "email")

    result = operator("force-compensate", run.id, "--reason", "undo everything")

    assert assert_one_line_error(result) == (
        f"error: cannot force-compensate run '{run.id}': pivot 'ship' has completed, so the "
        "steps before it cannot be undone; resume it, or resolve it by hand"
    )
    assert harness.status(run.id) is RunStatus.PARKED


def test_an_operator_resolves_a_parked_run_and_it_lists_as_resolved(
    harness: SagaHarness, operator: Operator
) -> None:
    run = start(harness, "ops_shop", "D1", "email", "refund")
    done = start(harness, "ops_shop", "D2")

    result = operator("resolve", run.id, "--reason", "refunded by hand, ticket 123", "--as", "fin")

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"run {run.id}: resolved by hand: no worker acts on it again\n"
    worker_runs(harness)
    assert harness.status(run.id) is RunStatus.RESOLVED
    listed = operator("runs", "list", "--status", "resolved", "--json")
    assert [r["id"] for r in json.loads(listed.stdout)] == [run.id]
    shown = operator("runs", "show", run.id)
    assert "resolve by fin: refunded by hand, ticket 123" in " ".join(shown.stdout.split())

    # A completed run cannot be resolved; a reason is required
    refused = operator("resolve", done.id, "--reason", "by hand")
    assert assert_one_line_error(refused) == (
        f"error: cannot resolve run '{done.id}': it is completed"
    )
    no_reason = operator("resolve", run.id)
    assert no_reason.returncode == 2
    assert "Missing option '--reason'" in no_reason.stderr
    blank = operator("resolve", run.id, "--reason", " ")
    assert assert_one_line_error(blank) == f"error: resolving run '{run.id}' needs a reason"


def test_check_deploy_passes_the_same_sagas_and_refuses_a_dropped_compensation(
    harness: SagaHarness, operator: Operator
) -> None:
    # Given a run parked at its refund, and one waiting for its email retry
    parked = start(harness, "ops_shop", "E1", "email", "refund")
    waiting = start(harness, "ops_shop", "E2", "email_busy")
    first, second = sorted([parked, waiting], key=lambda r: (r.created_at, r.id))

    # The same sagas: safe
    safe = operator("check-deploy", "--app", "tests.cli.ops_app:registry")
    assert safe.returncode == 0, safe.stderr
    assert safe.stdout == (
        "safe: all 1 definition(s) used by 2 unfinished run(s) are registered with the same shape\n"
    )

    # A deploy that no longer refunds charges: refused, naming the step and the runs
    unsafe = operator("check-deploy", "--app", "tests.cli.ops_app:dropped")
    assert unsafe.returncode == 1, unsafe.stderr
    assert unsafe.stdout.splitlines() == [
        "saga 'ops_shop' v1 step 'charge': compensation dropped; 2 unfinished runs have "
        f"completed it and need its compensation ({first.id}, {second.id})",
        "unsafe: 1 problem(s) for the 1 definition(s) used by 2 unfinished run(s)",
    ]
    as_json = operator("check-deploy", "--app", "tests.cli.ops_app:dropped", "--json")
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert report["safe"] is False
    assert [(p["kind"], p["step"], p["runs"]) for p in report["problems"]] == [
        ("compensation_dropped", "charge", 2)
    ]
