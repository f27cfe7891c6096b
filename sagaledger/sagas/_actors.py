"""The generic Dramatiq actor that drives runs, and the worker's maintenance thread."""

from __future__ import annotations

import logging
import math
import threading
import time
from datetime import timedelta
from typing import Any

import dramatiq

from sagaledger.sagas._dispatch import Dispatch, queue_for
from sagaledger.sagas._orchestrator import RECOVERY_BATCH, Orchestrator

logger = logging.getLogger("sagaledger.worker")

#: The one actor every worker runs; it looks steps up by name in the registry.
DRIVE_ACTOR = "sagaledger.drive_run"
#: Default queue for sagaledger's messages.
QUEUE = "sagaledger"
#: A drive may run several steps; each step's own timeout is enforced by its lease.
_NO_TIME_LIMIT = 7 * 24 * 3600 * 1000


def declare_actors(
    broker: dramatiq.Broker, orchestrator: Orchestrator, queue: str = QUEUE
) -> dramatiq.Actor[[str], None]:
    """Declare the drive actor on ``broker`` and route the orchestrator's dispatches to it.

    Each saga version has a queue of its own, and this declares the queues of the
    versions the orchestrator's registry has: a worker consumes those, so a run
    only ever reaches a worker that has its version. Dramatiq's own retries stay
    off: a failed drive is retried from the log by the recovery pass, never from
    a message that only the broker remembers.
    """

    def drive_run(run_id: str) -> None:
        try:
            orchestrator.drive(run_id)
        except Exception:
            # The log still says the run is due; the recovery pass drives it again.
            logger.exception("driving run %s failed; recovery will drive it again", run_id)

    # Declaring the actor declares its queue: give it a version queue, so that a
    # worker polls no queue that nobody sends to.
    queues = sorted({queue_for(queue, s.name, s.version) for s in orchestrator.registry}) or [queue]
    # A broker of one's own may carry Dramatiq's default middleware: turn its
    # retries and its time limit off (the options exist only with the middleware).
    wanted = {"max_retries": 0, "time_limit": _NO_TIME_LIMIT}
    options: dict[str, Any] = {k: v for k, v in wanted.items() if k in broker.actor_options}
    actor = dramatiq.actor(broker=broker, actor_name=DRIVE_ACTOR, queue_name=queues[0], **options)(
        drive_run
    )
    for name in queues[1:]:
        broker.declare_queue(name)

    def send(request: Dispatch) -> None:
        target = queue_for(queue, request.saga, request.version)
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=target, actor_name=DRIVE_ACTOR, args=(request.run_id,), kwargs={}, options={}
        )
        # Round up: a message that arrives before the run's wake-up time is early.
        delay = request.delay
        ms = math.ceil(delay.total_seconds() * 1000) + 1 if delay else 0
        broker.enqueue(message, delay=ms if ms > 1 else None)

    orchestrator.set_dispatcher(send)
    return actor


class Maintenance:
    """A worker's background thread: renews leases and runs the recovery pass.

    Args:
        orchestrator: Whose leases to renew and whose log to sweep.
        recovery_interval: How often to look for due runs.
    """

    def __init__(
        self, orchestrator: Orchestrator, recovery_interval: timedelta = timedelta(seconds=2)
    ):
        self.orchestrator = orchestrator
        self.renew_interval = orchestrator.lease.total_seconds() / 3
        self.recovery_interval = recovery_interval.total_seconds()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="sagaledger-maintenance", daemon=True
        )

    def start(self) -> None:
        """Start the thread; recovery runs at once, so a restarted worker resumes promptly."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        next_renewal = next_recovery = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                if now >= next_renewal:
                    self.orchestrator.leases.renew()
                    next_renewal = now + self.renew_interval
                if now >= next_recovery:
                    found = self.orchestrator.recover()
                    # A full batch means more are due (timers firing together): go on at once.
                    busy = found >= RECOVERY_BATCH
                    next_recovery = now if busy else now + self.recovery_interval
            except Exception:
                # A database blip must not kill the thread; the next tick retries.
                logger.exception("maintenance pass failed; retrying in a second")
                next_renewal = max(next_renewal, now + 1.0)
                next_recovery = max(next_recovery, now + 1.0)
            self._stop.wait(max(0.0, min(next_renewal, next_recovery) - time.monotonic()))


class MaintenanceMiddleware(dramatiq.Middleware):
    """Runs :class:`Maintenance` for as long as a Dramatiq worker runs."""

    def __init__(self, maintenance: Maintenance):
        self.maintenance = maintenance

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        self.maintenance.start()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        # Only now: the runs in flight during a graceful stop keep their leases.
        self.maintenance.stop()
