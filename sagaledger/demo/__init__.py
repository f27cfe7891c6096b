"""The demo app: an order-fulfilment saga doing real, recorded work on a local ledger.

``sagaledger demo`` runs it end to end; ``sagaledger worker --app
sagaledger.demo:registry`` runs it in a worker of your own. The ledger (a SQLite
file, see :class:`Ledger`) stands in for the payment, ERP and email systems
until real connectors replace it.
"""

from __future__ import annotations

import functools

from sagaledger.demo._ledger import LEDGER_FILE, Call, Effect, Ledger, ledger_for_store
from sagaledger.demo._saga import (
    DISCONTINUED_PREFIX,
    SAGA_NAME,
    Order,
    build_registry,
    build_saga,
)


@functools.cache
def default_ledger() -> Ledger:
    """The ledger next to the store this process's settings name (``SAGALEDGER_STORE``).

    The demo app is an entry point, like the CLI that loads it: a worker process
    finds the ledger from the same settings that told it which saga log to use.
    """
    from sagaledger._settings import Settings

    return Ledger(ledger_for_store(Settings().store))


#: What ``sagaledger worker --app sagaledger.demo:registry`` loads.
registry = build_registry(default_ledger)

__all__ = [
    "DISCONTINUED_PREFIX",
    "LEDGER_FILE",
    "SAGA_NAME",
    "Call",
    "Effect",
    "Ledger",
    "Order",
    "build_registry",
    "build_saga",
    "default_ledger",
    "ledger_for_store",
    "registry",
]
