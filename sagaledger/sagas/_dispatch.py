"""Dispatch requests: "drive this run", routed by the run's saga version."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class Dispatch:
    """A request to drive a run: where it goes depends on its saga and version."""

    run_id: str
    saga: str
    version: int
    delay: timedelta | None = None


#: Sends a :class:`Dispatch` to some worker that has the run's saga version.
Dispatcher = Callable[[Dispatch], None]


def queue_for(base: str, saga: str, version: int) -> str:
    """The queue of one saga version: only workers that have it consume it."""
    return f"{base}.{saga}.v{version}"
