"""The servers behind ``compare.py``'s Postgres and Redis runs, and the Postgres floor.

One throwaway PostgreSQL cluster and one throwaway Redis (``tests.servers``:
their own ports and temp directories, stopped by PID) serve the whole
comparison; each workload run gets a database of its own, dropped afterwards,
and an emptied Redis.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import TracebackType

import psycopg
import redis
from _workloads import pct
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.servers
from tests.servers import PostgresServer, RedisServer

#: The floor's database, created once beside the runs' databases.
FLOOR_DB = "floor"


class Servers:
    """Starts the servers a comparison needs, and hands out fresh databases.

    Args:
        postgres: Start PostgreSQL.
        redis: Start Redis.
    """

    def __init__(self, *, postgres: bool, redis: bool):
        self.postgres = PostgresServer() if postgres else None
        self.redis = RedisServer() if redis else None
        self._databases = 0

    def __enter__(self) -> Servers:
        try:
            if self.postgres is not None:
                self.postgres.start()
            if self.redis is not None:
                self.redis.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop both servers and delete their files."""
        for server in (self.postgres, self.redis):
            if server is not None:
                server.close()

    @property
    def redis_url(self) -> str:
        assert self.redis is not None, "Redis was not asked for"
        return self.redis.url

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        assert self.postgres is not None, "Postgres was not asked for"
        return psycopg.connect(self.postgres.conninfo("postgres"), autocommit=True)

    def fresh_database(self) -> str:
        """Create an empty database; return its ``postgresql://`` URL (for both engines)."""
        assert self.postgres is not None and self.postgres.port is not None
        self._databases += 1
        name = f"bench_{self._databases}"
        with self._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return f"postgresql://postgres@127.0.0.1:{self.postgres.port}/{name}"

    def drop_database(self, url: str) -> None:
        """Drop a database made by :meth:`fresh_database` (closing what is still connected)."""
        name = url.rsplit("/", 1)[1]
        with self._admin() as conn:
            statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(statement.format(sql.Identifier(name)))

    def flush_redis(self) -> None:
        """Empty Redis, so that no run sees another's messages or worker heartbeats."""
        client = redis.Redis.from_url(self.redis_url)
        try:
            client.flushall()
        finally:
            client.close()

    def postgres_floor_ms(self, samples: int = 200) -> float:
        """p50 of one committed single-row insert (100 bytes) in Postgres, through psycopg.

        A plain connection over loopback TCP to the same server the runs use,
        default durability (``fsync``, ``synchronous_commit=on``): the physical
        cost of one durable checkpoint there.
        """
        assert self.postgres is not None
        with self._admin() as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (FLOOR_DB,))
            if exists.fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(FLOOR_DB)))
        with psycopg.connect(self.postgres.conninfo(FLOOR_DB)) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS t (id bigserial PRIMARY KEY, body text)")
            conn.commit()
            timings = []
            for _ in range(samples):
                t0 = time.perf_counter()
                conn.execute("INSERT INTO t (body) VALUES (%s)", ("x" * 100,))
                conn.commit()
                timings.append((time.perf_counter() - t0) * 1000)
        return pct(timings, 50)
