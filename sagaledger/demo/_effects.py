"""The simulators' ledgers as the demo shows them: tables in time order, and a JSON file.

The file lets tests (and curious people) check after the fact what the remote
systems did, since the simulators stop with the demo.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from sagaledger import _render
from sagaledger.connectors.simulators import Effect, Timeline
from sagaledger.store import RunRecord

#: The file the demo writes the ledgers to, next to the saga log's SQLite file.
LEDGERS_FILE = "sagaledger-demo-ledgers.json"
#: Operations that undo an earlier effect, shown in the compensations' colour.
UNDOING = frozenset({"refund", "release", "order_cancelled", "cancel"})

Ledgers = Mapping[str, Sequence[Effect]]


def ledgers_path(store: str) -> Path:
    """Where the demo writes the ledgers for the saga log at ``store``.

    Next to the log's file for a SQLite store, so one directory holds a whole
    demo; in the working directory for any other store.
    """
    try:
        url = make_url(store)
    except ArgumentError:
        return Path.cwd() / LEDGERS_FILE
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return Path(url.database).resolve().parent / LEDGERS_FILE
    return Path.cwd() / LEDGERS_FILE


def write_ledgers(path: Path, ledgers: Ledgers) -> None:
    """Write every simulator's effects as JSON: ``{"payments": [effect, ...], ...}``."""
    data = {system: [asdict(e) for e in effects] for system, effects in ledgers.items()}
    path.write_text(json.dumps(data, indent=2) + "\n")


def amount(effect: Effect) -> str:
    """An effect's amount for people: money with its currency, stock as quantity x item."""
    if effect.amount is None:
        return "-"
    if effect.currency is None:
        return f"{effect.amount} x {effect.detail.get('item', '?')}"
    return money_of(effect)


def money(minor: int, currency: str) -> str:
    """Minor units as ``42.00 USD``."""
    return f"{minor / 100:.2f} {currency.upper()}"


def money_of(effect: Effect) -> str:
    """The money an effect moved, as ``42.00 USD``."""
    return money(effect.amount or 0, effect.currency or "")


def short_key(key: str | None) -> str:
    """A key with its run id cut to the prefix people see elsewhere."""
    run, _, rest = (key or "").partition(":")
    return f"{run[: _render.SHORT_ID]}…:{rest}" if rest else str(key)


def ledgers_view(timeline: Timeline, runs: Sequence[RunRecord]) -> RenderableType:
    """Every simulator's effects, one table per run, each in the order they happened."""
    tables = []
    for run in runs:
        table = Table(
            title=f"run {run.id[: _render.SHORT_ID]}: {run.business_key}",
            title_justify="left",
            box=None,
        )
        for name in ("system", "operation", "ref", "amount"):
            table.add_column(name, overflow="fold")
        for entry in timeline.of_run(run.id):
            e = entry.effect
            style = "magenta" if e.operation in UNDOING else "green"
            table.add_row(entry.system, Text(e.operation, style=style), e.ref, amount(e))
        tables.append(table)
    return Group(Text("The simulators' ledgers: every effect applied", style="bold"), *tables)
