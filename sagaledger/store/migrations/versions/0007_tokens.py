"""Access tokens of the web dashboard, kept as their sha256.

``sagaledger_tokens`` holds one row per token ``sagaledger tokens add`` made:
who it is for (the name the log records as the actor of its actions), its
role (``operator`` may act, ``auditor`` only reads), the sha256 of the token
(the token itself is printed once and never stored), and when and by whom it
was made and revoked.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from sagaledger.store._schema import EventId, UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sagaledger_tokens",
        sa.Column("id", EventId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("revoked_at", UTCDateTime),
        sa.Column("revoked_by", sa.String(200)),
        sa.UniqueConstraint("token_hash", name="uq_sagaledger_tokens_hash"),
    )
    op.create_index("ix_sagaledger_tokens_name", "sagaledger_tokens", ["name"])


def downgrade() -> None:
    op.drop_index("ix_sagaledger_tokens_name", table_name="sagaledger_tokens")
    op.drop_table("sagaledger_tokens")
