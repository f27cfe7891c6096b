"""The order-fulfilment example, end to end, in one command.

    .venv/bin/python examples/order_fulfilment/run.py [--json FILE] [--store URL]

Starts the payments, ERP and email simulators in this process, a real
``sagaledger worker`` process on a SQLite saga log, and five orders one after
the other, each meeting a different fault; then prints how each run went,
every effect the simulators applied, and the compensation ledger's balance.
Exits with status 1 if a run did not end as expected, or if the runs left
unbalanced are not exactly the parked one. ``--store URL`` keeps the saga log
(for ``sagaledger audit export --store URL``).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file sees only its own folder. The examples' shared
# runner (examples/showcase.py) and this app, as the worker process imports it
# too, are found from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.order_fulfilment.app import Order, orders
from examples.showcase import Example, Scenario, main
from sagaledger import RunStatus
from sagaledger.connectors.simulators import Endpoints, Fault, FaultKind

SCENARIOS: tuple[Scenario[Order], ...] = (
    Scenario(
        "a",
        "a happy order",
        Order(
            order_id="SO-1001",
            customer_id="C-ADA",
            email="ada@example.com",
            sku="WIDGET-1",
            quantity=2,
            unit_price_cents=1250,
        ),
        RunStatus.COMPLETED,
    ),
    Scenario(
        "b",
        "the charge lands but its response is lost",
        Order(
            order_id="SO-1002",
            customer_id="C-ALAN",
            email="alan@example.com",
            sku="GADGET-2",
            quantity=1,
            unit_price_cents=4999,
        ),
        RunStatus.COMPLETED,
        (("payments", Fault(FaultKind.LOST_RESPONSE, operation="create_payment_intent")),),
    ),
    Scenario(
        "c",
        "the charge is rate limited: 429 with Retry-After: 1",
        Order(
            order_id="SO-1003",
            customer_id="C-KATHERINE",
            email="katherine@example.com",
            sku="GIZMO-3",
            quantity=3,
            unit_price_cents=800,
        ),
        RunStatus.COMPLETED,
        (
            (
                "payments",
                Fault(FaultKind.RATE_LIMIT, operation="create_payment_intent", retry_after=1),
            ),
        ),
    ),
    Scenario(
        "d",
        "the mail server refuses the confirmation: undone in reverse",
        Order(
            order_id="SO-1004",
            customer_id="C-GRACE",
            email="grace@hopper.invalid",  # the SMTP server answers 550 at RCPT
            sku="WIDGET-1",
            quantity=4,
            unit_price_cents=1250,
        ),
        RunStatus.COMPENSATED,
    ),
    Scenario(
        "e",
        "the confirmation is refused and the refund declined for good: parked, left unbalanced",
        Order(
            order_id="SO-1005",
            customer_id="C-EDSGER",
            email="edsger@dijkstra.invalid",  # refused at RCPT, as in (d)
            sku="GADGET-2",
            quantity=2,
            unit_price_cents=1999,
        ),
        RunStatus.PARKED,
        (("payments", Fault(FaultKind.DECLINE, operation="create_refund")),),
    ),
)


def print_header(endpoints: Endpoints, store: str) -> None:
    print("order fulfilment: reserve_inventory -> charge_card -> create_sales_order ->")
    print("                  send_confirmation, on the payments, ERP and SMTP simulators\n")
    print(f"payments:   {endpoints.payments_url}  (Stripe API)")
    print(f"erp:        {endpoints.erp_url}  (NetSuite REST, OAuth 1.0a)")
    print(f"smtp:       {endpoints.smtp_host}:{endpoints.smtp_port}")
    print(f"saga log:   {store}")


EXAMPLE = Example(
    name="order_fulfilment",
    saga=orders,
    scenarios=SCENARIOS,
    key=lambda order: order.order_id,
    items=lambda order: f"{order.quantity} x {order.sku}",
    amount_cents=lambda order: order.amount_cents,
    header=print_header,
)


if __name__ == "__main__":
    sys.exit(main(EXAMPLE, __doc__))
