"""``sagaledger tokens``: the web dashboard's access tokens.

A token is printed once, when it is made; the store keeps only its sha256.
``cli`` registers :data:`tokens` on the root group, which turns a refusal (a
name with a token already, or none to revoke) into one ``error: ...`` line.
"""

from __future__ import annotations

import json
from typing import Any

import click

from sagaledger import _render
from sagaledger._cli_common import (
    console,
    json_option,
    load_settings,
    login_name,
    open_log,
    store_option,
)
from sagaledger.store import Role, Token, utc_now


@click.group()
def tokens() -> None:
    """Tokens for the web dashboard (`sagaledger serve`): operators act, auditors read."""


def _as_option(command: Any) -> Any:
    return click.option(
        "--as",
        "by",
        metavar="WHO",
        default=login_name,
        show_default="your login name",
        help="Who makes or revokes the token, as the store records it.",
    )(command)


@tokens.command()
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice([r.value for r in Role]),
    required=True,
    help="operator: may act on runs; auditor: may only read.",
)
@_as_option
@store_option
def add(name: str, role: str, by: str, store: str | None) -> None:
    """Make a token for NAME and print it, once: the store keeps only its hash.

    NAME is who holds it (``alice@example.com``): the log names them as the
    actor of what they do on the dashboard, and approvals match it against
    those who may decide. A name has one token at a time.
    """
    settings = load_settings(store=store)
    with open_log(settings.store) as log:
        token, secret = log.tokens.add(name, Role(role), by=by, now=utc_now())
    click.echo(secret)
    click.echo(
        f"token for {token.name} ({token.role.value}); it is shown only now: keep it safe",
        err=True,
    )


@tokens.command("list")
@click.option("--all", "revoked", is_flag=True, help="Also the revoked tokens.")
@json_option
@store_option
def list_tokens(revoked: bool, as_json: bool, store: str | None) -> None:
    """The tokens: who holds each, its role, and when and by whom it was made."""
    settings = load_settings(store=store)
    with open_log(settings.store) as log:
        found = log.tokens.list(revoked=revoked)
    if as_json:
        click.echo(json.dumps([_token_json(t) for t in found], indent=2))
        return
    if not found:
        click.echo("no tokens")
        return
    for t in found:
        line = f"{t.name}  {t.role.value}  made {_render.stamp(t.created_at)} by {t.created_by}"
        if t.revoked_at is not None:
            line += f"  revoked {_render.stamp(t.revoked_at)} by {t.revoked_by}"
        console.print(line, markup=False)


@tokens.command()
@click.argument("name")
@_as_option
@store_option
def revoke(name: str, by: str, store: str | None) -> None:
    """Revoke NAME's token: it no longer logs in, and its open sessions end."""
    settings = load_settings(store=store)
    with open_log(settings.store) as log:
        token = log.tokens.revoke(name, by=by, now=utc_now())
    click.echo(f"revoked the token of {token.name} ({token.role.value})")


def _token_json(token: Token) -> dict[str, object]:
    return {
        "name": token.name,
        "role": token.role.value,
        "created_at": _render.iso(token.created_at),
        "created_by": token.created_by,
        "revoked_at": _render.iso(token.revoked_at),
        "revoked_by": token.revoked_by,
    }
