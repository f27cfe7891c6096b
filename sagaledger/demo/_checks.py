"""What the demo claims about its runs, checked against the saga log and the simulators.

Each check returns the sentences the demo prints as ticks, or raises
:class:`DemoFailed` naming what did not happen: the demo never claims what it
has not seen in the log or the ledgers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sagaledger.connectors.simulators import Effect, SimRequest, Timeline
from sagaledger.demo._effects import money_of
from sagaledger.sagas import idempotency_key
from sagaledger.store import EventRecord, EventType, Phase, RunRecord, RunStatus


class DemoFailed(Exception):
    """Something the demo promised did not happen."""


@dataclass(frozen=True)
class Evidence:
    """A run as the log has it, and what the simulators saw of it.

    Attributes:
        run: The run.
        events: Its events, in order.
        timeline: Every simulator's effects, each with its run.
        payment_requests: Every request the payments simulator received.
    """

    run: RunRecord
    events: Sequence[EventRecord]
    timeline: Timeline
    payment_requests: Sequence[SimRequest]

    def effects(self, system: str, operation: str) -> list[Effect]:
        """What ``system`` applied for this run by ``operation``, oldest first."""
        return [entry.effect for entry in self.timeline.of_run(self.run.id, system, operation)]

    def of(self, kind: EventType, step: str | None = None) -> list[EventRecord]:
        """The run's events of ``kind`` (for ``step``, when given)."""
        return [e for e in self.events if e.type is kind and step in (None, e.step)]

    @property
    def charge_key(self) -> str:
        """The key ``charge_payment`` sends on every attempt of this run."""
        return idempotency_key(self.run.id, "charge_payment", Phase.FORWARD.value)

    @property
    def charge_requests(self) -> int:
        """How many charge requests reached the payments service under :attr:`charge_key`."""
        return sum(
            1
            for r in self.payment_requests
            if r.method == "POST"
            and r.path == "/v1/payment_intents"
            and r.header("idempotency-key") == self.charge_key
        )


def check(condition: bool, failure: str) -> None:
    """Raise :class:`DemoFailed` with ``failure`` unless ``condition`` holds."""
    if not condition:
        raise DemoFailed(failure)


def crashed(ev: Evidence) -> Effect:
    """The run whose worker was killed: reserved, charged, and only the reservation logged.

    Returns:
        The charge the killed attempt made.
    """
    done = [e.step for e in ev.of(EventType.STEP_COMPLETED)]
    charges = ev.effects("payments", "charge")
    check(
        ev.run.status is RunStatus.RUNNING and done == ["reserve_inventory"] and len(charges) == 1,
        f"unexpected state after the crash: {ev.run.status.value}, completed {done}, "
        f"{len(charges)} charge(s)",
    )
    return charges[0]


def resumed(ev: Evidence) -> list[str]:
    """The crashed run, finished by another worker: nothing redone, the charge found by probe."""
    run = ev.run
    charges = ev.effects("payments", "charge")
    completed = ev.of(EventType.STEP_COMPLETED, "charge_payment")
    abandoned = ev.of(EventType.ATTEMPT_ABANDONED, "charge_payment")
    check(run.status is RunStatus.COMPLETED, f"run {run.id[:8]} is {run.status.value}")
    check(
        len(ev.effects("erp", "reserve")) == 1
        and len(ev.of(EventType.ATTEMPT_STARTED, "reserve_inventory")) == 1,
        "reserve_inventory ran again",
    )
    check(
        len(charges) == 1 and ev.charge_requests == 1,
        f"expected one charge request and one charge, got {ev.charge_requests} and {len(charges)}",
    )
    check(bool(abandoned), "the crashed attempt was not recorded as abandoned")
    check(
        len(completed) == 1
        and completed[0].attempt == 2
        and completed[0].payload.get("via_probe") is True
        and completed[0].payload["output"]["payment_intent"] == charges[0].ref,
        "charge_payment was not completed by attempt 2's probe",
    )
    check(
        len(ev.effects("erp", "order_created")) == len(ev.effects("email_api", "email_sent")) == 1,
        "the order was not created and confirmed once",
    )
    return [
        f"the log recorded attempt {abandoned[0].attempt} of charge_payment as abandoned "
        "(its lease expired)",
        "reserve_inventory was not re-run: it had been checkpointed (one reservation)",
        f"charge_payment attempt 2 ({completed[0].actor}) asked the payments probe before "
        f"charging: {charges[0].ref} carries the step's key in its metadata, so the step "
        "completed without sending the charge again",
    ]


def compensated(ev: Evidence, retry_after: float) -> list[str]:
    """The run that failed late: its 429 waited out, then undone in reverse, exactly."""
    run = ev.run
    charges, refunds = ev.effects("payments", "charge"), ev.effects("payments", "refund")
    orders, cancels = ev.effects("erp", "order_created"), ev.effects("erp", "order_cancelled")
    reserved, released = ev.effects("erp", "reserve"), ev.effects("erp", "release")
    deferred = ev.of(EventType.STEP_DEFERRED, "charge_payment")
    charged = ev.of(EventType.STEP_COMPLETED, "charge_payment")
    failed = ev.of(EventType.STEP_FAILED)
    undone = [e.step for e in ev.of(EventType.COMPENSATION_COMPLETED)]
    check(run.status is RunStatus.COMPENSATED, f"run {run.id[:8]} is {run.status.value}")
    check(
        len(deferred) == 1
        and [e.attempt for e in charged] == [1]
        and len(charges) == 1
        and ev.charge_requests == 2,
        "the 429 was not waited out within attempt 1, with one key and one charge",
    )
    check(
        len(failed) == 1 and failed[0].step == "send_confirmation" and failed[0].attempt == 1,
        "send_confirmation did not fail once, permanently",
    )
    check(
        undone == ["create_erp_order", "charge_payment", "reserve_inventory"],
        f"compensations ran as {undone}",
    )
    check(
        len(orders) == len(cancels) == 1 and cancels[0].ref == orders[0].ref,
        "the sales order was not cancelled",
    )
    check(
        len(refunds) == 1
        and refunds[0].amount == charges[0].amount
        and refunds[0].detail.get("payment_intent") == charges[0].ref,
        "the refund does not give back exactly the charge",
    )
    check(
        len(reserved) == len(released) == 1 and released[0].ref == reserved[0].ref,
        "the reservation was not released",
    )
    at = [datetime.fromisoformat(e.at) for e in (cancels[0], refunds[0], released[0])]
    check(
        at[0] < at[1] < at[2],
        "the ledgers do not show the compensations in reverse order",
    )
    check(not ev.effects("email_api", "email_sent"), "a confirmation email was sent")
    error = failed[0].error or {}
    return [
        f"charge_payment was answered 429 (Retry-After: {retry_after:g}): "
        "attempt 1 was deferred that long without being used up, then sent again with the "
        f"same Idempotency-Key: one charge, {charges[0].ref}, {money_of(charges[0])}",
        f"create_erp_order created sales order {orders[0].ref}",
        f"send_confirmation failed permanently, no retry: {error.get('message')}",
        f"compensated in reverse: sales order {cancels[0].ref} cancelled, then "
        f"{money_of(refunds[0])} refunded on {charges[0].ref}, then reservation "
        f"{released[0].ref} released",
    ]
