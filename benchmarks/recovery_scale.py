"""Recovery benchmark: the recovery pass's queries against a log of a million finished runs.

Every worker runs the recovery pass every couple of seconds, so its queries must
cost the same with a million finished runs in the log as with none. This loads
N finished runs and M active ones into PostgreSQL (a throwaway server) and SQLite
(a temp file), then times ``SagaLog.claim_due``, ``unserved_due`` and
``heartbeat`` + ``live_definitions``, prints the plan of ``claim_due``'s
statement, and beside it the peer figure: the same statement once the indexes
that could serve it are dropped, so that it scans the table. Last, it renews
leases until Postgres holds as many dead row versions as autovacuum lets pile
up, and times the pass again. See benchmarks/README.md for what each figure means.

    python benchmarks/recovery_scale.py [--runs 1000000] [--active 1000] [--repeat 50]
        [--peer-repeat 20] [--renewals N] [--backend all|postgres|sqlite] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import re
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from psycopg import sql
from sqlalchemy import Engine, event, insert, select, text, update
from sqlalchemy.exc import OperationalError

from sagaledger import SagaLog
from sagaledger.store import create_store_engine, upgrade
from sagaledger.store._schema import runs  # the bulk load writes the table directly

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.servers
from tests.servers import PostgresServer

SAGAS = ("order_fulfilment", "refund", "subscription_renewal")
STEPS = ("reserve_inventory", "charge_payment", "create_erp_order", "send_email")
#: Finished runs are spread over versions 1 and 2; the worker runs version 2.
VERSIONS = (1, 2)
#: What the benchmark's worker can run (saga name, version, fingerprint).
DEFINITIONS = {(name, 2, hashlib.sha256(f"{name}:2".encode()).hexdigest()) for name in SAGAS}
WORKER_ID = "bench-host:4242"
GRACE = timedelta(seconds=10)  # the Orchestrator's default dispatch_grace
LIVENESS = timedelta(seconds=30)  # the Orchestrator's default worker_liveness
LEASE = timedelta(seconds=30)  # the Orchestrator's default lease
LIMIT = 500  # Orchestrator.recover's default
#: Finished runs were created over this period, ending an hour before the benchmark's now.
HISTORY = timedelta(days=30)
#: Indexes that could serve the recovery query; the peer figure runs without them.
RECOVERY_INDEXES = (
    "ix_sagaledger_runs_wake_at",
    "ix_sagaledger_runs_status_saga",
    "ix_sagaledger_runs_status_created_at",
)
#: Postgres autovacuums a table once a fifth of its rows are dead (autovacuum_vacuum_scale_factor).
AUTOVACUUM_SCALE = 0.2


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


# --------------------------------------------------------------------------- loading


def _definitions_cte() -> str:
    """``defs(k, name, version, fingerprint)``; run i is of k = (i % 3) * 2 + (i % 5 > 0)."""
    rows = [
        (k * 2 + v - 1, name, version, hashlib.sha256(f"{name}:{version}".encode()).hexdigest())
        for k, name in enumerate(SAGAS)
        for v, version in enumerate(VERSIONS, start=1)
    ]
    values = ", ".join(f"({k}, '{n}', {v}, '{f}')" for k, n, v, f in rows)
    return f"defs(k, name, version, fingerprint) AS (VALUES {values})"


#: Columns of a finished run, in the order both bulk loads select them.
_COLUMNS = (
    "id, saga_name, saga_version, fingerprint, business_key, status, step_index, step, "
    "attempt, input, lease_owner, lease_token, wake_at, dispatched_at, last_seq, "
    "blocked_reason, last_error, created_at, updated_at"
)
#: One run in 20 was compensated (back to its first step), the others completed.
_FINISHED = """
    CASE WHEN i % 20 = 0 THEN 'compensated' ELSE 'completed' END,
    CASE WHEN i % 20 = 0 THEN 0 ELSE 3 END,
    CASE WHEN i % 20 = 0 THEN 'reserve_inventory' ELSE 'send_email' END,
    1, {input}, NULL, 1, NULL, NULL,
    CASE WHEN i % 20 = 0 THEN 13 ELSE 10 END, NULL,
    CASE WHEN i % 20 = 0 THEN {error} END
"""


def load_postgres(engine: Engine, n: int, oldest: datetime, spacing: float) -> None:
    """Insert ``n`` finished runs with one ``INSERT ... SELECT ... generate_series``."""
    finished = _FINISHED.format(
        input="jsonb_build_object('order_id', 'O-' || i, 'customer_id', 'C-' || i % 50000, "
        "'amount_cents', 1000 + i % 90000, 'currency', 'EUR', 'lines', 1 + i % 4)",
        error="jsonb_build_object('type', 'PaymentDeclined', 'message', 'card declined', "
        "'retryable', false)",
    )
    statement = f"""
        WITH {_definitions_cte()}
        INSERT INTO sagaledger_runs ({_COLUMNS})
        SELECT md5('run-' || i), defs.name, defs.version, defs.fingerprint, 'order-' || i,
               {finished},
               CAST(:oldest AS timestamptz) + make_interval(secs => i * :spacing),
               CAST(:oldest AS timestamptz) + make_interval(secs => i * :spacing + 3)
        FROM generate_series(1, :n) AS i
        JOIN defs ON defs.k = (i % 3) * 2 + CASE WHEN i % 5 = 0 THEN 0 ELSE 1 END
    """
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL synchronous_commit = off"))
        conn.execute(text(statement), {"n": n, "oldest": oldest, "spacing": spacing})


def load_sqlite(engine: Engine, n: int, oldest: datetime, spacing: float) -> None:
    """Insert ``n`` finished runs with one ``INSERT ... SELECT`` over a recursive CTE."""
    finished = _FINISHED.format(
        input="json_object('order_id', 'O-' || i, 'customer_id', 'C-' || i % 50000, "
        "'amount_cents', 1000 + i % 90000, 'currency', 'EUR', 'lines', 1 + i % 4)",
        error="json_object('type', 'PaymentDeclined', 'message', 'card declined', "
        "'retryable', json('false'))",
    )
    # The store keeps naive UTC as 'YYYY-MM-DD HH:MM:SS.ffffff' (SQLAlchemy's format).
    stamp = "strftime('%Y-%m-%d %H:%M:%S', :oldest + i * :spacing{plus}, 'unixepoch') || '.000000'"
    statement = f"""
        WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < :n),
        {_definitions_cte()}
        INSERT INTO sagaledger_runs ({_COLUMNS})
        SELECT lower(hex(randomblob(16))), defs.name, defs.version, defs.fingerprint,
               'order-' || i, {finished},
               {stamp.format(plus="")}, {stamp.format(plus=" + 3")}
        FROM g JOIN defs ON defs.k = (i % 3) * 2 + CASE WHEN i % 5 = 0 THEN 0 ELSE 1 END
    """
    with engine.begin() as conn:
        conn.execute(
            text(statement), {"n": n, "oldest": int(oldest.timestamp()), "spacing": spacing}
        )


def active_runs(m: int, now: datetime) -> list[dict[str, Any]]:
    """``m`` unfinished runs of the worker's definitions: half due now, half waiting.

    The due half holds leases that expired up to a minute ago (a crashed worker);
    the waiting half holds leases still running, or waits out a retry back-off
    whose message is on its way.
    """
    definitions = sorted(DEFINITIONS)
    rows = []
    for i in range(m):
        name, version, fingerprint = definitions[i % len(definitions)]
        due, backoff = i % 2 == 0, i % 4 == 1
        wake_at = (
            now - timedelta(seconds=1 + i % 60) if due else now + timedelta(seconds=1 + i % 30)
        )
        rows.append(
            {
                "id": hashlib.md5(f"active-{i}".encode()).hexdigest(),
                "saga_name": name,
                "saga_version": version,
                "fingerprint": fingerprint,
                "business_key": f"active-{i}",
                "status": "compensating" if i % 10 == 0 else "running",
                "step_index": i % len(STEPS),
                "step": STEPS[i % len(STEPS)],
                "attempt": 1,
                "input": {"order_id": f"A-{i}", "customer_id": f"C-{i}", "amount_cents": 1999},
                "lease_owner": None if backoff else "crashed-host:17",
                "lease_token": 2,
                "wake_at": wake_at,
                "dispatched_at": wake_at if backoff else None,
                "last_seq": 4,
                "blocked_reason": None,
                "cancel_requested": None,
                "awaiting": None,
                "last_error": None,
                "created_at": now - timedelta(minutes=5),
                "updated_at": now - timedelta(minutes=1),
            }
        )
    return rows


def populate(log: SagaLog, n: int, m: int, now: datetime) -> float:
    """Load ``n`` finished and ``m`` active runs; return the seconds the finished ones took."""
    oldest = now - timedelta(hours=1) - HISTORY
    load = load_postgres if log.engine.dialect.name == "postgresql" else load_sqlite
    t0 = time.perf_counter()
    load(log.engine, n, oldest, HISTORY.total_seconds() / max(n, 1))
    elapsed = time.perf_counter() - t0
    with log.engine.begin() as conn:
        conn.execute(insert(runs), active_runs(m, now))
    return elapsed


def checkpoint(engine: Engine) -> None:
    """SQLite: fold the WAL into the database file, as it is in steady state after a load."""
    raw = engine.raw_connection()  # a checkpoint runs outside a transaction
    try:
        raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        raw.close()


def vacuum(engine: Engine, analyze: bool = False) -> None:
    """Postgres: remove dead row versions (and refresh statistics). SQLite: ANALYZE if asked.

    SQLite updates rows in place and leaves nothing to vacuum.
    """
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"VACUUM {'(ANALYZE) ' if analyze else ''}sagaledger_runs"))
    elif analyze:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))


def sizes_mb(engine: Engine) -> dict[str, float | None]:
    """On-disk size of the runs table and of its indexes."""
    postgres = "SELECT pg_table_size('sagaledger_runs'), pg_indexes_size('sagaledger_runs')"
    # SQLite's dbstat table (if compiled in) sizes each table and index of the file.
    sqlite = """
        SELECT SUM(CASE s.type WHEN 'table' THEN d.pgsize END),
               SUM(CASE s.type WHEN 'index' THEN d.pgsize END)
        FROM dbstat AS d JOIN sqlite_schema AS s ON s.name = d.name
        WHERE d.aggregate = TRUE AND s.tbl_name = 'sagaledger_runs'
    """
    query = postgres if engine.dialect.name == "postgresql" else sqlite
    with engine.connect() as conn:
        try:
            table, indexes = conn.exec_driver_sql(query).one()
        except OperationalError:  # no dbstat: the whole file, indexes included
            conn.rollback()
            whole = "SELECT page_count * page_size FROM pragma_page_count, pragma_page_size"
            return {
                "table_mb": conn.exec_driver_sql(whole).scalar_one() / 2**20,
                "indexes_mb": None,
            }
    return {"table_mb": table / 2**20, "indexes_mb": indexes / 2**20}


# --------------------------------------------------------------------------- timing


def timed(
    call: Callable[[], int], repeat: int, expect: int, before: Callable[[], None] | None = None
) -> dict[str, float]:
    """Median and p95 (ms) of ``repeat`` calls after two warm-ups; each must return ``expect``.

    ``first_ms`` is the first warm-up: the cold call.
    """
    samples = []
    for i in range(repeat + 2):
        if before is not None:
            before()
        t0 = time.perf_counter()
        got = call()
        elapsed = (time.perf_counter() - t0) * 1000
        if got != expect:
            raise RuntimeError(f"expected {expect} rows, got {got}")
        if i == 0:
            first = elapsed
        if i >= 2:
            samples.append(elapsed)
    return {
        "p50_ms": pct(samples, 50),
        "p95_ms": pct(samples, 95),
        "first_ms": first,
        "rows": expect,
    }


class Recovery:
    """The recovery pass's calls on one log, at the benchmark's fixed ``now``."""

    def __init__(self, log: SagaLog, now: datetime, due: int) -> None:
        self.log, self.now, self.due = log, now, min(due, LIMIT)
        #: Before every active run's wake-up time: nothing at all is due.
        self.idle = now - timedelta(minutes=5)

    def claim(self, at: datetime | None = None) -> int:
        return len(self.log.claim_due(at or self.now, GRACE, DEFINITIONS, LIMIT))

    def unserved(self) -> int:
        return len(self.log.unserved_due(self.now, GRACE, DEFINITIONS, LIMIT))

    def heartbeat(self) -> int:
        self.log.heartbeat(WORKER_ID, DEFINITIONS, self.now)
        return len(self.log.live_definitions(self.now - LIVENESS))

    def reset(self) -> None:
        """Undo what a claim did: the due runs are no longer marked dispatched."""
        with self.log.engine.begin() as conn:
            conn.execute(
                update(runs)
                .where(runs.c.wake_at <= self.now, runs.c.dispatched_at == self.now)
                .values(dispatched_at=None)
            )

    def floor(self) -> int:
        """One ``SELECT 1`` in a write transaction, as claim_due opens one."""
        with self.log.engine.begin() as conn:
            return int(conn.execute(text("SELECT 1")).scalar() or 0)

    def claim_statement(self, at: datetime) -> tuple[str, Any]:
        """The UPDATE claim_due sends to the database (SQL and parameters), taken as it goes."""
        sent: list[tuple[str, Any]] = []

        def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
            if statement.lstrip().upper().startswith("UPDATE"):
                sent.append((statement, parameters))

        event.listen(self.log.engine, "before_cursor_execute", record)
        try:
            self.claim(at)
        finally:
            event.remove(self.log.engine, "before_cursor_execute", record)
        self.reset()
        return sent[0]


def explain(log: SagaLog, statement: str, parameters: Any) -> list[str]:
    """The plan of ``statement``: executed and rolled back on Postgres, planned on SQLite."""
    if log.engine.dialect.name == "sqlite":
        # sqlite3 caches prepared statements per connection, and a cached EXPLAIN is
        # not planned again after ANALYZE or an index change: explain on a new connection.
        log.engine.dispose()
    with log.engine.connect() as conn:
        if log.engine.dialect.name == "postgresql":
            query = "EXPLAIN (ANALYZE, BUFFERS) " + statement
            lines = [str(r[0]) for r in conn.exec_driver_sql(query, parameters)]
        else:
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
            depth: dict[int, int] = {0: 0}
            lines = []
            for node, parent, _, detail in rows:
                depth[node] = depth.get(parent, 0) + 1
                lines.append("  " * (depth[node] - 1) + str(detail))
        conn.rollback()
    return lines


def explain_generic(log: SagaLog, statement: str, parameters: dict[str, Any]) -> list[str]:
    """Postgres: the plan of ``statement`` made once for any parameters (a generic plan).

    psycopg prepares a statement it has run 5 times on a connection, and Postgres
    may then stop planning it for each call's values; this is that plan, for
    these values, executed and rolled back.
    """
    names: dict[str, str] = {}

    def number(match: re.Match[str]) -> str:  # %(name)s -> $n, in order of first use
        return names.setdefault(match[1], f"${len(names) + 1}")

    numbered = re.sub(r"%\((\w+)\)s", number, statement).replace("%%", "%")
    with log.engine.connect() as conn:
        pg = conn.connection.driver_connection
        values = ", ".join(sql.Literal(parameters[name]).as_string(pg) for name in names)
        conn.exec_driver_sql(f"PREPARE bench_claim AS {numbered}")
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
        explained = f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_claim({values})"
        lines = [str(r[0]) for r in conn.exec_driver_sql(explained)]
        conn.rollback()
        conn.exec_driver_sql("DEALLOCATE bench_claim")  # PREPARE outlives a rollback
        conn.rollback()
    return lines


def renew_leases(r: Recovery, updates: int) -> int:
    """Update waiting runs' rows about ``updates`` times, as lease renewals do; return how many.

    Every waiting run's lease is renewed again and again, each time to a
    wake-up time before ``r.idle``, then to ``now`` + 30 s. On Postgres each
    update leaves a dead row version, and its entry in the wake_at index, until
    a vacuum; a "nothing due" pass at ``r.idle`` walks over all of them.
    """
    with r.log.engine.connect() as conn:
        ids = list(conn.execute(select(runs.c.id).where(runs.c.wake_at > r.now)).scalars())
    renewals = math.ceil(updates / max(len(ids), 1))
    for k in range(renewals + 1):
        wake_at = r.idle - timedelta(seconds=renewals - k) if k < renewals else r.now + LEASE
        with r.log.engine.begin() as conn:  # one transaction per renewal, as LeaseKeeper does
            conn.execute(update(runs).where(runs.c.id.in_(ids)).values(wake_at=wake_at))
    return (renewals + 1) * len(ids)


@contextmanager
def older_transaction(log: SagaLog) -> Iterator[None]:
    """Postgres: hold a snapshot open, as a long report or an idle-in-transaction session does.

    While it is open no dead row version younger than it can be removed, nor
    its index entry marked dead, so every scan visits them again.
    """
    if log.engine.dialect.name != "postgresql":
        yield
        return
    with log.engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        conn.execute(text("SELECT 1"))  # takes the snapshot
        yield
        conn.rollback()


def set_recovery_indexes(engine: Engine, present: bool) -> None:
    """Drop the indexes that could serve the recovery query, or create them as shipped."""
    with engine.begin() as conn:
        for index in runs.indexes:
            if index.name in RECOVERY_INDEXES and present:
                index.create(conn)
            elif index.name in RECOVERY_INDEXES:
                index.drop(conn)
    vacuum(engine, analyze=True)


def bench(
    log: SagaLog, n: int, m: int, repeat: int, peer_repeat: int, updates: int
) -> dict[str, Any]:
    """Load; time every case with the shipped indexes, without them (the peer), after churn."""
    now = datetime.now(UTC).replace(microsecond=0)
    sqlite = log.engine.dialect.name == "sqlite"
    f: dict[str, Any] = {"load_s": populate(log, n, m, now)}
    r = Recovery(log, now, due=(m + 1) // 2)
    plans: dict[str, list[str]] = {}
    if sqlite:  # the store never runs ANALYZE itself: this is what an embedded log gets
        checkpoint(log.engine)
        plans["nothing due, before ANALYZE"] = explain(log, *r.claim_statement(r.idle))
        f["claim_idle_no_stats"] = timed(lambda: r.claim(r.idle), repeat, 0)
    t0 = time.perf_counter()
    vacuum(log.engine, analyze=True)
    f["analyze_s"] = time.perf_counter() - t0
    f.update(sizes_mb(log.engine))

    plans["nothing due"] = explain(log, *r.claim_statement(r.idle))
    plans[f"{r.due} due"] = explain(log, *r.claim_statement(now))
    if not sqlite:  # SQLite plans a statement once for any values, as EXPLAIN shows
        plans[f"{r.due} due, generic plan"] = explain_generic(log, *r.claim_statement(now))
    # Each case starts without dead row versions (Postgres); renew_leases makes them.
    cases: list[tuple[str, Callable[[], int], int, Callable[[], None] | None]] = [
        ("floor", r.floor, 1, None),
        ("claim_idle", lambda: r.claim(r.idle), 0, None),
        ("claim_due", r.claim, r.due, r.reset),
        ("claim_dispatched", r.claim, 0, None),
        ("unserved_due", r.unserved, 0, None),
        ("heartbeat", r.heartbeat, len(DEFINITIONS), None),
    ]
    for key, call, expect, before in cases:
        r.reset()
        if key == "claim_dispatched":
            r.claim()  # what every worker's next pass sees: the due runs dispatched just now
        vacuum(log.engine)
        f[key] = timed(call, repeat, expect, before)
    r.reset()

    set_recovery_indexes(log.engine, present=False)
    plans[f"{r.due} due, recovery indexes dropped"] = explain(log, *r.claim_statement(now))
    f["peer_claim_idle"] = timed(lambda: r.claim(r.idle), peer_repeat, 0)
    f["peer_claim_due"] = timed(r.claim, peer_repeat, r.due, before=r.reset)
    for case in ("claim_idle", "claim_due"):
        f[f"peer_over_{case}"] = f[f"peer_{case}"]["p50_ms"] / f[case]["p50_ms"]
    r.reset()

    set_recovery_indexes(log.engine, present=True)
    with older_transaction(log):
        f["renewals"] = renew_leases(r, updates)
        churned = f"nothing due, after {f['renewals']:,} renewals"
        if not sqlite:
            f["claim_idle_churned_held"] = timed(lambda: r.claim(r.idle), repeat, 0)
            plans[f"{churned}, older transaction open"] = explain(log, *r.claim_statement(r.idle))
    r.heartbeat()  # any write lets Postgres see that the older transaction has ended
    f["claim_idle_churned"] = timed(lambda: r.claim(r.idle), repeat, 0)
    plans[churned] = explain(log, *r.claim_statement(r.idle))
    f["plans"] = plans
    return f


# --------------------------------------------------------------------------- backends


@contextmanager
def postgres_log() -> Iterator[tuple[SagaLog, str]]:
    with PostgresServer() as server:
        url = server.create_database("recovery_bench")
        migrating = create_store_engine(url)
        upgrade(migrating)
        migrating.dispose()
        log = SagaLog.open(url)
        with log.engine.begin() as conn:
            version = str(conn.execute(text("SHOW server_version")).scalar())
            # The script vacuums when it means to; autovacuum would blur the churn case.
            conn.execute(text("ALTER TABLE sagaledger_runs SET (autovacuum_enabled = off)"))
        try:
            yield log, version.split()[0]
        finally:
            log.close()


@contextmanager
def sqlite_log() -> Iterator[tuple[SagaLog, str]]:
    with tempfile.TemporaryDirectory(prefix="sagaledger-bench-") as tmp:
        log = SagaLog.open(f"sqlite:///{tmp}/recovery.db")
        try:
            yield log, sqlite3.sqlite_version
        finally:
            log.close()


BACKENDS = {"postgres": postgres_log, "sqlite": sqlite_log}

ROWS = [  # (key, label); rows a backend lacks are left out
    ("claim_idle", "claim_due, nothing due"),
    ("claim_due", "claim_due, {due} due (takes them)"),
    ("claim_dispatched", "claim_due, {due} dispatched < grace ago"),
    ("unserved_due", "unserved_due, {due} due, all served"),
    ("heartbeat", "heartbeat + live_definitions"),
    ("floor", "floor: SELECT 1 in a write transaction"),
    ("claim_idle_no_stats", "claim_due, nothing due, before ANALYZE"),
    ("claim_idle_churned", "claim_due, nothing due, after {renewals:,} renewals"),
    ("claim_idle_churned_held", "  same, a transaction older than them open"),
    ("peer_claim_idle", "peer: claim_due, nothing due, full scan"),
    ("peer_claim_due", "peer: claim_due, {due} due, full scan"),
]
PLAN_WIDTH = 150  # longer plan lines are cut in the table (JSON has them whole)


def report(name: str, version: str, f: dict[str, Any], due: int, n: int) -> None:
    print(
        f"\n{name} {version}: {n:,} finished runs loaded in {f['load_s']:.1f} s, "
        f"ANALYZE {f['analyze_s']:.1f} s, table {f['table_mb']:.0f} MB"
        + (" with indexes" if f["indexes_mb"] is None else f" + indexes {f['indexes_mb']:.0f} MB")
    )
    rows = [(k, label.format(due=due, renewals=f["renewals"])) for k, label in ROWS if k in f]
    width = max(len(label) for _, label in rows)
    print(f"  {'':<{width}}  {'p50 ms':>9}  {'p95 ms':>9}  {'first ms':>9}  {'rows':>5}")
    for key, label in rows:
        x = f[key]
        print(
            f"  {label:<{width}}  {x['p50_ms']:>9.3f}  {x['p95_ms']:>9.3f}  "
            f"{x['first_ms']:>9.3f}  {x['rows']:>5}"
        )
    print(
        f"  full scan / index (p50): nothing due {f['peer_over_claim_idle']:.0f}x, "
        f"{due} due {f['peer_over_claim_due']:.0f}x"
    )
    print_plans(f["plans"], "claim_due's UPDATE, ")


def print_plans(plans: dict[str, list[str]], prefix: str = "") -> None:
    """Each plan under its title, long lines cut at :data:`PLAN_WIDTH`."""
    for title, lines in plans.items():
        print(f"  plan of {prefix}{title}:")
        for line in lines:
            cut = line if len(line) <= PLAN_WIDTH else line[: PLAN_WIDTH - 3] + "..."
            print(f"    {cut}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000, help="finished runs in the log")
    parser.add_argument("--active", type=int, default=1_000, help="unfinished runs (half due)")
    parser.add_argument("--repeat", type=int, default=50, help="timed calls per case")
    parser.add_argument("--peer-repeat", type=int, default=20, help="timed calls per full scan")
    parser.add_argument(
        "--renewals",
        type=int,
        help="row updates in the churn case (default: the dead rows autovacuum lets pile up)",
    )
    parser.add_argument("--backend", choices=["all", *BACKENDS], default="all")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = parser.parse_args()
    if args.active < 2:
        parser.error("--active must be at least 2 (one due run, one waiting)")
    updates = args.renewals
    if updates is None:
        updates = int(AUTOVACUUM_SCALE * (args.runs + args.active))
    context: dict[str, Any] = {
        "runs": args.runs,
        "active": args.active,
        "repeat": args.repeat,
        "peer_repeat": args.peer_repeat,
        "limit": LIMIT,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    results: dict[str, Any] = {}
    if not args.json:
        print("sagaledger recovery benchmark: " + ", ".join(f"{k} {v}" for k, v in context.items()))
    for name in BACKENDS if args.backend == "all" else [args.backend]:
        t0 = time.perf_counter()
        with BACKENDS[name]() as (log, version):
            figures = bench(log, args.runs, args.active, args.repeat, args.peer_repeat, updates)
        figures["total_s"] = time.perf_counter() - t0
        results[name] = {"version": version, **figures}
        if not args.json:
            report(name, version, figures, min((args.active + 1) // 2, LIMIT), args.runs)
    context["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        print(json.dumps({**context, **results}, indent=2))


if __name__ == "__main__":
    main()
