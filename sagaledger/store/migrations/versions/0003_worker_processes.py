"""Where each worker process runs, so a restarted worker can tell a neighbour is dead.

``host_key`` names the host and PID namespace the worker runs in (two workers
with the same key see the same process ids) and ``pid`` its process id. A
worker that finds, under its own key, a worker whose process no longer exists
releases that worker's leases at once instead of waiting for them to expire.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sagaledger_workers") as batch:
        batch.add_column(sa.Column("host_key", sa.String(200)))
        batch.add_column(sa.Column("pid", sa.Integer()))


def downgrade() -> None:
    with op.batch_alter_table("sagaledger_workers") as batch:
        batch.drop_column("pid")
        batch.drop_column("host_key")
