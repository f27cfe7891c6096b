"""A Prometheus collector that reads the saga log at scrape time: runs by status, waits."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sagaledger.store import RunStatus, SagaLog, utc_now

logger = logging.getLogger("sagaledger.telemetry")

#: The statuses counted by default: runs that are not over, and parked runs.
UNFINISHED = (RunStatus.RUNNING, RunStatus.COMPENSATING, RunStatus.PARKED)


class SagaLogCollector(Collector):
    """Reports what the log holds: runs per status, parked runs, and the runs that wait.

    The figures are the whole fleet's (every worker reads the same log): when
    several workers serve them, aggregate with ``max``, not ``sum``.

    Metrics (labels ``saga``; ``status`` for the first):

    - ``sagaledger_runs``: runs per status; running, compensating and parked by
      default (finished runs grow for ever: count them with ``finished=True``,
      or from ``sagaledger_runs_finished_total``).
    - ``sagaledger_parked_runs``: runs parked, waiting for an operator.
    - ``sagaledger_waiting_runs``: unfinished runs no worker holds that wait for
      a time (a back-off, a timer, a deadline) or for an approval or event.
    - ``sagaledger_oldest_waiting_run_age_seconds``: how long the longest of
      those has waited (since its last write).
    - ``sagaledger_log_up``: 1 if the log answered this scrape, else 0 (and no
      other figure).

    Args:
        log: The saga log.
        clock: The current UTC time (inject one in tests).
        finished: Also count completed and compensated runs (one grouped query
            over every run, on its status index: mind a log of millions).
    """

    def __init__(
        self,
        log: SagaLog,
        *,
        clock: Callable[[], datetime] = utc_now,
        finished: bool = False,
    ):
        self.log = log
        self.clock = clock
        self.statuses = None if finished else [s.value for s in UNFINISHED]

    def describe(self) -> Iterable[GaugeMetricFamily]:
        # Described without reading the log: registering must not need the store.
        return []

    def collect(self) -> Iterable[GaugeMetricFamily]:
        up = GaugeMetricFamily("sagaledger_log_up", "1 if the saga log answered this scrape")
        now = self.clock()
        try:
            counts = self.log.run_counts(self.statuses)
            waiting = self.log.waiting_runs(now)
        except Exception:
            logger.exception("metrics: cannot read the saga log")
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        runs = GaugeMetricFamily(
            "sagaledger_runs", "Runs in the log, per status", labels=["saga", "status"]
        )
        parked = GaugeMetricFamily(
            "sagaledger_parked_runs", "Runs parked until an operator acts", labels=["saga"]
        )
        sagas = sorted({saga for _, saga in counts} | {w.saga for w in waiting})
        for (status, saga), n in sorted(counts.items()):
            runs.add_metric([saga, status], n)
        for saga in sagas:
            parked.add_metric([saga], counts.get((RunStatus.PARKED.value, saga), 0))
        yield runs
        yield parked
        count = GaugeMetricFamily(
            "sagaledger_waiting_runs",
            "Unfinished runs waiting for a time, an approval or an event",
            labels=["saga"],
        )
        age = GaugeMetricFamily(
            "sagaledger_oldest_waiting_run_age_seconds",
            "How long the longest-waiting run has waited, since its last write",
            labels=["saga"],
        )
        by_saga = {w.saga: w for w in waiting}
        for saga in sagas:
            found = by_saga.get(saga)
            count.add_metric([saga], found.count if found else 0)
            waited = (now - found.oldest_since).total_seconds() if found else 0.0
            age.add_metric([saga], max(waited, 0.0))
        yield count
        yield age
