"""The saga log: runs and their append-only events.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from sagaledger.store._schema import EventId, Payload, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_APPEND_ONLY_SQLITE = """
CREATE TRIGGER sagaledger_events_no_{verb} BEFORE {verb_upper} ON sagaledger_events
BEGIN SELECT RAISE(ABORT, 'sagaledger_events is append-only'); END
"""

_APPEND_ONLY_POSTGRES = [
    """
    CREATE FUNCTION sagaledger_events_append_only() RETURNS trigger AS $$
    BEGIN RAISE EXCEPTION 'sagaledger_events is append-only'; END
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE TRIGGER sagaledger_events_append_only BEFORE UPDATE OR DELETE ON sagaledger_events
    FOR EACH ROW EXECUTE FUNCTION sagaledger_events_append_only()
    """,
]


def upgrade() -> None:
    op.create_table(
        "sagaledger_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("saga_name", sa.String(100), nullable=False),
        sa.Column("saga_version", sa.Integer, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("business_key", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("step_index", sa.Integer, nullable=False),
        sa.Column("step", sa.String(100), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("input", Payload, nullable=False),
        sa.Column("lease_owner", sa.String(200)),
        sa.Column("lease_token", sa.Integer, nullable=False),
        sa.Column("wake_at", UTCDateTime),
        sa.Column("dispatched_at", UTCDateTime),
        sa.Column("last_seq", sa.Integer, nullable=False),
        sa.Column("blocked_reason", sa.Text),
        sa.Column("last_error", Payload),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("saga_name", "business_key", name="uq_sagaledger_runs_business_key"),
    )
    op.create_index(
        "ix_sagaledger_runs_wake_at",
        "sagaledger_runs",
        ["wake_at"],
        postgresql_where=sa.text("wake_at IS NOT NULL"),
        sqlite_where=sa.text("wake_at IS NOT NULL"),
    )
    op.create_index("ix_sagaledger_runs_status_saga", "sagaledger_runs", ["status", "saga_name"])
    op.create_index("ix_sagaledger_runs_created_at", "sagaledger_runs", ["created_at"])
    op.create_table(
        "sagaledger_events",
        sa.Column("id", EventId, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("sagaledger_runs.id"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("step", sa.String(100)),
        sa.Column("phase", sa.String(12)),
        sa.Column("attempt", sa.Integer),
        sa.Column("payload", Payload),
        sa.Column("error", Payload),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("token", sa.Integer),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("run_id", "seq", name="uq_sagaledger_events_run_seq"),
    )
    op.create_table(
        "sagaledger_workers",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("definitions", Payload, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("seen_at", UTCDateTime, nullable=False),
    )
    if op.get_bind().dialect.name == "sqlite":
        for verb in ("update", "delete"):
            op.execute(_APPEND_ONLY_SQLITE.format(verb=verb, verb_upper=verb.upper()))
    elif op.get_bind().dialect.name == "postgresql":
        for statement in _APPEND_ONLY_POSTGRES:
            op.execute(statement)
        # Lease renewals rewrite the few unfinished runs over and over; vacuum after
        # a fixed number of dead rows, not a fraction of a table of millions of
        # finished runs, so the recovery scan's index stays small.
        op.execute(
            "ALTER TABLE sagaledger_runs SET (autovacuum_vacuum_scale_factor = 0, "
            "autovacuum_vacuum_threshold = 10000, autovacuum_analyze_scale_factor = 0.02)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER sagaledger_events_append_only ON sagaledger_events")
        op.execute("DROP FUNCTION sagaledger_events_append_only()")
    op.drop_table("sagaledger_workers")
    op.drop_table("sagaledger_events")
    op.drop_table("sagaledger_runs")
