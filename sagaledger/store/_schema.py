"""SQLAlchemy tables of the saga log. Changes go through an Alembic migration too."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    SQLite has no time zones, so values are stored as naive UTC there and made
    aware again when read; naive datetimes are refused on the way in.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: sagaledger stores UTC-aware times only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Payload: Any = JSON().with_variant(JSONB(), "postgresql")
#: Event ids grow for ever; SQLite only auto-increments a plain INTEGER key.
EventId: Any = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

#: True for a run someone asked to cancel. The column is JSON, and JSON columns
#: hold a JSON null (not SQL NULL) when empty: both must read as "not asked".
CANCEL_ASKED = "(cancel_requested IS NOT NULL AND cancel_requested <> 'null')"

runs = Table(
    "sagaledger_runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("saga_name", String(100), nullable=False),
    Column("saga_version", Integer, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("business_key", String(200), nullable=False),
    Column("status", String(20), nullable=False),
    Column("step_index", Integer, nullable=False),
    Column("step", String(100), nullable=False),  # name of the step at step_index
    Column("attempt", Integer, nullable=False),
    Column("input", Payload, nullable=False),
    Column("lease_owner", String(200)),
    Column("lease_token", Integer, nullable=False),
    # One wake-up column covers expired leases, retry back-off and version waits.
    Column("wake_at", UTCDateTime),
    # When a message for the run is expected; recovery leaves it alone until then.
    Column("dispatched_at", UTCDateTime),
    Column("last_seq", Integer, nullable=False),
    Column("blocked_reason", Text),
    Column("last_error", Payload),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # Who asked to cancel the run, why and when; the run's driver acts on it.
    Column("cancel_requested", Payload),
    # What a waiting run waits for (see sagaledger.sagas._waits.awaiting_key):
    # delivering it wakes the runs whose column names it.
    Column("awaiting", String(400)),
    # The hash of the run's last event: the next write extends the chain from it.
    Column("last_hash", String(64)),
    UniqueConstraint("saga_name", "business_key", name="uq_sagaledger_runs_business_key"),
    # Only unfinished runs have a wake-up time: the recovery scan stays small
    # however many finished runs the log holds.
    Index(
        "ix_sagaledger_runs_wake_at",
        "wake_at",
        postgresql_where=text("wake_at IS NOT NULL"),
        sqlite_where=text("wake_at IS NOT NULL"),
    ),
    Index(
        "ix_sagaledger_runs_awaiting",
        "awaiting",
        postgresql_where=text("awaiting IS NOT NULL"),
        sqlite_where=text("awaiting IS NOT NULL"),
    ),
    Index("ix_sagaledger_runs_status_saga", "status", "saga_name"),
    Index("ix_sagaledger_runs_created_at", "created_at"),
    # Runs of one status, newest first or within a period (a day's compensations):
    # the listing reads only the rows it returns, however long the log.
    Index("ix_sagaledger_runs_status_created_at", "status", "created_at"),
)

events = Table(
    "sagaledger_events",
    metadata,
    Column("id", EventId, primary_key=True, autoincrement=True),
    Column("run_id", String(32), ForeignKey("sagaledger_runs.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("type", String(40), nullable=False),
    Column("step", String(100)),
    Column("phase", String(12)),
    Column("attempt", Integer),
    Column("payload", Payload),
    Column("error", Payload),
    Column("actor", String(200), nullable=False),
    Column("token", Integer),
    Column("created_at", UTCDateTime, nullable=False),
    # sha256(the run's previous event's hash + this row's digest): see _chain.
    Column("hash", String(64)),
    UniqueConstraint("run_id", "seq", name="uq_sagaledger_events_run_seq"),
)

#: One digest per sealed period over every event written in it, kept so that
#: a rewrite of whole chains shows against a copy kept elsewhere.
anchors = Table(
    "sagaledger_anchors",
    metadata,
    Column("id", EventId, primary_key=True, autoincrement=True),
    Column("period_start", UTCDateTime, nullable=False),
    Column("period_end", UTCDateTime, nullable=False),
    Column("events", Integer, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("sealed_at", UTCDateTime, nullable=False),
    Column("sealed_by", String(200), nullable=False),
    UniqueConstraint("period_start", name="uq_sagaledger_anchors_period_start"),
)

#: The shape of every saga definition a worker has run (see Saga.shape), so a
#: deploy can be checked against what live runs still need.
definitions = Table(
    "sagaledger_definitions",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("fingerprint", String(64), primary_key=True),
    Column("shape", Payload, nullable=False),
    Column("first_seen", UTCDateTime, nullable=False),
)

#: Live workers and the saga definitions they can run, so a run whose
#: definition no live worker has can say so.
workers = Table(
    "sagaledger_workers",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("definitions", Payload, nullable=False),  # [[name, version, fingerprint], ...]
    Column("started_at", UTCDateTime, nullable=False),
    Column("seen_at", UTCDateTime, nullable=False),
    # The host and PID namespace the process runs in, and its process id: a
    # worker with the same host_key can see whether that process still exists.
    Column("host_key", String(200)),
    Column("pid", Integer),
    # The names of the external events its sagas wait for.
    Column("events", Payload),
)

#: External events and approval decisions, kept once per name and key until
#: (and after) a run takes them: one delivered before its run waits is not lost.
signals = Table(
    "sagaledger_signals",
    metadata,
    Column("id", EventId, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False),
    Column("key", String(300), nullable=False),
    Column("payload", Payload),
    Column("sender", String(200), nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    UniqueConstraint("name", "key", name="uq_sagaledger_signals_name_key"),
)

#: Access tokens of the web dashboard (``sagaledger tokens``): only the sha256
#: of each token is kept. A revoked token keeps its row, so the log's actors
#: can still be traced to whoever held a token then.
tokens = Table(
    "sagaledger_tokens",
    metadata,
    Column("id", EventId, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("role", String(20), nullable=False),
    Column("token_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("revoked_at", UTCDateTime),
    Column("revoked_by", String(200)),
    UniqueConstraint("token_hash", name="uq_sagaledger_tokens_hash"),
    Index("ix_sagaledger_tokens_name", "name"),
)
