"""``sagaledger audit``: the compensation ledger, and the log's hash chains and anchors.

``cli`` registers :data:`audit` on the root group, which turns sagaledger's
errors into one ``error: ...`` line.
"""

from __future__ import annotations

import csv
import json
import sys
from datetime import UTC, date, datetime, time, timedelta
from typing import IO

import click

from sagaledger._cli_common import (
    CLIError,
    json_option,
    load_settings,
    login_name,
    open_log,
    resolve_run,
    store_option,
)
from sagaledger.audit import Ledger, compensation_ledger, seal_period, verify_log
from sagaledger.store._records import parse_moment, utc_now


@click.group()
def audit() -> None:
    """The compensation ledger; check that nobody edited the log; seal days of it."""


def _moment(value: str | None, option: str) -> datetime | None:
    try:
        return parse_moment(value, option)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


@audit.command()
@click.option("--run", "run_ids", multiple=True, metavar="RUN", help="Only this run (repeat).")
@click.option("--from", "since", metavar="DATE", help="Only runs started from then (UTC).")
@click.option("--to", "until", metavar="DATE", help="Only runs started before then (UTC).")
@json_option
@store_option
def verify(
    run_ids: tuple[str, ...],
    since: str | None,
    until: str | None,
    as_json: bool,
    store: str | None,
) -> None:
    """Recompute every run's hash chain, and every sealed day's anchor.

    Names each event row found edited, deleted or reordered, and each sealed
    day whose events changed, and exits with status 1; exits 0 when the log
    is as it was written. See docs/audit.md for what this proves.
    """
    settings = load_settings(store=store)
    with open_log(settings.store) as log:
        ids = [resolve_run(log, r).id for r in run_ids] or None
        result = verify_log(
            log, run_ids=ids, since=_moment(since, "--from"), until=_moment(until, "--to")
        )
    if as_json:
        report = {
            "intact": result.intact,
            "runs": result.runs,
            "events": result.events,
            "anchors": result.anchors,
            "problems": [p.__dict__ for p in result.problems],
        }
        click.echo(json.dumps(report, indent=2))
    else:
        for problem in result.problems:
            click.echo(f"{problem.kind}: {problem.message}")
        verdict = "intact" if result.intact else f"{len(result.problems)} problems"
        click.echo(
            f"verified {result.runs} runs, {result.events} events and {result.anchors} "
            f"sealed days: {verdict}"
        )
    if not result.intact:
        raise SystemExit(1)


@audit.command()
@click.option("--day", metavar="YYYY-MM-DD", help="The UTC day to seal [default: yesterday].")
@click.option("--as", "by", default=login_name, show_default="your login name", help="Who seals.")
@store_option
def seal(day: str | None, by: str, store: str | None) -> None:
    """Seal a UTC day: one digest over every event written that day, kept in the log.

    Print the digest and keep it where the database's users cannot change it:
    `audit verify` then shows a day whose events were changed after sealing,
    even if whole runs were rewritten or deleted.
    """
    now = utc_now()
    try:
        sealed = date.fromisoformat(day) if day else (now - timedelta(days=1)).date()
    except ValueError:
        raise CLIError(f"--day {day!r} is not a date (YYYY-MM-DD)") from None
    start = datetime.combine(sealed, time(), tzinfo=UTC)
    settings = load_settings(store=store)
    with open_log(settings.store) as log:
        anchor = seal_period(log, start, start + timedelta(days=1), by=by, now=now)
    click.echo(f"sealed {sealed.isoformat()}: {anchor.events} events, digest {anchor.digest}")


def _period(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    return _moment(since, "--from"), _moment(until, "--to")


def _ledger(store: str | None, since: str | None, until: str | None) -> Ledger:
    start, end = _period(since, until)
    settings = load_settings(store=store)
    with open_log(settings.store) as log:
        return compensation_ledger(log, start, end)


@audit.command()
@click.option("--from", "since", metavar="DATE", help="Runs started from then (UTC).")
@click.option("--to", "until", metavar="DATE", help="Runs started before then (UTC).")
@click.option(
    "--format", "form", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True
)
@click.option("--output", type=click.File("w"), default="-", help="A file [default: stdout].")
@store_option
def export(
    since: str | None, until: str | None, form: str, output: IO[str], store: str | None
) -> None:
    """Export the compensation ledger: one row per effect a run had elsewhere.

    Each row is a charge, a reservation, an order (system, operation, reference,
    amount, currency, idempotency key, time) with what undid it and its status:
    kept, undone, partly undone, outstanding, not compensatable, stranded, in
    progress. See docs/audit.md.
    """
    rows = [entry.row() for entry in _ledger(store, since, until).entries]
    if form == "jsonl":
        for row in rows:
            output.write(json.dumps(row) + "\n")
        return
    writer = csv.DictWriter(output, fieldnames=_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


#: The export's columns, in order.
_COLUMNS = [
    "run_id", "saga", "version", "business_key", "step", "system", "operation", "reference",
    "amount", "currency", "unit", "idempotency_key", "at", "status", "reason", "undone_by",
    "undone_amount", "undone_at",
]  # fmt: skip


@audit.command()
@click.option("--from", "since", metavar="DATE", help="Runs started from then (UTC).")
@click.option("--to", "until", metavar="DATE", help="Runs started before then (UTC).")
@json_option
@store_option
def balance(since: str | None, until: str | None, as_json: bool, store: str | None) -> None:
    """Whether the period balances: totals per system and operation, and the runs that do not.

    Exits 1 when some run does not balance (an effect outstanding, stranded or
    partly undone), naming each and what is left open.
    """
    ledger = _ledger(store, since, until)
    if as_json:
        report = {
            "runs": len(ledger.runs),
            "effects": len(ledger.entries),
            "totals": [
                {"system": s, "operation": o, "measure": m, "total": str(v)}
                for (s, o, m), v in ledger.totals().items()
            ],
            "unbalanced": [
                {
                    "run_id": r.run_id,
                    "saga": r.saga,
                    "business_key": r.business_key,
                    "status": r.status,
                    "open": {k: str(v) for k, v in r.open.items()},
                    "why": r.why,
                }
                for r in ledger.unbalanced
            ],
        }
        click.echo(json.dumps(report, indent=2))
    else:
        _print_balance(ledger, sys.stdout)
    if ledger.unbalanced:
        raise SystemExit(1)


def _print_balance(ledger: Ledger, out: IO[str]) -> None:
    for (system, operation, measure), total in ledger.totals().items():
        out.write(f"{system:<12} {operation:<20} {total:>14} {measure}\n")
    for run in ledger.unbalanced:
        left = ", ".join(f"{v} {k}" for k, v in run.open.items()) or "nothing netted"
        out.write(f"unbalanced: run {run.run_id} ({run.saga} {run.business_key}, {run.status}): ")
        out.write(f"{left} open; {run.why}\n")
    out.write(
        f"{len(ledger.runs)} runs with effects, {len(ledger.entries)} effects: "
        f"{len(ledger.unbalanced)} unbalanced\n"
    )
