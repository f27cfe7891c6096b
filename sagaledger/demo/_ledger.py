"""A local stand-in for the remote systems the demo saga talks to.

Real connectors (payments, ERP, email) apply an effect once per idempotency key
and answer a retry with the first result. The ledger does the same with a SQLite
file: ``effects`` holds one row per key (insert-or-ignore, so a retried step can
never apply twice) and ``calls`` holds every call, so a re-execution after a crash
is visible as a second call that applied nothing.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

#: The ledger's file name; it sits next to the saga log's SQLite file.
LEDGER_FILE = "sagaledger-demo-ledger.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS effects (
    key        TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    order_id   TEXT NOT NULL,
    ref        TEXT NOT NULL,
    detail     TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS calls (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id TEXT NOT NULL,
    step     TEXT NOT NULL,
    phase    TEXT NOT NULL,
    key      TEXT NOT NULL,
    attempt  INTEGER NOT NULL,
    outcome  TEXT NOT NULL,
    pid      INTEGER NOT NULL,
    at       TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Effect:
    """One effect the remote side applied (once per idempotency key).

    Attributes:
        key: The idempotency key that applied it.
        kind: ``reservation``, ``charge``, ``erp_order``, ``email``, ``release``,
            ``refund`` or ``erp_cancellation``.
        order_id: The order it belongs to.
        ref: The id the remote side gave it (a charge id, ...).
        detail: What was applied (amounts, the effect undone, ...).
        pid: The process that applied it.
        created_at: When it was applied (UTC).
    """

    key: str
    kind: str
    order_id: str
    ref: str
    detail: dict[str, Any]
    pid: int
    created_at: datetime


@dataclass(frozen=True)
class Call:
    """One call a step made, whether or not it applied anything.

    Attributes:
        order_id: The order it was for.
        step: The saga step that called.
        phase: ``forward`` or ``compensate``.
        key: The idempotency key it passed.
        attempt: The step's attempt number.
        outcome: ``applied``, ``duplicate`` (the key had already applied) or ``rejected``.
        pid: The calling process.
        at: When (UTC).
    """

    order_id: str
    step: str
    phase: str
    key: str
    attempt: int
    outcome: str
    pid: int
    at: datetime


class Ledger:
    """Effects applied once per idempotency key, and every call made, in one SQLite file.

    Each operation opens its own connection: worker threads and processes share
    the file, and SQLite's lock (not Python objects) keeps them apart.

    Args:
        path: The SQLite file; created with its tables on first use.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.executescript(_SCHEMA)
            yield conn
        finally:
            conn.close()

    def apply(
        self,
        *,
        key: str,
        kind: str,
        order_id: str,
        step: str,
        phase: str,
        attempt: int,
        detail: dict[str, Any],
    ) -> Effect:
        """Apply an effect once per ``key`` and record the call; return the effect.

        A second call with the same key applies nothing and returns the first
        effect (same ``ref``), as a remote system honouring idempotency keys would.
        """
        ref = f"{kind[:3]}_{uuid.uuid4().hex[:10]}"
        now, pid = _now(), os.getpid()
        with self._connect() as conn:
            # One write transaction: the call row always says what this call did.
            conn.execute("BEGIN IMMEDIATE")
            inserted = conn.execute(
                "INSERT INTO effects (key, kind, order_id, ref, detail, pid, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                (key, kind, order_id, ref, json.dumps(detail), pid, now),
            ).rowcount
            outcome = "applied" if inserted else "duplicate"
            self._record(conn, order_id, step, phase, key, attempt, outcome, pid, now)
            row = conn.execute("SELECT * FROM effects WHERE key = ?", (key,)).fetchone()
            conn.execute("COMMIT")
        return _effect(row)

    def reject(self, *, key: str, order_id: str, step: str, phase: str, attempt: int) -> None:
        """Record a call that the remote side refused (nothing applied)."""
        with self._connect() as conn:
            self._record(conn, order_id, step, phase, key, attempt, "rejected", os.getpid(), _now())

    @staticmethod
    def _record(
        conn: sqlite3.Connection,
        order_id: str,
        step: str,
        phase: str,
        key: str,
        attempt: int,
        outcome: str,
        pid: int,
        at: str,
    ) -> None:
        conn.execute(
            "INSERT INTO calls (order_id, step, phase, key, attempt, outcome, pid, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (order_id, step, phase, key, attempt, outcome, pid, at),
        )

    def effects(self, order_ids: Sequence[str] | None = None) -> list[Effect]:
        """The effects applied, oldest first, optionally only for ``order_ids``."""
        rows = self._select("effects", "rowid", order_ids)
        return [_effect(row) for row in rows]

    def calls(self, order_ids: Sequence[str] | None = None) -> list[Call]:
        """Every call made, oldest first, optionally only for ``order_ids``."""
        rows = self._select("calls", "id", order_ids)
        return [
            Call(
                order_id=r[1],
                step=r[2],
                phase=r[3],
                key=r[4],
                attempt=r[5],
                outcome=r[6],
                pid=r[7],
                at=datetime.fromisoformat(r[8]),
            )
            for r in rows
        ]

    def _select(self, table: str, order: str, order_ids: Sequence[str] | None) -> list[Any]:
        query = f"SELECT * FROM {table}"
        args: tuple[str, ...] = ()
        if order_ids is not None:
            args = tuple(order_ids)
            query += f" WHERE order_id IN ({', '.join('?' * len(args))})" if args else " WHERE 0"
        with self._connect() as conn:
            return conn.execute(f"{query} ORDER BY {order}", args).fetchall()


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _effect(row: Any) -> Effect:
    return Effect(
        key=row[0],
        kind=row[1],
        order_id=row[2],
        ref=row[3],
        detail=json.loads(row[4]),
        pid=row[5],
        created_at=datetime.fromisoformat(row[6]),
    )


def ledger_for_store(store: str) -> Path:
    """Where the demo ledger lives for the saga log at ``store``.

    Next to the log's file for a SQLite store, so one directory holds a whole
    demo; in the working directory for any other store.
    """
    try:
        url = make_url(store)
    except ArgumentError:
        return Path.cwd() / LEDGER_FILE
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return Path(url.database).resolve().parent / LEDGER_FILE
    return Path.cwd() / LEDGER_FILE
