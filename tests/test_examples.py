"""The examples run as documented."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_quickstart_completes_one_run_and_unwinds_the_other() -> None:
    script = ROOT / "examples" / "quickstart" / "quickstart.py"
    out = subprocess.run(
        [sys.executable, script], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert "run A1: completed" in out
    assert "run A2: compensated" in out
    assert out.count("compensation_completed   charge") == 1
    assert "'refunded': True" in out and "'refunded': False" in out
