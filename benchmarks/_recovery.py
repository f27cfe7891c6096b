"""W3, recovery after a crash: the effects ledger and the kill-and-restart harness.

Shared by both workload scripts (standard library only, plus psycopg, which both
environments have, to count finished runs in Postgres). A workload script
starts a worker process that runs 500 sagas of 4 steps; each step sleeps 10 ms
and records its effect in the ledger, keyed by the step's idempotency key. When
half of the 2,000 effects are recorded, the worker is SIGKILLed and a new one is
started on the same database; the figures are the time from that restart to all
500 runs finished, what got lost and what ran twice.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

from _workloads import STEPS, Child

#: Sagas in flight when the worker is killed.
W3_RUNS = 500
#: What each W3 step "does" before recording its effect: a remote call's latency.
W3_STEP_S = 0.010
#: How often the parent looks at the ledger and at the log (s). It bounds what
#: polling adds to a figure: the kill lands up to this late (a few more effects),
#: and "all complete" is seen up to this late.
POLL_S = 0.005
#: A recovery that takes longer than this counts the unfinished runs as lost.
W3_TIMEOUT_S = 150.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS attempts (
    key TEXT NOT NULL, order_id TEXT NOT NULL, step TEXT NOT NULL, pid INT, at REAL
);
CREATE TABLE IF NOT EXISTS effects (
    key TEXT PRIMARY KEY, order_id TEXT NOT NULL, step TEXT NOT NULL
);
"""


class Ledger:
    """The remote system W3's steps act on: a SQLite file of effects, one per key.

    Every call is appended to ``attempts``; its effect goes into ``effects`` once
    per idempotency key (``INSERT OR IGNORE``), as a remote system that dedupes by
    key would apply it. ``synchronous=NORMAL``: a SIGKILLed process loses no
    committed write (only a power cut would), and the ledger stays cheap beside
    the engines' own logs.

    Args:
        path: The SQLite file (created with its tables if missing).
    """

    def __init__(self, path: Path | str):
        self.path = str(path)
        self._local = threading.local()
        self._conn().executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._local.conn = conn
        return conn

    def record(self, key: str, order_id: str, step: str) -> None:
        """Record one call and apply its effect, once per ``key``."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "INSERT INTO attempts VALUES (?, ?, ?, ?, ?)",
                (key, order_id, step, os.getpid(), time.time()),
            )
            conn.execute("INSERT OR IGNORE INTO effects VALUES (?, ?, ?)", (key, order_id, step))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def effects(self) -> int:
        """Effects applied so far."""
        return int(self._conn().execute("SELECT count(*) FROM effects").fetchone()[0])

    def summary(self, restart_pid: int) -> dict[str, Any]:
        """What happened, read after the run.

        Args:
            restart_pid: The restarted worker's process, whose first call ends
                the time-to-first-recovered-step.
        """
        conn = self._conn()

        def one(query: str, *params: Any) -> Any:
            return conn.execute(query, params).fetchone()[0]

        return {
            "attempts": one("SELECT count(*) FROM attempts"),
            "effects": one("SELECT count(*) FROM effects"),
            # A step whose effect was attempted again after the crash (same key).
            "reexecuted_steps": one(
                "SELECT count(*) FROM (SELECT key FROM attempts GROUP BY key HAVING count(*) > 1)"
            ),
            # A step whose effect landed under two keys: the key was not stable.
            "duplicated_effects": one(
                "SELECT coalesce(sum(n - 1), 0) FROM"
                " (SELECT count(*) AS n FROM effects GROUP BY order_id, step)"
            ),
            "missing_effects": W3_RUNS * len(STEPS)
            - one("SELECT count(*) FROM (SELECT DISTINCT order_id, step FROM effects)"),
            "first_restart_call_at": one("SELECT min(at) FROM attempts WHERE pid = ?", restart_pid),
            "longest_pause_s": _longest_gap(
                [
                    at
                    for (at,) in conn.execute(
                        "SELECT at FROM attempts WHERE pid = ?", (restart_pid,)
                    )
                ]
            ),
        }


def _longest_gap(times: list[float]) -> float | None:
    """The longest time between two consecutive calls: where the restarted worker waited."""
    ordered = sorted(times)
    return max((b - a for a, b in pairwise(ordered)), default=None)


def counter(url: str, query: str) -> Callable[[], int]:
    """A function that runs ``query`` (a ``count(*)``) on a SQLite file or Postgres.

    Args:
        url: ``sqlite:///FILE`` or ``postgresql://...``.
        query: Returns one integer.
    """
    if url.startswith("sqlite:///"):
        lite = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        return lambda: int(lite.execute(query).fetchone()[0])
    import psycopg  # both environments have it; only Postgres runs need it

    pg = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)

    def count() -> int:
        row = pg.execute(query).fetchone()
        assert row is not None
        return int(row[0])

    return count


def measure_recovery(
    spawn: Callable[[str], Child],
    finished: Callable[[], int],
    ledger: Ledger,
    kill_at: int,
    submit: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run W3: a worker with 500 sagas in flight is SIGKILLed, a new one finishes them.

    Args:
        spawn: Starts a worker process: ``"first"`` (which, without ``submit``,
            starts the 500 sagas itself) or ``"restart"``. Each prints
            ``ready <wall time> [settings JSON]`` on stdout once it is up (the
            first one once every saga is started).
        finished: Counts the runs finished in the log.
        ledger: The effects ledger the steps write to.
        kill_at: SIGKILL the first worker once this many effects are recorded
            (and every saga is started).
        submit: Starts the 500 sagas from this process, before the first worker
            starts (production mode: they wait in Redis and in the log).

    Returns:
        The W3 figures (see benchmarks/README.md).

    Raises:
        RuntimeError: a worker died on its own, or never got to ``kill_at``.
    """
    if submit is not None:
        submit()
    first = spawn("first")
    try:
        first.expect("ready")
        deadline = time.monotonic() + W3_TIMEOUT_S
        while ledger.effects() < kill_at:
            first.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {kill_at} effects after {W3_TIMEOUT_S}s")
            time.sleep(POLL_S)
    finally:
        first.kill()
    at_kill = {"effects_at_kill": ledger.effects(), "finished_at_kill": finished()}

    restarted_at, t0 = time.time(), time.perf_counter()
    second = spawn("restart")
    done, deadline = 0, t0 + W3_TIMEOUT_S
    try:
        while (done := finished()) < W3_RUNS and time.perf_counter() < deadline:
            second.check_alive()
            time.sleep(POLL_S)
        recovery_s = time.perf_counter() - t0
        ready = second.expect("ready", timeout=1).split(" ", 2)
    finally:
        second.stop()
    ready_at, settings = float(ready[1]), json.loads(ready[2]) if len(ready) > 2 else None
    summary = ledger.summary(second.pid)
    first_call = summary.pop("first_restart_call_at")
    return {
        **at_kill,
        "recovery_s": recovery_s,
        "restart_ready_s": ready_at - restarted_at,
        "ready_to_complete_s": recovery_s - (ready_at - restarted_at),
        "first_recovered_step_s": first_call - restarted_at if first_call else None,
        "lost_runs": W3_RUNS - done,
        **summary,
        **({"settings": settings} if settings else {}),
    }
