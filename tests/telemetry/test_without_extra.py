"""Without the telemetry extra sagaledger imports and runs, and names needing it say so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Runs a saga with opentelemetry and prometheus_client made unimportable.
SCRIPT = """
import sys

class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("opentelemetry", "prometheus_client"):
            raise ImportError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, Missing())

import sagaledger.telemetry
from sagaledger.telemetry import JsonFormatter, current_run
from sagaledger.testing import SagaHarness
from tests.telemetry.app import quick_saga

harness = SagaHarness([quick_saga])
run = harness.run(quick_saga, {"traveller": "ada"})
print("status", run.status.value)
try:
    sagaledger.telemetry.TracingHooks
except ImportError as exc:
    print("refused:", exc)
assert not [m for m in sys.modules if m.startswith(("opentelemetry", "prometheus_client"))]
"""


def test_sagaledger_runs_without_the_extra_and_says_what_to_install() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "status completed" in done.stdout
    assert "needs the telemetry extra (pip install 'sagaledger[telemetry]')" in done.stdout
