"""The ``sagaledger`` command: migrate the store, inspect and steer runs, run a worker.

The commands for waiting runs (approve, reject, signal, approvals) are in
``_cli_waits``, operators' actions and check-deploy in ``_cli_ops``; what every
command shares (options, errors, the log) in ``_cli_common``.

Every command takes ``--store URL`` (or ``SAGALEDGER_STORE``; a SQLite file
``sagaledger.db`` in the working directory by default). Errors a user can fix
(an unknown run, a bad URL, a store that is not migrated) print one line,
``error: ...``, on stderr and exit with status 1.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from alembic.util.exc import CommandError
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from sagaledger import _cli_audit, _cli_ops, _cli_serve, _cli_tokens, _cli_waits, _render
from sagaledger._cli_common import (
    CLIError,
    console,
    json_option,
    load_app,
    load_settings,
    login_name,
    one_line,
    open_log,
    resolve_run,
    store_option,
)
from sagaledger._errors import SagaLedgerError, StoreError
from sagaledger._redact import Redactor
from sagaledger._runner import check_config, run_worker
from sagaledger._settings import ENV_PREFIX, Settings
from sagaledger._supervisor import Supervisor
from sagaledger.sagas import CancelOutcome, Hooks, Orchestrator, Registry
from sagaledger.sagas._waits import kept_delivery
from sagaledger.store import (
    RunStatus,
    create_store_engine,
    current_revision,
    head_revision,
    upgrade,
    utc_now,
)
from sagaledger.telemetry import JsonFormatter
from sagaledger.testing import CrashAt


class _Group(click.Group):
    """The root group: turns sagaledger's own errors into one-line messages."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SagaLedgerError as exc:
            raise CLIError(one_line(str(exc))) from None
        except OperationalError as exc:
            raise CLIError(one_line(f"store unavailable: {exc.orig or exc}")) from None


@contextmanager
def open_engine(store: str) -> Iterator[Engine]:
    """An engine on ``store`` without the schema check (the ``db`` commands fix the schema)."""
    engine = create_store_engine(store)
    try:
        yield engine
    except CommandError as exc:
        raise StoreError(f"migration failed: {exc}") from None
    finally:
        engine.dispose()


# -- the commands ------------------------------------------------------------------


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="New here? Run `sagaledger demo`, then `sagaledger runs list`.",
)
@click.version_option(package_name="sagaledger")
def cli() -> None:
    """sagaledger: durable sagas with compensation, idempotency and audit built in."""


@cli.group()
def db() -> None:
    """Create or migrate the saga log's schema."""


@db.command("upgrade")
@store_option
def db_upgrade(store: str | None) -> None:
    """Apply the pending migrations to the store."""
    settings = load_settings(store=store)
    with open_engine(settings.store) as engine:
        before = current_revision(engine)
        upgrade(engine)
        after = current_revision(engine)
    where = _render.display_url(settings.store)
    if before == after:
        console.print(f"{where}: already at schema {after} (head)")
    else:
        console.print(f"{where}: upgraded schema {before or 'none'} -> {after} (head)")


@db.command("current")
@store_option
def db_current(store: str | None) -> None:
    """Show the store's schema revision and whether it is the newest."""
    settings = load_settings(store=store)
    with open_engine(settings.store) as engine:
        current = current_revision(engine)
    head = head_revision()
    if current == head:
        console.print(f"{current} (head)")
    else:
        console.print(f"{current or 'none'} (head is {head}: run `sagaledger db upgrade`)")


@cli.group()
def runs() -> None:
    """Inspect runs and their timelines."""


@runs.command("list")
@store_option
@click.option(
    "--status", type=click.Choice([s.value for s in RunStatus]), help="Only runs in this status."
)
@click.option("--saga", metavar="NAME", help="Only runs of this saga.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=50, show_default=True, help="At most this many."
)
@json_option
def runs_list(
    store: str | None, status: str | None, saga: str | None, limit: int, as_json: bool
) -> None:
    """List runs, newest first."""
    settings = load_settings(store=store)
    hide = Redactor.from_setting(settings.redact)
    with open_log(settings.store) as log:
        found = [hide.run(run) for run in log.list_runs(status=status, saga=saga, limit=limit)]
    if as_json:
        click.echo(_render.dumps([_render.run_json(run) for run in found]))
    elif not found:
        console.print("no runs", style="dim")
    else:
        console.print(_render.runs_table(found, utc_now()))


@runs.command("show")
@click.argument("run_id", metavar="RUN")
@store_option
@json_option
def runs_show(run_id: str, store: str | None, as_json: bool) -> None:
    """Show a run and its timeline; RUN is its id or a unique prefix of it."""
    settings = load_settings(store=store)
    hide = Redactor.from_setting(settings.redact)
    with open_log(settings.store) as log:
        run = hide.run(resolve_run(log, run_id))
        events = [hide.event(e) for e in log.events(run.id)]
        delivered = kept_delivery(log, run, events)
    if as_json:
        payload = {
            "run": _render.run_json(run),
            "events": [_render.event_json(e) for e in events],
        }
        click.echo(_render.dumps(payload))
    else:
        console.print(_render.run_view(run, events, delivered))


@cli.command(short_help="Cancel a run: its completed steps are compensated in reverse.")
@click.argument("run_id", metavar="RUN")
@click.option("--reason", required=True, help="Why; kept in the run's log.")
@click.option(
    "--as",
    "by",
    default=login_name,
    show_default="your login name",
    help="Who cancels, as the log records it.",
)
@store_option
def cancel(run_id: str, reason: str, by: str, store: str | None) -> None:
    """Cancel RUN (its id or a unique prefix): undo its completed steps, last first.

    A waiting run turns at once; one with a step in flight turns once that step
    is checkpointed; one already compensating is left as it is. A worker does
    the undoing: this command only asks, in the log.
    """
    settings = load_settings(store=store)
    with open_log(settings.store) as log:
        run = resolve_run(log, run_id)
        try:
            outcome = Orchestrator(log, Registry([])).cancel(run.id, reason, by=by)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
    if outcome is CancelOutcome.ALREADY_COMPENSATING:
        click.echo(f"run {run.id} is already compensating; the request is recorded")
    else:
        click.echo(f"run {run.id} is cancelling: a worker will compensate its completed steps")


# approve, reject, signal and approvals: runs that wait for people or for the world.
for _command in _cli_waits.COMMANDS:
    cli.add_command(_command)
# retry-compensation, resume, force-compensate, resolve and check-deploy: operators' actions.
for _command in _cli_ops.COMMANDS:
    cli.add_command(_command)
# audit verify and audit seal: what finance checks.
cli.add_command(_cli_audit.audit)
cli.add_command(_cli_tokens.tokens)
cli.add_command(_cli_serve.serve)


@cli.command()
@store_option
@click.option(
    "--app", required=True, metavar="MODULE:ATTR", help="Where the Registry (or sagas) is."
)
@click.option(
    "--broker",
    metavar="URL",
    help=f"redis://HOST[:PORT][/DB] shared by all workers, or memory "
    f"[env {ENV_PREFIX}BROKER; default memory].",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    help=f"Worker processes to run and supervise [env {ENV_PREFIX}PROCESSES; default 1].",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help=f"Runs driven at once per process [env {ENV_PREFIX}THREADS; default 4].",
)
@click.option(
    "--crash-at",
    metavar="STEP:POINT[:PHASE[:ATTEMPT]]",
    help="Testing aid: SIGKILL this worker at POINT (before_action, after_action or "
    "after_checkpoint) of STEP, PHASE forward (default) or compensate, ATTEMPT 1 by default.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Level of sagaledger's own log messages.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object per line, with run_id, saga, step, phase and attempt "
    "on every line logged while a run is driven.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    help="Serve Prometheus metrics on http://ADDR:PORT/metrics; with --processes N, "
    f"process i serves on PORT+i [env {ENV_PREFIX}METRICS_PORT; needs sagaledger[telemetry]].",
)
@click.option(
    "--metrics-addr",
    metavar="ADDR",
    help=f"The address the metrics server listens on [env {ENV_PREFIX}METRICS_ADDR; "
    "default 0.0.0.0].",
)
@click.option(
    "--tracing",
    type=click.Choice(["auto", "on", "off"]),
    help="OpenTelemetry spans: auto when the SDK is configured (a tracer provider, or OTEL_* "
    f"variables naming an exporter), on, or off [env {ENV_PREFIX}TRACING; default auto].",
)
@click.option("--supervised", is_flag=True, hidden=True)
def worker(
    store: str | None,
    app: str,
    broker: str | None,
    processes: int | None,
    threads: int | None,
    crash_at: str | None,
    log_level: str,
    log_format: str,
    metrics_port: int | None,
    metrics_addr: str | None,
    tracing: str | None,
    supervised: bool,
) -> None:
    """Run sagas from the log until SIGTERM or SIGINT.

    In production, start workers with a Postgres --store and a Redis --broker on
    any number of machines: they share the load. With --processes N this command
    supervises N worker processes, replacing any that dies. SIGTERM lets every
    run in flight finish its step; what was only queued stays in the log.

    Lease, recovery interval and dispatch grace come from SAGALEDGER_LEASE_SECONDS,
    SAGALEDGER_RECOVERY_INTERVAL_SECONDS and SAGALEDGER_DISPATCH_GRACE_SECONDS.

    --crash-at is for crash-recovery tests: the worker kills itself with SIGKILL
    at the point given (once), leaving the run exactly as a real crash would;
    e.g. --crash-at charge_payment:after_action dies after the charge's effect,
    before its checkpoint.

    Telemetry (see docs/telemetry.md): --metrics-port serves Prometheus metrics,
    --tracing emits OpenTelemetry spans, --log-format json writes JSON log lines.
    """
    settings = load_settings(
        store=store,
        broker=broker,
        processes=processes,
        threads=threads,
        metrics_port=metrics_port,
        metrics_addr=metrics_addr,
        tracing=tracing,
    )
    _needs_telemetry_extra(settings)
    # Our loggers at the chosen level; libraries' (alembic, dramatiq) only when it matters.
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    logging.getLogger("sagaledger").setLevel(log_level.upper())
    registry = load_app(app)
    hooks: list[Hooks] = [_crash_hook(crash_at, registry)] if crash_at else []
    if settings.processes > 1:
        check_config(settings)
        options = ["--app", app, "--log-level", log_level, "--log-format", log_format]
        options += ["--processes", "1", "--supervised"]
        if crash_at:
            options += ["--crash-at", crash_at]
        # URLs travel in the environment, where `ps` does not show their passwords.
        env = {**os.environ, **_settings_env(settings), f"{ENV_PREFIX}PROCESSES": "1"}
        command = [sys.executable, "-m", "sagaledger", "worker", *options]
        port = settings.metrics_port

        def own_port(slot: int) -> dict[str, str]:
            # Slot n (from 1) serves on port + n - 1; a replacement takes its slot's port.
            return {} if port is None else {f"{ENV_PREFIX}METRICS_PORT": str(port + slot - 1)}

        raise SystemExit(Supervisor(command, settings.processes, env, own_port).run())
    hooks.extend(_tracing(settings))
    run_worker(
        settings,
        registry,
        hooks=hooks,
        supervised=supervised,
        say=_say,
        ready_note=f", will crash at {crash_at}" if crash_at else "",
    )


def _say(line: str) -> None:
    # Plain text: rich would wrap long URLs and read "[...]" in them as markup.
    click.echo(line, err=True)


def _settings_env(settings: Settings) -> dict[str, str]:
    """``SAGALEDGER_*`` variables that give a worker process these settings."""
    return {
        f"{ENV_PREFIX}{name.upper()}": str(value)
        for name, value in settings.model_dump().items()
        if value is not None
    }


def _needs_telemetry_extra(settings: Settings) -> None:
    """Refuse --metrics-port and --tracing on without the extra, in one line."""
    wanted = {"prometheus_client": settings.metrics_port is not None}
    wanted["opentelemetry.sdk"] = settings.tracing == "on"
    for module, needed in wanted.items():
        if needed and importlib.util.find_spec(module.split(".")[0]) is None:
            raise CLIError(
                f"{module} is not installed: pip install 'sagaledger[telemetry]' "
                "for --metrics-port and --tracing"
            )


def _tracing(settings: Settings) -> list[Hooks]:
    """The tracing hooks of this worker process, if it traces (see ``--tracing``)."""
    if settings.tracing == "off" or importlib.util.find_spec("opentelemetry") is None:
        return []
    try:
        from sagaledger.telemetry._setup import tracing_hooks

        hooks = tracing_hooks(settings.tracing)
    except (ImportError, ValueError) as exc:
        raise CLIError(f"tracing: {exc}") from None
    return [] if hooks is None else [hooks]


def _crash_hook(spec: str, registry: Registry) -> CrashAt:
    try:
        hook = CrashAt.parse(spec, mode="sigkill")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--crash-at") from None
    steps = sorted({s.name for saga in registry for s in saga.steps})
    if hook.step not in steps:
        raise click.BadParameter(
            f"no step {hook.step!r}; steps are {', '.join(steps)}", param_hint="--crash-at"
        )
    return hook


@cli.command(short_help="Watch a crashed run resume and a failed one unwind.")
@store_option
def demo(store: str | None) -> None:
    """Crash a worker mid-saga, resume the run, and compensate a late failure.

    Starts the payments, ERP and email simulators on loopback and a worker
    process that SIGKILLs itself after charging a card; resumes the run in this
    process (the charge is not made twice), then runs an order whose
    confirmation email is refused, whose sales order, charge and reservation are
    undone in reverse. The runs go to the same store as every other command;
    the simulators' ledgers are written next to it, to
    sagaledger-demo-ledgers.json.
    """
    from sagaledger.demo._scenario import run_demo

    settings = load_settings(store=store)
    if not run_demo(settings.store, console):
        raise SystemExit(1)


@cli.command(short_help="Run the payments, ERP and email simulators locally.")
@click.option("--payments-port", type=click.IntRange(0, 65535), default=4010, show_default=True)
@click.option("--erp-port", type=click.IntRange(0, 65535), default=4020, show_default=True)
@click.option("--email-api-port", type=click.IntRange(0, 65535), default=4030, show_default=True)
@click.option("--smtp-port", type=click.IntRange(0, 65535), default=2525, show_default=True)
@click.option(
    "--control-port",
    type=click.IntRange(0, 65535),
    default=4040,
    show_default=True,
    help="SMTP's control API (faults, ledger) over HTTP.",
)
@click.option("--ledgers", type=click.Path(dir_okay=False), help="Write the ledgers here on exit.")
def simulators(
    payments_port: int,
    erp_port: int,
    email_api_port: int,
    smtp_port: int,
    control_port: int,
    ledgers: str | None,
) -> None:
    """Serve the Stripe-style payments, NetSuite-style ERP, SMTP and email API simulators.

    They run on 127.0.0.1 until Ctrl-C, with local test credentials (printed),
    and take faults over HTTP at /_simulator/faults. Port 0 picks a free port.
    The printed SAGALEDGER_SIMULATORS line tells workers and examples where they are.
    """
    from sagaledger.connectors.simulators._serve import serve

    ports = {
        "payments": payments_port,
        "erp": erp_port,
        "email_api": email_api_port,
        "smtp": smtp_port,
        "smtp_control": control_port,
    }
    try:
        effects = serve(ports, say=click.echo)  # stdout: the export line is for scripts too
    except OSError as exc:
        reason = exc.strerror or exc
        raise CLIError(f"cannot start the simulators: {reason} (pick other ports, or 0)") from None
    counts = ", ".join(f"{name} {len(found)}" for name, found in effects.items())
    click.echo(f"effects applied: {counts}")
    if ledgers:
        Path(ledgers).write_text(json.dumps(effects, indent=2, default=str))
        click.echo(f"ledgers written to {ledgers}")


def main() -> None:
    """Entry point of the ``sagaledger`` console script."""
    cli(prog_name="sagaledger")
