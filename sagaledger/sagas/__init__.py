"""Defining sagas, the registry, the orchestrator and the Dramatiq runtime."""

from sagaledger.sagas._actors import DRIVE_ACTOR, Maintenance, MaintenanceMiddleware, declare_actors
from sagaledger.sagas._approvals import (
    ApprovalWait,
    Decision,
    Escalate,
    PendingApproval,
    approval,
)
from sagaledger.sagas._brokers import build_broker
from sagaledger.sagas._cancel import CancelOutcome
from sagaledger.sagas._context import CompensationContext, StepContext, idempotency_key
from sagaledger.sagas._definition import Saga, Step, step
from sagaledger.sagas._deploy import DeployCheck, DeployProblem, ProblemKind, check_deploy
from sagaledger.sagas._dispatch import Dispatch, Dispatcher, queue_for
from sagaledger.sagas._embedded import EmbeddedWorker
from sagaledger.sagas._external_events import EventWait, SignalReceipt, wait_for_event
from sagaledger.sagas._hooks import ActionCall, DriveCall, DriveOutcome, Hooks
from sagaledger.sagas._operator import OperatorReceipt
from sagaledger.sagas._orchestrator import Orchestrator
from sagaledger.sagas._policy import RetryPolicy, RetrySafety, RetrySafetyKind
from sagaledger.sagas._registry import Registry
from sagaledger.sagas._timers import TimerWait, timer
from sagaledger.sagas._worker import SagaWorker

__all__ = [
    "DRIVE_ACTOR",
    "ActionCall",
    "ApprovalWait",
    "CancelOutcome",
    "CompensationContext",
    "Decision",
    "DeployCheck",
    "DeployProblem",
    "Dispatch",
    "Dispatcher",
    "DriveCall",
    "DriveOutcome",
    "EmbeddedWorker",
    "Escalate",
    "EventWait",
    "Hooks",
    "Maintenance",
    "MaintenanceMiddleware",
    "OperatorReceipt",
    "Orchestrator",
    "PendingApproval",
    "ProblemKind",
    "Registry",
    "RetryPolicy",
    "RetrySafety",
    "RetrySafetyKind",
    "Saga",
    "SagaWorker",
    "SignalReceipt",
    "Step",
    "StepContext",
    "TimerWait",
    "approval",
    "build_broker",
    "check_deploy",
    "declare_actors",
    "idempotency_key",
    "queue_for",
    "step",
    "timer",
    "wait_for_event",
]
