"""A saga that waits on a durable timer between its steps, recording every call in a ledger.

``reserve`` -> ``charge`` -> ``cool_off`` (a timer until the input's ``fire_at``)
-> ``ship``. The two steps before the timer have compensations; ``ship`` has
none. Workers in other processes run it (``--app tests.integration.waiting_app:registry``);
the ledger, a SQLite file named in the run's input, is where a test sees which
process ran which step or compensation, when, and how many times.
"""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from sagaledger import (
    CompensationContext,
    Registry,
    RetrySafety,
    Saga,
    StepContext,
    step,
    timer,
)

#: The forward steps that do something, in order (the timer sits between the 2nd and 3rd).
STEPS = ("reserve", "charge", "ship")
#: How long a gated step waits for its gate before it gives up (a stuck test, not a result).
GATE_TIMEOUT_SECONDS = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY, run_id TEXT, step TEXT, phase TEXT, key TEXT, attempt INT,
    pid INT, at REAL
);
CREATE TABLE IF NOT EXISTS entered (run_id TEXT, step TEXT, at REAL);
"""


class Errand(BaseModel):
    ledger: str
    #: When the ``cool_off`` timer fires (timezone-aware).
    fire_at: datetime
    #: A file ``reserve`` waits for before it finishes, once it has said it is in
    #: flight: a test opens it when the step should end (None: no wait).
    gate: str | None = None


class Call(BaseModel):
    """One call of a step or compensation, as the ledger recorded it."""

    step: str
    phase: str
    key: str
    attempt: int
    pid: int
    #: When the call ended (Unix time, from the worker's clock).
    at: float


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(_SCHEMA)
    return conn


def _record(path: str, run_id: str, name: str, phase: str, key: str, attempt: int) -> None:
    with _connect(path) as conn:
        conn.execute(
            "INSERT INTO calls (run_id, step, phase, key, attempt, pid, at) VALUES (?,?,?,?,?,?,?)",
            (run_id, name, phase, key, attempt, os.getpid(), time.time()),
        )


def calls(path: str, run_id: str) -> list[Call]:
    """Every call made for ``run_id``, in the order they ended."""
    with _connect(path) as conn:
        rows = conn.execute(
            "SELECT step, phase, key, attempt, pid, at FROM calls WHERE run_id=? ORDER BY id",
            (run_id,),
        ).fetchall()
    fields = ("step", "phase", "key", "attempt", "pid", "at")
    return [Call.model_validate(dict(zip(fields, row, strict=True))) for row in rows]


def entered(path: str, run_id: str) -> list[str]:
    """The gated steps of ``run_id`` that have started and are waiting for their gate."""
    with _connect(path) as conn:
        rows = conn.execute("SELECT step FROM entered WHERE run_id=?", (run_id,)).fetchall()
    return [row[0] for row in rows]


def _wait_for_gate(ctx: StepContext[Errand]) -> None:
    assert ctx.input.gate is not None
    with _connect(ctx.input.ledger) as conn:
        conn.execute("INSERT INTO entered VALUES (?,?,?)", (ctx.run_id, ctx.step, time.time()))
    gate, deadline = Path(ctx.input.gate), time.monotonic() + GATE_TIMEOUT_SECONDS
    while not gate.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} was not opened within {GATE_TIMEOUT_SECONDS:g} s")
        time.sleep(0.02)


def _forward(name: str) -> Any:
    def action(ctx: StepContext[Errand]) -> dict[str, str]:
        if name == "reserve" and ctx.input.gate is not None:
            _wait_for_gate(ctx)
        _record(ctx.input.ledger, ctx.run_id, name, "forward", ctx.idempotency_key, ctx.attempt)
        return {"ref": f"{name}-{ctx.run_id}"}

    action.__name__ = name
    return action


def _compensation(name: str) -> Any:
    def compensate(ctx: CompensationContext[Errand]) -> dict[str, str]:
        _record(ctx.input.ledger, ctx.run_id, name, "compensate", ctx.idempotency_key, ctx.attempt)
        return {"undid": ctx.output["ref"]}

    return compensate


def _fire_at(ctx: StepContext[Errand]) -> datetime:
    return ctx.input.fire_at


errand_saga = Saga(
    "errand",
    1,
    Errand,
    [
        *(
            step(n, compensate=_compensation(n), retry_safety=RetrySafety.IDEMPOTENCY_KEY)(
                _forward(n)
            )
            for n in STEPS[:2]
        ),
        timer("cool_off", until=_fire_at),
        step(
            STEPS[2],
            no_compensation="a parcel on its way is not called back",
            retry_safety=RetrySafety.IDEMPOTENCY_KEY,
        )(_forward(STEPS[2])),
    ],
)

registry = Registry([errand_saga])
