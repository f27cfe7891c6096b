"""Building a SQLAlchemy engine tuned for the saga log on SQLite or Postgres."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from sagaledger._errors import StoreError

_READ_ONLY = "sagaledger_read_only"
#: Seconds to wait for a connection to Postgres.
POSTGRES_CONNECT_TIMEOUT = 3
#: How long a SQLite writer waits for the lock before giving up (ms).
SQLITE_BUSY_TIMEOUT_MS = 30_000


def read(engine: Engine) -> Connection:
    """A connection for reading: on SQLite its transactions take no write lock."""
    return engine.connect().execution_options(**{_READ_ONLY: True})


def normalise_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` and use the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def create_store_engine(url: str, **options: Any) -> Engine:
    """Create an engine for ``url`` with the settings the saga log relies on.

    SQLite: WAL, ``synchronous=FULL`` (a commit survives power loss), a busy
    timeout, and ``BEGIN IMMEDIATE`` so that writers queue on the lock instead of
    failing when two of them upgrade a read lock at once.

    Raises:
        StoreError: the URL is malformed or names an unsupported database.
    """
    url = normalise_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(
            f"malformed store URL {_mask(url)!r}: expected sqlite:///FILE or postgresql://..."
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = create_engine(
            parsed, connect_args={"check_same_thread": False, "timeout": 30}, **options
        )
        _tune_sqlite(engine)
        return engine
    if backend == "postgresql":
        # A wrong host should fail in seconds, not hang for the OS's TCP timeout.
        options.setdefault("connect_args", {"connect_timeout": POSTGRES_CONNECT_TIMEOUT})
        options.setdefault("pool_size", 5)
        options.setdefault("max_overflow", 5)
        return create_engine(parsed, **options)
    raise StoreError(f"unsupported store URL {url!r}: use sqlite:///FILE or postgresql://...")


def _mask(url: str) -> str:
    """Hide a password in a URL that could not be parsed."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below decide how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Writers take the write lock up front; readers need no lock in WAL mode.
        reading = connection.get_execution_options().get(_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if reading else "BEGIN IMMEDIATE")
