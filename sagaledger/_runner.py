"""One worker process of ``sagaledger worker``: checked start-up, run until told to stop."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterable
from contextlib import ExitStack, closing
from types import FrameType

import dramatiq

from sagaledger._settings import Settings
from sagaledger.sagas import Hooks, Orchestrator, Registry, SagaWorker, build_broker
from sagaledger.sagas._brokers import mask_url, rate_limiter_for
from sagaledger.store import SagaLog

#: How often (s) the main thread looks for a reason to stop.
_TICK = 0.5


def open_store(url: str, threads: int = 4) -> SagaLog:
    """Open the saga log at ``url`` and check its schema, failing fast when unreachable.

    The connection pool fits the worker: one connection per thread, plus the
    maintenance thread's and one spare, so many processes stay within Postgres's
    connection limit.

    Raises:
        StoreError: the URL is malformed or the database unreachable.
        SchemaNotReadyError: the database is not migrated to this code's schema.
    """
    if url.startswith("sqlite"):
        return SagaLog.open(url)  # migrates a SQLite file, as every command does
    return SagaLog.open(url, pool_size=threads + 2, max_overflow=2)


def broker_label(url: str | None) -> str:
    """How the worker names its broker: the URL without its password, or ``memory``."""
    return mask_url(url) if url else "memory"


def check_config(settings: Settings) -> None:
    """Reach the store and the broker once, as every worker process will.

    Raises:
        StoreError: see :func:`open_store`.
        BrokerError: the broker URL is malformed or Redis unreachable.
    """
    open_store(settings.store).close()
    _close(build_broker(settings.broker))


def run_worker(
    settings: Settings,
    registry: Registry,
    *,
    hooks: Iterable[Hooks] = (),
    supervised: bool = False,
    say: Callable[[str], None] = print,
    ready_note: str = "",
) -> None:
    """Run one :class:`SagaWorker` until SIGTERM or SIGINT (or its supervisor's death).

    Args:
        settings: The store, broker, threads, lease and intervals to use.
        registry: The sagas to run.
        hooks: Passed to the orchestrator.
        supervised: Started by a supervisor: stop when it goes away, and leave a
            repeated signal to it (it escalates to SIGKILL itself).
        say: Prints a progress line for people.
        ready_note: Appended to the "ready" line.
    """
    with closing(open_store(settings.store, settings.threads)) as log, ExitStack() as telemetry:
        if settings.metrics_port is not None:
            # Imported here: the telemetry extra is only needed when asked for.
            from sagaledger.telemetry._setup import serve_metrics

            metrics, stop_serving = serve_metrics(log, settings.metrics_port, settings.metrics_addr)
            telemetry.callback(stop_serving)
            hooks = [*hooks, metrics]
            where = f"{settings.metrics_addr}:{settings.metrics_port}"
            ready_note = f", metrics on http://{where}/metrics{ready_note}"
        broker = build_broker(settings.broker)
        orchestrator = Orchestrator(
            log,
            registry,
            hooks=hooks,
            lease=settings.lease,
            dispatch_grace=settings.dispatch_grace,
            rate_limiter=rate_limiter_for(broker),
        )
        worker = SagaWorker(
            orchestrator,
            broker,
            threads=settings.threads,
            recovery_interval=settings.recovery_interval,
            queue=settings.queue,
        )
        stopping = _stop_on_signals(repeat_kills=not supervised)
        parent = os.getppid()
        worker.start()
        try:
            say(
                f"worker {orchestrator.worker_id} ready: {registry.describe()} on "
                f"{log.engine.url!r}, broker {broker_label(settings.broker)}, "
                f"threads={settings.threads}{ready_note}"
            )
            while not stopping.wait(_TICK):
                if supervised and os.getppid() != parent:
                    say(f"worker {orchestrator.worker_id}: supervisor gone")
                    break
            say(f"worker {orchestrator.worker_id} stopping: finishing in-flight steps")
        finally:
            worker.stop()
    say(f"worker {orchestrator.worker_id} stopped")


def _stop_on_signals(*, repeat_kills: bool) -> threading.Event:
    """An event set by the first SIGTERM or SIGINT.

    Args:
        repeat_kills: Let a second signal stop the process at once (for people);
            otherwise repeats are ignored (a supervisor that forwards a signal its
            workers also got, from systemd say, must not kill them mid-step).
    """
    stopping = threading.Event()

    def handle(signum: int, _frame: FrameType | None) -> None:
        stopping.set()
        if repeat_kills:
            # Restore the default, so an impatient second signal is not swallowed.
            signal.signal(signum, signal.SIG_DFL)

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stopping


def _close(broker: dramatiq.Broker) -> None:
    broker.close()
    client = getattr(broker, "client", None)
    if client is not None:
        client.close()
