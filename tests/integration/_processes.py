"""What the integration tests with real worker processes share."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sagaledger._settings import ENV_PREFIX
from sagaledger.testing import WorkerProcess

ROOT = Path(__file__).resolve().parents[2]
#: Seconds a liveness wait may take before the test fails (never a result in itself).
PATIENCE = 60.0
#: A short wait's delayed message lives in its worker's in-memory broker and dies with
#: it (SIGKILL or SIGTERM alike); the log still says the message was sent, so the next
#: worker's recovery pass takes the run once this grace has passed (10 s by default).
WORKER_ENV = {ENV_PREFIX + "DISPATCH_GRACE_SECONDS": "1"}


def worker(app: str, store_url: str, lease: timedelta | None = None) -> WorkerProcess:
    """A ``sagaledger worker`` process on ``app``, started from the repository root."""
    return WorkerProcess(app, store=store_url, env=WORKER_ENV, lease=lease, cwd=ROOT)


def wait_until(ready: Callable[[], bool], what: str, timeout: float = PATIENCE) -> None:
    """Poll ``ready`` until it is true; fail, naming ``what``, after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.05)


def sagaledger(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``sagaledger`` command as an operator would, with no ``SAGALEDGER_*`` set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    return subprocess.run(
        [sys.executable, "-m", "sagaledger", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=PATIENCE,
    )
