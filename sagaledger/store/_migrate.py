"""Applying and checking the Alembic migrations of the saga log.

Alembic is imported only to migrate: opening a log checks the revision with a
plain query, which keeps every command's start-up fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Column, Engine, MetaData, String, Table, inspect, select

from sagaledger.store._engine import read

if TYPE_CHECKING:
    from alembic.config import Config

#: Our own version table, so a service's own Alembic history is left alone.
VERSION_TABLE = "sagaledger_alembic_version"
#: The newest migration this code ships (a test pins it to Alembic's head).
SCHEMA_REVISION = "0007"

_versions = Table(VERSION_TABLE, MetaData(), Column("version_num", String(32)))


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "sagaledger.store:migrations")
    return config


def head_revision() -> str:
    """The newest migration in the shipped migration scripts."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at, or None for an empty database."""
    with read(engine) as connection:
        if not inspect(connection).has_table(VERSION_TABLE):
            return None
        return connection.execute(select(_versions.c.version_num)).scalar()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database to ``revision`` (the newest by default)."""
    from alembic import command

    config = _config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
