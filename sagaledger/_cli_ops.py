"""Operators' commands: retry-compensation, resume, force-compensate, resolve, check-deploy.

The four actions write to the log only, each as an ``operator_action`` event
with ``--as`` as its actor and ``--reason``: a worker (now, or when one starts)
carries out what must run again. ``check-deploy`` reads the log and a deploy's
sagas and exits 1 when that deploy would strand unfinished runs. ``cli``
registers :data:`COMMANDS` on the root group, which turns refusals into one
``error: ...`` line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from sagaledger import _render
from sagaledger._cli_common import (
    CLIError,
    json_option,
    load_app,
    load_settings,
    login_name,
    open_log,
    resolve_run,
    store_option,
)
from sagaledger.sagas import DeployCheck, OperatorReceipt, Orchestrator, Registry, check_deploy


def _operator_options(command: Any) -> Any:
    """``--reason`` (required) and ``--as`` (your login name by default)."""
    command = click.option(
        "--as",
        "by",
        metavar="WHO",
        default=login_name,
        show_default="your login name",
        help="Who acts, as the log records it.",
    )(command)
    return click.option("--reason", required=True, help="Why; kept in the run's log.")(command)


def _act(
    run_id: str,
    store: str | None,
    act: Callable[[Orchestrator, str], OperatorReceipt],
    registry: Registry | None = None,
) -> None:
    settings = load_settings(store=store)
    with open_log(settings.store) as log:
        run = resolve_run(log, run_id)
        try:
            receipt = act(Orchestrator(log, registry or Registry([])), run.id)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
    click.echo(f"run {receipt.run_id}: {receipt.note}")


@click.command("retry-compensation", short_help="Retry the compensation a parked run stopped on.")
@click.argument("run_id", metavar="RUN")
@_operator_options
@store_option
def retry_compensation(run_id: str, reason: str, by: str, store: str | None) -> None:
    """Retry the compensation RUN (its id or a unique prefix) parked on, from attempt 1.

    For a run parked while compensating, once what made the compensation fail
    is fixed: a worker runs it again (with the same idempotency key), then
    undoes the remaining steps, last first.
    """
    _act(run_id, store, lambda o, run: o.retry_compensation(run, by=by, reason=reason))


@click.command(short_help="Retry the step a parked run stopped on, going forward.")
@click.argument("run_id", metavar="RUN")
@_operator_options
@store_option
def resume(run_id: str, reason: str, by: str, store: str | None) -> None:
    """Retry forward the step RUN (its id or a unique prefix) parked on, from attempt 1.

    For a run parked going forward: a failure past a completed pivot, or a step
    whose outcome is unknown and that has no probe (check the remote system
    first; the retry sends the same idempotency key).
    """
    _act(run_id, store, lambda o, run: o.resume(run, by=by, reason=reason))


@click.command("force-compensate", short_help="Compensate a running, waiting or parked run now.")
@click.argument("run_id", metavar="RUN")
@_operator_options
@click.option(
    "--app",
    metavar="MODULE:ATTR",
    help="The sagas, for a parked run whose shape no worker has recorded.",
)
@store_option
def force_compensate(
    run_id: str, reason: str, by: str, app: str | None, store: str | None
) -> None:
    """Undo the completed steps of RUN (its id or a unique prefix) now, last first.

    For a running or waiting run (a back-off, a timer, an approval, an event),
    or one parked going forward. A run with a step in flight turns once that
    step is checkpointed. Refused past a completed pivot (resume the run, or
    resolve it by hand). A parked step whose outcome is unknown is not undone:
    the command and the log say so; check it in the remote system.
    """
    registry = load_app(app) if app else None
    _act(
        run_id,
        store,
        lambda o, run: o.force_compensate(run, by=by, reason=reason),
        registry,
    )


@click.command(short_help="Close a parked run as resolved by hand.")
@click.argument("run_id", metavar="RUN")
@_operator_options
@store_option
def resolve(run_id: str, reason: str, by: str, store: str | None) -> None:
    """Close the parked RUN (its id or a unique prefix) as resolved.

    Say in --reason what was done by hand ("refunded by hand, ticket 123"). No
    worker acts on the run again.
    """
    _act(run_id, store, lambda o, run: o.resolve(run, by=by, reason=reason))


@click.command("check-deploy", short_help="Refuse a deploy that would strand unfinished runs.")
@click.option(
    "--app", required=True, metavar="MODULE:ATTR", help="The sagas the deploy registers."
)
@json_option
@store_option
def check_deploy_command(app: str, as_json: bool, store: str | None) -> None:
    """Check that the sagas of --app can finish every unfinished run in the log.

    Every definition (saga, version, fingerprint) that running, compensating or
    parked runs started on must be registered unchanged: a worker runs a run
    only on its own definition. Exits 0 with one line when the deploy is safe;
    exits 1 with one line per problem (saga, version, step, how many runs need
    it, a few run ids), saying what changed against the shape workers recorded.
    """
    registry = load_app(app)
    settings = load_settings(store=store)
    with open_log(settings.store) as log:
        result = check_deploy(log, registry)
    if as_json:
        click.echo(_render.dumps(_deploy_json(result)))
    else:
        for problem in result.problems:
            click.echo(problem.message)
        click.echo(result.summary)
    if not result.safe:
        raise SystemExit(1)


def _deploy_json(result: DeployCheck) -> dict[str, Any]:
    return {
        "safe": result.safe,
        "summary": result.summary,
        "in_use": [
            {
                "saga": d.name,
                "version": d.version,
                "fingerprint": d.fingerprint,
                "runs": d.runs,
                "run_ids": list(d.run_ids),
            }
            for d in result.in_use
        ],
        "problems": [
            {
                "kind": p.kind.value,
                "saga": p.saga,
                "version": p.version,
                "fingerprint": p.fingerprint,
                "step": p.step,
                "runs": p.runs,
                "run_ids": list(p.run_ids),
                "message": p.message,
            }
            for p in result.problems
        ],
    }


#: The commands this module adds to the root group.
COMMANDS = (retry_compensation, resume, force_compensate, resolve, check_deploy_command)
