"""A two-step saga on the embedded worker: one run completes, one unwinds."""

from __future__ import annotations

import tempfile
from typing import Any

from pydantic import BaseModel

from sagaledger import (
    CompensationContext,
    EmbeddedWorker,
    Orchestrator,
    PermanentError,
    Registry,
    RetrySafety,
    Saga,
    SagaLog,
    StepContext,
    step,
)

#: Stands in for a payment provider: one charge per idempotency key.
charges: dict[str, dict[str, Any]] = {}


class Order(BaseModel):
    order_id: str
    amount_cents: int
    email: str


def refund(ctx: CompensationContext[Order]) -> dict[str, str]:
    charges[ctx.output["charge_id"]]["refunded"] = True
    return {"refunded": ctx.output["charge_id"]}


@step(compensate=refund, retry_safety=RetrySafety.IDEMPOTENCY_KEY)
def charge(ctx: StepContext[Order]) -> dict[str, str]:
    charge_id = "ch_" + ctx.idempotency_key.split(":")[0][:8]
    charges.setdefault(charge_id, {"amount": ctx.input.amount_cents, "refunded": False})
    return {"charge_id": charge_id}


@step(no_compensation="an email cannot be unsent", retry_safety=RetrySafety.IDEMPOTENCY_KEY)
def confirm(ctx: StepContext[Order]) -> dict[str, str]:
    if ctx.input.email.count("@") != 1:
        raise PermanentError(f"cannot mail {ctx.input.email!r}")
    return {"mailed": ctx.input.email, "about": ctx.output("charge")["charge_id"]}


orders = Saga("order", version=1, input=Order, steps=[charge, confirm])


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        log = SagaLog.open(f"sqlite:///{folder}/sagaledger.db")
        orchestrator = Orchestrator(log, Registry([orders]))
        with EmbeddedWorker(orchestrator) as worker:
            good = orchestrator.start(
                orders, {"order_id": "A1", "amount_cents": 4200, "email": "a@example.com"}, key="A1"
            )
            bad = orchestrator.start(
                orders, {"order_id": "A2", "amount_cents": 990, "email": "nobody"}, key="A2"
            )
            for run in (good, bad):
                finished = worker.wait(run.id)
                print(f"run {finished.business_key}: {finished.status.value}")
                for e in log.events(run.id):
                    print(f"  {e.seq:>2} {e.type.value:<24} {e.step or '':<8} {e.phase or ''}")
        log.close()
    print("charges:", charges)


if __name__ == "__main__":
    main()
