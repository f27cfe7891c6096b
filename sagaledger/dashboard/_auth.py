"""Who is asking: a token in the session cookie or in an ``Authorization`` header.

A person logs in with a token (``sagaledger tokens add``); the signed session
cookie then names the token's row, not the token, and every request looks the
row up again, so a revoked token's sessions end at once. A program sends
``Authorization: Bearer TOKEN`` with each request instead.

Forms that act carry the session's CSRF token, which only pages served to that
session contain: a page elsewhere can make a browser POST with its cookie, but
cannot read the token to put in the form. A bearer request needs none (no
browser adds that header by itself). The cookie is also ``SameSite=Lax``.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from starlette.requests import Request

from sagaledger.store import SagaLog, Token

#: The session keys: the token row's id, and the CSRF token of the session.
SESSION_TOKEN = "tid"
SESSION_CSRF = "csrf"
#: The form field that carries the CSRF token.
CSRF_FIELD = "csrf"


class LoginRequired(Exception):
    """No valid token: a page redirects to the login form, anything else answers 401."""


class Forbidden(Exception):
    """A valid token that may not do this (an auditor acting), or a form without its CSRF token."""


@dataclass(frozen=True)
class Principal:
    """The holder of a valid token, and how the request proved it.

    Attributes:
        token: The token (its name, role and id).
        bearer: True when the request sent the token itself (a program).
        csrf: The session's CSRF token (empty for bearer requests).
    """

    token: Token
    bearer: bool
    csrf: str = ""

    @property
    def name(self) -> str:
        """Who holds the token, as the log names them."""
        return self.token.name

    @property
    def may_act(self) -> bool:
        """True for operators."""
        return self.token.role.may_act


def identify(request: Request, log: SagaLog) -> Principal | None:
    """The principal a request proves, or None."""
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() == "bearer":
        token = log.tokens.check(presented.strip())
        return Principal(token, bearer=True) if token is not None else None
    session = request.session
    token_id = session.get(SESSION_TOKEN)
    if not isinstance(token_id, int):
        return None
    token = log.tokens.get(token_id)
    if token is None:
        session.clear()
        return None
    return Principal(token, bearer=False, csrf=str(session.get(SESSION_CSRF, "")))


def reader(request: Request, log: SagaLog) -> Principal:
    """The principal, who may read anything.

    Raises:
        LoginRequired: no valid token.
    """
    principal = identify(request, log)
    if principal is None:
        raise LoginRequired()
    return principal


def actor(request: Request, log: SagaLog, csrf: str | None) -> Principal:
    """The principal, who must be an operator; a session's form must carry its CSRF token.

    Raises:
        LoginRequired: no valid token.
        Forbidden: an auditor's token, or a session form without its CSRF token.
    """
    principal = reader(request, log)
    if not principal.may_act:
        raise Forbidden(f"{principal.name} holds an auditor's token, which may only read")
    if not principal.bearer and not (
        csrf and principal.csrf and hmac.compare_digest(csrf, principal.csrf)
    ):
        raise Forbidden("the form's CSRF token is missing or stale: reload the page")
    return principal


def log_in(request: Request, token: Token) -> None:
    """Open a session for ``token``, with a new CSRF token."""
    request.session.clear()
    request.session[SESSION_TOKEN] = token.id
    request.session[SESSION_CSRF] = secrets.token_urlsafe(24)


def log_out(request: Request) -> None:
    """End the session."""
    request.session.clear()


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site only, never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/runs"
    return target
