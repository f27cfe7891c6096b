"""A real worker process for crash tests: python -m tests.integration.crash_worker STORE [CRASH]

Runs the ledger app on an embedded worker with short leases (CRASH_WORKER_LEASE
seconds, 1 by default); with CRASH (STEP:POINT[:PHASE[:ATTEMPT]]) it SIGKILLs
itself at that point.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from datetime import timedelta

from sagaledger import EmbeddedWorker, Orchestrator, SagaLog
from sagaledger.testing import CrashAt
from tests.ledger_app import registry


def main() -> None:
    store, crash = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None
    hooks = [CrashAt.parse(crash, mode="sigkill")] if crash else []
    log = SagaLog.open(store)
    orchestrator = Orchestrator(
        log,
        registry,
        hooks=hooks,
        lease=timedelta(seconds=float(os.environ.get("CRASH_WORKER_LEASE", "1"))),
        dispatch_grace=timedelta(0),
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with EmbeddedWorker(orchestrator, threads=2, recovery_interval=timedelta(milliseconds=200)):
        print("ready", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
