"""Each event carries a hash chained to the run's previous event; anchors seal periods.

``sagaledger_events.hash`` chains each run's events (see
``sagaledger.store._chain``) and ``sagaledger_runs.last_hash`` keeps the head of
the chain for the next write. Events written before this revision are hashed
here, run by run, in sequence order. ``sagaledger_anchors`` keeps one digest
per sealed period over every event of the period, for ``sagaledger audit``.
``sagaledger_definitions`` remembers the shape of every saga definition a
worker has run, so a deploy can be checked against what live runs still need.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

from sagaledger.store import _chain
from sagaledger.store._schema import EventId, Payload, UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

#: The append-only triggers of revision 0001, set aside while old events are hashed.
_SQLITE_TRIGGERS = {
    verb: f"""
CREATE TRIGGER IF NOT EXISTS sagaledger_events_no_{verb} BEFORE {verb.upper()} ON sagaledger_events
BEGIN SELECT RAISE(ABORT, 'sagaledger_events is append-only'); END
"""
    for verb in ("update", "delete")
}


def upgrade() -> None:
    op.add_column("sagaledger_events", sa.Column("hash", sa.String(64)))
    op.add_column("sagaledger_runs", sa.Column("last_hash", sa.String(64)))
    op.create_table(
        "sagaledger_anchors",
        sa.Column("id", EventId, primary_key=True, autoincrement=True),
        sa.Column("period_start", UTCDateTime, nullable=False),
        sa.Column("period_end", UTCDateTime, nullable=False),
        sa.Column("events", sa.Integer, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("sealed_at", UTCDateTime, nullable=False),
        sa.Column("sealed_by", sa.String(200), nullable=False),
        sa.UniqueConstraint("period_start", name="uq_sagaledger_anchors_period_start"),
    )
    op.create_table(
        "sagaledger_definitions",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("fingerprint", sa.String(64), primary_key=True),
        sa.Column("shape", Payload, nullable=False),
        sa.Column("first_seen", UTCDateTime, nullable=False),
    )
    _hash_existing_events()


def _hash_existing_events() -> None:
    """Chain the events already in the log, with the append-only triggers set aside."""
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    if postgres:
        op.execute("ALTER TABLE sagaledger_events DISABLE TRIGGER sagaledger_events_append_only")
    else:
        for verb in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS sagaledger_events_no_{verb}")
    events = sa.table(
        "sagaledger_events",
        *(sa.column(name) for name in ("id", "run_id", "seq", "hash")),
        sa.column("type"), sa.column("step"), sa.column("phase"), sa.column("attempt"),
        sa.column("payload", Payload), sa.column("error", Payload), sa.column("actor"),
        sa.column("token"), sa.column("created_at", UTCDateTime),
    )  # fmt: skip
    runs = sa.table("sagaledger_runs", sa.column("id"), sa.column("last_hash"))
    run_ids = bind.execute(sa.select(events.c.run_id).distinct()).scalars().all()
    for run_id in run_ids:
        rows = [
            dict(row._mapping)
            for row in bind.execute(
                sa.select(events).where(events.c.run_id == run_id).order_by(events.c.seq)
            )
        ]
        hashes = _chain.chain(_chain.genesis(run_id), rows)
        for row, value in zip(rows, hashes, strict=True):
            bind.execute(sa.update(events).where(events.c.id == row["id"]).values(hash=value))
        bind.execute(sa.update(runs).where(runs.c.id == run_id).values(last_hash=hashes[-1]))
    if postgres:
        op.execute("ALTER TABLE sagaledger_events ENABLE TRIGGER sagaledger_events_append_only")
    else:
        for trigger in _SQLITE_TRIGGERS.values():
            op.execute(trigger)


def downgrade() -> None:
    op.drop_table("sagaledger_definitions")
    op.drop_table("sagaledger_anchors")
    with op.batch_alter_table("sagaledger_runs") as batch:
        batch.drop_column("last_hash")
    _drop_event_hash()


def _drop_event_hash() -> Any:
    # SQLite may rebuild the table to drop a column, and its triggers with it.
    bind = op.get_bind()
    with op.batch_alter_table("sagaledger_events") as batch:
        batch.drop_column("hash")
    if bind.dialect.name != "postgresql":
        for trigger in _SQLITE_TRIGGERS.values():
            op.execute(trigger)
