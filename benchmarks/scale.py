"""Scale benchmark: starting a run, the recovery pass, a worker's memory and a day's compensations.

With a million finished runs (and their ten million events) in the log, on
PostgreSQL and SQLite, this prints:

- ``Orchestrator.start()`` and ``Orchestrator.recover()`` (nothing due) timed in
  turn with the same calls on an empty log, then with 100,000 runs waiting on a
  back-off;
- the memory (RSS) of a worker process running its recovery pass every half
  second, before and after 100,000 runs waiting a day are inserted (as the
  driver leaves them: a wait that long has no broker message), then, as a peer,
  after a delayed message is sent for each (what 100,000 waits shorter than
  ``max_message_delay`` would hold), on the in-memory broker (and on Redis,
  beside Postgres);
- ``SagaLog.list_runs`` listing one day's compensated runs, beside the same call at
  schema 0001 (before the index on status and start time) and with no index on
  start time, and its plans.

SQLite is measured as the store leaves it, never analyzed, then after ``ANALYZE``;
Postgres after ``VACUUM (ANALYZE)``, as autovacuum leaves it. The finished runs
are loaded as recovery_scale.py loads them. See benchmarks/README.md for what each
figure means.

    python benchmarks/scale.py [--runs 1000000] [--waiting 100000] [--repeat 100]
        [--peer-repeat 20] [--passes 5] [--backend all|postgres|sqlite] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from pydantic import BaseModel
from recovery_scale import (
    HISTORY,
    checkpoint,
    explain,
    load_postgres,
    load_sqlite,
    pct,
    print_plans,
    sizes_mb,
    timed,
)
from sqlalchemy import Engine, delete, event, func, insert, select, text, update

from sagaledger import Orchestrator, Registry, RetrySafety, Saga, SagaLog, step
from sagaledger._runner import open_store
from sagaledger.sagas import Dispatch, EmbeddedWorker, SagaWorker, build_broker
from sagaledger.sagas._brokers import rate_limiter_for
from sagaledger.store import create_store_engine, upgrade
from sagaledger.store._schema import events, runs  # the bulk loads write the tables directly
from tests.servers import PostgresServer, RedisServer, redis_available

STEPS = ("reserve_inventory", "charge_payment", "create_erp_order", "send_email")
#: The migration that adds the index on (status, created_at), and the one before it.
LISTING_MIGRATION, BEFORE_LISTING_MIGRATION = "0002", "0001"
#: The indexes a listing of runs by start time could use; the last peer runs without them.
CREATED_AT_INDEXES = ("ix_sagaledger_runs_created_at", "ix_sagaledger_runs_status_created_at")
#: The worker's recovery pass runs this often in the memory figure.
PASS_INTERVAL = timedelta(seconds=0.5)
#: Waiting runs wake up a day from now: no recovery pass of the benchmark reaches them.
BACKOFF = timedelta(days=1)
#: Enough to list a whole day of compensations at a million runs (about 1,700).
DAY_LIMIT = 10_000
#: One screen of `sagaledger runs list` (its default --limit).
PAGE_LIMIT = 50
#: SQLite page cache for the events load (KiB): the (run_id, seq) index fits in it.
LOAD_CACHE_KIB = 1_048_576


class Order(BaseModel):
    order_id: str
    customer_id: str
    amount_cents: int


def _noop_step(name: str) -> Any:
    return step(name, compensate=lambda ctx: None, retry_safety=RetrySafety.IDEMPOTENCY_KEY)(
        lambda ctx: {"ref": ctx.idempotency_key}
    )


#: The saga the benchmark starts; its name is one of the loaded finished runs' sagas.
SAGA = Saga("order_fulfilment", 3, Order, [_noop_step(name) for name in STEPS])
ORDER = {"order_id": "O-1", "customer_id": "C-1", "amount_cents": 1999}


def waiting_id(i: int) -> str:
    """The id of waiting run ``i``: the worker process derives the same ids to dispatch them."""
    return hashlib.md5(f"waiting-{i}".encode()).hexdigest()


# --------------------------------------------------------------------------- loading

#: The events of a finished run, by the run's status: (seq, type, step, phase, attempt, body).
#: A completed run ran its four steps; a compensated one failed its second step three
#: times and compensated the first. ``last_seq`` of the loaded runs matches (10 and 13).
_SCRIPTS = {
    "completed": [
        ("run_started", None, None, None, "input"),
        *(
            (kind, name, "forward", 1, body)
            for name in STEPS
            for kind, body in (("attempt_started", None), ("step_completed", "output"))
        ),
        ("run_completed", None, None, None, None),
    ],
    "compensated": [
        ("run_started", None, None, None, "input"),
        ("attempt_started", STEPS[0], "forward", 1, None),
        ("step_completed", STEPS[0], "forward", 1, "output"),
        *(
            (kind, STEPS[1], "forward", attempt, body)
            for attempt in (1, 2, 3)
            for kind, body in (("attempt_started", None), ("step_failed", "failed"))
        ),
        ("compensation_started", None, None, None, None),
        ("attempt_started", STEPS[0], "compensate", 1, None),
        ("compensation_completed", STEPS[0], "compensate", 1, None),
        ("run_compensated", None, None, None, None),
    ],
}


def _script_cte() -> str:
    """``script(status, seq, type, step, phase, attempt, body)`` as a VALUES list."""

    def literal(value: Any) -> str:
        return "NULL" if value is None else repr(value) if isinstance(value, str) else str(value)

    values = ", ".join(
        "(" + ", ".join(literal(v) for v in (status, seq, *event)) + ")"
        for status, script in _SCRIPTS.items()
        for seq, event in enumerate(script, start=1)
    )
    return f"script(status, seq, type, step, phase, attempt, body) AS (VALUES {values})"


def load_events(engine: Engine) -> int:
    """Insert the events of every finished run in one ``INSERT ... SELECT``; return how many.

    Runs are read in id order, so the ``(run_id, seq)`` index grows at its end.
    """
    json_object = "jsonb_build_object" if engine.dialect.name == "postgresql" else "json_object"
    statement = f"""
        WITH {_script_cte()}
        INSERT INTO sagaledger_events
            (run_id, seq, type, step, phase, attempt, payload, error, actor, token, created_at)
        SELECT r.id, s.seq, s.type, s.step, s.phase, s.attempt,
               CASE s.body
                   WHEN 'input' THEN r.input
                   WHEN 'output' THEN {json_object}('ref', r.id || ':' || s.step || ':forward',
                       'status', 'ok', 'amount_cents', 1999, 'currency', 'EUR')
                   WHEN 'failed' THEN {json_object}('outcome', 'retry')
               END,
               CASE s.body WHEN 'failed' THEN r.last_error END,
               'worker:bench-host:4242', 1, r.created_at
        FROM (SELECT * FROM sagaledger_runs ORDER BY id) AS r
        JOIN script AS s ON s.status = r.status
    """
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL synchronous_commit = off"))
            # Skip the foreign key's check of each row: every run_id comes from the runs table.
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.exec_driver_sql(statement)  # as written: no bind parameters
        else:
            cache = conn.exec_driver_sql("PRAGMA cache_size").scalar_one()
            conn.exec_driver_sql(f"PRAGMA cache_size = -{LOAD_CACHE_KIB}")
            conn.exec_driver_sql(statement)
            conn.exec_driver_sql(f"PRAGMA cache_size = {cache}")
        return int(conn.execute(select(func.count()).select_from(events)).scalar_one())


def waiting_runs(n: int, now: datetime) -> Iterator[list[dict[str, Any]]]:
    """``n`` runs of :data:`SAGA` waiting out a back-off, in batches of 10,000.

    Each failed its second step once and waits a day for the retry, holding no
    lease and no message (``dispatched_at`` unset), as the driver leaves a wait
    longer than ``max_message_delay``: the recovery pass will wake it.
    """
    for first in range(0, n, 10_000):
        batch = []
        for i in range(first, min(first + 10_000, n)):
            wake_at = now + BACKOFF + timedelta(seconds=i % 3600)
            batch.append(
                {
                    "id": waiting_id(i),
                    "saga_name": SAGA.name,
                    "saga_version": SAGA.version,
                    "fingerprint": SAGA.fingerprint,
                    "business_key": f"waiting-{i}",
                    "status": "running",
                    "step_index": 1,
                    "step": STEPS[1],
                    "attempt": 2,
                    "input": {"order_id": f"W-{i}", "customer_id": f"C-{i}", "amount_cents": 1999},
                    "lease_owner": None,
                    "lease_token": 2,
                    "wake_at": wake_at,
                    "dispatched_at": None,
                    "last_seq": 5,
                    "blocked_reason": None,
                    "cancel_requested": None,
                    "awaiting": None,
                    "last_error": {"type": "Timeout", "message": "timed out", "retryable": True},
                    "created_at": now - timedelta(minutes=1),
                    "updated_at": now,
                }
            )
        yield batch


def insert_waiting(engine: Engine, n: int) -> None:
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for batch in waiting_runs(n, now):
            conn.execute(insert(runs), batch)


def delete_waiting(engine: Engine) -> None:
    with engine.begin() as conn:
        waiting = runs.c.business_key.startswith("waiting-")
        conn.execute(delete(runs).where(runs.c.saga_name == SAGA.name, waiting))
    settle(engine, analyze=False)


def settle(engine: Engine, analyze: bool) -> None:
    """Postgres: ``VACUUM``, with ``ANALYZE`` if asked. SQLite: ``ANALYZE`` if asked, then
    fold the WAL into the database file."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM (ANALYZE)" if analyze else "VACUUM"))
        return
    if analyze:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    checkpoint(engine)


def database_mb(engine: Engine) -> float:
    """The whole database on disk: tables, indexes (and SQLite's WAL)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            size = conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
        return int(size) / 2**20
    path = Path(str(engine.url.database))
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 2**20


def runs_statements(log: SagaLog, call: Callable[[], object]) -> list[tuple[str, Any]]:
    """The statements on the runs table that ``call`` sends (SQL and parameters)."""
    sent: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if "FROM sagaledger_runs" in statement:
            sent.append((statement, parameters))

    event.listen(log.engine, "before_cursor_execute", record)
    try:
        call()
    finally:
        event.remove(log.engine, "before_cursor_execute", record)
    return sent


# --------------------------------------------------------------------------- (a) start, recover


def paired(
    first: Callable[[], int], second: Callable[[], int], repeat: int, expect: int
) -> tuple[dict[str, float], dict[str, float]]:
    """:func:`timed` for two calls in turn, so that a busy moment of the machine hits both."""
    samples: tuple[list[float], list[float]] = ([], [])
    firsts = [0.0, 0.0]
    for i in range(repeat + 2):
        for k, call in enumerate((first, second)):
            t0 = time.perf_counter()
            got = call()
            elapsed = (time.perf_counter() - t0) * 1000
            if got != expect:
                raise RuntimeError(f"expected {expect} rows, got {got}")
            if i == 0:
                firsts[k] = elapsed
            elif i >= 2:
                samples[k].append(elapsed)
    a, b = (
        {"p50_ms": pct(s, 50), "p95_ms": pct(s, 95), "first_ms": f, "rows": expect}
        for s, f in zip(samples, firsts, strict=True)
    )
    return a, b


class Runtime:
    """An orchestrator on the embedded runtime (not started: dispatches wait in memory)."""

    def __init__(self, log: SagaLog) -> None:
        self.log = log
        self.orchestrator = Orchestrator(log, Registry([SAGA]), worker_id="scale-bench:1")
        self.worker = EmbeddedWorker(self.orchestrator)  # routes dispatches to its StubBroker

    def start(self) -> int:
        """One new run: validate, insert the run and its first event, dispatch."""
        self.orchestrator.start(SAGA, ORDER)
        return 1

    def recover(self) -> int:
        return self.orchestrator.recover()

    def finish_started(self) -> None:
        """Make the runs :meth:`start` created look finished, so that nothing is due."""
        with self.log.engine.begin() as conn:
            conn.execute(
                update(runs)
                .where(runs.c.status == "running", runs.c.saga_name == SAGA.name)
                .values(status="completed", wake_at=None, dispatched_at=None)
            )
        self.worker.broker.flush_all()


# --------------------------------------------------------------------------- (c) listing


class Listing:
    """One day's compensated runs, half-way through the loaded history."""

    def __init__(self, log: SagaLog, now: datetime) -> None:
        self.log = log
        self.since = (now - HISTORY / 2).replace(hour=0, minute=0, second=0, microsecond=0)
        self.until = self.since + timedelta(days=1)
        query = select(func.count()).where(
            runs.c.status == "compensated",
            runs.c.created_at >= self.since,
            runs.c.created_at < self.until,
        )
        with log.engine.connect() as conn:
            self.count = int(conn.execute(query).scalar_one())

    def day(self, limit: int = DAY_LIMIT) -> int:
        """All of them (``limit`` is above a day's count)."""
        found = self.log.list_runs(
            status="compensated", since=self.since, until=self.until, limit=limit
        )
        return len(found)

    def page(self) -> int:
        """The newest :data:`PAGE_LIMIT` of them."""
        return self.day(PAGE_LIMIT)

    def measure(self, repeat: int, case: str, f: dict[str, Any]) -> None:
        """Time :meth:`day` and :meth:`page` into ``f[day_<case>]``, ``f[page_<case>]``."""
        f[f"day_{case}"] = timed(self.day, repeat, min(self.count, DAY_LIMIT))
        f[f"page_{case}"] = timed(self.page, repeat, min(self.count, PAGE_LIMIT))
        [statement] = runs_statements(self.log, self.day)
        f["plans"][f"list_runs, a day's compensations, {case}"] = explain(self.log, *statement)


def drop_indexes(engine: Engine, names: tuple[str, ...]) -> None:
    with engine.begin() as conn:
        for index in runs.indexes:
            if index.name in names:
                index.drop(conn)


# --------------------------------------------------------------------------- (b) memory


class CountingOrchestrator(Orchestrator):
    """Counts and times finished recovery passes, so the benchmark can wait for some."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.passes: list[float] = []  # how long each took (ms)
        self.passed = threading.Condition()

    def wait_passes(self, n: int) -> list[float]:
        """Wait for ``n`` more passes; return how long each took (ms)."""
        with self.passed:
            done = len(self.passes)
            self.passed.wait_for(lambda: len(self.passes) >= done + n)
            return self.passes[done:]

    def recover(self, limit: int = 500) -> int:
        t0 = time.perf_counter()
        found = super().recover(limit)
        with self.passed:
            self.passes.append((time.perf_counter() - t0) * 1000)
            self.passed.notify_all()
        return found


def memory_mb() -> dict[str, float]:
    """This process's resident memory now (``VmRSS``) and at its peak (``VmHWM``), in MB."""
    status = Path("/proc/self/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status)
    return {
        "rss": int(fields["VmRSS"].split()[0]) / 1024,
        "peak": int(fields["VmHWM"].split()[0]) / 1024,
    }


def serve(store: str, broker_url: str) -> None:
    """The worker process of the memory figure, built as ``sagaledger worker`` builds one.

    It answers each command on stdin with one JSON line: ``passes K`` waits for K
    more recovery passes, then reports memory; ``dispatch N`` sends a delayed
    message for each of the N waiting runs, as the driver does for a short wait.
    """
    log = open_store(store)
    broker = build_broker(broker_url)
    registry = Registry([SAGA])
    orchestrator = CountingOrchestrator(log, registry, rate_limiter=rate_limiter_for(broker))
    worker = SagaWorker(orchestrator, broker, recovery_interval=PASS_INTERVAL).start()
    for line in sys.stdin:
        command, n = line.split()
        t0 = time.perf_counter()
        if command == "passes":
            took = orchestrator.wait_passes(int(n))
            reply: dict[str, Any] = {
                "passes": len(orchestrator.passes),
                "pass_ms": statistics.median(took),
                **memory_mb(),
            }
        else:
            for i in range(int(n)):
                orchestrator.dispatch(Dispatch(waiting_id(i), SAGA.name, SAGA.version, BACKOFF))
            reply = {"dispatched": int(n), "s": time.perf_counter() - t0}
        print(json.dumps(reply), flush=True)
    worker.stop()
    log.close()


class WorkerProcess:
    """A worker process (:func:`serve`) on the log at ``store``."""

    def __init__(self, store: str, broker: str) -> None:
        command = [sys.executable, __file__, "--serve", store, "--broker", broker]
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker process exited ({self.proc.wait()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(60)


def worker_memory(
    engine: Engine, store: str, broker: str, waiting: int, passes: int
) -> dict[str, Any]:
    """A worker process's memory before and after the waiting runs are inserted, each time
    after ``passes`` recovery passes; then after their delayed messages are sent.

    The waiting runs stay in the log when it returns.
    """
    worker = WorkerProcess(store, broker)
    try:
        before = worker.ask(f"passes {passes}")
        insert_waiting(engine, waiting)
        rows = worker.ask(f"passes {passes}")
        sent = worker.ask(f"dispatch {waiting}")
        messages = worker.ask(f"passes {passes}")
    finally:
        worker.close()
    return {"before": before, "rows": rows, "messages": messages, "dispatch_s": sent["s"]}


# --------------------------------------------------------------------------- the benchmark


def load_log(engine: Engine, n: int, now: datetime) -> dict[str, Any]:
    """Load ``n`` finished runs and their events at schema 0001; return load figures."""
    upgrade(engine, BEFORE_LISTING_MIGRATION)
    sqlite = engine.dialect.name == "sqlite"
    load = load_sqlite if sqlite else load_postgres
    t0 = time.perf_counter()
    load(engine, n, now - timedelta(hours=1) - HISTORY, HISTORY.total_seconds() / max(n, 1))
    t1 = time.perf_counter()
    loaded = load_events(engine)
    t2 = time.perf_counter()
    settle(engine, analyze=not sqlite)  # the store never analyzes SQLite; autovacuum does Postgres
    figures = {"events": loaded, "load_runs_s": t1 - t0, "load_events_s": t2 - t1}
    return {**figures, "settle_s": time.perf_counter() - t2, **sizes_mb(engine)}


def with_waiting(f: dict[str, Any], empty: Runtime, loaded: Runtime, listing: Listing) -> None:
    """The recovery pass (and, once SQLite is analyzed, the listing) with the waiting runs in."""
    repeat = f["repeat"]
    f["recover_empty_beside_waiting"], f["recover_waiting"] = paired(
        empty.recover, loaded.recover, repeat, 0
    )
    f["plans"]["recover(), with the waiting runs"] = recovery_plans(loaded)
    if loaded.log.engine.dialect.name == "sqlite":
        settle(loaded.log.engine, analyze=True)
        f["recover_empty_beside_analyzed"], f["recover_waiting_analyzed"] = paired(
            empty.recover, loaded.recover, repeat, 0
        )
        f["plans"]["recover(), with the waiting runs, after ANALYZE"] = recovery_plans(loaded)
        listing.measure(repeat, "after ANALYZE", f)


def recovery_plans(rt: Runtime) -> list[str]:
    """The plans of the recovery pass's statements on the runs table, one after the other."""
    plans = [explain(rt.log, *s) for s in runs_statements(rt.log, rt.recover)]
    return [line for plan in plans for line in ["", *plan]][1:]


def bench(
    new_url: Callable[[str], str],
    n: int,
    waiting: int,
    repeat: int,
    peer_repeat: int,
    passes: int,
    brokers: dict[str, str],
) -> dict[str, Any]:
    """Every figure on one backend; ``new_url(name)`` makes an empty database."""
    f: dict[str, Any] = {"repeat": repeat, "plans": {}, "memory": {}}
    empty = Runtime(SagaLog.open(new_url("empty"), upgrade=True))
    url = new_url("scale")
    engine = create_store_engine(url)
    now = datetime.now(UTC).replace(microsecond=0)
    f.update(load_log(engine, n, now), database_mb=database_mb(engine))

    log = SagaLog(engine)  # at schema 0001 until the migration below
    listing = Listing(log, now)
    f["day_count"] = listing.count
    listing.measure(peer_repeat, "schema 0001", f)
    t0 = time.perf_counter()
    upgrade(engine, LISTING_MIGRATION)
    f["migration_s"] = time.perf_counter() - t0
    upgrade(engine)
    log.check_schema()
    listing.measure(repeat, "shipped", f)

    loaded = Runtime(log)
    f["start_empty"], f["start_loaded"] = paired(empty.start, loaded.start, repeat, 1)
    empty.finish_started()
    loaded.finish_started()
    f["recover_empty"], f["recover_loaded"] = paired(empty.recover, loaded.recover, repeat, 0)

    for name, broker in brokers.items():
        f["memory"][name] = worker_memory(engine, url, broker, waiting, passes)
        if name == "memory":  # the waiting runs are in the log until delete_waiting
            with_waiting(f, empty, loaded, listing)
        delete_waiting(engine)
        if broker != "memory":  # the next worker starts on an empty Redis
            with redis.Redis.from_url(broker) as client:
                client.flushall()

    drop_indexes(engine, CREATED_AT_INDEXES)
    listing.measure(peer_repeat, "no index on created_at", f)
    log.close()
    empty.log.close()
    return f


# --------------------------------------------------------------------------- backends


@contextlib.contextmanager
def postgres_urls() -> Iterator[tuple[Callable[[str], str], str]]:
    """A throwaway server: ``new_url(name)`` creates a database on it."""
    with PostgresServer() as server:
        engine = create_store_engine(server.url)
        with engine.connect() as conn:
            version = str(conn.execute(text("SHOW server_version")).scalar()).split()[0]
        engine.dispose()
        yield server.create_database, version


@contextlib.contextmanager
def sqlite_urls() -> Iterator[tuple[Callable[[str], str], str]]:
    """A temp directory: ``new_url(name)`` names a file in it."""
    with tempfile.TemporaryDirectory(prefix="sagaledger-scale-") as tmp:
        yield (lambda name: f"sqlite:///{tmp}/{name}.db"), sqlite3.sqlite_version


BACKENDS = {"postgres": postgres_urls, "sqlite": sqlite_urls}

ROWS = [  # (key, label); rows a backend lacks are left out
    ("start_empty", "start(), empty log"),
    ("start_loaded", "start(), {runs:,} finished runs"),
    ("recover_empty", "recover(), nothing due, empty log"),
    ("recover_loaded", "recover(), nothing due, {runs:,} finished runs"),
    ("recover_waiting", "  + {waiting:,} waiting runs"),
    ("recover_waiting_analyzed", "  same, after ANALYZE"),
    ("day_shipped", "list_runs: a day's compensations ({day:,} runs)"),
    ("day_after ANALYZE", "  same, after ANALYZE"),
    ("day_schema 0001", "  peer: at schema 0001"),
    ("day_no index on created_at", "  peer: no index on created_at"),
    ("page_shipped", "list_runs: that day's newest {page}"),
    ("page_after ANALYZE", "  same, after ANALYZE"),
    ("page_schema 0001", "  peer: at schema 0001"),
    ("page_no index on created_at", "  peer: no index on created_at"),
]
MEMORY_ROWS = [
    ("before", "{runs:,} finished runs"),
    ("rows", "+ {waiting:,} waiting runs inserted"),
    ("messages", "  peer: + a delayed message for each (short waits)"),
]


def report(name: str, version: str, f: dict[str, Any], n: int, waiting: int) -> None:
    indexes = "" if f["indexes_mb"] is None else f" + indexes {f['indexes_mb']:.0f} MB"
    settled = "VACUUM (ANALYZE)" if name == "postgres" else "WAL checkpoint"
    print(
        f"\n{name} {version}: {n:,} finished runs loaded in {f['load_runs_s']:.0f} s, "
        f"their {f['events']:,} events in {f['load_events_s']:.0f} s, "
        f"{settled} {f['settle_s']:.0f} s; runs table {f['table_mb']:.0f} MB{indexes}, "
        f"database {f['database_mb']:,.0f} MB"
    )
    print(
        f"  migration {LISTING_MIGRATION} (index on status, created_at): {f['migration_s']:.1f} s"
    )
    names = {"runs": n, "waiting": waiting, "day": f["day_count"], "page": PAGE_LIMIT}
    rows = [(k, label.format(**names)) for k, label in ROWS if k in f]
    width = max(len(label) for _, label in rows)
    print(f"  {'':<{width}}  {'p50 ms':>9}  {'p95 ms':>9}  {'first ms':>9}  {'rows':>5}")
    for key, label in rows:
        x = f[key]
        print(
            f"  {label:<{width}}  {x['p50_ms']:>9.3f}  {x['p95_ms']:>9.3f}  "
            f"{x['first_ms']:>9.3f}  {x['rows']:>5}"
        )

    def ratio(a: str, b: str) -> str:
        return f"{f[a]['p50_ms'] / f[b]['p50_ms']:.2f}x"

    print(
        f"  p50, loaded / empty: start {ratio('start_loaded', 'start_empty')}, recover "
        f"{ratio('recover_loaded', 'recover_empty')}, with the waiting runs "
        f"{ratio('recover_waiting', 'recover_empty_beside_waiting')}"
        + (
            f" ({ratio('recover_waiting_analyzed', 'recover_empty_beside_analyzed')} after ANALYZE)"
            if "recover_waiting_analyzed" in f
            else ""
        )
    )
    print(
        "  p50, a day's compensations / shipped: at schema 0001 "
        f"{ratio('day_schema 0001', 'day_shipped')}, no index on created_at "
        f"{ratio('day_no index on created_at', 'day_shipped')}"
    )
    head = "".join(f"  {b + ' RSS MB':>16} {'peak':>6} {'pass ms':>8}" for b in f["memory"])
    print(
        f"  worker process, after {f['memory'][next(iter(f['memory']))]['before']['passes']} "
        f"recovery passes (one every {PASS_INTERVAL.total_seconds()} s) in each state:"
    )
    width = max(len(label.format(**names)) for _, label in MEMORY_ROWS)
    print(f"    {'':<{width}}{head}")
    for key, label in MEMORY_ROWS:
        cells = "".join(
            f"  {m[key]['rss']:>16.1f} {m[key]['peak']:>6.1f} {m[key]['pass_ms']:>8.2f}"
            for m in f["memory"].values()
        )
        print(f"    {label.format(**names):<{width}}{cells}")
    print_plans(f["plans"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000, help="finished runs in the log")
    parser.add_argument("--waiting", type=int, default=100_000, help="runs waiting on a back-off")
    parser.add_argument("--repeat", type=int, default=100, help="timed calls per case")
    parser.add_argument("--peer-repeat", type=int, default=20, help="timed calls per peer case")
    parser.add_argument("--passes", type=int, default=5, help="recovery passes per memory figure")
    parser.add_argument("--backend", choices=["all", *BACKENDS], default="all")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument("--serve", metavar="STORE", help=argparse.SUPPRESS)  # the worker process
    parser.add_argument("--broker", default="memory", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # Each worker process the benchmark stops is "gone" to the next orchestrator on this host.
    logging.getLogger("sagaledger.orchestrator").setLevel(logging.ERROR)
    if args.serve:
        serve(args.serve, args.broker)
        return
    context: dict[str, Any] = {
        "runs": args.runs,
        "waiting": args.waiting,
        "repeat": args.repeat,
        "peer_repeat": args.peer_repeat,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    if not args.json:
        print("sagaledger scale benchmark: " + ", ".join(f"{k} {v}" for k, v in context.items()))
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        for name in BACKENDS if args.backend == "all" else [args.backend]:
            brokers = {"memory": "memory"}
            if name == "postgres" and redis_available():  # the production pair
                brokers["redis"] = stack.enter_context(RedisServer()).url
            t0 = time.perf_counter()
            with BACKENDS[name]() as (new_url, version):
                figures = bench(
                    new_url,
                    args.runs,
                    args.waiting,
                    args.repeat,
                    args.peer_repeat,
                    args.passes,
                    brokers,
                )
            figures["total_s"] = time.perf_counter() - t0
            results[name] = {"version": version, **figures}
            if not args.json:
                report(name, version, figures, args.runs, args.waiting)
    context["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        print(json.dumps({**context, **results}, indent=2))


if __name__ == "__main__":
    main()
