"""Real, throwaway PostgreSQL and Redis servers for tests.

Each server gets its own temp directory under ``/tmp``, its own port on
127.0.0.1 and is stopped by PID, so tests never touch (or race) packaged
services on the default ports. Nothing here depends on pytest.

Example:
    with PostgresServer() as pg, RedisServer() as rs:
        db_url = pg.create_database("orders")
        ...
        pg.kill()     # simulate a crash
        pg.start()    # crash recovery on the same port and data dir
"""

from __future__ import annotations

import atexit
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path

import psycopg
import redis
from psycopg import sql

__all__ = ["PostgresServer", "RedisServer", "find_postgres_bindir", "redis_available"]

REDIS_SERVER = Path("/usr/bin/redis-server")
READY_TIMEOUT = 30.0
PG_SUPERUSER = "postgres"

# Servers still running at interpreter exit get stopped, so an aborted test
# run does not leave processes holding ports and temp dirs.
_live: weakref.WeakSet[PostgresServer | RedisServer] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_live):
        server.close()


# --------------------------------------------------------------------------- helpers


def find_postgres_bindir() -> Path | None:
    """Locate the directory holding ``initdb``, ``pg_ctl`` and ``postgres``.

    Debian keeps them off PATH in ``/usr/lib/postgresql/<ver>/bin``; the highest
    version wins. Otherwise falls back to ``pg_config --bindir``.

    Returns:
        The bin directory, or None if no PostgreSQL server install was found.
    """
    candidates = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()]
    if candidates:
        # Numeric sort, so version 10 beats 9.6.
        return max(candidates, key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.name)])
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        bindir = Path(out.stdout.strip())
        if out.returncode == 0 and (bindir / "initdb").exists():
            return bindir
    return None


def redis_available() -> bool:
    """Return True if ``/usr/bin/redis-server`` exists and is executable."""
    return os.access(REDIS_SERVER, os.X_OK)


def _free_port() -> int:
    """Pick a port that is bindable right now on 127.0.0.1.

    Ports are drawn from below Linux's ephemeral range, where outgoing client
    sockets cannot grab them between this check and the server's bind.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(50):
        port = random.randint(15000, max(15001, low - 1))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # crowded machine: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (orphans may never be reaped here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (read from /proc, no psutil needed)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _wait_dead(pids: list[int], timeout: float = 10.0) -> None:
    """Wait for ``pids`` to exit; SIGKILL whatever is still alive at the deadline."""
    deadline = time.monotonic() + timeout
    while any(_pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    for p in pids:
        if _pid_alive(p):
            os.kill(p, signal.SIGKILL)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _make_tmpdir(prefix: str) -> Path:
    # /tmp (not $TMPDIR) so the postgres OS user can always reach it.
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    tmp.chmod(0o755)
    return tmp


# --------------------------------------------------------------------------- PostgreSQL


class PostgresServer:
    """A private PostgreSQL cluster (initdb + pg_ctl) with trust auth on 127.0.0.1.

    Args:
        bindir: PostgreSQL bin directory; defaults to :func:`find_postgres_bindir`.
        dbname: Database that :attr:`url` points at (``postgres`` always exists).
    """

    def __init__(self, bindir: Path | None = None, dbname: str = "postgres") -> None:
        found = bindir or find_postgres_bindir()
        if found is None:
            raise RuntimeError("PostgreSQL not found; run scripts/ensure-servers")
        self.bindir = found
        self.dbname = dbname
        self.port: int | None = None
        self.tmpdir: Path | None = None
        # PostgreSQL refuses to run as root, so root runs it as the postgres user.
        self._as_postgres = os.geteuid() == 0

    # -- paths and URLs

    @property
    def datadir(self) -> Path:
        assert self.tmpdir is not None, "server was never started"
        return self.tmpdir / "data"

    @property
    def logfile(self) -> Path:
        assert self.tmpdir is not None, "server was never started"
        return self.tmpdir / "server.log"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of :attr:`dbname`: ``postgresql+psycopg://postgres@127.0.0.1:P/DB``."""
        return self.url_for(self.dbname)

    def url_for(self, dbname: str) -> str:
        """SQLAlchemy URL of database ``dbname`` on this server."""
        assert self.port is not None, "server was never started"
        return f"postgresql+psycopg://{PG_SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def conninfo(self, dbname: str | None = None) -> str:
        """libpq connection string for ``psycopg.connect`` (defaults to :attr:`dbname`)."""
        return (
            f"host=127.0.0.1 port={self.port} user={PG_SUPERUSER} "
            f"dbname={dbname or self.dbname} connect_timeout=5"
        )

    @property
    def pid(self) -> int | None:
        """Postmaster PID from ``postmaster.pid``, or None if not running."""
        try:
            pid = int((self.datadir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError, AssertionError):
            return None
        return pid if _pid_alive(pid) else None

    # -- lifecycle

    def start(self) -> PostgresServer:
        """Create the cluster on first use, then start it and wait until it accepts queries.

        The first start picks a free port and retries once on a new port if the
        bind fails; later starts (restart, after kill) keep the port so URLs stay valid.

        Returns:
            self, for chaining.

        Raises:
            RuntimeError: initdb or startup failed (message includes the log tail).
        """
        if self.pid is not None:
            return self
        first = self.tmpdir is None
        if first:
            self._initdb()
            self.port = _free_port()
        _live.add(self)
        for attempt in range(2):
            if self._try_start():
                break
            bind_failed = "could not create any TCP/IP sockets" in _tail(self.logfile, 15)
            if not bind_failed or attempt == 1:
                self.kill()
                raise RuntimeError(
                    f"PostgreSQL failed to start on port {self.port}:\n{_tail(self.logfile)}"
                )
            if first:
                self.port = _free_port()
            else:
                time.sleep(0.5)  # same port: give the old socket a moment to go away
        self._wait_ready()
        return self

    def stop(self) -> None:
        """Stop the server at once (``pg_ctl stop -m immediate``), keeping its data dir."""
        pid = self.pid
        if pid is None:
            return
        children = _children(pid)
        res = self._run(
            "pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop", check=False
        )
        if res.returncode != 0:
            os.kill(pid, signal.SIGKILL)
        _wait_dead([pid, *children])
        self._clear_stale_locks()

    def kill(self) -> None:
        """SIGKILL the postmaster, as in a crash; the next :meth:`start` runs crash recovery."""
        pid = self.pid
        if pid is None:
            return
        children = _children(pid)
        os.kill(pid, signal.SIGKILL)
        # Backends exit on postmaster death; wait so the next start finds no
        # process still attached to the old shared memory.
        _wait_dead([pid, *children])
        self._clear_stale_locks()

    def restart(self) -> None:
        """Stop and start again on the same port and data directory."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and delete its temp directory."""
        self.stop()
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None
        _live.discard(self)

    def create_database(self, name: str) -> str:
        """Create an empty database (cheap: a copy of template1) and return its SQLAlchemy URL."""
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / tool), *args]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        # cwd inside tmpdir: postgres cannot stat root's cwd (e.g. /root).
        res = subprocess.run(cmd, cwd=self.tmpdir, capture_output=True, text=True, check=False)
        if check and res.returncode != 0:
            raise RuntimeError(f"{tool} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        return res

    def _clear_stale_locks(self) -> None:
        # The dead postmaster can linger as a zombie until PID 1 reaps it, and
        # kill(pid, 0) on a zombie succeeds, so the next postmaster would take
        # these lock files for a live server and refuse to start.
        assert self.tmpdir is not None
        (self.datadir / "postmaster.pid").unlink(missing_ok=True)
        for lock in (self.tmpdir / "sock").glob(".s.PGSQL.*.lock"):
            lock.unlink(missing_ok=True)

    def _initdb(self) -> None:
        self.tmpdir = _make_tmpdir("pgtest-")
        (self.tmpdir / "sock").mkdir()
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            for path in (self.tmpdir, self.tmpdir / "sock"):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        # -A trust covers both local socket and 127.0.0.1 host lines in pg_hba.conf;
        # --no-sync because a lost test cluster just gets recreated.
        self._run(
            "initdb",
            "-D",
            str(self.datadir),
            "-U",
            PG_SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )

    def _try_start(self) -> bool:
        assert self.tmpdir is not None
        opts = (
            f"-p {self.port} -k {self.tmpdir / 'sock'} -c listen_addresses=127.0.0.1 "
            "-c shared_buffers=32MB -c max_connections=200"
        )
        res = self._run(
            "pg_ctl",
            "-D",
            str(self.datadir),
            "-l",
            str(self.logfile),
            "-o",
            opts,
            "-w",
            "-t",
            str(int(READY_TIMEOUT)),
            "start",
            check=False,
        )
        return res.returncode == 0

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                with psycopg.connect(self.conninfo("postgres")) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"PostgreSQL on port {self.port} not ready after "
                        f"{READY_TIMEOUT}s: {exc}\n{_tail(self.logfile)}"
                    ) from exc
                time.sleep(0.05)


# --------------------------------------------------------------------------- Redis


class RedisServer:
    """A private ``redis-server`` on 127.0.0.1 with no RDB snapshots.

    Args:
        appendonly: Enable the AOF (``appendfsync everysec``) so data survives
            :meth:`restart` without ``wipe_data``. Without it, every restart loses data.
    """

    def __init__(self, appendonly: bool = False) -> None:
        if not redis_available():
            raise RuntimeError(f"{REDIS_SERVER} not found; run scripts/ensure-servers")
        self.appendonly = appendonly
        self.port: int | None = None
        self.tmpdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Redis URL of database 0, e.g. ``redis://127.0.0.1:P/0``."""
        assert self.port is not None, "server was never started"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """PID of the running redis-server, or None."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def logfile(self) -> Path:
        assert self.tmpdir is not None, "server was never started"
        return self.tmpdir / "redis.log"

    def start(self) -> RedisServer:
        """Start redis-server and wait for PING.

        The first start retries once on a new port if the bind fails; later
        starts keep the port so URLs stay valid.

        Returns:
            self, for chaining.

        Raises:
            RuntimeError: the server exited or did not answer within 30 s.
        """
        if self.pid is not None:
            return self
        first = self.tmpdir is None
        if first:
            self.tmpdir = _make_tmpdir("redistest-")
            self.port = _free_port()
        _live.add(self)
        for attempt in range(2):
            err = self._try_start()
            if err is None:
                return self
            if "Address already in use" not in err or attempt == 1:
                raise RuntimeError(err)
            if first:
                self.port = _free_port()
            else:
                time.sleep(0.5)
        return self  # unreachable; keeps type checkers happy

    def stop(self) -> None:
        """SIGTERM the server and wait for it (the AOF, if on, is flushed on the way out)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL the server, as in a crash (up to ~1 s of AOF writes may be lost)."""
        if self._proc is None:
            return
        self._proc.kill()
        self._proc.wait()
        self._proc = None

    def restart(self, wipe_data: bool = False) -> None:
        """Stop and start again on the same port.

        Args:
            wipe_data: Delete the data directory's contents first (a fresh, empty server).
        """
        self.stop()
        if wipe_data and self.tmpdir is not None:
            for child in self.tmpdir.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)  # Redis 7 keeps the AOF in appendonlydir/
                elif child != self.logfile:
                    child.unlink()
        self.start()

    def close(self) -> None:
        """Stop the server and delete its temp directory."""
        self.stop()
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None
        _live.discard(self)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _try_start(self) -> str | None:
        """Launch and wait for PING; return None on success, else an error message."""
        assert self.tmpdir is not None and self.port is not None
        cmd = [
            str(REDIS_SERVER),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(self.tmpdir),
        ]
        if self.appendonly:
            cmd += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            cmd += ["--appendonly", "no"]
        with open(self.logfile, "ab") as log:
            self._proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        client = redis.Redis(
            host="127.0.0.1", port=self.port, socket_connect_timeout=1, socket_timeout=1
        )
        deadline = time.monotonic() + READY_TIMEOUT
        try:
            while True:
                if self._proc.poll() is not None:
                    self._proc = None
                    return f"redis-server exited on port {self.port}:\n{_tail(self.logfile)}"
                try:
                    if client.ping():
                        return None
                # TimeoutError: something else may hold the port and never answer.
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    return (
                        f"redis-server on port {self.port} not ready after "
                        f"{READY_TIMEOUT}s:\n{_tail(self.logfile)}"
                    )
                time.sleep(0.02)
        finally:
            client.close()
