"""``sagaledger demo``: a worker dies mid-saga, another resumes it, a late failure unwinds.

The saga calls the real connectors. The systems they talk to are simulators
this process starts on loopback, so that they outlive the worker process it
kills; that worker finds them through ``SAGALEDGER_SIMULATORS``. Every claim
the demo prints is checked against the saga log and the simulators' ledgers
first; a check that fails is printed in red and the demo exits with status 1.
"""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from sagaledger import _render
from sagaledger._errors import StoreError
from sagaledger._settings import DEFAULT_STORE
from sagaledger.connectors.simulators import (
    Fault,
    FaultKind,
    LocalConnectors,
    SimulatorSuite,
    Timeline,
)
from sagaledger.demo import _checks as checks
from sagaledger.demo._checks import DemoFailed
from sagaledger.demo._effects import (
    ledgers_path,
    ledgers_view,
    money,
    money_of,
    short_key,
    write_ledgers,
)
from sagaledger.demo._saga import SAGA_NAME, Order, build_registry, charge_card
from sagaledger.sagas import EmbeddedWorker, Orchestrator
from sagaledger.store import RunRecord, SagaLog
from sagaledger.testing import WorkerProcess, WorkerProcessError

#: What the worker process runs: the demo's saga, on connectors for the simulators.
DEMO_APP = "sagaledger.demo:registry"
#: Short timings, so that a crashed worker's run is taken over within seconds.
LEASE = timedelta(seconds=2)
RECOVERY_INTERVAL = timedelta(milliseconds=200)
#: How long any one phase of the demo may take before it is declared stuck.
PHASE_TIMEOUT = 30.0
#: Where the worker process kills itself: the charge made, its outcome not checkpointed.
CRASH_SPEC = "charge_payment:after_action"
#: Seconds the 429 injected on the second order's charge asks to wait.
RETRY_AFTER = 1.0


def run_demo(store: str, console: Console) -> bool:
    """Run the demo against the saga log at ``store``; return True when every check passed.

    The simulators' ledgers are written as JSON next to the log (see
    :func:`~sagaledger.demo._effects.ledgers_path`), whether or not the checks passed.

    Raises:
        StoreError: the store cannot be shared with a worker process, or cannot be used.
    """
    _check_shareable(store)
    log = SagaLog.open(store)
    try:
        with SimulatorSuite() as suite:
            connectors = suite.connectors()
            try:
                _Demo(store, log, suite, connectors, console).run()
            except DemoFailed as exc:
                console.print(Text(f"✗ {exc}", style="bold red"))
                return False
            finally:
                connectors.close()
                write_ledgers(ledgers_path(store), suite.ledgers())
    finally:
        log.close()
    return True


def _check_shareable(store: str) -> None:
    try:
        url = make_url(store)
    except ArgumentError:
        return  # SagaLog.open names the problem
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        raise StoreError(
            "the demo needs a store a worker process can open too (a SQLite file or Postgres)"
        )


def _orders() -> tuple[Order, Order]:
    # Fresh business keys on every invocation, so the demo can be run again and again;
    # items the simulated ERP stocks by default, as under `sagaledger simulators`.
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
    fine = Order(
        order_id=f"ORD-{stamp}-A",
        customer="CUST-ADA",
        email="ada@example.com",
        sku="WIDGET-1",
        quantity=2,
        unit_price_cents=2_100,
    )
    doomed = Order(
        order_id=f"ORD-{stamp}-B",
        customer="CUST-BABBAGE",
        email="charles@example.com",
        sku="GIZMO-3",
        quantity=1,
        unit_price_cents=99_900,
    )
    return fine, doomed


class _Demo:
    def __init__(
        self,
        store: str,
        log: SagaLog,
        suite: SimulatorSuite,
        connectors: LocalConnectors,
        console: Console,
    ):
        self.store, self.log, self.suite, self.console = store, log, suite, console
        self.connectors = connectors
        self.orchestrator = Orchestrator(
            log,
            build_registry(lambda: connectors),
            lease=LEASE,
            dispatch_grace=timedelta(seconds=1),
        )
        self.fine, self.doomed = _orders()

    def run(self) -> None:
        sims = self.suite.endpoints
        self.console.print(
            Panel(
                "An order saga on the real connectors: reserve_inventory (ERP) → "
                "charge_payment (payments) → create_erp_order (ERP) → send_confirmation "
                "(email API).\nEvery call carries the step's idempotency key; every step has "
                "a probe that asks the remote system whether an earlier attempt landed.\n"
                f"payments  {sims.payments_url}  (Stripe-style simulator)\n"
                f"ERP       {sims.erp_url}  (NetSuite-style simulator)\n"
                f"email     {sims.email_api_url}  (Resend-style simulator)\n"
                f"saga log  {_render.display_url(self.store)}\n"
                f"ledgers   {ledgers_path(self.store)} (written at the end)",
                title="sagaledger demo",
                title_align="left",
            )
        )
        crashed = self.crash_a_worker()
        resumed, compensated = self.resume_and_compensate(crashed)
        self.show_records([resumed, compensated])
        self.finish(resumed)

    # -- 1 ------------------------------------------------------------------------

    def crash_a_worker(self) -> RunRecord:
        c = self.console
        c.rule("[bold]1 · a worker process dies mid-saga")
        c.print(Text(f"$ sagaledger worker --app {DEMO_APP} --crash-at {CRASH_SPEC}", style="dim"))
        worker = WorkerProcess(
            DEMO_APP,
            store=self.store,
            env=self.suite.endpoints.to_env(),
            crash_at=CRASH_SPEC,
            recovery_interval=RECOVERY_INTERVAL,
            lease=LEASE,
            threads=1,
            start_timeout=PHASE_TIMEOUT,
        )
        try:
            with worker:
                run = self.orchestrator.start(
                    SAGA_NAME, self.fine, key=self.fine.order_id, actor="demo"
                )
                c.print(
                    f"started run [bold]{run.id[:8]}[/] for order {self.fine.order_id} "
                    "(written to the log; the worker's recovery pass picks it up)"
                )
                worker.wait(timeout=PHASE_TIMEOUT)
        except (WorkerProcessError, TimeoutError) as exc:
            raise DemoFailed(f"the worker did not crash as planned: {exc}") from None
        output = worker.output
        if worker.returncode != -signal.SIGKILL:
            raise DemoFailed(
                f"the worker exited with {worker.returncode}, not by SIGKILL:\n{output}"
            )
        for line in output.strip().splitlines()[-3:]:
            c.print(Text(f"  │ {line}", style="dim"))
        c.print(
            f"[bold red]worker pid {worker.pid} was killed by signal 9 (SIGKILL)[/] right after "
            "charge_payment's effect, before its checkpoint"
        )
        run = self.log.get_run(run.id)
        charge = checks.crashed(self._evidence(run))
        grid = _grid()
        grid.add_row("run", f"{run.id[:8]} {_render.status_text(run.status).markup}")
        grid.add_row("checkpointed", "reserve_inventory")
        grid.add_row("in flight", f"{run.step}, attempt {run.attempt} (no outcome recorded)")
        grid.add_row("lease", f"held by dead {run.lease_owner}, expires {_clock(run.wake_at)}")
        grid.add_row(
            "payments",
            f"charge {charge.ref} of {money_of(charge)} under key {short_key(charge.key)}, "
            "but the log does not know it",
        )
        c.print(Panel(grid, title="where the run stood", title_align="left", expand=False))
        return run

    # -- 2 and 3 ------------------------------------------------------------------

    def resume_and_compensate(self, crashed: RunRecord) -> tuple[RunRecord, RunRecord]:
        self.console.rule("[bold]2 · a fresh worker resumes from the checkpoint")
        self.console.print(
            f"started an in-process worker (pid {os.getpid()}); it takes the run over once "
            f"the dead worker's lease ({LEASE.seconds}s) expires or its process is seen gone"
        )
        worker = EmbeddedWorker(self.orchestrator, threads=2, recovery_interval=RECOVERY_INTERVAL)
        with worker:
            resumed = worker.wait(crashed.id, timeout=PHASE_TIMEOUT)
            self._ok(*checks.resumed(self._evidence(resumed)))
            self.replay_the_charge(resumed)
            (erp_order,) = self._evidence(resumed).effects("erp", "order_created")
            self._ok(
                f"run {resumed.id[:8]} [green]completed[/]: sales order {erp_order.ref}, "
                "one confirmation email"
            )
            compensated = self.fail_late(worker)
        return resumed, compensated

    def replay_the_charge(self, run: RunRecord) -> None:
        """Send attempt 1's charge again, as a retry without a probe would, and show the replay."""
        ev = self._evidence(run)
        (charge,) = ev.effects("payments", "charge")
        again = charge_card(self.connectors.payments, self.fine, ev.charge_key)
        charges = self._evidence(run).effects("payments", "charge")
        checks.check(
            again.id == charge.ref and len(charges) == 1,
            f"the same request with the same key gave {again.id} and {len(charges)} charges",
        )
        self._ok(
            f"the key alone would have stopped a second charge too: attempt 1's request, "
            f"re-sent by the demo with Idempotency-Key {short_key(ev.charge_key)}, is "
            f"replayed: {again.id} again, still one charge"
        )

    def fail_late(self, worker: EmbeddedWorker) -> RunRecord:
        c, order = self.console, self.doomed
        c.rule("[bold]3 · a late failure is compensated in reverse")
        # Both faults hit the next matching request, which only this run sends.
        self.suite.payments.inject(
            Fault(FaultKind.RATE_LIMIT, operation="create_payment_intent", retry_after=RETRY_AFTER)
        )
        self.suite.email_api.inject(Fault(FaultKind.DECLINE, operation="send"))
        c.print(
            f"injected: the payments service answers the next charge 429 with "
            f"Retry-After: {RETRY_AFTER:g}; the email API refuses the next email (422)"
        )
        run = self.orchestrator.start(SAGA_NAME, order, key=order.order_id, actor="demo")
        c.print(
            f"started run [bold]{run.id[:8]}[/] for order {order.order_id}: "
            f"{order.quantity} x {order.sku}, {money(order.amount_cents, order.currency)}"
        )
        run = worker.wait(run.id, timeout=PHASE_TIMEOUT)
        self._ok(*checks.compensated(self._evidence(run), RETRY_AFTER))
        self._ok(f"run {run.id[:8]} [yellow]compensated[/]; no confirmation email was sent")
        return run

    # -- 4 ------------------------------------------------------------------------

    def show_records(self, runs: Sequence[RunRecord]) -> None:
        c = self.console
        c.rule("[bold]4 · what the saga log and the simulators' ledgers say")
        for run in runs:
            c.print(_render.run_view(self.log.get_run(run.id), self.log.events(run.id)))
            c.print()
        c.print(ledgers_view(Timeline(self.suite.ledgers()), runs))

    def finish(self, run: RunRecord) -> None:
        store = "" if self.store == DEFAULT_STORE else f" --store {_store_hint(self.store)}"
        self.console.rule()
        self.console.print(
            f"Try [bold]sagaledger runs list{store}[/] to see every run, "
            f"and [bold]sagaledger runs show {run.id[:8]}{store}[/] for one timeline; "
            f"the ledgers, as JSON, are in {ledgers_path(self.store)}"
        )

    # -- helpers ------------------------------------------------------------------

    def _evidence(self, run: RunRecord) -> checks.Evidence:
        """The run as the log has it now, and what the simulators saw of it."""
        return checks.Evidence(
            run=self.log.get_run(run.id),
            events=self.log.events(run.id),
            timeline=Timeline(self.suite.ledgers()),
            payment_requests=list(self.suite.payments.requests),
        )

    def _ok(self, *messages: str) -> None:
        for message in messages:
            self.console.print(f"[green]✓[/] {message}")


def _grid() -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    return grid


def _clock(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3] + " UTC" if value else "-"


def _store_hint(store: str) -> str:
    """The store URL to suggest on a command line; a placeholder rather than a password."""
    try:
        has_password = make_url(store).password is not None
    except ArgumentError:
        has_password = False
    return "URL" if has_password else f"'{store}'"
