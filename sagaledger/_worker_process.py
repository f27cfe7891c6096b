"""A real ``sagaledger worker`` process, for integration tests and examples.

The test (or example) shares a store with the worker, starts runs in its own
process and waits for them in the log, as a service does in production; the
worker finds them in the log, since no broker is shared. A crash point makes
the worker SIGKILL itself mid-saga, to test what a real crash leaves behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from sagaledger._settings import ENV_PREFIX
from sagaledger.store import RunRecord, SagaLog

#: What the worker's "ready" line holds: ``worker ID ready: sagas on STORE, ...``.
READY_MARK = " ready: "
#: Lines of the worker's output quoted in an error about a run it was driving.
_QUOTED_LINES = 30


class WorkerProcessError(RuntimeError):
    """The worker process did not start, or died while a run was waited for.

    The message quotes the worker's output, which says why.

    Attributes:
        output: What the worker printed.
        returncode: Its exit status (negative: killed by that signal), or None.
    """

    def __init__(self, message: str, output: str = "", returncode: int | None = None):
        super().__init__(f"{message}; the worker's output:\n{output}" if output else message)
        self.output, self.returncode = output, returncode


class WorkerProcess:
    """``sagaledger worker --app APP`` in a child process, from "ready" to stopped.

    Entering the context starts the worker and returns once it says it is ready;
    leaving it sends SIGTERM (the worker finishes the steps in flight), then
    SIGKILL if it has not exited within ``stop_timeout``::

        with WorkerProcess("myapp.sagas:registry", store=url, cwd=project) as worker:
            run = Orchestrator(log, registry).start(order_saga, order, key="A1")
            assert worker.wait_for_run(log, run.id).status is RunStatus.COMPLETED
        assert worker.returncode == 0

    The worker's settings are the ones given here and in ``env``: this process's
    ``SAGALEDGER_*`` variables are not passed on, so that a broker or store a
    developer exported does not change what a test runs.

    Args:
        app: ``MODULE:ATTR`` of the registry (or sagas) to run, importable from ``cwd``.
        store: URL of the saga log this process shares with the worker (a SQLite
            file or Postgres: an in-memory SQLite database is not shared).
        env: More environment variables for the worker, e.g. a simulator suite's
            ``endpoints.to_env()``.
        crash_at: ``STEP:POINT[:PHASE[:ATTEMPT]]``: the worker SIGKILLs itself
            there, once (see :class:`~sagaledger.testing.CrashAt`); :meth:`wait`
            for its death.
        recovery_interval: How often the worker looks in the log for due runs.
            Runs this process starts reach the worker that way, so it is short.
        lease: How long the worker's leases last (the worker's default, 30 s, if None).
        threads: Runs the worker drives at once (its default, 4, if None).
        cwd: The worker's working directory, where ``app`` is imported from
            (this process's by default).
        log_path: Also write the worker's output to this file, as it comes.
        start_timeout: Seconds the worker may take to say it is ready.
        stop_timeout: Seconds the worker may take to stop on SIGTERM before SIGKILL.
    """

    def __init__(
        self,
        app: str,
        *,
        store: str,
        env: Mapping[str, str] | None = None,
        crash_at: str | None = None,
        recovery_interval: timedelta = timedelta(milliseconds=100),
        lease: timedelta | None = None,
        threads: int | None = None,
        cwd: str | Path | None = None,
        log_path: str | Path | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 15.0,
    ):
        self.command = [sys.executable, "-m", "sagaledger", "worker", "--app", app]
        if crash_at is not None:
            self.command += ["--crash-at", crash_at]
        settings = {
            "STORE": store,
            "RECOVERY_INTERVAL_SECONDS": str(recovery_interval.total_seconds()),
            "LEASE_SECONDS": None if lease is None else str(lease.total_seconds()),
            "THREADS": None if threads is None else str(threads),
        }
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        self.env = {
            **inherited,
            **{ENV_PREFIX + name: value for name, value in settings.items() if value is not None},
            **(env or {}),
            "PYTHONUNBUFFERED": "1",  # every line as it is printed, the last ones before a kill too
        }
        self.cwd, self.log_path = cwd, log_path
        self.start_timeout, self.stop_timeout = start_timeout, stop_timeout
        self._process: subprocess.Popen[str] | None = None
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    # -- the process ----------------------------------------------------------------

    def start(self) -> Self:
        """Start the worker and wait until it says it is ready.

        Raises:
            WorkerProcessError: it exited first (a bad app, an unreachable store),
                or did not get ready within ``start_timeout``; it is stopped.
        """
        if self._process is not None:
            raise RuntimeError("this worker process was started already")
        self._process = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        sink = None if self.log_path is None else open(self.log_path, "w")  # noqa: SIM115
        self._reader = threading.Thread(
            target=self._read, args=(self._process.stdout, sink), daemon=True
        )
        self._reader.start()
        deadline = time.monotonic() + self.start_timeout
        while not self._ready.wait(0.02):
            if self._process.poll() is not None:
                self._join_reader()
                if self._ready.is_set():
                    break  # ready, then gone at once: a crash point reached by a waiting run
                raise WorkerProcessError(
                    f"the worker exited with {self._process.returncode} before it was ready",
                    self.output,
                    self._process.returncode,
                )
            if time.monotonic() > deadline:
                code = self.stop()
                raise WorkerProcessError(
                    f"the worker was not ready within {self.start_timeout:g} s", self.output, code
                )
        return self

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after ``stop_timeout``; return the exit status.

        A worker that has exited already (a crash point fired) is only waited for.
        """
        process = self._running()
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._join_reader()
        return process.returncode

    def wait(self, timeout: float) -> int:
        """Wait for the worker to exit by itself (e.g. at its crash point); return its status.

        Raises:
            TimeoutError: it is still running after ``timeout`` seconds.
        """
        process = self._running()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(
                f"the worker is still running after {timeout:g} s; "
                f"its output ends:\n{self.output_tail()}"
            ) from None
        self._join_reader()
        return process.returncode

    def wait_for_run(self, log: SagaLog, run_id: str, timeout: float = 30.0) -> RunRecord:
        """Wait until the run is no longer active (completed, compensated, parked).

        Args:
            log: The saga log this process shares with the worker.
            run_id: The run.
            timeout: Seconds to wait.

        Returns:
            The run as the log then has it.

        Raises:
            WorkerProcessError: the worker exited while the run was still active.
            TimeoutError: the run is still active after ``timeout`` seconds.
        """
        process = self._running()
        deadline = time.monotonic() + timeout
        while True:
            run = log.get_run(run_id)
            if not run.status.active:
                return run
            if process.poll() is not None:
                self._join_reader()
                raise WorkerProcessError(
                    f"the worker exited with {process.returncode} while run {run_id} "
                    f"was {run.status.value}",
                    self.output_tail(),
                    process.returncode,
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"run {run_id} is still {run.status.value} after {timeout:g} s; "
                    f"the worker's output ends:\n{self.output_tail()}"
                )
            time.sleep(0.02)

    # -- what it says -----------------------------------------------------------------

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self._running().pid

    @property
    def returncode(self) -> int | None:
        """The worker's exit status once it has exited (negative: killed by that signal)."""
        return self._running().poll()

    @property
    def output(self) -> str:
        """Everything the worker has printed so far (its log lines and its "ready" line)."""
        with self._lock:
            return "".join(self._lines)

    def output_tail(self, lines: int = _QUOTED_LINES) -> str:
        """The last ``lines`` lines the worker printed."""
        with self._lock:
            return "".join(self._lines[-lines:])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- helpers ----------------------------------------------------------------------

    def _running(self) -> subprocess.Popen[str]:
        if self._process is None:
            raise RuntimeError("the worker process has not been started")
        return self._process

    def _read(self, stream: IO[str], sink: IO[str] | None) -> None:
        # A thread drains the pipe, so a chatty worker never blocks on a full one.
        try:
            for line in stream:
                with self._lock:
                    self._lines.append(line)
                if sink is not None:
                    sink.write(line)
                    sink.flush()
                if READY_MARK in line:
                    self._ready.set()
        finally:
            stream.close()
            if sink is not None:
                sink.close()

    def _join_reader(self) -> None:
        # The pipe closes when the worker exits: the reader has the last lines then.
        if self._reader is not None:
            self._reader.join(5)
