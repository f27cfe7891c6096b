"""sagaledger against DBOS Transact: the same workloads, on the same machine, in one run.

Each workload runs in a fresh subprocess per engine, sagaledger and DBOS one
after the other (the order flips every round, so neither always runs on a
warmer disk), and prints its figures as one JSON line. DBOS runs from its own
virtualenv, ``benchmarks/.venv-dbos``, created on first use. Beside the figures,
the floor: one committed single-row insert in SQLite. See benchmarks/README.md.

    python benchmarks/compare.py [--throughput-runs 2000] [--rounds 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path
from typing import Any

from _workloads import STEPS, floor_ms

HERE = Path(__file__).resolve().parent
#: DBOS's own environment: it is a benchmark peer, not a dependency of sagaledger.
DBOS_VENV = HERE / ".venv-dbos"
#: What the DBOS virtualenv installs (3.x: SQLite system databases).
DBOS_REQUIREMENT = "dbos>=3.4,<4"
#: The two sides, in the order of the table: name -> workload script.
ENGINES = {"sagaledger": "sagaledger_workloads.py", "dbos": "dbos_workloads.py"}
#: A workload that takes longer than this is stuck, not slow.
WORKLOAD_TIMEOUT_S = 900

#: (workload, figure key, label, unit) in the order the table prints them.
ROWS = [
    ("latency", "latency_p50_ms", "W1 latency p50 (4 steps, sequential)", "ms"),
    ("latency", "latency_p99_ms", "W1 latency p99", "ms"),
    ("latency", "per_step_p50_ms", "W1 per-step p50 (latency / 4)", "ms"),
    ("latency", "per_step_over_floor", "W1 per-step p50 / floor", "x"),
    ("latency", "cpu_ms_per_saga", "W1 CPU per saga (sequential)", "ms"),
    ("throughput", "sagas_per_s", "W1 throughput ({throughput_runs} at once)", "sagas/s"),
    ("throughput", "batch_cpu_ms_per_saga", "W1 CPU per saga (batch)", "ms"),
    ("compensation", "latency_p50_ms", "W2 compensation latency p50", "ms"),
    ("compensation", "latency_p99_ms", "W2 compensation latency p99", "ms"),
]


def python_of(venv_dir: Path) -> Path:
    """The interpreter of a virtualenv (POSIX layout)."""
    return venv_dir / "bin" / "python"


def ensure_dbos_venv() -> str:
    """Create ``.venv-dbos`` with DBOS installed, unless it is there already.

    Returns:
        The installed DBOS version.
    """
    python = python_of(DBOS_VENV)
    probe = [str(python), "-c", "import importlib.metadata as m; print(m.version('dbos'))"]
    if python.exists():
        found = subprocess.run(probe, capture_output=True, text=True, check=False)
        if found.returncode == 0:
            return found.stdout.strip()
    print(f"creating {DBOS_VENV} with {DBOS_REQUIREMENT} (once) ...", file=sys.stderr)
    venv.create(DBOS_VENV, with_pip=True, clear=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", DBOS_REQUIREMENT],
        check=True,
        stdout=sys.stderr,  # keep stdout for the table (or the JSON)
    )
    return subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()


def run_workload(engine: str, workload: str, runs: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run one workload on one engine in a fresh process and a fresh database.

    Returns:
        The figures from the JSON line the workload script printed last.

    Raises:
        RuntimeError: the script failed or printed no figures (its stderr is included).
    """
    python = python_of(DBOS_VENV) if engine == "dbos" else Path(sys.executable)
    with tempfile.TemporaryDirectory(prefix=f"compare-{engine}-") as tmp:
        command = [str(python), str(HERE / ENGINES[engine]), workload, "--runs", str(runs)]
        command += ["--threads", str(args.threads), "--dir", tmp]
        if engine == "dbos" and not args.dbos_default_journal:
            command.append("--wal")
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=WORKLOAD_TIMEOUT_S, check=False
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{engine} {workload} failed ({done.returncode}):\n{done.stderr}")
    return dict(json.loads(lines[-1]))


def median_figures(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-key median of numeric figures over rounds; other values from the last round."""
    merged = dict(samples[-1])
    for key, value in merged.items():
        if isinstance(value, int | float):
            merged[key] = statistics.median(sample[key] for sample in samples)
    return merged


def measure(args: argparse.Namespace) -> tuple[dict[str, dict[str, dict[str, Any]]], float]:
    """Run every workload on both engines, alternating, ``args.rounds`` times.

    Returns:
        ``figures[engine][workload]`` (medians over rounds) and the floor in ms
        (median of one sample set taken before each pair of runs).
    """
    runs = {
        "latency": args.latency_runs,
        "throughput": args.throughput_runs,
        "compensation": args.latency_runs,
    }
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {e: {} for e in ENGINES}
    floors = []
    with tempfile.TemporaryDirectory(prefix="compare-floor-") as floor_dir:
        for round_no in range(args.rounds):
            order = list(ENGINES) if round_no % 2 == 0 else list(reversed(ENGINES))
            for workload, count in runs.items():
                floors.append(floor_ms(Path(floor_dir)))
                for engine in order:
                    print(f"round {round_no + 1}: {engine} {workload} ...", file=sys.stderr)
                    result = run_workload(engine, workload, count, args)
                    samples[engine].setdefault(workload, []).append(result)
    floor = statistics.median(floors)
    figures = {
        engine: {w: median_figures(s) for w, s in by_workload.items()}
        for engine, by_workload in samples.items()
    }
    for by_workload in figures.values():  # derived figures, from the medians
        latency = by_workload["latency"]
        latency["per_step_p50_ms"] = latency["latency_p50_ms"] / len(STEPS)
        latency["per_step_over_floor"] = latency["per_step_p50_ms"] / floor
    return figures, floor


def table_rows(figures: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per figure: both engines' values and the ratio sagaledger / DBOS."""
    rows = []
    for workload, key, label, unit in ROWS:
        ours, theirs = figures["sagaledger"][workload][key], figures["dbos"][workload][key]
        rows.append(
            {
                "figure": label,
                "key": f"{workload}.{key}",
                "unit": unit,
                "sagaledger": ours,
                "dbos": theirs,
                "ratio": ours / theirs if theirs else None,
            }
        )
    return rows


def print_table(context: dict[str, Any], rows: list[dict[str, Any]], floor: float) -> None:
    """The human-readable report: context line, the table, the floor under it."""
    print("sagaledger vs DBOS Transact: " + ", ".join(f"{k} {v}" for k, v in context.items()))
    labels = [row["figure"] for row in rows]
    floor_label = "floor: 1 committed insert (SQLite WAL, FULL)"
    width = max(map(len, [*labels, floor_label]))
    print(f"  {'figure':<{width}}  {'unit':>7}  {'sagaledger':>10}  {'DBOS':>10}  {'ratio':>6}")
    for label, row in zip(labels, rows, strict=True):
        ratio = f"{row['ratio']:.2f}" if row["ratio"] is not None else "-"
        print(
            f"  {label:<{width}}  {row['unit']:>7}  {row['sagaledger']:>10.2f}"
            f"  {row['dbos']:>10.2f}  {ratio:>6}"
        )
    print(f"  {floor_label:<{width}}  {'ms':>7}  {floor:>10.3f}  {'(same for both)':>18}")
    print("  ratio = sagaledger / DBOS: below 1 is better for ms, above 1 for sagas/s")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-runs", type=int, default=200, help="timed W1/W2 runs")
    parser.add_argument(
        "--throughput-runs", type=int, default=2000, help="sagas in the W1 throughput batch"
    )
    parser.add_argument("--rounds", type=int, default=1, help="repeat everything; medians")
    parser.add_argument("--threads", type=int, default=4, help="worker / DBOS executor threads")
    parser.add_argument(
        "--dbos-default-journal",
        action="store_true",
        help="leave DBOS's SQLite file in the rollback journal it ships with (default: WAL)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    dbos_version = ensure_dbos_venv()
    started = time.perf_counter()
    figures, floor = measure(args)
    context = {
        "throughput_runs": args.throughput_runs,
        "latency_runs": args.latency_runs,
        "rounds": args.rounds,
        "threads": args.threads,
        "dbos": dbos_version,
        "dbos_journal": figures["dbos"]["latency"]["journal_mode"],
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "took_s": round(time.perf_counter() - started, 1),
    }
    rows = table_rows(figures)
    for row in rows:  # labels may name options: "W1 throughput (2000 at once)"
        row["figure"] = row["figure"].format(**context)
    if args.json:
        report = {"context": context, "floor_ms": floor, "table": rows, "figures": figures}
        print(json.dumps(report, indent=2))
    else:
        print_table(context, rows, floor)


if __name__ == "__main__":
    main()
