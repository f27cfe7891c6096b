"""The ``sagaledger`` command, run for real: ``python -m sagaledger ...`` in a temporary directory.

The demo is run once per module (it takes a few seconds: a worker process is
started and SIGKILLed); the inspection tests then read the runs it left behind.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sagaledger.demo import LEDGER_FILE, Ledger
from sagaledger.store import head_revision


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


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """The directory where ``sagaledger demo`` ran once, with its default store and ledger."""
    cwd = tmp_path_factory.mktemp("demo")
    return Demo(cwd, sagaledger(cwd, "demo"))


# -- the demo ------------------------------------------------------------------------


def test_demo_leaves_one_completed_and_one_compensated_run(demo: Demo) -> None:
    # Given the demo ran in an empty directory
    # Then it succeeded, and its default store holds its two runs
    assert demo.result.returncode == 0, demo.result.stdout + demo.result.stderr
    assert (demo.cwd / "sagaledger.db").exists()
    statuses = sorted(run["status"] for run in runs_json(demo.cwd))
    assert statuses == ["compensated", "completed"]


def test_demo_crashed_order_was_charged_exactly_once(demo: Demo) -> None:
    # Given the completed run, whose first worker was SIGKILLed after the charge
    run = demo.run("completed")
    ledger = Ledger(demo.cwd / LEDGER_FILE)
    order_id = run["input"]["order_id"]

    # Then the ledger applied one charge, although charge_payment was called twice
    charges = [e for e in ledger.effects([order_id]) if e.kind == "charge"]
    assert len(charges) == 1
    calls = [c for c in ledger.calls([order_id]) if c.step == "charge_payment"]
    assert [c.attempt for c in calls] == [1, 2]
    assert [c.outcome for c in calls] == ["applied", "duplicate"]
    assert calls[0].key == calls[1].key
    assert calls[0].pid != calls[1].pid  # the worker process died; the demo process resumed
    # And reserve_inventory, checkpointed before the crash, was not re-run
    assert [c.attempt for c in ledger.calls([order_id]) if c.step == "reserve_inventory"] == [1]

    # And the log recorded the lost attempt and the resumed one
    shown = sagaledger(demo.cwd, "runs", "show", run["id"], "--json")
    assert shown.returncode == 0, shown.stderr
    events = json.loads(shown.stdout)["events"]
    charge = [(e["type"], e["attempt"]) for e in events if e["step"] == "charge_payment"]
    assert ("attempt_abandoned", 1) in charge
    assert ("step_completed", 2) in charge
    assert events[-1]["type"] == "run_completed"


def test_demo_late_failure_was_refunded_and_released(demo: Demo) -> None:
    # Given the compensated run, whose create_erp_order failed permanently
    run = demo.run("compensated")
    ledger = Ledger(demo.cwd / LEDGER_FILE)
    effects = {e.kind: e for e in ledger.effects([run["input"]["order_id"]])}

    # Then the charge was refunded and the reservation released, and nothing after the failure ran
    assert set(effects) == {"reservation", "charge", "refund", "release"}
    assert effects["refund"].detail["charge_id"] == effects["charge"].ref
    assert effects["release"].detail["reservation_id"] == effects["reservation"].ref

    # And the log shows the compensations in reverse completion order
    shown = sagaledger(demo.cwd, "runs", "show", run["id"], "--json")
    events = json.loads(shown.stdout)["events"]
    undone = [e["step"] for e in events if e["type"] == "compensation_completed"]
    assert undone == ["charge_payment", "reserve_inventory"]


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
    worker = subprocess.Popen(
        [sys.executable, "-m", "sagaledger", "worker", "--app", "sagaledger.demo:registry"],
        cwd=tmp_path,
        env=_env({"SAGALEDGER_LEASE_SECONDS": "2"}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    stderr = worker.stderr
    assert stderr is not None

    def pump() -> None:
        for line in stderr:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        while "ready" not in (line := lines.get(timeout=60)):
            pass
        assert "order_fulfilment v1" in line

        # When it is sent SIGTERM
        worker.send_signal(signal.SIGTERM)

        # Then it stops by itself, with status 0
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
