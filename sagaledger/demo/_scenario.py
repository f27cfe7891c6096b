"""``sagaledger demo``: a worker dies mid-saga, another resumes it, a late failure unwinds.

Every claim the demo prints is checked against the saga log and the ledger
first; a check that fails is printed in red and the demo exits with status 1.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
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
from sagaledger._settings import DEFAULT_STORE, ENV_PREFIX
from sagaledger.demo._ledger import Call, Effect, Ledger, ledger_for_store
from sagaledger.demo._saga import SAGA_NAME, Order, build_registry
from sagaledger.sagas import EmbeddedWorker, Orchestrator
from sagaledger.store import EventRecord, EventType, Phase, RunRecord, RunStatus, SagaLog

#: Short timings, so that a crashed worker's run is taken over within seconds.
LEASE = timedelta(seconds=2)
RECOVERY_INTERVAL = timedelta(milliseconds=200)
#: How long any one phase of the demo may take before it is declared stuck.
PHASE_TIMEOUT = 30.0

CRASH_SPEC = "charge_payment:after_action"


class DemoFailed(Exception):
    """Something the demo promised did not happen."""


def run_demo(store: str, console: Console) -> bool:
    """Run the demo against the saga log at ``store``; return True when every check passed.

    Raises:
        StoreError: the store cannot be shared with a worker process, or cannot be used.
    """
    _check_shareable(store)
    ledger = Ledger(ledger_for_store(store))
    log = SagaLog.open(store)
    try:
        _Demo(store, log, ledger, console).run()
    except DemoFailed as exc:
        console.print(Text(f"✗ {exc}", style="bold red"))
        return False
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
    # Fresh business keys on every invocation, so the demo can be run again and again.
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
    fine = Order(
        order_id=f"ORD-{stamp}-A",
        customer="Ada Lovelace",
        sku="BOOK-NOTES-ON-THE-ENGINE",
        quantity=2,
        amount_cents=4_200,
        currency="EUR",
        email="ada@example.com",
    )
    doomed = Order(
        order_id=f"ORD-{stamp}-B",
        customer="Charles Babbage",
        sku="DISCONTINUED-DIFFERENCE-ENGINE",
        quantity=1,
        amount_cents=99_900,
        currency="GBP",
        email="charles@example.com",
    )
    return fine, doomed


class _Demo:
    def __init__(self, store: str, log: SagaLog, ledger: Ledger, console: Console):
        self.store, self.log, self.ledger, self.console = store, log, ledger, console
        self.orchestrator = Orchestrator(
            log,
            build_registry(lambda: ledger),
            lease=LEASE,
            dispatch_grace=timedelta(seconds=1),
        )
        self.fine, self.doomed = _orders()

    def run(self) -> None:
        c = self.console
        c.print(
            Panel(
                "An order saga: reserve_inventory → charge_payment → create_erp_order → "
                "send_confirmation.\nEach step does its work on a ledger under a deterministic "
                "idempotency key.\n"
                f"saga log: {_render.display_url(self.store)}\nledger:   {self.ledger.path}",
                title="sagaledger demo",
                title_align="left",
            )
        )
        crashed = self.crash_a_worker()
        resumed, compensated = self.resume_and_compensate(crashed)
        self.show_records([resumed, compensated])
        self.finish(resumed)

    # -- (a) -----------------------------------------------------------------------

    def crash_a_worker(self) -> RunRecord:
        c = self.console
        c.rule("[bold]1 · a worker process dies mid-saga")
        command = [
            sys.executable,
            "-m",
            "sagaledger",
            "worker",
            "--app",
            "sagaledger.demo:registry",
            "--crash-at",
            CRASH_SPEC,
        ]
        env = {
            **os.environ,
            f"{ENV_PREFIX}STORE": self.store,
            f"{ENV_PREFIX}LEASE_SECONDS": str(LEASE.total_seconds()),
            f"{ENV_PREFIX}RECOVERY_INTERVAL_SECONDS": str(RECOVERY_INTERVAL.total_seconds()),
            # This process has no dispatcher: the worker's recovery pass must find the run at once.
            f"{ENV_PREFIX}DISPATCH_GRACE_SECONDS": "0",
            f"{ENV_PREFIX}THREADS": "1",
        }
        c.print(
            Text(
                "$ sagaledger worker --app sagaledger.demo:registry --crash-at " + CRASH_SPEC,
                style="dim",
            )
        )
        child = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            run = self.orchestrator.start(
                SAGA_NAME, self.fine, key=self.fine.order_id, actor="demo"
            )
            c.print(
                f"started run [bold]{run.id[:8]}[/] for order {self.fine.order_id} "
                "(written to the log; the worker's recovery pass picks it up)"
            )
            try:
                output, _ = child.communicate(timeout=PHASE_TIMEOUT)
            except subprocess.TimeoutExpired:
                child.kill()
                output, _ = child.communicate()
                raise DemoFailed(
                    f"the worker did not crash within {PHASE_TIMEOUT:.0f}s:\n{output}"
                ) from None
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        if child.returncode != -signal.SIGKILL:
            raise DemoFailed(
                f"the worker exited with {child.returncode}, not by SIGKILL:\n{output}"
            )
        for line in output.strip().splitlines()[-3:]:
            c.print(Text(f"  │ {line}", style="dim"))
        c.print(
            f"[bold red]worker pid {child.pid} was killed by signal 9 (SIGKILL)[/] right after "
            "charge_payment's effect, before its checkpoint"
        )
        run = self.log.get_run(run.id)
        events = self.log.events(run.id)
        done = [e.step for e in events if e.type is EventType.STEP_COMPLETED]
        charges = self._effects(self.fine, "charge")
        if (
            run.status is not RunStatus.RUNNING
            or done != ["reserve_inventory"]
            or len(charges) != 1
        ):
            raise DemoFailed(
                f"unexpected state after the crash: {run.status.value}, completed {done}"
            )
        grid = _grid()
        grid.add_row("run", f"{run.id[:8]} {_render.status_text(run.status).markup}")
        grid.add_row("checkpointed", "reserve_inventory")
        grid.add_row(
            "in flight",
            f"{run.step}, attempt {run.attempt} (no outcome recorded)",
        )
        grid.add_row("lease", f"held by dead {run.lease_owner}, expires {_clock(run.wake_at)}")
        grid.add_row("ledger", f"charge {charges[0].ref} applied, but the log does not know it")
        c.print(Panel(grid, title="where the run stood", title_align="left", expand=False))
        return run

    # -- (b) and (c) ------------------------------------------------------------------

    def resume_and_compensate(self, crashed: RunRecord) -> tuple[RunRecord, RunRecord]:
        c = self.console
        c.rule("[bold]2 · a fresh worker resumes from the checkpoint")
        c.print(
            f"started an in-process worker (pid {os.getpid()}); waiting for the dead "
            f"worker's lease ({LEASE.seconds}s) to expire"
        )
        worker = EmbeddedWorker(self.orchestrator, threads=2, recovery_interval=RECOVERY_INTERVAL)
        with worker:
            resumed = worker.wait(crashed.id, timeout=PHASE_TIMEOUT)
            self.check_resumed(resumed)
            c.rule("[bold]3 · a late failure is compensated in reverse")
            run = self.orchestrator.start(
                SAGA_NAME, self.doomed, key=self.doomed.order_id, actor="demo"
            )
            c.print(
                f"started run [bold]{run.id[:8]}[/] for order {self.doomed.order_id}, "
                f"sku {self.doomed.sku}"
            )
            compensated = worker.wait(run.id, timeout=PHASE_TIMEOUT)
        self.check_compensated(compensated)
        return resumed, compensated

    def check_resumed(self, run: RunRecord) -> None:
        events = self.log.events(run.id)
        calls = self.ledger.calls([self.fine.order_id])
        reserve_calls = [k for k in calls if k.step == "reserve_inventory"]
        charge_calls = [k for k in calls if k.step == "charge_payment"]
        charges = self._effects(self.fine, "charge")
        abandoned = [e for e in events if e.type is EventType.ATTEMPT_ABANDONED]
        _check(
            run.status is RunStatus.COMPLETED,
            f"run {run.id[:8]} is {run.status.value}, not completed",
        )
        _check(
            len(reserve_calls) == 1 and _starts(events, "reserve_inventory") == 1,
            "reserve_inventory ran again",
        )
        _check(
            len(charge_calls) == 2
            and len({k.key for k in charge_calls}) == 1
            and len(charges) == 1,
            "expected 2 charge calls with one key and 1 charge, "
            f"got {len(charge_calls)} calls, {len(charges)} charges",
        )
        _check(bool(abandoned), "the crashed attempt was not recorded as abandoned")
        first, second = charge_calls
        self._ok(
            f"the log recorded attempt {abandoned[0].attempt} of charge_payment as abandoned "
            "(its lease expired)"
        )
        self._ok(
            "reserve_inventory was not re-run: it had been checkpointed (1 call in the ledger)"
        )
        self._ok(
            f"charge_payment re-ran as attempt {second.attempt} (pid {second.pid}) "
            "with the key of attempt "
            f"{first.attempt} (pid {first.pid}); the ledger answered '{second.outcome}': "
            f"one charge, {charges[0].ref}"
        )
        self._ok(f"run {run.id[:8]} [green]completed[/]")

    def check_compensated(self, run: RunRecord) -> None:
        events = self.log.events(run.id)
        failed = [e for e in events if e.type is EventType.STEP_FAILED]
        undone = [e.step for e in events if e.type is EventType.COMPENSATION_COMPLETED]
        refunds, releases = (
            self._effects(self.doomed, "refund"),
            self._effects(self.doomed, "release"),
        )
        charge, reservation = (
            self._effects(self.doomed, "charge"),
            self._effects(self.doomed, "reservation"),
        )
        _check(
            run.status is RunStatus.COMPENSATED,
            f"run {run.id[:8]} is {run.status.value}, not compensated",
        )
        _check(
            len(failed) == 1 and failed[0].step == "create_erp_order" and failed[0].attempt == 1,
            "create_erp_order did not fail once, permanently",
        )
        _check(undone == ["charge_payment", "reserve_inventory"], f"compensations ran as {undone}")
        _check(
            len(refunds) == 1 and refunds[0].detail.get("charge_id") == charge[0].ref,
            "the refund does not name the charge",
        )
        _check(
            len(releases) == 1 and releases[0].detail.get("reservation_id") == reservation[0].ref,
            "the release does not name the reservation",
        )
        _check(
            not self._effects(self.doomed, "erp_order") and not self._effects(self.doomed, "email"),
            "leak",
        )
        error = failed[0].error or {}
        self._ok("reserve_inventory and charge_payment completed")
        self._ok(f"create_erp_order failed permanently, no retry: {error.get('message')}")
        self._ok(
            f"compensated in reverse: refund {refunds[0].ref} of charge {charge[0].ref}, "
            f"then release {releases[0].ref} of reservation {reservation[0].ref}"
        )
        self._ok(f"run {run.id[:8]} [yellow]compensated[/]; no confirmation email was sent")

    # -- (d) ----------------------------------------------------------------------

    def show_records(self, runs: Sequence[RunRecord]) -> None:
        c = self.console
        c.rule("[bold]4 · what the saga log and the ledger say")
        for run in runs:
            c.print(_render.run_view(self.log.get_run(run.id), self.log.events(run.id)))
            c.print()
        orders = [self.fine.order_id, self.doomed.order_id]
        c.print(_effects_table(self.ledger.effects(orders), runs))
        c.print()
        c.print(_calls_table(self.ledger.calls(orders), runs))

    def finish(self, run: RunRecord) -> None:
        store = "" if self.store == DEFAULT_STORE else f" --store {_store_hint(self.store)}"
        self.console.rule()
        self.console.print(
            f"Try [bold]sagaledger runs list{store}[/] to see every run, "
            f"and [bold]sagaledger runs show {run.id[:8]}{store}[/] for one timeline."
        )

    # -- helpers ------------------------------------------------------------------

    def _effects(self, order: Order, kind: str) -> list[Effect]:
        return [e for e in self.ledger.effects([order.order_id]) if e.kind == kind]

    def _ok(self, message: str) -> None:
        self.console.print(f"[green]✓[/] {message}")


def _check(condition: bool, failure: str) -> None:
    if not condition:
        raise DemoFailed(failure)


def _starts(events: Sequence[EventRecord], step: str) -> int:
    return sum(
        1
        for e in events
        if e.type is EventType.ATTEMPT_STARTED and e.step == step and e.phase is Phase.FORWARD
    )


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


def _effects_table(effects: Sequence[Effect], runs: Sequence[RunRecord]) -> Table:
    orders = {run.business_key: run.id[:8] for run in runs}
    table = Table(title="ledger effects (one per idempotency key)", title_justify="left", box=None)
    for name in ("run", "kind", "ref", "pid", "detail"):
        table.add_column(name, overflow="fold")
    for e in effects:
        undo = e.kind in ("release", "refund", "erp_cancellation")
        table.add_row(
            orders.get(e.order_id, e.order_id),
            Text(e.kind, style="magenta" if undo else "green"),
            e.ref,
            str(e.pid),
            ", ".join(f"{k}={v}" for k, v in e.detail.items()),
        )
    return table


def _calls_table(calls: Sequence[Call], runs: Sequence[RunRecord]) -> Table:
    orders = {run.business_key: run.id[:8] for run in runs}
    table = Table(
        title="ledger calls (every attempt, duplicates included)", title_justify="left", box=None
    )
    for name in ("run", "step", "phase", "att", "outcome", "pid"):
        table.add_column(name, overflow="fold")
    styles = {"applied": "green", "duplicate": "bold yellow", "rejected": "red"}
    for k in calls:
        table.add_row(
            orders.get(k.order_id, k.order_id),
            k.step,
            k.phase,
            str(k.attempt),
            Text(k.outcome, style=styles.get(k.outcome, "")),
            str(k.pid),
        )
    return table
