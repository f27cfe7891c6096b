"""``sagaledger worker --processes N``: start N worker processes and keep N running.

Unlike Dramatiq's own command, which shuts every process down when one dies, a
dead worker is replaced: a production fleet must not shrink silently. Its runs
lose nothing meanwhile, since leases expire and the recovery pass re-drives them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

logger = logging.getLogger("sagaledger.supervisor")

#: A worker that dies sooner than this (s) after starting counts as failing to start.
STABLE_AFTER = 10.0
#: The first wait (s) before restarting a worker that failed to start; it doubles...
MIN_BACKOFF = 0.5
#: ... up to this, so a worker that cannot start does not spin.
MAX_BACKOFF = 30.0
#: How often (s) the supervisor looks at its workers.
POLL = 0.1


@dataclass
class _Slot:
    """One of the N places a worker process runs in."""

    number: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0
    restart_at: float = 0.0


class Supervisor:
    """Runs ``processes`` copies of ``command`` until SIGTERM or SIGINT.

    The workers run in their own process group, so a terminal's Ctrl-C reaches
    them once, through the supervisor. A first SIGTERM/SIGINT is forwarded as
    SIGTERM (each worker finishes its in-flight runs and exits); a second one
    SIGKILLs them (the log's recovery re-drives what they held).

    Args:
        command: The worker's command line.
        processes: How many to keep running.
        env: Their environment.
        slot_env: More variables for the worker in slot ``n`` (1 to ``processes``;
            a replacement takes its predecessor's slot), e.g. its own metrics port.
    """

    def __init__(
        self,
        command: Sequence[str],
        processes: int,
        env: Mapping[str, str] | None = None,
        slot_env: Callable[[int], Mapping[str, str]] | None = None,
    ):
        self.command = list(command)
        self.env = dict(env) if env is not None else None
        self.slot_env = slot_env
        self.slots = [_Slot(n) for n in range(1, processes + 1)]
        self._signals = 0

    def run(self) -> int:
        """Supervise until told to stop.

        Returns:
            The exit status: 0 when every worker stopped cleanly, else 1.
        """
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        logger.info("supervisor %d: keeping %d worker processes", os.getpid(), len(self.slots))
        while not self._signals:
            now = time.monotonic()
            for slot in self.slots:
                if slot.process is not None and slot.process.poll() is not None:
                    self._died(slot, now)
                if slot.process is None and now >= slot.restart_at:
                    self._spawn(slot)
            time.sleep(POLL)
        return self._stop_all()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1

    def _spawn(self, slot: _Slot) -> None:
        env = self.env
        if self.slot_env is not None:
            env = {**(os.environ if env is None else env), **self.slot_env(slot.number)}
        slot.process = subprocess.Popen(self.command, env=env, process_group=0)
        slot.started = time.monotonic()
        logger.info("worker %d/%d started: pid %d", slot.number, len(self.slots), slot.process.pid)

    def _died(self, slot: _Slot, now: float) -> None:
        assert slot.process is not None
        pid, status = slot.process.pid, _describe(slot.process.returncode)
        slot.process = None
        if now - slot.started < STABLE_AFTER:
            slot.failures += 1
            delay = min(MAX_BACKOFF, MIN_BACKOFF * 2 ** (slot.failures - 1))
        else:
            slot.failures, delay = 0, 0.0
        slot.restart_at = now + delay
        logger.error(
            "worker %d/%d (pid %d) %s; starting a replacement in %.1f s",
            slot.number,
            len(self.slots),
            pid,
            status,
            delay,
        )

    def _stop_all(self) -> int:
        running = [s.process for s in self.slots if s.process is not None]
        logger.info("supervisor: stopping %d workers (they finish in-flight runs)", len(running))
        for process in running:
            _send(process, signal.SIGTERM)
        killed = False
        while any(p.poll() is None for p in running):
            if self._signals > 1 and not killed:
                logger.warning("supervisor: second signal, killing the workers")
                for process in running:
                    _send(process, signal.SIGKILL)
                killed = True
            time.sleep(POLL)
        failed = [p for p in running if p.returncode != 0]
        for process in failed:
            logger.error("worker pid %d %s", process.pid, _describe(process.returncode))
        logger.info("supervisor: all workers stopped")
        return 1 if failed else 0


def _send(process: subprocess.Popen[bytes], signum: int) -> None:
    # It may exit between poll() and the signal.
    with contextlib.suppress(ProcessLookupError):
        if process.poll() is None:
            process.send_signal(signum)


def _describe(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"
