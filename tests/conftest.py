"""Shared fixtures: stores on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from sagaledger.store import SagaLog, create_store_engine, upgrade
from tests.servers import PostgresServer, RedisServer, find_postgres_bindir, redis_available

_db_names = itertools.count()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the whole run (each test gets its own database)."""
    if find_postgres_bindir() is None:
        pytest.fail("PostgreSQL is not installed: run scripts/ensure-servers")
    with PostgresServer() as server:
        yield server


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh, empty SQLite saga log file."""
    return f"sqlite:///{tmp_path}/saga.db"


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database on the real PostgreSQL server."""
    return postgres_server.create_database(f"t{next(_db_names)}")


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest) -> str:
    """A fresh, migrated saga log URL, once on SQLite and once on PostgreSQL."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    engine = create_store_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture
def saga_log(store_url: str) -> Iterator[SagaLog]:
    """An open saga log on each backend."""
    log = SagaLog.open(store_url)
    yield log
    log.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the whole run."""
    if not redis_available():
        pytest.fail("redis-server is not installed: run scripts/ensure-servers")
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied of the previous test's messages and limits."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url
