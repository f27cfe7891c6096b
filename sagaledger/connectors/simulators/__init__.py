"""Simulated payments, ERP and email services: real loopback servers that behave like the real ones.

Each one enforces its service's authentication, honours idempotency keys the way
that service does, keeps a ledger of every effect it applied, and injects faults
on request (latency, 5xx, 429 with Retry-After, timeouts, declines, and an
effect applied whose response is lost). :class:`SimulatorSuite` starts them all;
:class:`Timeline` merges their ledgers in time order, each effect with its run.
"""

from sagaledger.connectors.simulators._faults import (
    Effect,
    EffectLedger,
    Fault,
    FaultKind,
    FaultPlan,
)
from sagaledger.connectors.simulators._http import HttpSimulator, SimRequest, SimResponse
from sagaledger.connectors.simulators._suite import (
    ENDPOINTS_ENV,
    Endpoints,
    LocalConnectors,
    SimulatorSuite,
)
from sagaledger.connectors.simulators._timeline import Timeline, TimelineEntry
from sagaledger.connectors.simulators.email_api import EmailApiSimulator
from sagaledger.connectors.simulators.erp import ErpSimulator
from sagaledger.connectors.simulators.payments import PaymentsSimulator
from sagaledger.connectors.simulators.smtp import ReceivedMessage, SmtpSimulator

__all__ = [
    "ENDPOINTS_ENV",
    "Effect",
    "EffectLedger",
    "EmailApiSimulator",
    "Endpoints",
    "ErpSimulator",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "HttpSimulator",
    "LocalConnectors",
    "PaymentsSimulator",
    "ReceivedMessage",
    "SimRequest",
    "SimResponse",
    "SimulatorSuite",
    "SmtpSimulator",
    "Timeline",
    "TimelineEntry",
]
