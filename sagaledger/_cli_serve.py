"""``sagaledger serve``: the web dashboard, until Ctrl-C.

Needs the ``dashboard`` extra (Starlette, Jinja2, uvicorn); without it the
command says what to install. ``cli`` registers :data:`serve` on the root group.
"""

from __future__ import annotations

import importlib.util
import logging

import click

from sagaledger import _render
from sagaledger._cli_common import CLIError, load_app, load_settings, store_option

#: Modules the dashboard needs, from ``pip install 'sagaledger[dashboard]'``.
_NEEDED = ("starlette", "jinja2", "uvicorn", "multipart", "itsdangerous")


@click.command(short_help="Serve the web dashboard (runs, timelines, ledger, actions).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port."
)
@click.option(
    "--app",
    metavar="MODULE:ATTR",
    help="The sagas, to force-compensate parked runs whose shape no worker recorded.",
)
@store_option
def serve(host: str, port: int, app: str | None, store: str | None) -> None:
    """Serve the dashboard on HOST:PORT until Ctrl-C.

    Log in with a token from `sagaledger tokens add NAME --role operator|auditor`
    (or send `Authorization: Bearer TOKEN`). Fields named in SAGALEDGER_REDACT
    (globs, comma-separated), and credentials, are redacted on every page.
    """
    missing = [m for m in _NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        raise CLIError(
            f"the dashboard needs {', '.join(missing)}: pip install 'sagaledger[dashboard]'"
        )
    import uvicorn

    from sagaledger._redact import Redactor
    from sagaledger.dashboard import create_app
    from sagaledger.store import SagaLog

    registry = load_app(app) if app else None
    settings = load_settings(store=store)
    log = SagaLog.open(settings.store)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not log.tokens.list():
        click.echo(
            "no tokens yet: make one with `sagaledger tokens add NAME --role operator`", err=True
        )
    dashboard = create_app(
        log,
        registry=registry,
        redact=Redactor.from_setting(settings.redact),
        session_secret=settings.dashboard_secret,
    )
    click.echo(
        f"dashboard of {_render.display_url(settings.store)} on http://{host}:{port}/", err=True
    )
    try:
        uvicorn.run(dashboard, host=host, port=port, log_level="warning", access_log=False)
    finally:
        log.close()
