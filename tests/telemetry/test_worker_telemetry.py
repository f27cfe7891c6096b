"""``sagaledger worker --metrics-port --log-format json --tracing on``, in real processes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from sagaledger import Orchestrator, RunStatus, SagaLog
from sagaledger.testing import WorkerProcess
from tests.telemetry.app import quick_saga, registry

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.telemetry.app:registry"


def free_ports(count: int) -> int:
    """A loopback port such that it and the ``count - 1`` after it are free."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = int(probe.getsockname()[1])
        if first + count > 65535:
            continue
        try:
            for port in range(first, first + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError("no free ports")


def scrape(port: int, timeout: float = 20.0) -> str:
    """GET /metrics on loopback, waiting for the server to come up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
            response.raise_for_status()
            return response.text
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_worker_serves_metrics_writes_json_logs_and_exports_spans(store_url: str) -> None:
    port = free_ports(1)
    worker = WorkerProcess(
        APP,
        store=store_url,
        cwd=ROOT,
        env={"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "50"},
    )
    worker.command += ["--metrics-port", str(port), "--metrics-addr", "127.0.0.1"]
    worker.command += ["--log-format", "json", "--tracing", "on"]
    log = SagaLog.open(store_url)
    try:
        with worker:
            # Given a worker with its telemetry on, when it completes a run
            run = Orchestrator(log, registry).start(quick_saga, {"traveller": "ada"})
            assert worker.wait_for_run(log, run.id).status is RunStatus.COMPLETED

            # Then /metrics has the run's counts, and the log's figures
            text = scrape(port)
            assert (
                'sagaledger_step_attempts_total{phase="forward",saga="quick",step="book_hotel"} 1.0'
                in text
            )
            assert 'sagaledger_runs_finished_total{saga="quick",status="completed"} 1.0' in text
            assert 'sagaledger_drives_total{outcome="completed",saga="quick"} 1.0' in text
            assert "sagaledger_step_duration_seconds_bucket{" in text
            assert "sagaledger_log_up 1.0" in text
            assert f"metrics on http://127.0.0.1:{port}/metrics" in worker.output
    finally:
        log.close()
    assert worker.returncode == 0

    # ... the step's log line is JSON naming the run and the step
    lines = [json.loads(line) for line in worker.output.splitlines() if line.startswith('{"time"')]
    booking = [line for line in lines if line["message"] == "booking a hotel for ada"]
    assert [(b["run_id"], b["step"], b["phase"], b["attempt"]) for b in booking] == [
        (run.id, "book_hotel", "forward", 1)
    ]
    # ... and the spans went to the exporter OTEL_TRACES_EXPORTER names, in the run's trace
    assert f'"trace_id": "0x{run.id}"' in worker.output
    assert '"name": "drive quick"' in worker.output
    assert '"name": "book_hotel forward"' in worker.output


def test_each_of_n_worker_processes_serves_metrics_on_its_own_port(sqlite_url: str) -> None:
    port = free_ports(2)
    worker = WorkerProcess(APP, store=sqlite_url, cwd=ROOT)
    worker.command += ["--processes", "2", "--metrics-port", str(port)]
    worker.command += ["--metrics-addr", "127.0.0.1"]
    with worker:
        first, second = scrape(port), scrape(port + 1)
    for text in (first, second):
        assert "sagaledger_log_up 1.0" in text
        assert "# TYPE sagaledger_step_attempts_total counter" in text
    assert worker.returncode == 0


def test_a_metrics_port_already_taken_is_one_line_of_error(sqlite_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "sagaledger", "worker"]
        command += ["--app", "tests.telemetry.app:registry", "--store", sqlite_url]
        command += ["--metrics-port", str(port), "--metrics-addr", "127.0.0.1"]
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).resolve().parents[2],
        )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: cannot serve metrics on 127.0.0.1:{port}: Address already in use"
    ]
