"""A refund over a threshold: it waits for a manager's approval, then for the payment to settle.

``open_case`` -> ``reserve_funds`` -> ``manager_approval`` (managers approve;
at the deadline the directors may) -> ``settlement`` (waits for the external
event ``payment.settled`` with the order number as its key) -> ``pay_out``.
The two steps before the approval have compensations, so a rejection undoes
them in reverse; ``pay_out`` has none. Workers in other processes run it
(``--app tests.integration.approvals_app:registry``); the ledger, a SQLite file
named in the run's input, is where a test sees which process ran which step or
compensation, and how many times.

``refund`` gives managers hours, which no test waits out; ``urgent_refund`` is
the same saga with an approval deadline of a few seconds, for the test of what
happens when it passes.
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
    Escalate,
    Registry,
    RetrySafety,
    Saga,
    StepContext,
    approval,
    step,
    wait_for_event,
)

#: The forward steps that write to the ledger, in order (the two waits sit between the 2nd and 3rd).
STEPS = ("open_case", "reserve_funds", "pay_out")
#: The name of the approval step and of the step that waits for the settlement.
APPROVAL, SETTLEMENT = "manager_approval", "settlement"
#: The external event the runs wait for, keyed by the order number.
EVENT = "payment.settled"
MANAGERS, DIRECTORS = "*@managers.example", "*@directors.example"
#: How long managers have to decide a ``refund``: longer than any test.
DEADLINE = timedelta(hours=2)
#: How long they have to decide an ``urgent_refund``: short enough for a test to wait out,
#: long enough for it to stop its worker before the deadline.
URGENT_DEADLINE = timedelta(seconds=3)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY, run_id TEXT, step TEXT, phase TEXT, key TEXT, attempt INT,
    pid INT, at REAL, detail TEXT
);
"""


class Refund(BaseModel):
    ledger: str
    order_id: str
    amount_cents: int


class Call(BaseModel):
    """One call of a step or compensation, as the ledger recorded it."""

    step: str
    phase: str
    key: str
    attempt: int
    pid: int
    #: When the call ended (Unix time, from the worker's clock).
    at: float
    #: What ``pay_out`` paid against: the settlement id of the event it got.
    detail: str | None


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(_SCHEMA)
    return conn


def _record(
    ctx: StepContext[Refund] | CompensationContext[Refund], phase: str, detail: str | None = None
) -> None:
    with _connect(ctx.input.ledger) as conn:
        conn.execute(
            "INSERT INTO calls (run_id, step, phase, key, attempt, pid, at, detail)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (
                ctx.run_id,
                ctx.step,
                phase,
                ctx.idempotency_key,
                ctx.attempt,
                os.getpid(),
                time.time(),
                detail,
            ),
        )


def calls(path: str, run_id: str) -> list[Call]:
    """Every call made for ``run_id``, in the order they ended."""
    with _connect(path) as conn:
        rows = conn.execute(
            "SELECT step, phase, key, attempt, pid, at, detail FROM calls WHERE run_id=?"
            " ORDER BY id",
            (run_id,),
        ).fetchall()
    fields = ("step", "phase", "key", "attempt", "pid", "at", "detail")
    return [Call.model_validate(dict(zip(fields, row, strict=True))) for row in rows]


def _forward(name: str) -> Any:
    def action(ctx: StepContext[Refund]) -> dict[str, str]:
        _record(ctx, "forward")
        return {"ref": f"{name}-{ctx.input.order_id}"}

    action.__name__ = name
    return action


def _undo(ctx: CompensationContext[Refund]) -> dict[str, str]:
    _record(ctx, "compensate")
    return {"undid": ctx.output["ref"]}


def _pay_out(ctx: StepContext[Refund]) -> dict[str, str]:
    settled = ctx.outputs[SETTLEMENT]["payload"]["settlement_id"]
    _record(ctx, "forward", settled)
    return {"paid_against": settled}


def _shown(ctx: StepContext[Refund]) -> dict[str, Any]:
    return {"order_id": ctx.input.order_id, "amount_cents": ctx.input.amount_cents}


def _order(ctx: StepContext[Refund]) -> str:
    return ctx.input.order_id


def _refund(name: str, deadline: timedelta) -> Saga:
    return Saga(
        name,
        1,
        Refund,
        [
            *(
                step(n, compensate=_undo, retry_safety=RetrySafety.IDEMPOTENCY_KEY)(_forward(n))
                for n in STEPS[:2]
            ),
            approval(
                APPROVAL,
                approvers=[MANAGERS],
                deadline=deadline,
                on_deadline=Escalate(to=[DIRECTORS], within=timedelta(hours=8)),
                show=_shown,
            ),
            wait_for_event(SETTLEMENT, event=EVENT, key=_order, within=timedelta(hours=2)),
            step(
                STEPS[2],
                no_compensation="money paid out is not called back",
                retry_safety=RetrySafety.IDEMPOTENCY_KEY,
            )(_pay_out),
        ],
    )


refund_saga = _refund("refund", DEADLINE)
urgent_refund_saga = _refund("urgent_refund", URGENT_DEADLINE)

registry = Registry([refund_saga, urgent_refund_saga])
