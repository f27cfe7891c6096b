"""Fixtures of the dashboard's tests: a store with runs in each state, and tokens."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from sagaledger.store import RunRecord, RunStatus, SagaLog, utc_now
from sagaledger.store._tokens import Role
from sagaledger.testing import ManualClock, SagaHarness
from tests.dashboard import app

#: The operator's token name: also the approver the approval saga names.
OPERATOR = app.APPROVER
AUDITOR = "audrey@finance.example"


@dataclass(frozen=True)
class Runs:
    """One run in each state the dashboard acts on."""

    parked: RunRecord
    waiting: RunRecord
    completed: RunRecord


@dataclass(frozen=True)
class Tokens:
    operator: str
    auditor: str


def prepare_runs(harness: SagaHarness) -> Runs:
    """A run parked compensating (its refund refused, now mended), one at an approval, one done."""
    app.BROKEN.update({"email", "refund"})
    parked = harness.run(app.shop, {"order_id": "O-PARKED"}, key="O-PARKED")
    app.BROKEN.clear()
    waiting = harness.run(app.approved, {"order_id": "O-WAITS"}, key="O-WAITS")
    completed = harness.run(app.shop, {"order_id": "O-DONE"}, key="O-DONE")
    assert (parked.status, parked.step) == (RunStatus.PARKED, "charge"), parked
    assert waiting.awaiting == f"approval:{waiting.id}/manager", waiting
    assert completed.status is RunStatus.COMPLETED
    return Runs(parked, waiting, completed)


def add_tokens(log: SagaLog) -> Tokens:
    _, operator = log.tokens.add(OPERATOR, Role.OPERATOR, by="test", now=utc_now())
    _, auditor = log.tokens.add(AUDITOR, Role.AUDITOR, by="test", now=utc_now())
    return Tokens(operator, auditor)


@pytest.fixture
def harness(store_url: str) -> Iterator[SagaHarness]:
    """The worker, driven by hand, on a fresh store (SQLite, then PostgreSQL)."""
    app.BROKEN.clear()
    harness = SagaHarness(app.registry, store_url=store_url, clock=ManualClock(utc_now()))
    yield harness
    harness.close()
    app.BROKEN.clear()


@pytest.fixture
def runs(harness: SagaHarness) -> Runs:
    return prepare_runs(harness)


@pytest.fixture
def tokens(harness: SagaHarness) -> Tokens:
    return add_tokens(harness.log)
