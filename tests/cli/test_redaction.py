"""The CLI's views and JSON hide secrets and the configured sensitive fields."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from sagaledger import RetrySafety, Saga, StepContext, approval, step
from sagaledger.testing import SagaHarness


class Payment(BaseModel):
    order: str
    card_number: str


@step(retry_safety=RetrySafety.NATURAL, no_compensation="a read")
def authorise(ctx: StepContext[Payment]) -> dict[str, Any]:
    return {"auth": "a-1", "api_key": "sk_live_SECRET", "nested": [{"password": "hunter2"}]}


check = approval(
    "check",
    approvers=["ops"],
    deadline=timedelta(hours=1),
    show=lambda ctx: {"order": ctx.input.order, "card_number": ctx.input.card_number},
)
payment = Saga("payment", 1, Payment, [authorise, check])


def sagaledger(store: str, *args: str, redact: str = "card_number") -> str:
    env = {**os.environ, "SAGALEDGER_REDACT": redact}
    done = subprocess.run(
        [sys.executable, "-m", "sagaledger", *args, "--store", store],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_runs_show_list_and_approvals_hide_sensitive_fields(sqlite_url: str) -> None:
    harness = SagaHarness([payment], store_url=sqlite_url)
    run = harness.run(payment, {"order": "O-1", "card_number": "4242424242424242"})
    harness.close()

    for args in (("runs", "show", run.id), ("runs", "show", run.id, "--json")):
        shown = sagaledger(sqlite_url, *args)
        assert "4242424242424242" not in shown and "sk_live_SECRET" not in shown
        assert "hunter2" not in shown and "[redacted]" in shown
    listed = json.loads(sagaledger(sqlite_url, "runs", "list", "--json"))
    assert listed[0]["input"] == {"order": "O-1", "card_number": "[redacted]"}
    (pending,) = json.loads(sagaledger(sqlite_url, "approvals", "--json"))
    assert pending["shown"] == {"order": "O-1", "card_number": "[redacted]"}

    # Credentials are hidden whatever the setting; other fields only when named
    plain = json.loads(sagaledger(sqlite_url, "runs", "show", run.id, "--json", redact=""))
    assert plain["run"]["input"]["card_number"] == "4242424242424242"
    output = next(e for e in plain["events"] if e["type"] == "step_completed")["payload"]
    assert output["output"]["api_key"] == "[redacted]"
    assert output["output"]["nested"] == [{"password": "[redacted]"}]
