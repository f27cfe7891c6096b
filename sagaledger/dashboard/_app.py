"""The dashboard as one ASGI application over a saga log."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sagaledger._redact import Redactor
from sagaledger.dashboard._auth import Forbidden, LoginRequired
from sagaledger.dashboard._routes import ROUTES, Dashboard
from sagaledger.dashboard._views import Views
from sagaledger.sagas import Registry
from sagaledger.store import SagaLog, utc_now

#: The session cookie's name; it lasts a working day.
SESSION_COOKIE = "sagaledger_session"
SESSION_SECONDS = 8 * 3600

#: Sent with every answer: no framing, no scripts, no sniffing, nothing cached.
_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'; "
     b"img-src 'self'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]  # fmt: skip


class _SecurityHeaders:
    """Adds :data:`_HEADERS` to every response."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers if scope["type"] == "http" else send)


def _login_required(request: Request, exc: Exception) -> Response:
    """A page asked for without a token goes to the login form; anything else is a 401."""
    if request.method in ("GET", "HEAD") and not request.url.path.startswith("/api/"):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
    return JSONResponse(
        {"error": "a valid token is required: log in, or send Authorization: Bearer TOKEN"},
        status_code=401,
        headers={"www-authenticate": 'Bearer realm="sagaledger"'},
    )


def _forbidden(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc) or "forbidden"}, status_code=403)


def create_app(
    log: SagaLog,
    *,
    registry: Registry | None = None,
    redact: Redactor | None = None,
    session_secret: str | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> Starlette:
    """The dashboard over ``log``.

    Args:
        log: The saga log; tokens are checked against its ``sagaledger_tokens``.
        registry: The sagas, for force-compensating a parked run whose shape no
            worker has recorded (optional).
        redact: What hides sensitive fields (credentials only, by default).
        session_secret: Signs session cookies; a random one by default, so
            sessions end when the process does.
        clock: The time (deadlines, actions).
    """
    templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
    templates.env.globals["csrf_field"] = "csrf"
    app = Starlette(
        routes=ROUTES,
        middleware=[
            Middleware(_SecurityHeaders),
            Middleware(
                SessionMiddleware,
                secret_key=session_secret or secrets.token_urlsafe(32),
                session_cookie=SESSION_COOKIE,
                max_age=SESSION_SECONDS,
                same_site="lax",
            ),
        ],
        exception_handlers={LoginRequired: _login_required, Forbidden: _forbidden},
    )
    app.state.dashboard = Dashboard(
        log=log,
        registry=registry or Registry([]),
        views=Views(redact or Redactor()),
        templates=templates,
        clock=clock,
    )
    return app
