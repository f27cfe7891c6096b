"""sagaledger: durable sagas with compensation, idempotency and audit built in."""

from sagaledger._errors import (
    DefinitionError,
    DuplicateSagaError,
    InputValidationError,
    PermanentError,
    RegistryError,
    RetryableError,
    SagaLedgerError,
    SchemaNotReadyError,
    StepError,
    StoreError,
    UnknownRunError,
    UnknownSagaError,
)
from sagaledger.sagas import (
    CompensationContext,
    EmbeddedWorker,
    Hooks,
    Orchestrator,
    Registry,
    RetryPolicy,
    RetrySafety,
    Saga,
    Step,
    StepContext,
    step,
)
from sagaledger.store import EventType, Phase, RunStatus, SagaLog

__version__ = "0.1.0"

__all__ = [
    "CompensationContext",
    "DefinitionError",
    "DuplicateSagaError",
    "EmbeddedWorker",
    "EventType",
    "Hooks",
    "InputValidationError",
    "Orchestrator",
    "PermanentError",
    "Phase",
    "Registry",
    "RegistryError",
    "RetryPolicy",
    "RetrySafety",
    "RetryableError",
    "RunStatus",
    "Saga",
    "SagaLedgerError",
    "SagaLog",
    "SchemaNotReadyError",
    "Step",
    "StepContext",
    "StepError",
    "StoreError",
    "UnknownRunError",
    "UnknownSagaError",
    "__version__",
    "step",
]
