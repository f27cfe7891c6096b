"""The commands for runs that wait for people or for the world: approve, reject, signal, approvals.

They write to the log only: the decision or event is kept there at once, and a
worker (now, or when one starts) carries on with the runs that waited for it.
``cli`` registers :data:`COMMANDS` on the root group, which turns sagaledger's
errors (a run not waiting, a person not allowed, an unknown event) into one
``error: ...`` line.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import IO, Any

import click

from sagaledger import _render
from sagaledger._cli_common import (
    CLIError,
    console,
    json_option,
    load_app,
    load_settings,
    login_name,
    open_log,
    resolve_run,
    store_option,
)
from sagaledger._redact import Redactor
from sagaledger.sagas import Decision, Orchestrator, Registry
from sagaledger.store import utc_now


def _decider(command: Any) -> Any:
    """The ``--as`` option of approve and reject."""
    return click.option(
        "--as",
        "by",
        metavar="WHO",
        default=login_name,
        show_default="your login name",
        help="Who decides, as the log records it: one of those the approval names.",
    )(command)


@click.command(short_help="Approve the approval a run waits for: the run goes on.")
@click.argument("run_id", metavar="RUN")
@click.option("--reason", default="", help="Why; kept in the run's log with the decision.")
@_decider
@store_option
def approve(run_id: str, reason: str, by: str, store: str | None) -> None:
    """Approve the approval RUN (its id or a unique prefix) waits for.

    Only someone the approval names may decide (`sagaledger approvals` lists
    who), and only before its deadline. The decision is kept in the log at once;
    a worker applies it and the run goes on to its next step (with no worker
    running, the decision waits for one). The log records it as approval_decided,
    with --as as the actor, the reason and what the approvers were shown.
    """
    run, step = _decide(run_id, Decision.APPROVE, by, reason, store)
    click.echo(f"run {run}: approval {step!r} approved by {by}; a worker applies it")


@click.command(short_help="Reject the approval a run waits for: the run is compensated.")
@click.argument("run_id", metavar="RUN")
@click.option("--reason", required=True, help="Why; kept in the run's log with the decision.")
@_decider
@store_option
def reject(run_id: str, reason: str, by: str, store: str | None) -> None:
    """Reject the approval RUN (its id or a unique prefix) waits for.

    Only someone the approval names may decide, and only before its deadline.
    The decision is kept in the log at once; a worker applies it (when one
    runs): the step fails for good and the run's completed steps are
    compensated, last first.
    """
    run, step = _decide(run_id, Decision.REJECT, by, reason, store)
    click.echo(
        f"run {run}: approval {step!r} rejected by {by}; a worker compensates its completed steps"
    )


def _decide(
    run_id: str, decision: Decision, by: str, reason: str, store: str | None
) -> tuple[str, str]:
    """Decide the approval the run waits for; return the run's id and the approval's step."""
    settings = load_settings(store=store)
    with open_log(settings.store) as log:
        run = resolve_run(log, run_id)
        orchestrator = Orchestrator(log, Registry([]))
        try:
            if decision is Decision.APPROVE:
                request = orchestrator.approve(run.id, by=by, reason=reason)
            else:
                request = orchestrator.reject(run.id, by=by, reason=reason)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
    return run.id, request.step or run.step


@click.command(short_help="Deliver an external event to the runs that wait for it.")
@click.argument("event")
@click.argument("key")
@click.option("--data", metavar="JSON", help="The event's payload, as JSON.")
@click.option(
    "--data-file",
    type=click.File("r"),
    metavar="PATH",
    help="Read the payload's JSON from this file ('-': standard input).",
)
@click.option(
    "--as",
    "by",
    metavar="WHO",
    default=lambda: f"cli:{login_name()}",
    show_default="cli:your login name",
    help="Who sends it, as the log records it.",
)
@click.option(
    "--app",
    metavar="MODULE:ATTR",
    help="Sagas whose events count as known too (else only those of workers seen in a day).",
)
@store_option
def signal(
    event: str,
    key: str,
    data: str | None,
    data_file: IO[str] | None,
    by: str,
    app: str | None,
    store: str | None,
) -> None:
    """Deliver the event EVENT (payment.settled) with the correlation KEY (an order number).

    Every run waiting for EVENT with KEY is woken, and a worker hands it the
    payload. The event is kept: a run that gets to its wait later takes it
    then. The same EVENT and KEY count once: a second delivery (a retried
    webhook) is ignored, and this command says so.

    EVENT must be one that some saga waits for: a saga of --app, or one that a
    worker seen in the last day runs.
    """
    payload = _payload(data, data_file)
    registry = load_app(app) if app else Registry([])
    settings = load_settings(store=store)
    with open_log(settings.store) as log:
        try:
            receipt = Orchestrator(log, registry).signal(event, key, payload, by=by)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
    what = f"event {event!r} key {key!r}"
    if not receipt.new:
        when = _render.stamp(receipt.received_at)
        click.echo(
            f"{what} was already delivered at {when} by {receipt.sender}; this one is ignored"
        )
    elif receipt.woken:
        runs = "run" if len(receipt.woken) == 1 else "runs"
        woken = ", ".join(receipt.woken)
        click.echo(f"{what} delivered; woke {len(receipt.woken)} {runs}: {woken}")
    else:
        click.echo(f"{what} delivered; no run waits for it yet: it is kept for the run that will")


def _payload(data: str | None, data_file: IO[str] | None) -> Any:
    """The event's payload from --data or --data-file (None without either).

    Raises:
        click.UsageError: both were given.
        CLIError: the text is not JSON.
    """
    if data is not None and data_file is not None:
        raise click.UsageError("give --data or --data-file, not both")
    if data_file is not None:
        text, where = data_file.read(), f"--data-file {data_file.name}"
    elif data is not None:
        text, where = data, "--data"
    else:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError(f"{where} is not JSON: {exc}") from None


@click.command(short_help="List the approvals runs wait for: who may decide, by when.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=100, show_default=True, help="At most this many."
)
@json_option
@store_option
def approvals(limit: int, as_json: bool, store: str | None) -> None:
    """List the approvals runs wait for now, newest runs first.

    Each shows the run, its saga and approval step, the escalation level, who
    may decide (names, or patterns such as *@finance.example), the deadline and
    what the approvers are shown. Decide with `sagaledger approve RUN` or
    `sagaledger reject RUN --reason TEXT`.
    """
    settings = load_settings(store=store)
    hide = Redactor.from_setting(settings.redact)
    with open_log(settings.store) as log:
        pending = [
            replace(p, shown=hide(p.shown))
            for p in Orchestrator(log, Registry([])).pending_approvals(limit)
        ]
    if as_json:
        click.echo(_render.dumps([_render.approval_json(p) for p in pending]))
    elif not pending:
        console.print("no approvals pending", style="dim")
    else:
        console.print(_render.approvals_table(pending, utc_now()))


#: The commands this module adds to the root group.
COMMANDS = (approve, reject, signal, approvals)
