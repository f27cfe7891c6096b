"""``sagaledger audit``: verify the log's hash chains and seal days with anchors.

``cli`` registers :data:`audit` on the root group, which turns sagaledger's
errors into one ``error: ...`` line.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta

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
from sagaledger.audit import seal_period, verify_log
from sagaledger.store import utc_now


@click.group()
def audit() -> None:
    """Check that nobody edited the saga log, and seal days of it for safekeeping."""


def _moment(value: str | None, option: str) -> datetime | None:
    """A date (midnight UTC) or an ISO time (UTC unless it says otherwise)."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise CLIError(f"{option} {value!r} is not a date (YYYY-MM-DD) or an ISO time") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


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
