"""A 4-step order saga whose steps record every call and effect in a ledger file.

Used by tests that run workers in other processes: the ledger (a SQLite file
named in the run's input) is where a test sees what really happened, in which
order, with which idempotency key, and whether anything happened twice.
"""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from sagaledger import (
    CompensationContext,
    PermanentError,
    Registry,
    RetryableError,
    RetryPolicy,
    RetrySafety,
    Saga,
    StepContext,
    step,
)

STEPS = ("reserve_inventory", "charge_payment", "create_erp_order", "send_email")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY, run_id TEXT, step TEXT, phase TEXT, key TEXT, attempt INT, pid INT
);
CREATE TABLE IF NOT EXISTS effects (key TEXT PRIMARY KEY, run_id TEXT, step TEXT, phase TEXT);
"""


class Order(BaseModel):
    order_id: str
    ledger: str
    #: Step that fails permanently (a late failure makes the run compensate).
    fail_at: str | None = None
    #: Step whose compensation always fails.
    fail_compensation: str | None = None
    #: Step -> how many calls fail with a retryable error before it succeeds.
    flaky: dict[str, int] = {}
    #: How long each forward step works before recording its effect.
    pause_ms: int = 0


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(_SCHEMA)
    return conn


def record(
    path: str, run_id: str, step_name: str, phase: str, key: str, attempt: int, apply: bool = True
) -> int:
    """Record one call and apply its effect once per key; return calls so far for this step."""
    with _connect(path) as conn:
        conn.execute(
            "INSERT INTO calls (run_id, step, phase, key, attempt, pid) VALUES (?,?,?,?,?,?)",
            (run_id, step_name, phase, key, attempt, os.getpid()),
        )
        if apply:
            conn.execute(
                "INSERT OR IGNORE INTO effects VALUES (?,?,?,?)", (key, run_id, step_name, phase)
            )
        (count,) = conn.execute(
            "SELECT count(*) FROM calls WHERE run_id=? AND step=? AND phase=?",
            (run_id, step_name, phase),
        ).fetchone()
    return int(count)


def calls(path: str, run_id: str | None = None) -> list[tuple[str, str, str, int]]:
    """(step, phase, key, attempt) of every call, in order."""
    with _connect(path) as conn:
        query = "SELECT step, phase, key, attempt FROM calls"
        rows = conn.execute(
            query + (" WHERE run_id=? ORDER BY id" if run_id else " ORDER BY id"),
            (run_id,) if run_id else (),
        ).fetchall()
    return [tuple(r) for r in rows]


def effects(path: str, run_id: str | None = None) -> list[tuple[str, str]]:
    """(step, phase) of every effect applied."""
    with _connect(path) as conn:
        rows = conn.execute(
            "SELECT step, phase FROM effects" + (" WHERE run_id=?" if run_id else ""),
            (run_id,) if run_id else (),
        ).fetchall()
    return [tuple(r) for r in rows]


def _forward(name: str) -> Any:
    def action(ctx: StepContext[Order]) -> dict[str, Any]:
        time.sleep(ctx.input.pause_ms / 1000)
        refused = ctx.input.fail_at == name  # like a declined card: no effect
        key, attempt = ctx.idempotency_key, ctx.attempt
        n = record(ctx.input.ledger, ctx.run_id, name, "forward", key, attempt, not refused)
        if refused:
            raise PermanentError(f"{name} refused order {ctx.input.order_id}")
        if n <= ctx.input.flaky.get(name, 0):
            raise RetryableError(f"{name}: remote busy (call {n})")
        return {"step": name, "ref": f"{name}-{ctx.input.order_id}", "seen": sorted(ctx.outputs)}

    action.__name__ = name
    return action


def _compensation(name: str) -> Any:
    def compensate(ctx: CompensationContext[Order]) -> dict[str, Any]:
        record(ctx.input.ledger, ctx.run_id, name, "compensate", ctx.idempotency_key, ctx.attempt)
        if ctx.input.fail_compensation == name:
            raise RetryableError(f"cannot undo {name}")
        return {"undid": ctx.output["ref"]}

    return compensate


_fast = RetryPolicy(
    max_attempts=4,
    initial_backoff=timedelta(milliseconds=20),
    max_backoff=timedelta(milliseconds=100),
)

order_saga = Saga(
    "order",
    1,
    Order,
    [
        step(
            n,
            compensate=_compensation(n),
            retry_safety=RetrySafety.IDEMPOTENCY_KEY,
            retry=_fast,
            compensation_retry=_fast,
            timeout=timedelta(seconds=20),
        )(_forward(n))
        for n in STEPS[:3]
    ]
    + [
        step(
            STEPS[3],
            no_compensation="an email cannot be unsent",
            retry_safety=RetrySafety.IDEMPOTENCY_KEY,
            retry=_fast,
        )(_forward(STEPS[3]))
    ],
)

registry = Registry([order_saga])

#: Version 2 of the same saga, as a later deploy would ship it: no email step.
order_saga_v2 = Saga("order", 2, Order, list(order_saga.steps)[:3])
registry_v2 = Registry([order_saga_v2])
