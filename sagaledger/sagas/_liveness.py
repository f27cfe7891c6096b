"""Telling that a worker process on this host has died, without waiting out its leases.

A lease expires a lease-length after its holder's last renewal, which is how a
worker anywhere learns that another has stopped. On one host there is a faster
and equally safe test: a process id that no longer names a running process
belongs to a worker that is gone. The test is only made between workers that see
the same process ids: same host, same boot, same PID namespace (containers
sharing a host name but not their processes get different keys).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def host_key() -> str:
    """Names the host, boot and PID namespace this process runs in."""
    parts = [socket.gethostname()]
    for source in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(os.readlink(source) if source.endswith("/pid") else _read(source))
        except OSError:
            parts.append("?")  # no /proc: host name alone (a restart reuses no pid soon)
    return "/".join(parts)


def is_running(pid: int) -> bool:
    """True unless no live process has this id (a zombie counts as dead).

    Errs towards "running": a pid reused by another process only delays the
    release until the lease expires, which is what happens without this test.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    try:
        # "pid (name) S ...": the state follows the last parenthesis.
        stat = _read(f"/proc/{pid}/stat")
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _read(path: str) -> str:
    return Path(path).read_text().strip()
