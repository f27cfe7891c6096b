"""Group commit: concurrent writes share a transaction; one failing write fails alone."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from sagaledger.store._group import GroupCommit


class Recorder:
    """A stand-in transaction (this is a unit test of one module) that records batches.

    The first transaction is held open until ``release`` is set, so that writes
    arriving meanwhile are known to queue behind it.
    """

    def __init__(self) -> None:
        self.committed: list[list[str]] = []
        self.rolled_back: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    @contextmanager
    def transaction(self) -> Iterator[list[str]]:
        batch: list[str] = []
        first = not self.entered.is_set()
        self.entered.set()
        if first:
            assert self.release.wait(10)
        try:
            yield batch
        except BaseException:
            self.rolled_back.append(batch)
            raise
        self.committed.append(batch)


def writer(name: str, fail: bool = False) -> Any:
    def write(batch: list[str]) -> str:
        batch.append(name)
        if fail:
            raise ValueError(f"{name} refused")
        return f"{name} done"

    return write


def run_in_threads(
    group: GroupCommit, recorder: Recorder, writes: dict[str, Any]
) -> dict[str, Any]:
    """The first write holds the transaction; the rest queue; then all are let go."""
    outcomes: dict[str, Any] = {}

    def call(name: str) -> None:
        try:
            outcomes[name] = group.write(writes[name])
        except ValueError as exc:
            outcomes[name] = exc

    names = list(writes)
    first = threading.Thread(target=call, args=(names[0],))
    first.start()
    assert recorder.entered.wait(10)
    others = [threading.Thread(target=call, args=(name,)) for name in names[1:]]
    for thread in others:
        thread.start()
    # Wait until every other writer has queued behind the held transaction.
    while len(group._queue) < len(others):
        threading.Event().wait(0.001)
    recorder.release.set()
    for thread in [first, *others]:
        thread.join(10)
    return outcomes


def test_writes_queued_behind_a_commit_share_the_next_transaction() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.transaction)
    names = ["w0", "w1", "w2", "w3", "w4"]
    outcomes = run_in_threads(group, recorder, {n: writer(n) for n in names})
    assert outcomes == {n: f"{n} done" for n in names}
    assert recorder.committed[0] == ["w0"]
    assert sorted(recorder.committed[1]) == names[1:]  # one transaction for the four
    assert len(recorder.committed) == 2 and recorder.rolled_back == []


def test_a_failing_write_fails_alone_and_the_rest_of_its_batch_commits() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.transaction)
    writes = {"w0": writer("w0"), "w1": writer("w1"), "bad": writer("bad", fail=True)}
    writes["w2"] = writer("w2")
    outcomes = run_in_threads(group, recorder, writes)
    assert isinstance(outcomes["bad"], ValueError) and str(outcomes["bad"]) == "bad refused"
    assert {n: outcomes[n] for n in ("w0", "w1", "w2")} == {
        "w0": "w0 done",
        "w1": "w1 done",
        "w2": "w2 done",
    }
    # The shared batch was rolled back at the bad write, then each write of it
    # ran in a transaction of its own.
    assert recorder.rolled_back[0][-1] == "bad"
    assert sorted(recorder.committed[1:]) == [["w1"], ["w2"]]
    assert recorder.rolled_back[1:] == [["bad"]]


def test_a_lone_write_commits_at_once_and_errors_reach_its_caller() -> None:
    recorder = Recorder()
    recorder.entered.set()  # nothing to hold
    group = GroupCommit(recorder.transaction)
    assert group.write(writer("solo")) == "solo done"
    with pytest.raises(ValueError, match="alone refused"):
        group.write(writer("alone", fail=True))
    assert recorder.committed == [["solo"]] and recorder.rolled_back == [["alone"]]
