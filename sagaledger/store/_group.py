"""Group commit: concurrent writes to a SQLite log share one transaction.

SQLite has one write lock per database, and a durable commit holds it through
an fsync. When every checkpoint of every run takes the lock and fsyncs on its
own, the disk, not the engine, caps how many steps a worker completes per
second. Here a thread that finds the lock's queue busy leaves its write in the
queue and waits; whoever commits next takes every queued write into its
transaction. Each writer still returns only after the commit that made its
write durable, so "checkpoint before moving on" holds for every one of them.

A write that fails (a business key already used, say) must not fail the others
it shared a transaction with: the batch is rolled back and each of its writes
is retried in a transaction of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

T = TypeVar("T")
Write = Callable[[Any], T]


class _Pending(Generic[T]):
    """One thread's write, waiting for the transaction that will carry it."""

    def __init__(self, write: Write[T], done: threading.Event | None):
        self.write = write
        self.done = done  # None for a writer that commits its own batch: it never waits
        self.lead = False  # woken to commit the next batch, not because it is done
        self.result: T | None = None
        self.error: BaseException | None = None


class GroupCommit:
    """Runs writes in shared transactions, one batch at a time.

    Args:
        transaction: Opens a writing transaction and yields its cursor;
            commits when the block ends, rolls back if it raises.
    """

    def __init__(self, transaction: Callable[[], AbstractContextManager[Any]]):
        self._transaction = transaction
        self._lock = threading.Lock()
        self._queue: list[_Pending[Any]] = []
        self._busy = False  # a batch is being committed
        self._waits = threading.local()  # each thread's Event, reused: it waits on one at a time

    def write(self, write: Write[T]) -> T:
        """Run ``write(cursor)`` in a committed transaction; return what it returned.

        Raises:
            Whatever ``write`` raised, or the commit's error.
        """
        with self._lock:
            lead = not self._busy
            pending: _Pending[T] = _Pending(write, None if lead else self._wait_event())
            self._queue.append(pending)
            self._busy = True
        if pending.done is not None:
            pending.done.wait()
            # Woken either done, or to commit the next batch (its own write in it).
            lead = pending.lead
        if lead:
            self._commit_next()
        if pending.error is not None:
            raise pending.error
        return pending.result  # type: ignore[return-value]  # set by the commit

    def _commit_next(self) -> None:
        """Commit everything queued, then hand over to a writer that queued since."""
        with self._lock:
            batch, self._queue = self._queue, []
        self._run(batch)
        with self._lock:
            if self._queue:
                heir = self._queue[0]
                heir.lead = True
                assert heir.done is not None  # queued while busy, so it waits
                heir.done.set()
            else:
                self._busy = False
        for pending in batch:
            if pending.done is not None:
                pending.done.set()

    def _wait_event(self) -> threading.Event:
        """This thread's Event, cleared (creating one costs more than a small write)."""
        event: threading.Event | None = getattr(self._waits, "event", None)
        if event is None:
            event = self._waits.event = threading.Event()
        event.clear()
        return event

    def _run(self, batch: list[_Pending[Any]]) -> None:
        try:
            with self._transaction() as cursor:
                results = [pending.write(cursor) for pending in batch]
        except BaseException as exc:
            if len(batch) == 1:
                batch[0].error = exc
                return
            for pending in batch:  # find the one at fault; the others still commit
                self._run([pending])
            return
        for pending, result in zip(batch, results, strict=True):
            pending.result = result
