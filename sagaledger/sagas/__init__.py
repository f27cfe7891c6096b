"""Defining sagas, the registry, the orchestrator and the Dramatiq runtime."""

from sagaledger.sagas._actors import DRIVE_ACTOR, Maintenance, MaintenanceMiddleware, declare_actors
from sagaledger.sagas._context import CompensationContext, StepContext, idempotency_key
from sagaledger.sagas._definition import Saga, Step, step
from sagaledger.sagas._embedded import EmbeddedWorker
from sagaledger.sagas._hooks import ActionCall, Hooks
from sagaledger.sagas._orchestrator import Orchestrator
from sagaledger.sagas._policy import RetryPolicy, RetrySafety, RetrySafetyKind
from sagaledger.sagas._registry import Registry

__all__ = [
    "DRIVE_ACTOR",
    "ActionCall",
    "CompensationContext",
    "EmbeddedWorker",
    "Hooks",
    "Maintenance",
    "MaintenanceMiddleware",
    "Orchestrator",
    "Registry",
    "RetryPolicy",
    "RetrySafety",
    "RetrySafetyKind",
    "Saga",
    "Step",
    "StepContext",
    "declare_actors",
    "idempotency_key",
    "step",
]
