"""Production mode under chaos: worker processes SIGKILLed and replaced at random,
Redis killed and restarted with its data gone, Postgres restarted, all mid-run.

Afterwards every run must be completed or fully compensated, no step that
completed may have run again, every effect must have applied once per key, and
there must be exactly as many runs as were started.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from sagaledger import Orchestrator, RunStatus, SagaLog
from sagaledger.sagas import declare_actors
from sagaledger.sagas._brokers import build_broker
from sagaledger.store import EventType, upgrade
from tests import ledger_app
from tests.ledger_app import registry
from tests.servers import PostgresServer, RedisServer, redis_available

ROOT = Path(__file__).resolve().parents[2]
RUNS = 500
WORKERS = 3
#: Short settings so that a killed worker's runs come back within seconds.
WORKER_ENV = {
    "SAGALEDGER_LEASE_SECONDS": "2",
    "SAGALEDGER_RECOVERY_INTERVAL_SECONDS": "0.5",
    "SAGALEDGER_DISPATCH_GRACE_SECONDS": "3",
    "PYTHONPATH": str(ROOT),
}


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own: it is killed and wiped mid-run."""
    if not redis_available():
        pytest.fail("redis-server is not installed: run scripts/ensure-servers")
    with RedisServer() as server:
        yield server


class Fleet:
    """Worker processes the test starts and kills."""

    def __init__(self, store: str, broker: str, log_dir: Path):
        self.store, self.broker, self.log_dir = store, broker, log_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.started = 0

    def spawn(self) -> None:
        self.started += 1
        log = open(self.log_dir / f"worker-{self.started}.log", "wb")  # noqa: SIM115
        args = [sys.executable, "-m", "sagaledger", "worker", "--app", "tests.ledger_app:registry"]
        args += ["--store", self.store, "--broker", self.broker, "--threads", "4"]
        proc = subprocess.Popen(
            args, cwd=ROOT, env={**os.environ, **WORKER_ENV}, stdout=log, stderr=log
        )
        self.procs.append(proc)

    def kill_one(self, rng: random.Random) -> None:
        victim = rng.choice(self.procs)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        self.procs.remove(victim)

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def unfinished(log: SagaLog) -> int | None:
    try:
        counts = log.count_runs()
    except OperationalError:
        return None  # Postgres is restarting
    return sum(n for status, n in counts.items() if RunStatus(status).active)


def test_chaos(
    postgres_server: PostgresServer,
    own_redis: RedisServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rng = random.Random(20261122)
    store = postgres_server.create_database("chaos")
    log = SagaLog.open(store, upgrade=True)
    upgrade(log.engine)
    ledger = str(tmp_path / "ledger.db")
    fleet = Fleet(store, own_redis.url, tmp_path)
    for _ in range(WORKERS):
        fleet.spawn()

    # Given 500 runs started through Redis, one in ten failing late
    starter = Orchestrator(log, registry)
    declare_actors(build_broker(own_redis.url), starter)
    started = []
    for i in range(RUNS):
        order = {"order_id": str(i), "ledger": ledger, "pause_ms": 40}
        if i % 10 == 0:
            order["fail_at"] = "send_email"
        started.append(starter.start("order", order, key=f"chaos-{i}").id)

    # When workers die every 0.5-2 s, Redis loses everything once, Postgres restarts once
    kills, redis_wiped, postgres_restarted = 0, False, False
    t0 = time.monotonic()
    try:
        while True:
            left = unfinished(log)
            if left == 0 or time.monotonic() - t0 > 240:
                break
            time.sleep(rng.uniform(0.5, 2.0))
            fleet.kill_one(rng)
            fleet.spawn()
            kills += 1
            # Wipe Redis once a third of the runs are done, restart Postgres at two
            # thirds: both always land mid-run, however fast the engine gets.
            if left is None:
                continue
            if not redis_wiped and left < RUNS * 2 // 3:
                own_redis.kill()
                own_redis.restart(wipe_data=True)
                redis_wiped = True
            elif redis_wiped and not postgres_restarted and left < RUNS // 3:
                postgres_server.restart()
                postgres_restarted = True
    finally:
        fleet.stop()
    took = time.monotonic() - t0

    # Then nothing was lost, nothing ran twice, compensations ran in reverse
    statuses = Counter(log.get_run(r).status for r in started)
    calls = ledger_app.calls(ledger)
    with capsys.disabled():  # the counts belong in every CI log
        print(
            f"\nchaos: {RUNS} runs, {kills} workers SIGKILLed, {fleet.started} started, "
            f"redis wiped={redis_wiped}, postgres restarted={postgres_restarted}, {took:.1f}s; "
            f"statuses {dict(statuses)}; {len(calls)} calls"
        )
    assert redis_wiped and postgres_restarted and kills >= 5, "the chaos did not all happen"
    assert sum(log.count_runs().values()) == RUNS
    assert statuses == {RunStatus.COMPLETED: RUNS - RUNS // 10, RunStatus.COMPENSATED: RUNS // 10}
    # One effect per key, and exactly the keys expected: a retry with a new key would add one
    failing = RUNS // 10
    assert Counter(ledger_app.effects(ledger)) == {
        ("reserve_inventory", "forward"): RUNS,
        ("charge_payment", "forward"): RUNS,
        ("create_erp_order", "forward"): RUNS,
        ("send_email", "forward"): RUNS - failing,
        ("create_erp_order", "compensate"): failing,
        ("charge_payment", "compensate"): failing,
        ("reserve_inventory", "compensate"): failing,
    }
    for run_id in started:
        events = log.events(run_id)
        done = {e.step: e.attempt for e in events if e.type is EventType.STEP_COMPLETED}
        # No completed step ran again: every call of it belongs to an attempt up to
        # the one that completed (a slower duplicate of that attempt is allowed).
        for step, phase, _key, attempt in ledger_app.calls(ledger, run_id):
            if phase == "forward" and step in done:
                assert attempt <= done[step], (run_id, step, attempt, done[step])
        undone = [e.step for e in events if e.type is EventType.COMPENSATION_COMPLETED]
        if undone:
            assert undone == ["create_erp_order", "charge_payment", "reserve_inventory"]
    log.close()
