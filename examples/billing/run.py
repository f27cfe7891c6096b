"""The billing example, end to end, in one command.

    .venv/bin/python examples/billing/run.py [--json FILE] [--store URL]

Starts the ERP, payments and email API simulators in this process, a real
``sagaledger worker`` process on a SQLite saga log, and five bills one after the
other, each meeting a different fault; then prints how each run went, every
effect the simulators applied, and the compensation ledger's balance. Exits with
status 1 if a run did not end as expected, or if the runs left unbalanced are
not exactly the parked one. ``--store URL`` keeps the saga log (for
``sagaledger audit export --store URL``).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file sees only its own folder. The examples' shared
# runner (examples/showcase.py) and this app, as the worker process imports it
# too, are found from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.billing.app import Bill, Line, billing
from examples.showcase import Example, Scenario, main
from sagaledger import RunStatus
from sagaledger.connectors.simulators import Endpoints, Fault, FaultKind

SCENARIOS: tuple[Scenario[Bill], ...] = (
    Scenario(
        "a",
        "a bill paid and receipted",
        Bill(
            invoice_number="INV-2001",
            customer_id="C-ADA",
            email="ada@example.com",
            lines=[
                Line(item="WIDGET-1", quantity=2, unit_price_cents=1250),
                Line(item="GIZMO-3", quantity=1, unit_price_cents=800),
            ],
        ),
        RunStatus.COMPLETED,
    ),
    Scenario(
        "b",
        "the receipt is sent but the email API's response is lost",
        Bill(
            invoice_number="INV-2002",
            customer_id="C-ALAN",
            email="alan@example.com",
            lines=[Line(item="GADGET-2", quantity=1, unit_price_cents=4999)],
        ),
        RunStatus.COMPLETED,
        (("email_api", Fault(FaultKind.LOST_RESPONSE, operation="send")),),
    ),
    Scenario(
        "c",
        "the card is declined: the invoice is voided, nothing is refunded",
        Bill(
            invoice_number="INV-2003",
            customer_id="C-KATHERINE",
            email="katherine@example.com",
            lines=[Line(item="GIZMO-3", quantity=3, unit_price_cents=800)],
            payment_method="pm_card_chargeDeclined",  # Stripe's test card that is declined
        ),
        RunStatus.COMPENSATED,
    ),
    Scenario(
        "d",
        "the email API refuses the receipt: refunded, then voided",
        Bill(
            invoice_number="INV-2004",
            customer_id="C-GRACE",
            email="grace@localhost",  # no domain: the API answers 422
            lines=[Line(item="WIDGET-1", quantity=4, unit_price_cents=1250)],
        ),
        RunStatus.COMPENSATED,
    ),
    Scenario(
        "e",
        "the receipt is refused, refunded, and the ERP refuses the void: parked, left unbalanced",
        Bill(
            invoice_number="INV-2005",
            customer_id="C-EDSGER",
            email="edsger@localhost",  # no domain: the API answers 422, as in (d)
            lines=[Line(item="GADGET-2", quantity=2, unit_price_cents=1999)],
        ),
        RunStatus.PARKED,
        (("erp", Fault(FaultKind.DECLINE, operation="void_invoice")),),
    ),
)


def print_header(endpoints: Endpoints, store: str) -> None:
    print("billing: create_invoice -> charge_card -> send_receipt,")
    print("         on the ERP, payments and email API simulators\n")
    print(f"erp:        {endpoints.erp_url}  (NetSuite REST, OAuth 1.0a)")
    print(f"payments:   {endpoints.payments_url}  (Stripe API)")
    print(f"email api:  {endpoints.email_api_url}  (Resend-style)")
    print(f"saga log:   {store}")


EXAMPLE = Example(
    name="billing",
    saga=billing,
    scenarios=SCENARIOS,
    key=lambda bill: bill.invoice_number,
    items=lambda bill: ", ".join(f"{line.quantity} x {line.item}" for line in bill.lines),
    amount_cents=lambda bill: bill.amount_cents,
    header=print_header,
)


if __name__ == "__main__":
    sys.exit(main(EXAMPLE, __doc__))
