"""Runs by status and start time: listing a day's compensations reads only those runs.

Without it, runs of one status within a period (or newest first) are found
through the start-time index alone, reading every run started in the period, or
through the status index, reading every run ever finished in that status.

On PostgreSQL the index is built in the migration's transaction, which holds
writes to ``sagaledger_runs`` until it is built.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_sagaledger_runs_status_created_at", "sagaledger_runs", ["status", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_sagaledger_runs_status_created_at", table_name="sagaledger_runs")
