"""A run remembers who asked to cancel it, why and when, until its driver acts on it.

A run whose step is in flight cannot be turned around under its worker's feet:
the request waits in ``cancel_requested`` and the driver turns the run to
compensation at its next step boundary. A run that is waiting is turned at once.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN on both: a batch rebuild of SQLite's table would be needless.
    payload = sa.JSON().with_variant(JSONB(), "postgresql")
    op.add_column("sagaledger_runs", sa.Column("cancel_requested", payload))


def downgrade() -> None:
    with op.batch_alter_table("sagaledger_runs") as batch:
        batch.drop_column("cancel_requested")
