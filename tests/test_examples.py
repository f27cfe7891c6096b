"""The examples run as documented, and do what their READMEs say.

Each worked example runs once per module, with its README's command plus
``--json FILE --store URL``; the tests read the saga log events and simulator
ledgers it writes there, and run ``sagaledger audit`` on the saga log it kept.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

Results = dict[str, Any]


def test_the_quickstart_completes_one_run_and_unwinds_the_other() -> None:
    script = ROOT / "examples" / "quickstart" / "quickstart.py"
    out = subprocess.run(
        [sys.executable, script], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert "run A1: completed" in out
    assert "run A2: compensated" in out
    assert out.count("compensation_completed   charge") == 1
    assert "'refunded': True" in out and "'refunded': False" in out


# -- running a worked example ------------------------------------------------------------


def run_example(name: str, folder: Path) -> tuple[str, Results]:
    """Run ``examples/NAME/run.py`` the way its README says; return its output and results."""
    command = f".venv/bin/python examples/{name}/run.py"
    readme = (ROOT / "examples" / name / "README.md").read_text()
    assert command in readme, f"examples/{name}/README.md no longer documents {command!r}"
    results = folder / "results.json"
    store = f"sqlite:///{folder}/saga.db"
    done = subprocess.run(
        [sys.executable, f"examples/{name}/run.py", "--json", str(results), "--store", store],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    played: Results = json.loads(results.read_text())
    played["store"] = store  # where the example kept its saga log
    return done.stdout, played


@pytest.fixture(scope="module")
def order_fulfilment(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Results]:
    return run_example("order_fulfilment", tmp_path_factory.mktemp("order_fulfilment"))


@pytest.fixture(scope="module")
def billing(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Results]:
    return run_example("billing", tmp_path_factory.mktemp("billing"))


def run_of(results: Results, key: str) -> dict[str, Any]:
    matching: list[dict[str, Any]] = [r for r in results["runs"] if r["business_key"] == key]
    (run,) = matching
    return run


def effects(results: Results, key: str, operation: str | None = None) -> list[dict[str, Any]]:
    """The ledger rows of one order or bill, in the order the simulators applied them."""
    return [
        e
        for e in results["ledger"]
        if e["business_key"] == key and operation in (None, e["operation"])
    ]


def events(run: dict[str, Any], kind: str, step: str | None = None) -> list[dict[str, Any]]:
    return [e for e in run["events"] if e["type"] == kind and step in (None, e["step"])]


# -- both ------------------------------------------------------------------------------


@pytest.mark.parametrize("example", ["order_fulfilment", "billing"])
def test_every_effect_is_attributed_to_the_run_that_caused_it(
    example: str, request: pytest.FixtureRequest
) -> None:
    # SMTP keys what it received by Message-ID: those are learned from the log.
    _, results = request.getfixturevalue(example)
    keys = {run["run_id"]: run["business_key"] for run in results["runs"]}
    for effect in results["ledger"]:
        assert effect["run_id"] in keys, effect
        assert effect["business_key"] == keys[effect["run_id"]], effect


# -- order fulfilment --------------------------------------------------------------------


def test_order_fulfilment_ends_every_run_as_expected(order_fulfilment: tuple[str, Results]) -> None:
    out, results = order_fulfilment
    statuses = {r["business_key"]: r["status"] for r in results["runs"]}
    assert statuses == {
        "SO-1001": "completed",
        "SO-1002": "completed",
        "SO-1003": "completed",
        "SO-1004": "compensated",
        "SO-1005": "parked",
    }
    assert out.count("[ok]") == 5
    assert "every effect the simulators applied" in out


def test_every_order_is_charged_once_for_its_amount(order_fulfilment: tuple[str, Results]) -> None:
    _, results = order_fulfilment
    for run in results["runs"]:
        charges = effects(results, run["business_key"], "charge")
        assert [c["amount"] for c in charges] == [run["amount_cents"]], run["business_key"]
        (recorded,) = events(run, "step_completed", "charge_card")
        assert recorded["payload"]["output"]["id"] == charges[0]["ref"]


def test_a_lost_charge_response_is_found_by_the_probe_not_charged_again(
    order_fulfilment: tuple[str, Results],
) -> None:
    _, results = order_fulfilment
    run = run_of(results, "SO-1002")
    # Given: the first attempt's charge landed and its answer was lost
    (failed,) = events(run, "step_failed", "charge_card")
    assert failed["error"]["outcome_unknown"] is True
    assert failed["payload"]["outcome"] == "retry"
    # Then: the probe before attempt 2 found it, and it was never sent again
    (completed,) = events(run, "step_completed", "charge_card")
    assert completed["attempt"] == 2 and completed["payload"]["via_probe"] is True
    assert len(effects(results, "SO-1002", "charge")) == 1
    assert effects(results, "SO-1002", "refund") == []
    assert run["status"] == "completed"


def test_a_rate_limited_charge_waits_for_retry_after_then_completes(
    order_fulfilment: tuple[str, Results],
) -> None:
    _, results = order_fulfilment
    run = run_of(results, "SO-1003")
    (deferred,) = events(run, "step_deferred", "charge_card")
    assert "429" in deferred["error"]["message"]
    # No attempt is used up by a rate limit, and the charge waited for Retry-After.
    (completed,) = events(run, "step_completed", "charge_card")
    assert completed["attempt"] == 1 and completed["payload"]["via_probe"] is False
    (charge,) = effects(results, "SO-1003", "charge")
    until = datetime.fromisoformat(deferred["payload"]["until"])
    assert datetime.fromisoformat(charge["at"]) >= until
    assert run["status"] == "completed"


def test_a_late_failure_is_undone_in_reverse_for_the_same_amounts(
    order_fulfilment: tuple[str, Results],
) -> None:
    _, results = order_fulfilment
    run = run_of(results, "SO-1004")
    (failed,) = events(run, "step_failed", "send_confirmation")
    assert "550" in failed["error"]["message"] and failed["payload"]["outcome"] == "compensate"
    # The ledgers of both systems, merged by time: the effects, then their undoing in reverse.
    ledger = effects(results, "SO-1004")
    assert [e["operation"] for e in ledger] == [
        "reserve",
        "charge",
        "order_created",
        "order_cancelled",
        "refund",
        "release",
    ]
    reserve, charge, created, cancelled, refund, release = ledger
    assert refund["amount"] == charge["amount"] == run["amount_cents"]
    assert refund["detail"]["payment_intent"] == charge["ref"]
    assert cancelled["ref"] == created["ref"]
    assert (release["ref"], release["amount"]) == (reserve["ref"], reserve["amount"])
    compensated = [e["step"] for e in events(run, "compensation_completed")]
    assert compensated == ["create_sales_order", "charge_card", "reserve_inventory"]
    assert effects(results, "SO-1004", "email_sent") == []


def test_completed_orders_are_confirmed_once_and_never_undone(
    order_fulfilment: tuple[str, Results],
) -> None:
    _, results = order_fulfilment
    for key in ("SO-1001", "SO-1002", "SO-1003"):
        assert [e["operation"] for e in effects(results, key)] == [
            "reserve",
            "charge",
            "order_created",
            "email_sent",
        ], key


# -- billing -----------------------------------------------------------------------------


def test_billing_ends_every_run_as_expected(billing: tuple[str, Results]) -> None:
    out, results = billing
    statuses = {r["business_key"]: r["status"] for r in results["runs"]}
    assert statuses == {
        "INV-2001": "completed",
        "INV-2002": "completed",
        "INV-2003": "compensated",
        "INV-2004": "compensated",
        "INV-2005": "parked",
    }
    assert out.count("[ok]") == 5
    assert "every effect the simulators applied" in out


def test_a_lost_receipt_response_is_found_by_the_probe_and_sent_once(
    billing: tuple[str, Results],
) -> None:
    _, results = billing
    run = run_of(results, "INV-2002")
    (failed,) = events(run, "step_failed", "send_receipt")
    assert failed["error"]["outcome_unknown"] is True
    (completed,) = events(run, "step_completed", "send_receipt")
    assert completed["attempt"] == 2 and completed["payload"]["via_probe"] is True
    (sent,) = effects(results, "INV-2002", "email_sent")
    assert completed["payload"]["output"]["message_id"] == sent["ref"]


def test_a_declined_card_voids_the_invoice_and_refunds_nothing(
    billing: tuple[str, Results],
) -> None:
    _, results = billing
    run = run_of(results, "INV-2003")
    (failed,) = events(run, "step_failed", "charge_card")
    assert "card_declined" in failed["error"]["message"]
    created, voided = effects(results, "INV-2003")
    assert (created["operation"], voided["operation"]) == ("invoice_created", "invoice_voided")
    assert voided["ref"] == created["ref"] and voided["amount"] == created["amount"]
    (compensation,) = events(run, "compensation_completed", "create_invoice")
    assert compensation["payload"]["result"]["record_type"] == "creditMemo"
    assert compensation["payload"]["result"]["id"] == voided["detail"]["credit_memo"]


def test_a_refused_receipt_refunds_the_charge_then_voids_the_invoice(
    billing: tuple[str, Results],
) -> None:
    _, results = billing
    run = run_of(results, "INV-2004")
    (failed,) = events(run, "step_failed", "send_receipt")
    assert "422" in failed["error"]["message"]
    ledger = effects(results, "INV-2004")
    assert [e["operation"] for e in ledger] == [
        "invoice_created",
        "charge",
        "refund",
        "invoice_voided",
    ]
    created, charge, refund, voided = ledger
    assert refund["amount"] == charge["amount"] == run["amount_cents"] == created["amount"]
    assert refund["detail"]["payment_intent"] == charge["ref"]
    assert voided["ref"] == created["ref"] and voided["amount"] == created["amount"]


def test_every_bill_charged_is_charged_once_for_its_amount(billing: tuple[str, Results]) -> None:
    _, results = billing
    for run in results["runs"]:
        charges = [c["amount"] for c in effects(results, run["business_key"], "charge")]
        expected = [] if run["business_key"] == "INV-2003" else [run["amount_cents"]]
        assert charges == expected, run["business_key"]
    for key in ("INV-2001", "INV-2002"):
        operations = [e["operation"] for e in effects(results, key)]
        assert operations == ["invoice_created", "charge", "email_sent"], key


# -- the compensation ledger of both -------------------------------------------------------

#: A simulator's name for a forward effect -> the ledger's.
FORWARD = {
    "reserve": "reserve",
    "charge": "charge",
    "order_created": "order_created",
    "invoice_created": "invoice",
    "email_sent": "email_sent",
}
#: The run each example deliberately leaves unbalanced: a compensation parks.
PARKED = {"order_fulfilment": "SO-1005", "billing": "INV-2005"}
#: The run each example undoes after a late failure.
LATE_FAILURE = {"order_fulfilment": "SO-1004", "billing": "INV-2004"}


def audit(results: Results, *args: str) -> subprocess.CompletedProcess[str]:
    """``sagaledger audit ARGS --store URL`` on the example's saga log."""
    command = [sys.executable, "-m", "sagaledger", "audit", *args, "--store", results["store"]]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)


def exported(results: Results) -> list[dict[str, Any]]:
    done = audit(results, "export", "--format", "jsonl")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.parametrize("example", ["order_fulfilment", "billing"])
def test_the_exported_ledger_lists_every_effect_of_every_run(
    example: str, request: pytest.FixtureRequest
) -> None:
    _, results = request.getfixturevalue(example)
    rows = exported(results)
    for run in results["runs"]:
        key = run["business_key"]
        mine = [r for r in rows if r["run_id"] == run["run_id"]]
        # Every forward effect the simulators applied for the run is a row, once...
        applied = Counter(
            FORWARD[e["operation"]] for e in effects(results, key) if e["operation"] in FORWARD
        )
        assert Counter(r["operation"] for r in mine) == applied, key
        # ...for the money the simulator moved (minor units there, major units here)
        for row in mine:
            assert row["business_key"] == key and row["saga"] == example
            if row["operation"] == "charge":
                (charged,) = effects(results, key, "charge")
                assert row["reference"] == charged["ref"]
                assert Decimal(row["amount"]) * 100 == charged["amount"] == run["amount_cents"]
                assert row["currency"] == "USD"


@pytest.mark.parametrize("example", ["order_fulfilment", "billing"])
def test_every_run_balances_but_the_one_whose_compensation_parked(
    example: str, request: pytest.FixtureRequest
) -> None:
    out, results = request.getfixturevalue(example)
    parked = run_of(results, PARKED[example])
    assert parked["status"] == "parked"
    # The command exits 1 and names exactly the parked run
    done = audit(results, "balance", "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["runs"] == len(results["runs"])
    assert [r["run_id"] for r in report["unbalanced"]] == [parked["run_id"]]
    # The example's own report says the same
    assert [r["run_id"] for r in results["balance"]["unbalanced"]] == [parked["run_id"]]
    assert results["balance"]["as_expected"] is True
    assert "1 unbalanced [as expected]" in out
    # Every other run's rows are settled: kept, undone, or not compensatable
    for row in exported(results):
        if row["run_id"] != parked["run_id"]:
            assert row["status"] in ("kept", "undone", "not compensatable"), row


def test_a_parked_refund_leaves_the_charge_and_the_reservation_outstanding(
    order_fulfilment: tuple[str, Results],
) -> None:
    _, results = order_fulfilment
    run = run_of(results, "SO-1005")
    rows = [r for r in exported(results) if r["run_id"] == run["run_id"]]
    assert {r["operation"]: r["status"] for r in rows} == {
        "reserve": "outstanding",
        "charge": "outstanding",
        "order_created": "undone",
    }
    [unbalanced] = results["balance"]["unbalanced"]
    assert unbalanced["open"] == {"USD": "39.98", "each": "2"}


def test_a_parked_void_leaves_the_invoice_outstanding_and_the_charge_refunded(
    billing: tuple[str, Results],
) -> None:
    _, results = billing
    run = run_of(results, "INV-2005")
    rows = [r for r in exported(results) if r["run_id"] == run["run_id"]]
    assert {r["operation"]: r["status"] for r in rows} == {
        "invoice": "outstanding",
        "charge": "undone",
    }
    [unbalanced] = results["balance"]["unbalanced"]
    assert unbalanced["open"] == {"USD": "39.98"}


@pytest.mark.parametrize("example", ["order_fulfilment", "billing"])
def test_a_late_failure_is_undone_in_the_ledger_for_the_amount_charged(
    example: str, request: pytest.FixtureRequest
) -> None:
    _, results = request.getfixturevalue(example)
    run = run_of(results, LATE_FAILURE[example])
    rows = [r for r in exported(results) if r["run_id"] == run["run_id"]]
    assert rows and {r["status"] for r in rows} == {"undone"}
    (charge,) = [r for r in rows if r["operation"] == "charge"]
    (refunded,) = effects(results, run["business_key"], "refund")
    assert charge["undone_by"] == f"refund {refunded['ref']} {charge['amount']}"
    assert charge["undone_amount"] == f"{charge['amount']} USD"
    assert Decimal(charge["amount"]) * 100 == refunded["amount"] == run["amount_cents"]
