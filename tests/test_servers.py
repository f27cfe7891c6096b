"""Smoke tests for tests/servers.py: real PostgreSQL and Redis processes, no mocks.

Missing binaries FAIL (never skip) so CI cannot go green without exercising them.
"""

from __future__ import annotations

import psycopg
import pytest
import redis

try:  # rootdir on sys.path (python -m pytest, pythonpath=["."], or tests/__init__.py)
    from tests.servers import (
        PostgresServer,
        RedisServer,
        _pid_alive,
        find_postgres_bindir,
        redis_available,
    )
except ModuleNotFoundError:  # plain `pytest` with no tests/__init__.py puts tests/ on sys.path
    from servers import (  # type: ignore[no-redef,import-not-found,unused-ignore]
        PostgresServer,
        RedisServer,
        _pid_alive,
        find_postgres_bindir,
        redis_available,
    )

HINT = "run `bash scripts/ensure-servers` (as root) to install redis-server and postgresql"


def _query(url: str, q: str) -> list[tuple[object, ...]]:
    # The SQLAlchemy URL minus the driver suffix is a valid libpq URL.
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        cur = conn.execute(q)
        return cur.fetchall() if cur.description else []


def test_postgres_start_restart_crash_stop() -> None:
    if find_postgres_bindir() is None:
        pytest.fail(f"PostgreSQL (initdb) not found: {HINT}")
    with PostgresServer() as pg:
        url = pg.create_database("smoke")
        assert url == f"postgresql+psycopg://postgres@127.0.0.1:{pg.port}/smoke"
        assert _query(url, "select 1") == [(1,)]
        _query(url, "create table t (x int); insert into t values (42)")

        pg.restart()
        assert _query(url, "select x from t") == [(42,)]

        pg.kill()  # crash: committed rows must survive recovery
        assert pg.pid is None
        pg.start()
        assert _query(url, "select x from t") == [(42,)]

        pid = pg.pid
        assert pid is not None
        pg.stop()
        assert not _pid_alive(pid)
        with pytest.raises(psycopg.OperationalError):
            _query(url, "select 1")


def test_redis_set_get_restart_wipe_stop() -> None:
    if not redis_available():
        pytest.fail(f"/usr/bin/redis-server not found: {HINT}")
    with RedisServer(appendonly=True) as rs:
        assert rs.url == f"redis://127.0.0.1:{rs.port}/0"
        client = redis.Redis.from_url(rs.url)
        client.set("k", "v")
        assert client.get("k") == b"v"

        rs.restart(wipe_data=False)  # AOF keeps it
        assert client.get("k") == b"v"

        rs.restart(wipe_data=True)
        assert client.get("k") is None

        client.set("k", "v2")
        rs.kill()
        rs.start()
        client.ping()  # same port after a crash

        pid = rs.pid
        assert pid is not None
        rs.stop()
        assert not _pid_alive(pid)
        client.close()
