"""JSON log lines: the run, saga, step, phase and attempt on every line logged within a drive."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from sagaledger import RunStatus
from sagaledger.telemetry import JsonFormatter, current_run
from sagaledger.testing import SagaHarness
from tests.telemetry.app import BACKOFF, COOLING_OFF, registry, trip_saga

RUN_FIELDS = {"run_id", "saga", "version", "step", "phase", "attempt"}


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """What the JSON formatter writes, for the loggers of sagaledger and of the steps."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    loggers = [logging.getLogger(name) for name in ("sagaledger", "tests.trip", "tests.outside")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield out
    for logger in loggers:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


def parsed(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_lines_logged_in_a_drive_name_the_run_and_step_and_others_do_not(
    store_url: str, lines: io.StringIO
) -> None:
    harness = SagaHarness(registry, store_url=store_url)
    try:
        # Given a line logged before any drive
        logging.getLogger("tests.outside").info("before")
        # When a trip is driven through its retry and timer, then parks (its refund fails)
        run = harness.start(trip_saga, {"traveller": "ada", "refuse": True, "stuck_refund": True})
        harness.run_until_idle()
        harness.advance(BACKOFF)
        harness.run_until_idle()
        harness.advance(COOLING_OFF)
        harness.run_until_idle()
        logging.getLogger("tests.outside").info("after")
    finally:
        harness.close()
    assert harness.status(run.id) is RunStatus.PARKED

    found = parsed(lines)
    # Then lines outside a drive carry no run fields
    outside = [line for line in found if line["logger"] == "tests.outside"]
    assert [line["message"] for line in outside] == ["before", "after"]
    assert all(not RUN_FIELDS & line.keys() for line in outside)
    assert {"time", "level", "logger", "message"} <= outside[0].keys()

    # ... and every line logged by a step, or by sagaledger within the drive, names
    # the run and the step, phase and attempt it was at
    inside = [line for line in found if line["logger"] != "tests.outside"]
    assert all(line["run_id"] == run.id and line["saga"] == "trip" for line in inside)
    by_message = [(m["message"], m["step"], m["phase"], m["attempt"]) for m in inside]
    assert by_message[:4] == [
        ("booking a hotel for ada", "book_hotel", "forward", 1),
        ("charging", "charge_card", "forward", 1),
        ("charging", "charge_card", "forward", 2),
        ("confirming", "confirm", "forward", 1),
    ]
    parked = [m for m in inside if m["message"].startswith(f"run {run.id} parked")]
    assert [(m["level"], m["step"], m["phase"]) for m in parked] == [
        ("error", "charge_card", "compensate")
    ]
    # Once the drive is over, nothing is current any more
    assert current_run() is None


def test_a_traceback_is_one_field_of_the_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info()
        )
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "failed"
    assert "ValueError: boom" in line["exception"]
