"""Fixtures of the orchestrator's tests: the ledger app's order saga in a harness."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from sagaledger import Registry
from sagaledger.testing import SagaHarness
from tests.ledger_app import order_saga


@pytest.fixture
def ledger(tmp_path: Path) -> str:
    """The ledger file the order saga's steps record their calls in."""
    return str(tmp_path / "ledger.db")


@pytest.fixture
def harness(store_url: str) -> Iterator[SagaHarness]:
    """The order saga in a harness, on each backend, with a 5 s lease."""
    h = SagaHarness(Registry([order_saga]), store_url=store_url, lease=timedelta(seconds=5))
    yield h
    h.close()
