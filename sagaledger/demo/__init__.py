"""The demo app: an order-fulfilment saga on the real connectors, against local simulators.

The saga reserves stock in a NetSuite-style ERP, charges the card through a
Stripe-style payments API, creates the ERP sales order and emails the
confirmation through a Resend-style API; on a late failure it cancels the
order, refunds the charge and releases the stock, in reverse.

``sagaledger demo`` runs it end to end against a
:class:`~sagaledger.connectors.simulators.SimulatorSuite` it starts on loopback,
and writes the simulators' ledgers to :data:`LEDGERS_FILE` next to the saga log.
``sagaledger worker --app sagaledger.demo:registry`` runs it in a worker of your
own, given the simulators' endpoints in ``SAGALEDGER_SIMULATORS`` (the line
``sagaledger simulators`` prints).
"""

from __future__ import annotations

import functools
import threading

from sagaledger.connectors.simulators import Endpoints, LocalConnectors
from sagaledger.demo._effects import LEDGERS_FILE
from sagaledger.demo._saga import (
    SAGA_NAME,
    Charge,
    Confirmation,
    ErpOrder,
    Order,
    Reservation,
    build_registry,
    build_saga,
    charge_card,
)

_connectors_lock = threading.Lock()


def default_connectors() -> LocalConnectors:
    """Connectors for the simulators ``SAGALEDGER_SIMULATORS`` names, made once per process.

    The demo app is an entry point, like the CLI that loads it: a worker process
    learns where the simulators are from its environment, as it learns its store.

    Raises:
        LookupError: ``SAGALEDGER_SIMULATORS`` is missing or unreadable.
    """
    # Worker threads may ask at the same time; only one set of clients is made.
    with _connectors_lock:
        return _connectors_from_env()


@functools.cache
def _connectors_from_env() -> LocalConnectors:
    return LocalConnectors.for_endpoints(Endpoints.from_env())


#: What ``sagaledger worker --app sagaledger.demo:registry`` loads.
registry = build_registry(default_connectors)

__all__ = [
    "LEDGERS_FILE",
    "SAGA_NAME",
    "Charge",
    "Confirmation",
    "ErpOrder",
    "Order",
    "Reservation",
    "build_registry",
    "build_saga",
    "charge_card",
    "default_connectors",
    "registry",
]
