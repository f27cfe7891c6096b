"""Pins the public surface: changing it must be a deliberate edit here."""

import sagaledger
import sagaledger.compensation
import sagaledger.sagas
import sagaledger.store
import sagaledger.testing

EXPECTED = {
    sagaledger: [
        "BrokerError",
        "CancelOutcome",
        "CompensationContext",
        "DefinitionError",
        "DuplicateSagaError",
        "EmbeddedWorker",
        "EventType",
        "Hooks",
        "InputValidationError",
        "Orchestrator",
        "OutcomeUnknownError",
        "PermanentError",
        "Phase",
        "RateLimitedError",
        "Registry",
        "RegistryError",
        "RetryPolicy",
        "RetrySafety",
        "RetryableError",
        "RunNotActiveError",
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
        "timer",
    ],
    sagaledger.sagas: [
        "DRIVE_ACTOR",
        "ActionCall",
        "CancelOutcome",
        "CompensationContext",
        "Dispatch",
        "Dispatcher",
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
        "SagaWorker",
        "Step",
        "StepContext",
        "TimerWait",
        "build_broker",
        "declare_actors",
        "idempotency_key",
        "queue_for",
        "step",
        "timer",
    ],
    sagaledger.store: [
        "EventRecord",
        "EventType",
        "NewEvent",
        "Phase",
        "RunRecord",
        "RunStatus",
        "SagaLog",
        "Written",
        "create_store_engine",
        "current_revision",
        "head_revision",
        "upgrade",
        "utc_now",
    ],
    sagaledger.compensation: ["compensation_plan", "completed_pivot", "next_compensation"],
    sagaledger.testing: [
        "CrashAt",
        "ManualClock",
        "SagaHarness",
        "SimulatedCrash",
        "WorkerProcess",
        "WorkerProcessError",
    ],
}


def test_each_package_exports_a_pinned_list() -> None:
    # The order is ruff's (RUF022: constants, classes, then functions, each sorted).
    for module, names in EXPECTED.items():
        assert module.__all__ == names, module.__name__
        for name in names:
            assert hasattr(module, name), f"{module.__name__}.{name}"
