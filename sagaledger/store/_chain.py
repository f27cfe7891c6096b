"""The hash chain of each run's events: what makes an edited, deleted or reordered row show.

Every event row carries ``hash = sha256(previous hash + digest of this row)``,
the previous hash being that of the run's event before it, or, for its first
event, a value derived from the run's id. The run row keeps the last one
(``last_hash``), so that the next write can extend the chain in the same
statement that appends to it. The digest covers everything an event says
(type, step, phase, attempt, payload, error, actor, fencing token, time); the
order and the run are covered by the chain itself.

JSON is digested in a form that reads the same whichever way the database
stored it: keys sorted, and a number Python writes with a positive exponent
written as the integer it is (Postgres keeps ``1e+20`` as
``100000000000000000000``, which reads back as an int).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any


def genesis(run_id: str) -> str:
    """The hash the chain of run ``run_id`` starts from."""
    return hashlib.sha256(f"sagaledger run {run_id}".encode()).hexdigest()


def link(previous: str, digest: str) -> str:
    """The hash of an event whose digest is ``digest``, after the event hashed ``previous``."""
    return hashlib.sha256((previous + digest).encode()).hexdigest()


def digest(row: dict[str, Any]) -> str:
    """The digest of an event row's content (a dict with the events table's columns)."""
    created: datetime = row["created_at"]
    content = [
        row["type"],
        row["step"],
        row["phase"],
        row["attempt"],
        row["payload"],
        row["error"],
        row["actor"],
        row["token"],
        (created if created.tzinfo is UTC else created.astimezone(UTC)).isoformat(),
    ]
    text = _ENCODER.encode(content)
    if "e+" in text:  # rare: only floats of 1e16 and more are written so
        text = _EXPONENT.sub(_as_integer, text)
    return hashlib.sha256(text.encode()).hexdigest()


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"))

#: A number written with a positive exponent (``1e+20``, ``-1.5e+16``).
_EXPONENT = re.compile(r"-?\d+(?:\.\d+)?e\+\d+")


def _as_integer(number: re.Match[str]) -> str:
    # Such a float has no fraction; Postgres gives it back as the integer it is.
    return str(int(Decimal(number.group())))


def chain(previous: str, rows: Sequence[dict[str, Any]]) -> list[str]:
    """The hashes of ``rows``, in order, after an event that hashed ``previous``."""
    return links(previous, [digest(row) for row in rows])


def links(previous: str, digests: Sequence[str]) -> list[str]:
    """The hashes of events with ``digests``, in order, after one that hashed ``previous``."""
    hashes = []
    for value in digests:
        previous = link(previous, value)
        hashes.append(previous)
    return hashes
