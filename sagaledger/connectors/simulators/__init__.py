"""Simulated payments, ERP and email services: real loopback servers that behave like the real ones.

Each one enforces its service's authentication, honours idempotency keys the way
that service does, keeps a ledger of every effect it applied, and injects faults
on request (latency, 5xx, 429 with Retry-After, timeouts, declines, and an
effect applied whose response is lost).
"""

from sagaledger.connectors.simulators._faults import (
    Effect,
    EffectLedger,
    Fault,
    FaultKind,
    FaultPlan,
)
from sagaledger.connectors.simulators._http import HttpSimulator, SimRequest, SimResponse

__all__ = [
    "Effect",
    "EffectLedger",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "HttpSimulator",
    "SimRequest",
    "SimResponse",
]
