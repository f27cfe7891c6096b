"""The ``sagaledger`` command, run for real: ``python -m sagaledger ...`` in a temporary directory.

The demo is run once per module (it takes a few seconds: simulators and a worker
process are started, and the worker is SIGKILLed); the inspection tests then read
the runs it left behind, and the simulators' ledgers it wrote next to them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sagaledger.demo import LEDGERS_FILE
from sagaledger.store import head_revision
from sagaledger.testing import WorkerProcess


def sagaledger(
    cwd: Path, *args: str, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the command in ``cwd`` with no SAGALEDGER_* settings but those given."""
    return subprocess.run(
        [sys.executable, "-m", "sagaledger", *args],
        cwd=cwd,
        env=_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _env(extra: dict[str, str]) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SAGALEDGER_")}
    return {**clean, **extra}


def runs_json(cwd: Path, *args: str) -> list[dict[str, Any]]:
    result = sagaledger(cwd, "runs", "list", "--json", *args)
    assert result.returncode == 0, result.stderr
    runs: list[dict[str, Any]] = json.loads(result.stdout)
    return runs


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The CLI's contract for errors a user can fix: exit 1, one ``error:`` line, no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@dataclass
class Demo:
    cwd: Path
    result: subprocess.CompletedProcess[str]

    def run(self, status: str) -> dict[str, Any]:
        (run,) = runs_json(self.cwd, "--status", status)
        return run

    def events(self, run: dict[str, Any]) -> list[dict[str, Any]]:
        shown = sagaledger(self.cwd, "runs", "show", run["id"], "--json")
        assert shown.returncode == 0, shown.stderr
        events: list[dict[str, Any]] = json.loads(shown.stdout)["events"]
        return events

    def effects(self, run: dict[str, Any], system: str, operation: str) -> list[dict[str, Any]]:
        """What the ``system`` simulator applied for ``run`` by ``operation``, oldest first.

        Every effect's key (or ERP external id) starts with the id of the run whose step made it.
        """
        ledgers = json.loads((self.cwd / LEDGERS_FILE).read_text())
        return [
            e
            for e in ledgers[system]
            if e["operation"] == operation and (e["key"] or "").startswith(run["id"] + ":")
        ]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """The directory where ``sagaledger demo`` ran once, with its default store and ledgers."""
    cwd = tmp_path_factory.mktemp("demo")
    return Demo(cwd, sagaledger(cwd, "demo"))


def of(events: list[dict[str, Any]], type_: str, step: str | None = None) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == type_ and step in (None, e["step"])]


def when(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp)


# -- the demo ------------------------------------------------------------------------


def test_demo_leaves_one_completed_and_one_compensated_run(demo: Demo) -> None:
    # Given the demo ran in an empty directory
    # Then it succeeded, and its default store holds its two runs
    assert demo.result.returncode == 0, demo.result.stdout + demo.result.stderr
    assert (demo.cwd / "sagaledger.db").exists()
    statuses = sorted(run["status"] for run in runs_json(demo.cwd))
    assert statuses == ["compensated", "completed"]
    # And the simulators' ledgers were printed and written next to the log
    assert "The simulators' ledgers" in demo.result.stdout
    assert (demo.cwd / LEDGERS_FILE).exists()


def test_demo_crashed_order_was_charged_exactly_once(demo: Demo) -> None:
    # Given the completed run, whose first worker was SIGKILLed after the charge
    run = demo.run("completed")
    events = demo.events(run)
    key = f"{run['id']}:charge_payment:forward"

    # Then the payments simulator holds one charge, made under the step's key
    (charge,) = demo.effects(run, "payments", "charge")
    assert charge["key"] == key
    assert charge["amount"] == run["input"]["unit_price_cents"] * run["input"]["quantity"]

    # And the log abandoned attempt 1 and completed the step as attempt 2, whose probe
    # found that very charge by the same key instead of charging again
    (abandoned,) = of(events, "attempt_abandoned", "charge_payment")
    assert abandoned["attempt"] == 1
    (completed,) = of(events, "step_completed", "charge_payment")
    assert completed["attempt"] == 2
    assert completed["payload"]["via_probe"] is True
    assert completed["payload"]["output"]["payment_intent"] == charge["ref"]
    assert completed["payload"]["output"]["amount"] == charge["amount"]
    # The charge landed before the crashed attempt was taken over: attempt 1 made it
    attempts = of(events, "attempt_started", "charge_payment")
    assert [e["attempt"] for e in attempts] == [1, 2]
    assert when(charge["at"]) < when(abandoned["created_at"])
    assert attempts[0]["actor"] != completed["actor"]  # another process finished the step

    # And reserve_inventory, checkpointed before the crash, was not re-run
    assert [e["attempt"] for e in of(events, "attempt_started", "reserve_inventory")] == [1]
    assert len(demo.effects(run, "erp", "reserve")) == 1
    # And the run went on to one sales order and one confirmation email
    assert len(demo.effects(run, "erp", "order_created")) == 1
    assert len(demo.effects(run, "email_api", "email_sent")) == 1
    assert events[-1]["type"] == "run_completed"


def test_demo_late_failure_was_compensated_in_reverse(demo: Demo) -> None:
    # Given the compensated run, whose confirmation email was refused
    run = demo.run("compensated")
    events = demo.events(run)
    (charge,) = demo.effects(run, "payments", "charge")
    (refund,) = demo.effects(run, "payments", "refund")
    (order,) = demo.effects(run, "erp", "order_created")
    (cancelled,) = demo.effects(run, "erp", "order_cancelled")
    (reserved,) = demo.effects(run, "erp", "reserve")
    (released,) = demo.effects(run, "erp", "release")

    # Then the refund gave back exactly the charge, and the order and reservation were undone
    assert refund["amount"] == charge["amount"]
    assert refund["detail"]["payment_intent"] == charge["ref"]
    assert cancelled["ref"] == order["ref"]
    assert released["ref"] == reserved["ref"]
    # And the ledgers show the compensations in reverse order of the steps
    assert when(cancelled["at"]) < when(refund["at"]) < when(released["at"])
    # And no confirmation email went out
    assert demo.effects(run, "email_api", "email_sent") == []

    # And the log shows the failure, and the compensations in reverse completion order
    (failed,) = of(events, "step_failed")
    assert (failed["step"], failed["attempt"]) == ("send_confirmation", 1)
    undone = [e["step"] for e in of(events, "compensation_completed")]
    assert undone == ["create_erp_order", "charge_payment", "reserve_inventory"]


def test_demo_rate_limited_charge_waited_without_using_an_attempt(demo: Demo) -> None:
    # Given the compensated run, whose charge was first answered 429 with Retry-After
    run = demo.run("compensated")
    events = demo.events(run)

    # Then the log deferred attempt 1 and completed it on its retry: no attempt used up
    (deferred,) = of(events, "step_deferred", "charge_payment")
    assert deferred["attempt"] == 1
    assert deferred["error"]["type"].endswith("RateLimitedError")
    (completed,) = of(events, "step_completed", "charge_payment")
    assert completed["attempt"] == 1
    # And the retry charged once
    assert len(demo.effects(run, "payments", "charge")) == 1


def test_demo_runs_again_with_fresh_business_keys(demo: Demo, tmp_path: Path) -> None:
    # Given the directory of a finished demo
    again = tmp_path / "again"
    shutil.copytree(demo.cwd, again)

    # When the demo runs there a second time
    result = sagaledger(again, "demo")

    # Then it succeeds and adds two runs of its own
    assert result.returncode == 0, result.stdout + result.stderr
    runs = runs_json(again)
    assert sorted(r["status"] for r in runs) == ["compensated"] * 2 + ["completed"] * 2
    assert len({r["business_key"] for r in runs}) == 4
    # And its ledgers file is its own simulators': they started empty
    ours = {r["id"] for r in runs} - {r["id"] for r in runs_json(demo.cwd)}
    ledgers = json.loads((again / LEDGERS_FILE).read_text())
    assert {e["key"].split(":")[0] for e in ledgers["payments"]} == ours


def test_demo_refuses_an_in_memory_store(tmp_path: Path) -> None:
    # A worker process cannot see this process's memory.
    line = assert_one_line_error(sagaledger(tmp_path, "demo", "--store", "sqlite://"))
    assert "demo" in line


# -- runs list / runs show -----------------------------------------------------------


def test_runs_list_filters_by_status_and_saga(demo: Demo) -> None:
    assert [r["status"] for r in runs_json(demo.cwd, "--status", "completed")] == ["completed"]
    assert runs_json(demo.cwd, "--saga", "no_such_saga") == []
    assert len(runs_json(demo.cwd, "--limit", "1")) == 1


def test_runs_list_prints_a_table_for_people(demo: Demo) -> None:
    result = sagaledger(demo.cwd, "runs", "list")
    assert result.returncode == 0, result.stderr
    for run in runs_json(demo.cwd):
        assert run["id"][:8] in result.stdout
        assert run["status"] in result.stdout


def test_runs_show_accepts_an_id_prefix(demo: Demo) -> None:
    # Given the id of the completed run, cut to a prefix a person would type
    run = demo.run("completed")

    # When it is shown
    result = sagaledger(demo.cwd, "runs", "show", run["id"][:8])

    # Then the header names the whole run and the timeline lists its events and steps
    assert result.returncode == 0, result.stderr
    assert run["id"] in result.stdout
    for word in ("run_started", "attempt_abandoned", "step_completed", "run_completed"):
        assert word in result.stdout
    for step in ("reserve_inventory", "charge_payment", "create_erp_order", "send_confirmation"):
        assert step in result.stdout


def test_runs_show_says_until_when_a_step_was_deferred(demo: Demo) -> None:
    # Given the compensated run, whose charge was answered 429 once
    run = demo.run("compensated")

    # When it is shown
    result = sagaledger(demo.cwd, "runs", "show", run["id"])

    # Then the deferral reads as a wait with its end and its reason
    assert result.returncode == 0, result.stderr
    assert re.search(
        r"deferred until \d\d:\d\d:\d\d\.\d{3}: the remote side is rate", result.stdout
    )


def test_runs_show_json_holds_every_event(demo: Demo) -> None:
    run = demo.run("compensated")
    result = sagaledger(demo.cwd, "runs", "show", run["id"], "--json")
    shown = json.loads(result.stdout)
    assert shown["run"]["id"] == run["id"]
    assert [e["seq"] for e in shown["events"]] == list(range(1, shown["run"]["last_seq"] + 1))
    failed = [e for e in shown["events"] if e["type"] == "step_failed"]
    assert failed[0]["error"]["type"].endswith("PermanentError")
    assert all(e["created_at"].endswith("+00:00") for e in shown["events"])


def test_unknown_run_is_a_one_line_error_naming_it(demo: Demo) -> None:
    line = assert_one_line_error(sagaledger(demo.cwd, "runs", "show", "ffff0000nosuchrun"))
    assert "ffff0000nosuchrun" in line


# -- stores and settings ------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "url"),
    [
        (["runs", "list"], "not a url"),
        (["runs", "show", "abc"], "nosuchdb://host/db"),
        (["db", "current"], "not a url"),  # the db commands skip the schema check
    ],
)
def test_a_bad_store_url_is_a_one_line_error(tmp_path: Path, command: list[str], url: str) -> None:
    line = assert_one_line_error(sagaledger(tmp_path, *command, "--store", url))
    assert url in line


def test_the_store_url_can_come_from_the_environment(tmp_path: Path) -> None:
    result = sagaledger(tmp_path, "runs", "list", SAGALEDGER_STORE="nosuchdb://host/db")
    assert "nosuchdb" in assert_one_line_error(result)


def test_an_invalid_setting_is_a_one_line_error(tmp_path: Path) -> None:
    result = sagaledger(tmp_path, "runs", "list", SAGALEDGER_THREADS="many")
    assert "SAGALEDGER_THREADS" in assert_one_line_error(result)


def test_db_upgrade_brings_a_fresh_file_to_the_head_revision(tmp_path: Path) -> None:
    # Given a fresh SQLite file
    store = ["--store", f"sqlite:///{tmp_path}/fresh.db"]
    before = sagaledger(tmp_path, "db", "current", *store)
    assert before.returncode == 0, before.stderr
    assert "none" in before.stdout

    # When it is upgraded
    upgraded = sagaledger(tmp_path, "db", "upgrade", *store)
    assert upgraded.returncode == 0, upgraded.stderr

    # Then `db current` reports the head revision
    after = sagaledger(tmp_path, "db", "current", *store)
    assert after.returncode == 0, after.stderr
    assert after.stdout.split() == [head_revision(), "(head)"]


# -- worker --------------------------------------------------------------------------


def test_worker_reports_an_app_it_cannot_load(tmp_path: Path) -> None:
    line = assert_one_line_error(sagaledger(tmp_path, "worker", "--app", "no_such_module:registry"))
    assert "no_such_module" in line
    line = assert_one_line_error(sagaledger(tmp_path, "worker", "--app", "sagaledger.demo:nope"))
    assert "nope" in line


def test_worker_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    # Given a worker that has said it is ready
    store = f"sqlite:///{tmp_path}/sagaledger.db"
    with WorkerProcess("sagaledger.demo:registry", store=store, cwd=tmp_path) as worker:
        assert "ready: order_fulfilment v2" in worker.output

    # When it is sent SIGTERM (on leaving the block)
    # Then it stops by itself, with status 0, not by the SIGKILL that would follow
    assert worker.returncode == 0
    assert "stopped" in worker.output
