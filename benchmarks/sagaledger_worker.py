"""A sagaledger worker process for ``compare.py``: production mode, or W3's embedded worker.

With ``--broker redis://...`` it is the worker users run in production: the very
function ``sagaledger worker`` calls (``run_worker``: the store's pool sized to
the threads, the Redis broker tuned for recovery, SIGTERM for a graceful stop),
with the benchmark's sagas and, with ``--report``, a hook that prints
``done RUN_ID`` on stdout right after each run's final commit.

Without ``--broker`` it is an embedded application, as W3 runs it: an
``Orchestrator`` and an ``EmbeddedWorker`` on the saga log, which first starts
``--start`` W3 sagas (none when it is the restarted worker) and then works until
SIGTERM. Either way it prints ``ready <wall time> <settings JSON>`` on stdout
once it is up: the lease, dispatch grace and recovery interval it runs with.

    python benchmarks/sagaledger_worker.py --store URL [--broker URL] [--threads 4]
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import timedelta
from typing import Any

from _sagaledger_app import RECOVERY_ORDER, REGISTRY, Report, open_log, recovery_options
from _workloads import say_ready, wait_for_signal

from sagaledger import EmbeddedWorker, Orchestrator
from sagaledger._runner import run_worker
from sagaledger._settings import Settings


def production(args: argparse.Namespace) -> None:
    """Run the production worker until SIGTERM."""
    given: dict[str, Any] = {
        "store": args.store,
        "broker": args.broker,
        "threads": args.threads,
        "lease_seconds": args.lease,
        "dispatch_grace_seconds": args.dispatch_grace,
        "recovery_interval_seconds": args.recovery_interval,
    }
    settings = Settings(**{k: v for k, v in given.items() if v is not None})
    told = False

    def say(line: str) -> None:
        nonlocal told
        print(line, file=sys.stderr, flush=True)
        if not told and " ready: " in line:  # run_worker's line once the worker runs
            told = True
            say_ready(
                {
                    "lease_s": settings.lease_seconds,
                    "dispatch_grace_s": settings.dispatch_grace_seconds,
                    "recovery_interval_s": settings.recovery_interval_seconds,
                }
            )

    run_worker(settings, REGISTRY, hooks=[Report()] if args.report else [], say=say)


def embedded(args: argparse.Namespace) -> None:
    """Start ``--start`` W3 runs, then work on them (and any others due) until SIGTERM."""
    log = open_log(args.store, args.threads)
    orchestrator = Orchestrator(log, REGISTRY, **recovery_options(args))
    interval = {}
    if args.recovery_interval is not None:
        interval["recovery_interval"] = timedelta(seconds=args.recovery_interval)
    worker = EmbeddedWorker(orchestrator, threads=args.threads, **interval)
    # Every run is in the log before any step runs: the crash never lands
    # before a saga was started.
    for i in range(args.start):
        orchestrator.start(RECOVERY_ORDER, {"order_id": f"R{i}", "ledger": args.ledger})
    with worker:
        say_ready(
            {
                "lease_s": orchestrator.lease.total_seconds(),
                "dispatch_grace_s": orchestrator.dispatch_grace.total_seconds(),
                "recovery_interval_s": worker.maintenance.recovery_interval,
            }
        )
        wait_for_signal()
    log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="saga log URL")
    parser.add_argument("--broker", help="redis://... (production); none: embedded")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--lease", type=float, help="lease seconds")
    parser.add_argument("--dispatch-grace", type=float, help="dispatch grace seconds")
    parser.add_argument("--recovery-interval", type=float, help="recovery pass every N seconds")
    parser.add_argument("--report", action="store_true", help="print `done RUN_ID` lines")
    parser.add_argument("--start", type=int, default=0, help="embedded: W3 runs to start")
    parser.add_argument("--ledger", help="embedded: the W3 ledger file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.broker:
        production(args)
    else:
        embedded(args)


if __name__ == "__main__":
    main()
