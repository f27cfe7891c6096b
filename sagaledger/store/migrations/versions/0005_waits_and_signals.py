"""Runs wait for approvals and external events; signals are kept until a run takes them.

``sagaledger_runs.awaiting`` names what a waiting run waits for (an event's
name and correlation key, or an approval), so that delivering it wakes exactly
the runs that wait for it. ``sagaledger_signals`` keeps every event and
decision delivered, once per name and key, whether or not a run waits yet.
``sagaledger_workers.events`` lists the events a worker's sagas wait for, so a
sender can be told that nobody waits for the event it names.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from sagaledger.store._schema import EventId, Payload, UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sagaledger_runs", sa.Column("awaiting", sa.String(400)))
    op.create_index(
        "ix_sagaledger_runs_awaiting",
        "sagaledger_runs",
        ["awaiting"],
        postgresql_where=sa.text("awaiting IS NOT NULL"),
        sqlite_where=sa.text("awaiting IS NOT NULL"),
    )
    op.add_column("sagaledger_workers", sa.Column("events", Payload))
    op.create_table(
        "sagaledger_signals",
        sa.Column("id", EventId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("payload", Payload),
        sa.Column("sender", sa.String(200), nullable=False),
        sa.Column("received_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("name", "key", name="uq_sagaledger_signals_name_key"),
    )


def downgrade() -> None:
    op.drop_table("sagaledger_signals")
    with op.batch_alter_table("sagaledger_workers") as batch:
        batch.drop_column("events")
    op.drop_index("ix_sagaledger_runs_awaiting", table_name="sagaledger_runs")
    with op.batch_alter_table("sagaledger_runs") as batch:
        batch.drop_column("awaiting")
