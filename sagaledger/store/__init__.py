"""The durable saga log: schema, migrations and the API over them."""

from sagaledger.store._engine import create_store_engine
from sagaledger.store._log import SagaLog
from sagaledger.store._migrate import current_revision, head_revision, upgrade
from sagaledger.store._records import (
    EventRecord,
    EventType,
    NewEvent,
    Phase,
    RunRecord,
    RunStatus,
    SignalRecord,
    Written,
    utc_now,
)
from sagaledger.store._tokens import Role, Token, Tokens

__all__ = [
    "EventRecord",
    "EventType",
    "NewEvent",
    "Phase",
    "Role",
    "RunRecord",
    "RunStatus",
    "SagaLog",
    "SignalRecord",
    "Token",
    "Tokens",
    "Written",
    "create_store_engine",
    "current_revision",
    "head_revision",
    "upgrade",
    "utc_now",
]
