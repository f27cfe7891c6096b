"""Runs by status and start time: listing a day's compensations reads only those runs.

Without it, runs of one status within a period (or newest first) are found
through the start-time index, reading every run started in the period, or
through the status index, reading every run ever finished in that status.

On PostgreSQL the index is built in the migration's transaction, which holds
writes to ``sagaledger_runs`` until it is built (a few seconds per million runs).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_INDEX = "ix_sagaledger_runs_status_created_at"


def upgrade() -> None:
    op.create_index(_INDEX, "sagaledger_runs", ["status", "created_at"])
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        analyzed = bind.execute(sa.text("SELECT 1 FROM sqlite_schema WHERE name = 'sqlite_stat1'"))
        if analyzed.first() is not None:
            # Every other index has statistics: without this one's, SQLite's planner
            # takes it for the recovery scan (status IN ...) instead of the wake-up index.
            op.execute(f"ANALYZE {_INDEX}")


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="sagaledger_runs")
