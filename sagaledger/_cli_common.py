"""What every ``sagaledger`` command shares: options, settings, the log, run ids, errors.

Kept apart from ``cli`` so that command modules (``_cli_waits``) use it without
importing the root group they are registered on.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from pydantic import ValidationError
from rich.console import Console

from sagaledger._apps import AppNotFoundError, load_registry
from sagaledger._errors import UnknownRunError
from sagaledger._settings import DEFAULT_STORE, ENV_PREFIX, Settings
from sagaledger.sagas import Registry
from sagaledger.store import RunRecord, SagaLog

F = TypeVar("F", bound=Callable[..., Any])

#: People read tables on stdout; errors and worker chatter go to stderr.
console = Console(highlight=False)


class CLIError(click.ClickException):
    """An error the user can fix: printed as one ``error: ...`` line, exit status 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def one_line(text: str) -> str:
    """``text`` on one line: driver messages (psycopg's in particular) span lines."""
    return " ".join(text.split())


def login_name() -> str:
    """Who runs the command, as the log records people by default."""
    return getpass.getuser()


def store_option(command: F) -> F:
    """The ``--store URL`` option every command takes."""
    return click.option(
        "--store",
        metavar="URL",
        default=None,
        help=f"Saga log URL [env {ENV_PREFIX}STORE; default {DEFAULT_STORE}].",
    )(command)


def json_option(command: F) -> F:
    """The ``--json`` flag of the inspection commands."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for programs.")(command)


def load_settings(**options: Any) -> Settings:
    """Settings from ``SAGALEDGER_*``, overridden by the options given on the command line.

    Raises:
        CLIError: an environment variable (or option) does not validate.
    """
    given = {name: value for name, value in options.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{ENV_PREFIX}{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        raise CLIError(f"invalid setting: {problems}") from None


def load_app(spec: str) -> Registry:
    """The Registry an ``--app MODULE:ATTR`` option names.

    Raises:
        click.BadParameter: the spec is not ``MODULE:ATTR``.
        CLIError: the module or attribute is missing, or holds no sagas.
    """
    try:
        return load_registry(spec)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--app") from None
    except AppNotFoundError as exc:
        raise CLIError(str(exc)) from None


@contextmanager
def open_log(store: str) -> Iterator[SagaLog]:
    """Open the saga log (migrating a SQLite file) and close it afterwards."""
    log = SagaLog.open(store)
    try:
        yield log
    finally:
        log.close()


def resolve_run(log: SagaLog, prefix: str) -> RunRecord:
    """The run whose id is ``prefix`` or starts with it.

    Raises:
        UnknownRunError: no run matches.
        CLIError: the prefix is empty or matches several runs.
    """
    wanted = prefix.strip().lower()
    if not wanted:
        raise CLIError("give a run id (or a unique prefix of one)")
    # LIKE treats "_" as a wildcard: keep only true prefix matches.
    matches = [m for m in log.find_runs(wanted) if m.startswith(wanted)]
    if not matches:
        raise UnknownRunError(prefix)
    if wanted in matches:
        return log.get_run(wanted)
    if len(matches) > 1:
        shown = ", ".join(m[: len(wanted) + 4] for m in matches)
        raise CLIError(f"run prefix {prefix!r} is ambiguous: {shown}...; type more of the id")
    return log.get_run(matches[0])
