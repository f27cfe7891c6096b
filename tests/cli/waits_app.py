"""An order that waits for a manager's approval, then for its payment to settle.

``reserve`` (undone by ``release``) -> ``manager`` (an approval: alice or any
manager; at the deadline the CFO may) -> ``settled`` (waits for the event
``payment.settled`` keyed by the order number) -> ``ship``. The CLI tests start
runs of it in-process and decide or signal them with the ``sagaledger``
command; ``--app tests.cli.waits_app:registry`` tells ``sagaledger signal`` the
event names it waits for.
"""

from __future__ import annotations

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

#: Who may decide at first: a person and a pattern.
APPROVERS = ("alice@x.example", "*@managers.example")
#: Who may decide once the first deadline has passed.
ESCALATED_TO = ("cfo@x.example",)
#: How long each group has.
DEADLINE = timedelta(hours=4)
#: The event the ``settled`` step waits for, keyed by the order number.
EVENT = "payment.settled"


class Order(BaseModel):
    order_id: str
    amount_cents: int


def release(ctx: CompensationContext[Order]) -> dict[str, Any]:
    return {"released": ctx.input.order_id}


@step(compensate=release, retry_safety=RetrySafety.NATURAL)
def reserve(ctx: StepContext[Order]) -> dict[str, Any]:
    return {"reserved": ctx.input.order_id}


def _shown(ctx: StepContext[Order]) -> dict[str, Any]:
    return {"order": ctx.input.order_id, "amount_cents": ctx.input.amount_cents}


manager = approval(
    "manager",
    approvers=list(APPROVERS),
    deadline=DEADLINE,
    on_deadline=Escalate(to=list(ESCALATED_TO), within=DEADLINE),
    show=_shown,
)

settled = wait_for_event(
    "settled", event=EVENT, key=lambda ctx: ctx.input.order_id, within=DEADLINE
)


@step(no_compensation="the last step", retry_safety=RetrySafety.NATURAL)
def ship(ctx: StepContext[Order]) -> dict[str, Any]:
    return {"shipped": ctx.input.order_id, "settlement": ctx.outputs["settled"]["payload"]}


order_saga = Saga("cli_order", 1, Order, [reserve, manager, settled, ship])
registry = Registry([order_saga])
