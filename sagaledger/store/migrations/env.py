"""Alembic environment: runs on the connection that sagaledger hands it."""

from alembic import context

from sagaledger.store._migrate import VERSION_TABLE
from sagaledger.store._schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
