"""Production mode, run for real: ``sagaledger worker`` on Redis and Postgres servers.

Each test starts a supervisor (``--processes 2 --threads 2``) as a separate
process against the session's real redis-server and a fresh, migrated Postgres
database, and starts runs from this process through the same Redis, as a web
service embedding the library would. The steps record what they did in a
ledger file (``tests/ledger_app.py``).
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sagaledger import Orchestrator, RunStatus, SagaLog
from sagaledger.sagas import build_broker, declare_actors
from sagaledger.store import RunRecord
from tests import ledger_app
from tests.cli.test_cli import _env, sagaledger
from tests.servers import PostgresServer, RedisServer

#: The repository root: workers import ``tests.ledger_app`` from their working directory.
ROOT = Path(__file__).resolve().parents[2]
APP = "tests.ledger_app:registry"
#: Short leases and passes, so a killed worker's runs resume within seconds.
FAST = {
    "SAGALEDGER_LEASE_SECONDS": "2",
    "SAGALEDGER_RECOVERY_INTERVAL_SECONDS": "0.5",
    "SAGALEDGER_DISPATCH_GRACE_SECONDS": "2",
}


# -- servers and processes ----------------------------------------------------------


def migrate(url: str) -> str:
    result = sagaledger(ROOT, "db", "upgrade", "--store", url)
    assert result.returncode == 0, result.stderr
    return url


@pytest.fixture
def migrated_postgres_url(postgres_url: str) -> str:
    """A fresh Postgres database, migrated with ``sagaledger db upgrade``."""
    return migrate(postgres_url)


@pytest.fixture(scope="module")
def good_store_url(postgres_server: PostgresServer) -> str:
    """A migrated database, for tests that never get as far as using it."""
    return migrate(postgres_server.create_database("good_config"))


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> set[int]:
    """Live (non-zombie) processes whose parent is ``pid``, from /proc."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def eventually(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Fleet:
    """A ``sagaledger worker`` supervisor process, its stderr collected line by line."""

    def __init__(self, *args: str, env: dict[str, str]):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sagaledger", "worker", *args],
            cwd=ROOT,
            env=_env(env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self, count: int, timeout: float = 20) -> None:
        """Wait until ``count`` workers said they are ready, and run."""

        def ready() -> bool:
            assert self.process.poll() is None, f"supervisor exited:\n{self.output}"
            return sum(" ready: " in line for line in self.lines) >= count

        eventually(ready, timeout, f"{count} ready workers:\n{self.output}")

    @property
    def workers(self) -> set[int]:
        return children(self.process.pid)

    def close(self) -> None:
        """Stop whatever is left of the fleet (SIGKILL after a grace period)."""
        pids = self.workers
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def start_fleet(redis_url: str, migrated_postgres_url: str) -> Iterator[Callable[..., Fleet]]:
    """Starts supervisors on this test's Redis and Postgres; stops them afterwards."""
    fleets: list[Fleet] = []

    def start(processes: int = 2, threads: int = 2) -> Fleet:
        fleet = Fleet(
            "--app",
            APP,
            "--store",
            migrated_postgres_url,
            "--broker",
            redis_url,
            "--processes",
            str(processes),
            "--threads",
            str(threads),
            env=FAST,
        )
        fleets.append(fleet)
        return fleet

    yield start
    for fleet in fleets:
        fleet.close()


@pytest.fixture
def producer(redis_url: str, migrated_postgres_url: str) -> Iterator[Orchestrator]:
    """An orchestrator in this process whose dispatches go to the workers through Redis."""
    log = SagaLog.open(migrated_postgres_url)
    orchestrator = Orchestrator(log, ledger_app.registry)
    broker = build_broker(redis_url)
    declare_actors(broker, orchestrator)
    yield orchestrator
    log.close()


def start_orders(
    orchestrator: Orchestrator, ledger: Path, count: int, **extra: object
) -> list[str]:
    return [
        orchestrator.start(
            "order", {"order_id": f"o{i}", "ledger": str(ledger), **extra}, key=f"o{i}"
        ).id
        for i in range(count)
    ]


def wait_finished(log: SagaLog, run_ids: list[str], timeout: float = 15) -> list[RunRecord]:
    eventually(
        lambda: not any(log.get_run(r).status.active for r in run_ids), timeout, "runs to finish"
    )
    return [log.get_run(r) for r in run_ids]


def forward_calls(ledger: Path) -> dict[tuple[str, str], int]:
    """How often each (run, step) was called forward."""
    with sqlite3.connect(ledger) as conn:
        rows = conn.execute(
            "SELECT run_id, step, count(*) FROM calls WHERE phase = 'forward' GROUP BY 1, 2"
        ).fetchall()
    return {(run_id, step): n for run_id, step, n in rows}


def worker_pids(ledger: Path) -> set[int]:
    """The processes that called steps."""
    with sqlite3.connect(ledger) as conn:
        return {pid for (pid,) in conn.execute("SELECT DISTINCT pid FROM calls")}


# -- the fleet at work ---------------------------------------------------------------


def test_a_fleet_on_redis_and_postgres_completes_runs_started_elsewhere(
    start_fleet: Callable[..., Fleet], producer: Orchestrator, tmp_path: Path
) -> None:
    # Given two worker processes of two threads each
    fleet = start_fleet(processes=2, threads=2)
    fleet.wait_ready(2)
    workers = fleet.workers
    assert len(workers) == 2

    # When this process starts runs, every fourth one refused by the ERP
    ledger = tmp_path / "ledger.db"
    ok = start_orders(producer, ledger, 24)
    refused = [
        producer.start(
            "order",
            {"order_id": f"r{i}", "ledger": str(ledger), "fail_at": "create_erp_order"},
            key=f"r{i}",
        ).id
        for i in range(8)
    ]

    # Then the fleet completes the good ones and compensates the refused ones
    runs = wait_finished(producer.log, ok + refused)
    assert {r.status for r in runs[: len(ok)]} == {RunStatus.COMPLETED}
    assert {r.status for r in runs[len(ok) :]} == {RunStatus.COMPENSATED}
    # And each step ran once, in the fleet's processes, which shared the load
    assert set(forward_calls(ledger).values()) == {1}
    assert worker_pids(ledger) == workers


def test_the_supervisor_replaces_a_killed_worker_and_runs_still_complete(
    start_fleet: Callable[..., Fleet], producer: Orchestrator, tmp_path: Path
) -> None:
    # Given a fleet of two busy with runs whose payment step needs retries
    fleet = start_fleet(processes=2, threads=2)
    fleet.wait_ready(2)
    ledger = tmp_path / "ledger.db"
    run_ids = start_orders(producer, ledger, 30, flaky={"charge_payment": 2})
    eventually(lambda: len(ledger_app.calls(str(ledger))) >= 10, 10, "runs under way")

    # When one worker is SIGKILLed
    victim = min(fleet.workers)
    os.kill(victim, signal.SIGKILL)

    # Then the supervisor says so and starts a replacement
    eventually(lambda: len(fleet.workers) == 2 and victim not in fleet.workers, 10, "a replacement")
    # (its stderr is read by another thread: the line may come a little after)
    said = f"(pid {victim}) was killed by SIGKILL"
    eventually(lambda: any(said in line for line in fleet.lines), 10, "the supervisor's line")
    fleet.wait_ready(3)

    # And every run completes, each effect applied once
    runs = wait_finished(producer.log, run_ids, timeout=20)
    assert {r.status for r in runs} == {RunStatus.COMPLETED}
    effects = Counter(ledger_app.effects(str(ledger)))
    assert set(effects) == {(step, "forward") for step in ledger_app.STEPS}
    assert set(effects.values()) == {len(run_ids)}


def test_sigterm_stops_the_fleet_cleanly_and_the_log_keeps_the_rest(
    start_fleet: Callable[..., Fleet], producer: Orchestrator, tmp_path: Path
) -> None:
    # Given a fleet with runs in flight
    fleet = start_fleet(processes=2, threads=2)
    fleet.wait_ready(2)
    workers = fleet.workers
    ledger = tmp_path / "ledger.db"
    run_ids = start_orders(producer, ledger, 20, flaky={"create_erp_order": 1})
    eventually(lambda: len(ledger_app.calls(str(ledger))) >= 4, 10, "runs under way")

    # When the supervisor is sent SIGTERM
    started = time.monotonic()
    fleet.process.send_signal(signal.SIGTERM)

    # Then it exits with status 0 within seconds, leaving no worker behind
    assert fleet.process.wait(timeout=10) == 0, fleet.output
    assert time.monotonic() - started < 10
    assert not [pid for pid in workers if alive(pid)]
    assert "Traceback" not in fleet.output

    # And a new fleet finishes the runs without redoing any step that had finished
    start_fleet(processes=1, threads=2).wait_ready(1)
    runs = wait_finished(producer.log, run_ids)
    assert {r.status for r in runs} == {RunStatus.COMPLETED}
    calls = forward_calls(ledger)
    flaky = {(k, s): n for (k, s), n in calls.items() if s == "create_erp_order"}
    assert set(flaky.values()) == {2}  # one refusal, one success
    assert {n for (k, s), n in calls.items() if s != "create_erp_order"} == {1}


# -- bad configuration ----------------------------------------------------------------


def bad_setting(case: str, postgres: PostgresServer) -> tuple[list[str], str]:
    """The option that makes ``case`` bad, and what the error line must say."""
    port = closed_port()
    match case:
        case "unreachable redis":
            url = f"redis://:s3cret@127.0.0.1:{port}/0"
            return ["--broker", url], url.replace("s3cret", "***")
        case "unreachable postgres":
            url = f"postgresql://app:s3cret@127.0.0.1:{port}/orders"
            return ["--store", url], f"app:***@127.0.0.1:{port}/orders"
        case "malformed broker url":
            return ["--broker", "redis://127.0.0.1:notaport/0"], "redis://127.0.0.1:notaport/0"
        case "unsupported broker url":
            return ["--broker", "amqp://app:s3cret@mq/"], "amqp://app:***@mq/"
        case "malformed store url":
            return ["--store", "not a url"], "not a url"
        case "unmigrated postgres":
            url = postgres.create_database(f"unmigrated{port}")
            return ["--store", url], "sagaledger db upgrade"
    raise AssertionError(case)


@pytest.mark.parametrize("processes", ["1", "2"])
@pytest.mark.parametrize(
    "case",
    [
        "unreachable redis",
        "unreachable postgres",
        "malformed broker url",
        "unsupported broker url",
        "malformed store url",
        "unmigrated postgres",
    ],
)
def test_bad_config_is_one_line_naming_the_culprit(
    case: str,
    processes: str,
    redis_server: RedisServer,
    good_store_url: str,
    postgres_server: PostgresServer,
) -> None:
    # Given one bad setting among good ones
    (option, value), culprit = bad_setting(case, postgres_server)
    good = {"--store": good_store_url, "--broker": redis_server.url, option: value}
    args = [arg for pair in good.items() for arg in pair]

    # When a worker is started with it
    started = time.monotonic()
    result = sagaledger(ROOT, "worker", "--app", APP, "--processes", processes, *args, timeout=30)

    # Then it exits at once with one line naming the culprit, its password masked
    assert time.monotonic() - started < 15
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert culprit in lines[0]
    assert "s3cret" not in lines[0]
