"""The dashboard's pages, its actions and its JSON API.

Pages (GET, any valid token): ``/runs`` (filters: status, saga, started
from/to, business key), ``/runs/{id}`` (header, input, timeline, the actions
its state allows), ``/ledger``, ``/parked``, ``/approvals``. JSON for programs
under ``/api/``. Actions are ``POST /runs/{id}/{action}`` (operators only): a
form from a page (with its CSRF token and a reason) is answered with a
redirect back to the run, a bearer request with JSON.

Reads run in Starlette's thread pool (the log is synchronous SQLAlchemy).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from sagaledger._errors import SagaLedgerError, UnknownRunError
from sagaledger.audit import compensation_ledger
from sagaledger.dashboard import _auth
from sagaledger.dashboard._auth import Principal
from sagaledger.dashboard._views import ACTIONS, Views, actions_for, awaits_approval
from sagaledger.sagas import Orchestrator, Registry
from sagaledger.sagas._waits import kept_delivery
from sagaledger.store import RunRecord, RunStatus, SagaLog
from sagaledger.store._records import parse_moment

logger = logging.getLogger("sagaledger.dashboard")

#: The most runs a listing shows.
MAX_RUNS = 500


@dataclass(frozen=True)
class Dashboard:
    """What every route needs: the log, the sagas, the views and the templates."""

    log: SagaLog
    registry: Registry
    views: Views
    templates: Jinja2Templates
    clock: Callable[[], datetime]


def _dashboard(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


def _page(
    request: Request,
    principal: Principal,
    name: str,
    context: dict[str, Any],
    status_code: int = 200,
) -> Response:
    flash = request.session.pop("flash", None)
    templates = _dashboard(request).templates
    return templates.TemplateResponse(
        request,
        name,
        {"principal": principal, "flash": flash, "statuses": list(RunStatus), **context},
        status_code=status_code,
    )


# -- logging in ----------------------------------------------------------------


def login_form(request: Request) -> Response:
    """The login form."""
    return _dashboard(request).templates.TemplateResponse(
        request,
        "login.html",
        {"next": _auth.safe_next(request.query_params.get("next")), "error": None},
    )


async def login(request: Request) -> Response:
    """Check the token typed in; open a session and go where the user was going."""
    form = await request.form()
    presented = str(form.get("token", "")).strip()
    target = _auth.safe_next(str(form.get("next", "")))
    dashboard = _dashboard(request)
    token = await run_in_threadpool(dashboard.log.tokens.check, presented)
    if token is None:
        logger.warning("dashboard: refused a login with an unknown or revoked token")
        return dashboard.templates.TemplateResponse(
            request,
            "login.html",
            {"next": target, "error": "unknown or revoked token"},
            status_code=401,
        )
    _auth.log_in(request, token)
    logger.info("dashboard: %s logged in (%s)", token.name, token.role.value)
    return RedirectResponse(target, status_code=303)


async def logout(request: Request) -> Response:
    """End the session (a form with the session's CSRF token)."""
    form = await request.form()
    dashboard = _dashboard(request)
    principal = await run_in_threadpool(_auth.reader, request, dashboard.log)
    if principal.bearer or _auth.CSRF_FIELD not in form or form[_auth.CSRF_FIELD] != principal.csrf:
        raise _auth.Forbidden("the form's CSRF token is missing or stale: reload the page")
    _auth.log_out(request)
    return RedirectResponse("/login", status_code=303)


def home(request: Request) -> Response:
    """The runs list is the front page."""
    return RedirectResponse("/runs", status_code=303)


# -- pages -----------------------------------------------------------------------


@dataclass(frozen=True)
class RunFilters:
    """The runs list's filters, as the query string gave them."""

    status: str = ""
    saga: str = ""
    since: str = ""
    until: str = ""
    key: str = ""

    @classmethod
    def of(cls, request: Request) -> RunFilters:
        q = request.query_params
        return cls(
            q.get("status", "").strip(),
            q.get("saga", "").strip(),
            q.get("from", "").strip(),
            q.get("to", "").strip(),
            q.get("key", "").strip(),
        )

    def runs(self, log: SagaLog) -> list[RunRecord]:
        """The runs these filters select, newest first.

        Raises:
            ValueError: a status or a time that is not one.
        """
        if self.status and self.status not in {s.value for s in RunStatus}:
            raise ValueError(f"unknown status {self.status!r}")
        return log.list_runs(
            status=self.status or None,
            saga=self.saga or None,
            since=parse_moment(self.since, "from"),
            until=parse_moment(self.until, "to"),
            business_key=self.key or None,
            limit=MAX_RUNS,
        )


def runs_page(request: Request) -> Response:
    """Runs, newest first, filtered by status, saga, start time and business key."""
    dashboard = _dashboard(request)
    principal = _auth.reader(request, dashboard.log)
    filters = RunFilters.of(request)
    error = None
    try:
        found = filters.runs(dashboard.log)
    except ValueError as exc:
        found, error = [], str(exc)
    context = {
        "filters": filters,
        "runs": [dashboard.views.run(r) for r in found],
        "error": error,
        "counts": dashboard.log.count_runs(),
        "limit": MAX_RUNS,
    }
    return _page(request, principal, "runs.html", context, 400 if error else 200)


def _find_run(log: SagaLog, wanted: str) -> RunRecord:
    """The run with this id, or the one run whose id starts with it.

    Raises:
        UnknownRunError: none, or several.
    """
    wanted = wanted.strip().lower()
    matches = [m for m in log.find_runs(wanted) if m.startswith(wanted)] if wanted else []
    if wanted in matches:
        return log.get_run(wanted)
    if len(matches) != 1:
        raise UnknownRunError(wanted)
    return log.get_run(matches[0])


def run_page(request: Request) -> Response:
    """A run: its header, input, timeline, and the actions its state allows."""
    dashboard = _dashboard(request)
    principal = _auth.reader(request, dashboard.log)
    try:
        run = _find_run(dashboard.log, request.path_params["run_id"])
    except UnknownRunError as exc:
        return _page(request, principal, "missing.html", {"error": str(exc)}, 404)
    events = dashboard.log.events(run.id)
    delivered = kept_delivery(dashboard.log, run, events)
    decision_open = awaits_approval(run) and delivered is None and run.cancel_requested is None
    context = {
        "view": dashboard.views.run(run, events, delivered),
        "events": [dashboard.views.event(e) for e in events],
        "actions": actions_for(run, events, decision_open) if principal.may_act else [],
    }
    return _page(request, principal, "run.html", context)


def parked_page(request: Request) -> Response:
    """Runs that need a person, oldest first, with the actions each allows."""
    dashboard = _dashboard(request)
    principal = _auth.reader(request, dashboard.log)
    parked = dashboard.log.list_runs(status=RunStatus.PARKED.value, limit=MAX_RUNS)
    rows = []
    for run in reversed(parked):
        events = dashboard.log.events(run.id)
        actions = actions_for(run, events, False) if principal.may_act else []
        rows.append((dashboard.views.run(run), actions))
    return _page(request, principal, "parked.html", {"rows": rows})


def approvals_page(request: Request) -> Response:
    """The approvals runs wait for, with approve and reject."""
    dashboard = _dashboard(request)
    principal = _auth.reader(request, dashboard.log)
    pending = _orchestrator(dashboard).pending_approvals(limit=MAX_RUNS)
    rows = [(p, dashboard.views.shown(p)) for p in pending]
    decide = [ACTIONS["approve"], ACTIONS["reject"]] if principal.may_act else []
    context = {"rows": rows, "now": dashboard.clock(), "decide": decide}
    return _page(request, principal, "approvals.html", context)


def ledger_page(request: Request) -> Response:
    """The compensation ledger of runs started in a period; unbalanced runs first."""
    dashboard = _dashboard(request)
    principal = _auth.reader(request, dashboard.log)
    since_text = request.query_params.get("from", "").strip()
    until_text = request.query_params.get("to", "").strip()
    try:
        since, until = parse_moment(since_text, "from"), parse_moment(until_text, "to")
    except ValueError as exc:
        refused = {"error": str(exc), "since": since_text, "until": until_text, "ledger": None}
        return _page(request, principal, "ledger.html", refused, 400)
    ledger = compensation_ledger(dashboard.log, since, until)
    entries = sorted(ledger.entries, key=lambda e: (e.run_id, e.at))
    context: dict[str, Any] = {
        "error": None,
        "since": since_text,
        "until": until_text,
        "ledger": ledger,
        "entries": entries,
        "unbalanced": {r.run_id for r in ledger.unbalanced},
        "runs": sorted(ledger.runs, key=lambda r: (r.balanced, r.run_id)),
    }
    return _page(request, principal, "ledger.html", context)


# -- actions ---------------------------------------------------------------------


def _orchestrator(dashboard: Dashboard) -> Orchestrator:
    return Orchestrator(dashboard.log, dashboard.registry, clock=dashboard.clock)


def _act(
    dashboard: Dashboard, principal: Principal, run: RunRecord, action: str, reason: str
) -> str:
    """Carry ``action`` out as ``principal``; return what happens next, in words.

    Operator actions name the token's holder and the dashboard as the actor;
    a decision names the holder alone, since approvers are matched by name.
    """
    o = _orchestrator(dashboard)
    by = f"{principal.name} (dashboard)"
    if action == "approve":
        o.approve(run.id, by=principal.name, reason=reason)
        return "approved: a worker carries the run on"
    if action == "reject":
        o.reject(run.id, by=principal.name, reason=reason)
        return "rejected: a worker compensates its completed steps"
    if action == "cancel":
        o.cancel(run.id, reason, by=by)
        return "cancel requested: a worker compensates its completed steps"
    method = {
        "retry-compensation": o.retry_compensation,
        "resume": o.resume,
        "force-compensate": o.force_compensate,
        "resolve": o.resolve,
    }[action]
    return method(run.id, by=by, reason=reason).note


async def act(request: Request) -> Response:
    """``POST /runs/{id}/{action}``: an operator acts on a run, with a reason."""
    dashboard = _dashboard(request)
    action = request.path_params["action"]
    if request.headers.get("content-type", "").startswith("application/json"):
        body = await request.json()
        fields = body if isinstance(body, dict) else {}
    else:
        fields = dict(await request.form())
    csrf = fields.get(_auth.CSRF_FIELD)
    principal = await run_in_threadpool(
        _auth.actor, request, dashboard.log, csrf if isinstance(csrf, str) else None
    )
    reason = str(fields.get("reason", "")).strip()
    run_id = request.path_params["run_id"]
    if action not in ACTIONS:
        return _answer(request, principal, run_id, 404, f"no action {action!r}")
    if not reason:
        return _answer(request, principal, run_id, 400, "say why: a reason is required")
    try:
        run = await run_in_threadpool(_find_run, dashboard.log, run_id)
        note = await run_in_threadpool(_act, dashboard, principal, run, action, reason)
    except UnknownRunError as exc:
        return _answer(request, principal, run_id, 404, str(exc))
    except (SagaLedgerError, ValueError) as exc:
        logger.warning(
            "dashboard: %s was refused %s of run %s: %s", principal.name, action, run_id, exc
        )
        return _answer(request, principal, run_id, 409, str(exc))
    logger.info("dashboard: %s did %s on run %s: %s", principal.name, action, run.id, reason)
    return _answer(request, principal, run.id, 200, f"{ACTIONS[action].label}: {note}")


def _answer(
    request: Request, principal: Principal, run_id: str, status: int, text: str
) -> Response:
    """JSON for a program; for a person, back to the run with the outcome on top."""
    if principal.bearer:
        key = "note" if status == 200 else "error"
        return JSONResponse({"run_id": run_id, key: text}, status_code=status)
    request.session["flash"] = {"ok": status == 200, "text": text}
    return RedirectResponse(f"/runs/{run_id}", status_code=303)


# -- JSON API ------------------------------------------------------------------


def api_runs(request: Request) -> Response:
    """``GET /api/runs``: the runs list, with the page's filters."""
    dashboard = _dashboard(request)
    _auth.reader(request, dashboard.log)
    try:
        found = RunFilters.of(request).runs(dashboard.log)
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse({"runs": [dashboard.views.run_json(r) for r in found]})


def api_run(request: Request) -> Response:
    """``GET /api/runs/{id}``: a run and its events."""
    dashboard = _dashboard(request)
    _auth.reader(request, dashboard.log)
    try:
        run = _find_run(dashboard.log, request.path_params["run_id"])
    except UnknownRunError as exc:
        return JSONResponse({"error": str(exc)}, status_code=404)
    events = dashboard.log.events(run.id)
    return JSONResponse(
        {
            "run": dashboard.views.run_json(run),
            "events": [dashboard.views.event_json(e) for e in events],
        }
    )


def api_approvals(request: Request) -> Response:
    """``GET /api/approvals``: the approvals runs wait for."""
    dashboard = _dashboard(request)
    _auth.reader(request, dashboard.log)
    pending = _orchestrator(dashboard).pending_approvals(limit=MAX_RUNS)
    return JSONResponse({"approvals": [dashboard.views.approval_json(p) for p in pending]})


def api_ledger(request: Request) -> Response:
    """``GET /api/ledger?from=&to=``: the compensation ledger of a period."""
    dashboard = _dashboard(request)
    _auth.reader(request, dashboard.log)
    try:
        since = parse_moment(request.query_params.get("from"), "from")
        until = parse_moment(request.query_params.get("to"), "to")
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    ledger = compensation_ledger(dashboard.log, since, until)
    return JSONResponse(dashboard.views.ledger_json(ledger))


#: Every route of the dashboard.
ROUTES = [
    Route("/", home),
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/runs", runs_page),
    Route("/runs/{run_id}", run_page),
    Route("/runs/{run_id}/{action}", act, methods=["POST"]),
    Route("/parked", parked_page),
    Route("/approvals", approvals_page),
    Route("/ledger", ledger_page),
    Route("/api/runs", api_runs),
    Route("/api/runs/{run_id}", api_run),
    Route("/api/runs/{run_id}/{action}", act, methods=["POST"]),
    Route("/api/approvals", api_approvals),
    Route("/api/ledger", api_ledger),
]
