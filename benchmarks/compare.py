"""sagaledger against DBOS Transact: the same workloads, on the same machine, in one run.

Three sections, each sagaledger beside DBOS: SQLite (both embedded), Postgres
(sagaledger embedded, DBOS on a Postgres system database) and Postgres + Redis
(sagaledger's production mode, one worker process, against DBOS on Postgres).
Each workload runs in a fresh subprocess and a fresh database per engine, the
engines one after the other (the order flips every round), and prints its
figures as one JSON line. DBOS runs from its own virtualenv,
``benchmarks/.venv-dbos``, created on first use; Postgres and Redis are
throwaway servers started here. Beside the figures, the floors: one committed
single-row insert in SQLite and in Postgres. See benchmarks/README.md.

    python benchmarks/compare.py [--backend all|sqlite|postgres|redis] [--rounds 1] [--json]
"""

from __future__ import annotations

import argparse
import compileall
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

from _backends import Servers
from _workloads import STEPS, floor_ms

HERE = Path(__file__).resolve().parent
#: DBOS's own environment: it is a benchmark peer, not a dependency of sagaledger.
DBOS_VENV = HERE / ".venv-dbos"
#: What the DBOS virtualenv installs (3.x: SQLite system databases).
DBOS_REQUIREMENT = "dbos>=3.4,<4"
#: The workload script of each engine.
SCRIPTS = {"sagaledger": "sagaledger_workloads.py", "dbos": "dbos_workloads.py"}
#: A workload that takes longer than this is stuck, not slow.
WORKLOAD_TIMEOUT_S = 900

#: One engine on one backend: ("sagaledger", "redis") is production mode.
Side = tuple[str, str]
#: The table's sections, by ``--backend`` name: title, sagaledger's side, DBOS's side.
SECTIONS: dict[str, tuple[str, Side, Side]] = {
    "sqlite": ("SQLite: sagaledger embedded vs DBOS", ("sagaledger", "sqlite"), ("dbos", "sqlite")),
    "postgres": (
        "Postgres: sagaledger embedded vs DBOS",
        ("sagaledger", "postgres"),
        ("dbos", "postgres"),
    ),
    "redis": (
        "Postgres + Redis: sagaledger production (1 worker process) vs DBOS on Postgres",
        ("sagaledger", "redis"),
        ("dbos", "postgres"),
    ),
}
#: sagaledger's W3 again with short recovery settings (``--tuned``); DBOS has one W3.
TUNED = "recovery_tuned"

#: (workload, figure key, label, unit) in the order each section prints them.
#: A TUNED row's DBOS figure is DBOS's W3.
ROWS = [
    ("latency", "latency_p50_ms", "W1 latency p50 (4 steps, sequential)", "ms"),
    ("latency", "latency_p99_ms", "W1 latency p99", "ms"),
    ("latency", "per_step_p50_ms", "W1 per-step p50 (latency / 4)", "ms"),
    ("latency", "per_step_over_floor", "W1 per-step p50 / floor", "x"),
    ("latency", "cpu_ms_per_saga", "W1 CPU per saga (sequential)", "ms"),
    ("throughput", "sagas_per_s", "W1 throughput ({throughput} at once)", "sagas/s"),
    ("throughput", "batch_cpu_ms_per_saga", "W1 CPU per saga (batch)", "ms"),
    ("compensation", "latency_p50_ms", "W2 compensation latency p50", "ms"),
    ("compensation", "latency_p99_ms", "W2 compensation latency p99", "ms"),
    ("recovery", "effects_at_kill", "W3 effects recorded when SIGKILLed (of 2000)", "n"),
    ("recovery", "recovery_s", "W3 restart -> all 500 complete", "s"),
    ("recovery", "restart_ready_s", "W3 restart -> new worker up (imports, launch)", "s"),
    ("recovery", "ready_to_complete_s", "W3 new worker up -> all 500 complete", "s"),
    ("recovery", "first_recovered_step_s", "W3 restart -> first step called", "s"),
    ("recovery", "longest_pause_s", "W3 longest pause between the new worker's calls", "s"),
    ("recovery", "lost_runs", "W3 lost runs", "n"),
    ("recovery", "reexecuted_steps", "W3 steps re-executed (same key)", "n"),
    ("recovery", "duplicated_effects", "W3 duplicated effects", "n"),
    (TUNED, "recovery_s", "W3 tuned*: restart -> all 500 complete", "s"),
    (TUNED, "ready_to_complete_s", "W3 tuned*: new worker up -> all 500 complete", "s"),
    (TUNED, "first_recovered_step_s", "W3 tuned*: restart -> first step called", "s"),
    (TUNED, "longest_pause_s", "W3 tuned*: longest pause between calls", "s"),
    (TUNED, "lost_runs", "W3 tuned*: lost runs", "n"),
    (TUNED, "duplicated_effects", "W3 tuned*: duplicated effects", "n"),
]


def python_of(venv_dir: Path) -> Path:
    """The interpreter of a virtualenv (POSIX layout)."""
    return venv_dir / "bin" / "python"


def ensure_dbos_venv() -> str:
    """Create ``.venv-dbos`` with DBOS installed (psycopg comes with it), unless it is there.

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


def compile_bytecode() -> None:
    """Compile sagaledger and these scripts to bytecode, as ``pip install`` does for DBOS.

    An editable install leaves no ``.pyc`` files, and where ``PYTHONDONTWRITEBYTECODE``
    is set none are ever written: every worker start would compile sagaledger's
    modules again (about 0.1 s), which W3's restart figure would count.
    """
    import sagaledger  # this interpreter is sagaledger's

    compileall.compile_dir(Path(sagaledger.__file__).parent, quiet=1)
    compileall.compile_dir(HERE, maxlevels=0, quiet=1)  # not into .venv-dbos


def run_counts(args: argparse.Namespace, backend: str) -> dict[str, int]:
    """Timed runs per workload on ``backend`` (W3's 500 sagas are fixed)."""
    sqlite = backend == "sqlite"
    latency = args.latency_runs if sqlite else args.server_latency_runs
    throughput = args.throughput_runs if sqlite else args.server_throughput_runs
    return {"latency": latency, "throughput": throughput, "compensation": latency}


def run_workload(
    side: Side, workload: str, args: argparse.Namespace, servers: Servers
) -> dict[str, Any]:
    """Run one workload on one side in a fresh process, with a fresh database.

    Returns:
        The figures from the JSON line the workload script printed last.

    Raises:
        RuntimeError: the script failed or printed no figures (its stderr is included).
    """
    engine, backend = side
    python = python_of(DBOS_VENV) if engine == "dbos" else Path(sys.executable)
    recovery = workload.startswith("recovery")
    runs = 0 if recovery else run_counts(args, backend)[workload]
    threads = args.recovery_threads if recovery else args.threads
    db_url = servers.fresh_database() if backend != "sqlite" else None
    try:
        with tempfile.TemporaryDirectory(prefix=f"compare-{engine}-{backend}-") as tmp:
            command = [str(python), str(HERE / SCRIPTS[engine])]
            command += ["recovery" if recovery else workload, "--runs", str(runs)]
            command += ["--threads", str(threads), "--dir", tmp, "--backend", backend]
            if db_url:
                command += ["--db-url", db_url]
            if backend == "redis":
                servers.flush_redis()
                command += ["--redis-url", servers.redis_url]
            if engine == "dbos" and backend == "sqlite" and not args.dbos_default_journal:
                command.append("--wal")
            if workload == TUNED:
                lease, grace, interval = args.tuned
                command += ["--lease", str(lease), "--dispatch-grace", str(grace)]
                command += ["--recovery-interval", str(interval)]
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=WORKLOAD_TIMEOUT_S, check=False
            )
    finally:
        if db_url:
            servers.drop_database(db_url)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"{engine} on {backend}: {workload} failed ({done.returncode}):\n{done.stderr}"
        )
    return dict(json.loads(lines[-1]))


def median_figures(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-key median of numeric figures over rounds; other values from the last round."""
    merged = dict(samples[-1])
    for key, value in merged.items():
        numbers = [s[key] for s in samples if isinstance(s.get(key), int | float)]
        if isinstance(value, int | float) and numbers:
            merged[key] = statistics.median(numbers)
    return merged


def groups(backends: list[str]) -> list[tuple[str, list[Side]]]:
    """The sides to run, grouped by the floor they are read against: SQLite, or the servers.

    A side shared by two sections (DBOS on Postgres) runs once per round.
    """
    found: dict[str, list[Side]] = {}
    for backend in backends:
        _, ours, theirs = SECTIONS[backend]
        group = found.setdefault("sqlite" if backend == "sqlite" else "postgres", [])
        group += [side for side in (ours, theirs) if side not in group]
    return list(found.items())


def workloads(args: argparse.Namespace) -> list[str]:
    """The workloads to run, in order (the tuned W3 unless ``--tuned off``)."""
    names = ["latency", "throughput", "compensation", "recovery"]
    return [*names, TUNED] if args.tuned else names


def measure(
    args: argparse.Namespace, backends: list[str], servers: Servers
) -> tuple[dict[Side, dict[str, dict[str, Any]]], dict[str, float]]:
    """Run every workload on every side, alternating engines, ``args.rounds`` times.

    Returns:
        ``figures[side][workload]`` (medians over rounds), and the floors in ms
        by backend (``sqlite``, ``postgres``): medians of one sample set taken
        before each workload's runs.
    """
    samples: dict[Side, dict[str, list[dict[str, Any]]]] = {}
    floors: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="compare-floor-") as floor_dir:
        for round_no in range(args.rounds):
            for floor_of, sides in groups(backends):
                order = sides if round_no % 2 == 0 else list(reversed(sides))
                for workload in workloads(args):
                    if floor_of == "sqlite":
                        sample = floor_ms(Path(floor_dir))
                    else:
                        sample = servers.postgres_floor_ms()
                    floors.setdefault(floor_of, []).append(sample)
                    for side in order:
                        if workload == TUNED and side[0] != "sagaledger":
                            continue
                        what = f"round {round_no + 1}: {side[0]} on {side[1]}: {workload}"
                        print(f"{what} ...", end="", file=sys.stderr, flush=True)
                        t0 = time.perf_counter()
                        result = run_workload(side, workload, args, servers)
                        print(f" {time.perf_counter() - t0:.1f}s", file=sys.stderr)
                        samples.setdefault(side, {}).setdefault(workload, []).append(result)
    floor = {backend: statistics.median(values) for backend, values in floors.items()}
    figures = {
        side: {w: median_figures(s) for w, s in by_workload.items()}
        for side, by_workload in samples.items()
    }
    for (_, backend), by_workload in figures.items():  # derived figures, from the medians
        latency = by_workload["latency"]
        latency["per_step_p50_ms"] = latency["latency_p50_ms"] / len(STEPS)
        latency["per_step_over_floor"] = (
            latency["per_step_p50_ms"] / floor["sqlite" if backend == "sqlite" else "postgres"]
        )
    return figures, floor


def table(
    figures: dict[Side, dict[str, dict[str, Any]]],
    backends: list[str],
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    """One section per backend; in each, one row per figure with both values and the ratio."""
    sections = []
    for backend in backends:
        title, ours, theirs = SECTIONS[backend]
        rows = []
        for workload, key, label, unit in ROWS:
            if workload not in figures[ours]:
                continue
            mine = figures[ours][workload].get(key)
            other = figures[theirs]["recovery" if workload == TUNED else workload].get(key)
            ratio = mine / other if mine is not None and other else None
            rows.append(
                {
                    "figure": label.format(**run_counts(args, backend)),
                    "key": f"{workload}.{key}",
                    "unit": unit,
                    "sagaledger": mine,
                    "dbos": other,
                    "ratio": ratio,
                }
            )
        sections.append({"backend": backend, "title": title, "rows": rows})
    return sections


def settings_of(figures: dict[Side, dict[str, dict[str, Any]]], workload: str) -> str:
    """sagaledger's recovery settings in a W3 run, as its worker reported them."""
    for (engine, _), by_workload in figures.items():
        settings = by_workload.get(workload, {}).get("settings")
        if engine == "sagaledger" and settings:
            return (
                f"lease {settings['lease_s']:g}s, dispatch grace {settings['dispatch_grace_s']:g}s,"
                f" recovery every {settings['recovery_interval_s']:g}s"
            )
    return "-"


def _cell(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if unit == "n" else f"{value:.2f}"


def print_table(
    context: dict[str, Any],
    sections: list[dict[str, Any]],
    floor: dict[str, float],
    notes: list[str],
) -> None:
    """The human-readable report: context line, the sections, the floors under them."""
    print("sagaledger vs DBOS Transact: " + ", ".join(f"{k} {v}" for k, v in context.items()))
    floor_labels = {
        "sqlite": "floor: 1 committed insert, SQLite (WAL, synchronous=FULL)",
        "postgres": "floor: 1 committed insert, Postgres (psycopg, loopback)",
    }
    labels = [row["figure"] for s in sections for row in s["rows"]]
    width = max(map(len, [*labels, *floor_labels.values()]))
    print(f"  {'figure':<{width}}  {'unit':>7}  {'sagaledger':>10}  {'DBOS':>10}  {'ratio':>6}")
    for section in sections:
        print(f"  -- {section['title']}")
        for row in section["rows"]:
            ratio = f"{row['ratio']:.2f}" if row["ratio"] is not None else "-"
            unit = row["unit"]
            print(
                f"  {row['figure']:<{width}}  {unit if unit != 'n' else '':>7}"
                f"  {_cell(row['sagaledger'], unit):>10}  {_cell(row['dbos'], unit):>10}"
                f"  {ratio:>6}"
            )
    print("  --")
    for backend, value in floor.items():
        print(f"  {floor_labels[backend]:<{width}}  {'ms':>7}  {value:>10.3f}  (same for both)")
    print(
        "  ratio = sagaledger / DBOS: below 1 is better for ms, s and counts, above 1 for sagas/s"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backend",
        choices=["all", *SECTIONS],
        default="all",
        help="the section(s) to run (redis: sagaledger production vs DBOS on Postgres)",
    )
    parser.add_argument("--latency-runs", type=int, default=200, help="timed W1/W2 runs, SQLite")
    parser.add_argument(
        "--throughput-runs", type=int, default=2000, help="sagas in the W1 batch, SQLite"
    )
    parser.add_argument(
        "--server-latency-runs", type=int, default=200, help="timed W1/W2 runs, Postgres (+Redis)"
    )
    parser.add_argument(
        "--server-throughput-runs",
        type=int,
        default=2000,
        help="sagas in the W1 batch, Postgres (+Redis)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="repeat everything; medians")
    parser.add_argument("--threads", type=int, default=4, help="worker / DBOS executor threads")
    parser.add_argument(
        "--recovery-threads", type=int, default=16, help="worker / DBOS executor threads in W3"
    )
    parser.add_argument(
        "--tuned",
        type=_tuned,
        default=(2.0, 1.0, 0.5),
        metavar="LEASE,GRACE,INTERVAL",
        help="sagaledger's second W3: lease, dispatch grace, recovery interval in seconds "
        "(default 2,1,0.5; 'off' to skip it)",
    )
    parser.add_argument(
        "--dbos-default-journal",
        action="store_true",
        help="leave DBOS's SQLite file in the rollback journal it ships with (default: WAL)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    return parser.parse_args()


def _tuned(text: str) -> tuple[float, float, float] | None:
    if text == "off":
        return None
    lease, grace, interval = (float(part) for part in text.split(","))
    return lease, grace, interval


def main() -> None:
    args = parse_args()
    backends = list(SECTIONS) if args.backend == "all" else [args.backend]
    dbos_version = ensure_dbos_venv()
    compile_bytecode()
    started = time.perf_counter()
    servers = Servers(postgres=backends != ["sqlite"], redis="redis" in backends)
    with servers:
        figures, floor = measure(args, backends, servers)
    context: dict[str, Any] = {
        "backends": ",".join(backends),
        "rounds": args.rounds,
        "threads": args.threads,
        "w3_threads": args.recovery_threads,
        "sagaledger_w3": settings_of(figures, "recovery"),
        "dbos": dbos_version,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "took_s": round(time.perf_counter() - started, 1),
    }
    if ("dbos", "sqlite") in figures:
        context["dbos_journal"] = figures[("dbos", "sqlite")]["latency"]["journal_mode"]
    sections = table(figures, backends, args)
    notes = []
    if args.tuned:
        notes.append(f"* tuned: sagaledger's W3 with {settings_of(figures, TUNED)}; DBOS's W3")
    if args.json:
        raw = {f"{engine}/{backend}": by for (engine, backend), by in figures.items()}
        report = {
            "context": context,
            "floor_ms": floor,
            "sections": sections,
            "notes": notes,
            "figures": raw,
        }
        print(json.dumps(report, indent=2))
    else:
        print_table(context, sections, floor, notes)


if __name__ == "__main__":
    main()
