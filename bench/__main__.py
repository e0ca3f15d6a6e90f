"""The benchmark runner: `python -m bench` (full) or `python -m bench --quick` (under a minute).

Runs tenantflow, DBOS Transact (in its own environment, bench/.venv-dbos, made here from
bench/requirements-dbos.txt), a plain-Python baseline and the raw commit limit on the same databases
(SQLite files; scratch PostgreSQL databases at 127.0.0.1:5432), alternating the order of the engines
run by run, and brackets every scenario with a raw commit-rate measurement, because this machine's
disk flush speed swings within minutes. Then tenantflow-only figures: 50,000 sleepers, isolate start,
the fast path on a real `tenantflow serve` (create → first step, fan-out in batches, one long instance; each
bracketed by the raw commit rate) and guest Python against native. Writes bench/results/bench-<time>.json
(and latest.json / quick.json), and, for the full form, docs/bench.md and docs/bench.png, which the README
embeds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from bench import fast_path, guest_speed, scenarios
from bench.scenarios import BENCH, ROOT, Backend

RESULTS = BENCH / "results"
DOCS = ROOT / "docs"
REQUIREMENTS = BENCH / "requirements-dbos.txt"
METRIC = {"sequential": "steps_per_s", "fan_out": "instances_per_s", "recovery": "recovery_s"}
# Targets: tenantflow / DBOS (same run), by scenario and database.
TARGETS: dict[tuple[str, str], tuple[float, str]] = {
    ("sequential", "sqlite"): (10.0, "≥ 10× DBOS"),
    ("sequential", "postgres"): (5.0, "≥ 5× DBOS"),
    ("fan_out", "sqlite"): (10.0, "≥ 10× DBOS"),
    ("fan_out", "postgres"): (10.0, "≥ 10× DBOS"),
    ("recovery", "sqlite"): (0.1, "≤ 1/10 of DBOS's time"),
    ("recovery", "postgres"): (0.1, "≤ 1/10 of DBOS's time"),
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ensure_dbos_env() -> Path:
    """bench/.venv-dbos with DBOS and matplotlib, (re)made when requirements-dbos.txt changes."""
    venv = BENCH / ".venv-dbos"
    python = venv / "bin" / "python"
    stamp = venv / ".requirements.sha256"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    log(f"making the benchmark environment {venv.relative_to(ROOT)} from {REQUIREMENTS.relative_to(ROOT)}")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    (venv / ".gitignore").write_text("*\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)], check=True)
    stamp.write_text(wanted)
    return python


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def stats(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def summarise(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Per database and scenario: each engine's median/min/max, and the ratios taken within each run."""
    summary: dict[str, Any] = {}
    for backend in sorted({s["backend"] for s in samples}):
        summary[backend] = {}
        for scenario in METRIC:
            rows = [s for s in samples if s["backend"] == backend and s["scenario"] == scenario]
            if not rows:
                continue
            runs = sorted({s["run"] for s in rows})
            by: dict[str, dict[int, float]] = {}
            for s in rows:
                by.setdefault(s["engine"], {})[s["run"]] = s["value"]
            engines = {engine: stats([values[r] for r in runs if r in values]) for engine, values in by.items()}
            ratios: dict[str, Any] = {}
            tf = by.get("tenantflow", {})
            for other in ("dbos", "raw", "baseline"):
                paired = [tf[r] / by[other][r] for r in runs if r in tf and r in by.get(other, {})]
                if paired:
                    ratios[f"tenantflow/{other}"] = stats(paired)
            entry: dict[str, Any] = {"engines": engines, "ratios": ratios, "unit": METRIC[scenario]}
            target = TARGETS.get((scenario, backend))
            if target is not None and "tenantflow/dbos" in ratios:
                value, text = target
                median = ratios["tenantflow/dbos"]["median"]
                met = median <= value if scenario == "recovery" else median >= value
                entry["target"] = {"value": value, "text": text, "met": met}
            summary[backend][scenario] = entry
    return summary


def versions() -> dict[str, str]:
    from importlib.metadata import version

    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    found = {"tenantflow": f"{version('tenantflow')} ({sha.strip()})", "wasmtime": version("wasmtime")}
    found["python"] = platform.python_version()
    found["sqlite"] = sqlite3.sqlite_version
    try:
        import psycopg

        with psycopg.connect(scenarios.ADMIN_PG) as pg:
            row = pg.execute("SHOW server_version").fetchone()
            found["postgresql"] = str(row[0]).split()[0] if row else "?"
    except Exception as error:  # PostgreSQL is optional for --backends sqlite
        found["postgresql"] = f"unavailable ({error.__class__.__name__})"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, one run, under a minute")
    parser.add_argument("--runs", type=int, help="alternating runs (default 3; quick 1)")
    parser.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--skip", default="", help="comma-separated: sleepers, isolate, server, guest, dbos, baseline")
    parser.add_argument("--docs", action="store_true", help="write docs/bench.md and .png (default: full form only)")
    args = parser.parse_args()
    quick = args.quick
    runs = args.runs or (1 if quick else 3)
    skip = set(filter(None, args.skip.split(",")))
    sizes = {
        "sequential": 200 if quick else 1000,
        "fan_out": 40 if quick else 1000,
        "recovery": 40 if quick else 1000,
        "sleepers": 200 if quick else 50_000,
        "raw": 300 if quick else 2000,
        "server_first": 30 if quick else 200,
        "server_fan_out": 100 if quick else 500,
        "server_steps": 300 if quick else 2000,
    }
    kill_at = 0.5
    dbos_python = ensure_dbos_env() if "dbos" not in skip else None
    dbos_version = "–"
    if dbos_python is not None:
        dbos_version = subprocess.run(
            [str(dbos_python), "-c", "from importlib.metadata import version; print(version('dbos'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    from tenantflow.host import Sandbox

    started = datetime.now(UTC)
    meta: dict[str, Any] = {
        "started": started.isoformat(),
        "quick": quick,
        "runs": runs,
        "sizes": sizes,
        "kill_at_fraction_done": kill_at,
        "workers": scenarios.WORKERS,
        "machine": f"{os.cpu_count()} cores, shared",
        "load_before": load(),
        "versions": {**versions(), "dbos": dbos_version},
        "modes": {
            "tenantflow on SQLite": "WAL, synchronous=FULL (its default), group commit",
            "DBOS on SQLite": "rollback journal (journal_mode=DELETE), synchronous=FULL (SQLite's defaults)",
            "raw limit on SQLite": "WAL, synchronous=FULL, one INSERT per BEGIN IMMEDIATE/COMMIT",
            "both on PostgreSQL": "the same server, synchronous_commit=on, a fresh database per measurement",
            "concurrency": f"{scenarios.WORKERS} tenantflow worker threads = DBOS queue worker_concurrency "
            f"= baseline threads",
        },
    }
    samples: list[dict[str, Any]] = []
    extra: dict[str, Any] = {"raw_sqlite_delete": []}
    backends = [b for b in args.backends.split(",") if b]
    sandbox = Sandbox()
    with tempfile.TemporaryDirectory(prefix="tf-bench-", dir=os.environ.get("TENANTFLOW_BENCH_TMP")) as name:
        scratch = Path(name)

        def record(backend: str, scenario: str, engine: str, run: int, fn: Callable[[], dict[str, Any]]) -> None:
            began = time.perf_counter()
            result = fn()
            value = float(result[METRIC[scenario]])
            samples.append(
                {"backend": backend, "scenario": scenario, "engine": engine, "run": run, "value": value, **result}
            )
            log(f"run {run} {backend:8} {scenario:10} {engine:10} {value:10.2f} ({time.perf_counter() - began:.1f} s)")

        for run in range(runs):
            for backend_name in backends:
                backend = Backend(backend_name, scratch)
                raws = [scenarios.raw_commit_rate(backend, sizes["raw"])]
                if backend_name == "sqlite":
                    extra["raw_sqlite_delete"].append(scenarios.raw_commit_rate(backend, sizes["raw"] // 4, "DELETE"))
                for scenario in METRIC:
                    engines: dict[str, Callable[[], dict[str, Any]]] = {}
                    size = sizes[scenario]
                    if scenario == "sequential":
                        engines["tenantflow"] = partial(scenarios.tf_sequential, backend, sandbox, size)
                        engines["dbos"] = partial(scenarios.dbos_sequential, backend, size)
                        engines["baseline"] = partial(scenarios.baseline_sequential, backend, size)
                    elif scenario == "fan_out":
                        engines["tenantflow"] = partial(scenarios.tf_fan_out, backend, sandbox, size)
                        engines["dbos"] = partial(scenarios.dbos_fan_out, backend, size)
                        engines["baseline"] = partial(scenarios.baseline_fan_out, backend, size)
                    else:
                        engines["tenantflow"] = partial(scenarios.tf_recovery, backend, size, kill_at)
                        engines["dbos"] = partial(scenarios.dbos_recovery, backend, size, kill_at)
                    names = [e for e in engines if e not in skip]
                    shift = run % len(names)
                    for engine in names[shift:] + names[:shift]:
                        record(backend_name, scenario, engine, run, engines[engine])
                    raws.append(scenarios.raw_commit_rate(backend, sizes["raw"]))
                    if scenario != "recovery":
                        limit = (raws[-2] + raws[-1]) / 2
                        if scenario == "fan_out":  # ten commits per instance without batching
                            limit /= 10
                        samples.append(
                            {
                                "backend": backend_name,
                                "scenario": scenario,
                                "engine": "raw",
                                "run": run,
                                "value": limit,
                                "raw_commits_per_s": raws[-2:],
                            }
                        )
                log(f"run {run} {backend_name} raw commits/s: {', '.join(f'{r:.0f}' for r in raws)}")

        results: dict[str, Any] = {"meta": meta, "samples": samples, **extra}
        if "sleepers" not in skip:
            log(f"sleepers: {sizes['sleepers']:,} instances on SQLite")
            park_rate, margin = (100.0, 2.0)  # parking ran at ~300/s on 50,000
            results["sleepers"] = scenarios.sleepers(Backend("sqlite", scratch), sizes["sleepers"], park_rate, margin)
            log(f"sleepers: {json.dumps(results['sleepers'])}")
        if "isolate" not in skip:
            results["isolate_start"] = scenarios.isolate_start()
            log(f"isolate start: {json.dumps(results['isolate_start'])}")
        if "server" not in skip:
            log("fast path on a real tenantflow serve")
            results["fast_path"] = fast_path.measure(
                scratch, sizes["server_first"], sizes["server_fan_out"], sizes["server_steps"]
            )
        if "guest" not in skip:
            log("guest Python against native")
            results["guest_speed"] = guest_speed.measure(3 if quick else 15, [guest_speed.VARIANTS[0].name])
    sandbox.close()
    meta["finished"] = datetime.now(UTC).isoformat()
    meta["load_after"] = load()
    meta["elapsed_s"] = round((datetime.now(UTC) - started).total_seconds(), 1)
    results["summary"] = summarise(samples)

    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"bench-{started.strftime('%Y%m%d-%H%M%S')}{'-quick' if quick else ''}.json"
    path.write_text(json.dumps(results, indent=1))
    (RESULTS / ("quick.json" if quick else "latest.json")).write_text(json.dumps(results, indent=1))
    to_docs = args.docs or not quick
    md = DOCS / "bench.md" if to_docs else RESULTS / "quick.md"
    png = DOCS / "bench.png" if to_docs else RESULTS / "quick.png"
    md.parent.mkdir(exist_ok=True)
    report = [str(dbos_python or sys.executable), "-m", "bench.report", str(path), "--md", str(md)]
    if dbos_python is not None:
        report += ["--png", str(png)]
    subprocess.run(report, check=True, cwd=ROOT)
    print(md.read_text())
    log(f"results: {path.relative_to(ROOT)}; table: {md.relative_to(ROOT)}; chart: {png.relative_to(ROOT)}")
    log(f"took {meta['elapsed_s']} s")


if __name__ == "__main__":
    main()
