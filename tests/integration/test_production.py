"""Production mode with real worker processes, Redis and Postgres: shared rate
limits across workers, and two deploys of a saga running side by side."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from sagaledger import Orchestrator, Registry, RunStatus, SagaLog
from sagaledger.sagas import SagaWorker, build_broker, declare_actors
from sagaledger.store import EventType
from tests import ledger_app, limited_app
from tests.helpers import wait_finished
from tests.sagas.test_embedded import DeliverTwice

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    "SAGALEDGER_LEASE_SECONDS": "3",
    "SAGALEDGER_RECOVERY_INTERVAL_SECONDS": "0.5",
    "SAGALEDGER_DISPATCH_GRACE_SECONDS": "3",
    "PYTHONPATH": str(ROOT),
}


@pytest.fixture
def store(postgres_url: str) -> Iterator[SagaLog]:
    log = SagaLog.open(postgres_url, upgrade=True)
    yield log
    log.close()


def start_workers(
    app: str, store: SagaLog, broker: str, count: int, tmp: Path
) -> list[subprocess.Popen[bytes]]:
    url = store.engine.url.render_as_string(hide_password=False)
    procs = []
    for n in range(count):
        log = open(tmp / f"{app.replace(':', '_')}-{n}.log", "wb")  # noqa: SIM115
        args = [sys.executable, "-m", "sagaledger", "worker", "--app", app, "--store", url]
        procs.append(
            subprocess.Popen(
                [*args, "--broker", broker, "--threads", "4"],
                cwd=ROOT,
                env={**os.environ, **ENV},
                stdout=log,
                stderr=log,
            )
        )
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        assert proc.wait(timeout=30) == 0


@pytest.fixture
def remote() -> Iterator[str]:
    """The simulated remote side, in its own process; yields its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.remote_counter"], cwd=ROOT, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    yield f"http://127.0.0.1:{port}/charge"
    proc.terminate()
    proc.wait()


def test_a_rate_limit_holds_across_three_workers(
    store: SagaLog, redis_url: str, remote: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workers = start_workers("tests.limited_app:registry", store, redis_url, 3, tmp_path)
    try:
        # Given 40 runs that each make one call, limited to 5 calls per second
        starter = Orchestrator(store, limited_app.registry)
        declare_actors(build_broker(redis_url), starter)
        runs = [starter.start("limited", {"url": remote}).id for _ in range(40)]
        wait_finished(store, runs)
    finally:
        stop(workers)

    # Then the remote side saw every call, and never more than 5 in any second
    arrivals = sorted(httpx.get(remote).json())
    assert len(arrivals) == 40
    busiest = max(
        sum(1 for t in arrivals[i:] if t < start + 1.0) for i, start in enumerate(arrivals)
    )
    spread = arrivals[-1] - arrivals[0]
    with capsys.disabled():  # the figures belong in every CI log
        print(
            f"\nrate limit 5/s over 3 workers: 40 calls in {spread:.2f}s, busiest second {busiest}"
        )
    assert busiest <= 5
    assert spread >= 7.0  # 40 calls at 5 per 1.1 s take ~7.7 s


def test_two_deploys_run_side_by_side_each_on_its_own_version(
    store: SagaLog, redis_url: str, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger.db")
    old = start_workers("tests.ledger_app:registry", store, redis_url, 1, tmp_path)
    new = start_workers("tests.ledger_app:registry_v2", store, redis_url, 1, tmp_path)
    v1_starter = Orchestrator(store, ledger_app.registry)
    declare_actors(build_broker(redis_url), v1_starter)
    v2_starter = Orchestrator(store, Registry([ledger_app.order_saga_v2]))
    declare_actors(build_broker(redis_url), v2_starter)
    try:
        # Runs started on v1 before the deploy, and v2 runs after it, interleaved
        v1_runs, v2_runs = [], []
        for i in range(10):
            order = {"order_id": str(i), "ledger": ledger, "pause_ms": 10}
            v1_runs.append(v1_starter.start("order", order, version=1).id)
            v2_runs.append(v2_starter.start("order", order, version=2).id)
        wait_finished(store, v1_runs + v2_runs)
    finally:
        stop(old + new)

    old_actor, new_actor = (f"worker:{os.uname().nodename}:{p.pid}" for p in (old[0], new[0]))
    for run_ids, steps, actor in ((v1_runs, 4, old_actor), (v2_runs, 3, new_actor)):
        for run_id in run_ids:
            assert store.get_run(run_id).status is RunStatus.COMPLETED
            events = store.events(run_id)
            done = [e.step for e in events if e.type is EventType.STEP_COMPLETED]
            assert done == list(ledger_app.STEPS[:steps])
            assert {e.actor for e in events if e.token} == {actor}


def test_every_message_delivered_twice_over_redis_changes_nothing(
    store: SagaLog, redis_url: str, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger.db")
    broker = build_broker(redis_url)
    broker.add_middleware(DeliverTwice())
    orchestrator = Orchestrator(store, ledger_app.registry, lease=timedelta(seconds=5))
    with SagaWorker(orchestrator, broker, threads=4):
        runs = [
            orchestrator.start(
                "order",
                {
                    "order_id": str(i),
                    "ledger": ledger,
                    "fail_at": "send_email" if i % 4 == 0 else None,
                },
            ).id
            for i in range(20)
        ]
        wait_finished(store, runs)
        time.sleep(0.5)  # the second copies arrive and are dropped
    assert Counter(store.get_run(r).status for r in runs) == {
        RunStatus.COMPLETED: 15,
        RunStatus.COMPENSATED: 5,
    }
    calls = ledger_app.calls(ledger)
    assert len(calls) == 15 * 4 + 5 * (4 + 3)
    assert len({c[2] for c in calls}) == len(calls)  # no key was called twice
