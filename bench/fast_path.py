"""The fast path on a real `tenantflow serve`: create → first step, ten-step fan-out, one long instance.

    python -m bench.fast_path [--rounds 3] [--first N] [--fan-out 500] [--steps 2000]
                              [--server LABEL=PATH/TO/tenantflow ...] [--server-args LABEL='--processes 2' ...]
                              [--db sqlite|postgres] [--scenarios first_step,...] [--quick]

Each round starts a fresh `tenantflow serve` (its defaults: SQLite, WAL, synchronous=FULL, 4 workers) on
127.0.0.1 and a fresh database in a scratch directory, warms it up (a few instances of each workflow),
then measures, each scenario bracketed by the raw WAL-FULL commit rate of a fresh SQLite file in the same
directory (one-row INSERT per BEGIN IMMEDIATE/COMMIT, as `bench.commit_bench` measures it), since this
machine's disk flush speed swings within minutes:

  first_step  `--first` instances of a one-step workflow, created one at a time (the next once the last
              has completed): the instance's created_at → its first journal entry's updated_at, both
              the server's own timestamps; p50 and p90 in ms. The entry's time is taken just before the
              step's commit, so the figure holds the create's commit and everything up to the step's
              commit (not that commit's own fsync: 1 / raw, printed beside it). Beside it, as the client
              sees it: the create's POST sent → the answer of `GET ...?wait=10` (a long poll that answers
              once the instance has finished), p50 and p90 (`round_trip_p50_ms`, `round_trip_p90_ms`).
  fan_out     `--fan-out` ten-step instances created in batches of 100 (`POST .../instances/batch`),
              back to back: instances/s from the first request to the last finish the store recorded.
  sequential  one instance of `--steps` sequential steps: steps/s (created_at → finished_at) and its
              ratio to the raw commit rate (the mean of the brackets).

`--db postgres`: each server on a fresh PostgreSQL database (127.0.0.1:5432, as bench.scenarios), bracketed by
the raw PostgreSQL commit rate (one-row autocommit INSERTs). `--server-args LABEL=ARGS`: more `serve` options for
one build (the same program under two labels compares settings, e.g. `--processes 2`, in one run).

With several `--server` (e.g. `--server before=/work/base/.venv/bin/tenantflow --server after=.venv/bin/tenantflow`)
every build has its server up at once in each round and they take turns: first_step instance by instance,
the others scenario run by scenario run, the order flipping every round; so before/after figures come from
interleaved runs under the same disk and load. One JSON line per measurement on stdout, the medians per build at the end
and in bench/results/fast-path-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench import pg_bench, scenarios
from bench.agent_loop import RESULTS, ROOT, Server, running_server, tenantflow_command
from bench.runtime_bench import SEQUENTIAL, TEN_STEPS

FIRST = """
def run(event, step):
    return step.do("first", lambda: 1)
"""
WORKFLOWS = {"first": FIRST, "ten": TEN_STEPS, "seq": SEQUENTIAL}
RAW_COMMITS = 1500
BATCH = 100
FINISHED = ("complete", "errored", "terminated")


def log(message: str) -> None:
    print(f"[fast_path {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def raw(workdir: Path, database: str = "sqlite") -> float:
    """The raw commit rate of a fresh database: a SQLite file (WAL, synchronous=FULL) or PostgreSQL."""
    return scenarios.raw_commit_rate(scenarios.Backend(database, workdir), RAW_COMMITS)


def query(server: Server, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the server's database directly (SQLite, WAL: a reader does not block its writer; or PostgreSQL)."""
    if server.db.startswith("postgresql"):
        with psycopg.connect(server.db, autocommit=True) as pg:
            statement = sql.replace("%", "%%").replace("?", "%s")
            return [tuple(row) for row in pg.execute(statement, params).fetchall()]
    connection = sqlite3.connect(server.db.removeprefix("sqlite:///"), timeout=30)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


def wait_finished(server: Server, workflow: str, prefix: str, count: int, timeout: float) -> None:
    """Until `count` instances of `workflow` whose ids start with `prefix` have finished."""
    marks = ", ".join("?" for _ in FINISHED)
    sql = f"SELECT COUNT(*) FROM instances WHERE workflow = ? AND instance_id LIKE ? AND status IN ({marks})"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = query(server, sql, (workflow, prefix + "%", *FINISHED))[0][0]
        if done >= count:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{workflow}: not all {count} instances finished within {timeout} s")


def create(http: httpx.Client, workflow: str, body: dict[str, Any]) -> None:
    answer = http.post(f"/v1/workflows/{workflow}/instances", json=body)
    if answer.status_code != 201:
        raise RuntimeError(f"create {workflow}: HTTP {answer.status_code} {answer.text[:300]}")


def first_step(builds: Sequence[Build], n: int) -> dict[str, dict[str, Any]]:
    """One instance at a time, the builds taking turns instance by instance (so the disk's swings reach all
    of them alike): each build's figures from its own database."""
    round_trips: dict[str, list[float]] = {build.label: [] for build in builds}
    for i in range(n):
        for build in builds if i % 2 == 0 else builds[::-1]:
            sent = time.perf_counter()
            create(build.http, "first", {"id": f"m{i}"})
            answer = build.http.get(f"/v1/workflows/first/instances/m{i}", params={"wait": 10})
            round_trips[build.label].append(1000 * (time.perf_counter() - sent))
            if answer.json().get("status") != "complete":
                raise RuntimeError(f"first step: instance m{i} is {answer.json().get('status')}")
    figures = {}
    for build in builds:
        trips = statistics.quantiles(round_trips[build.label], n=10)
        rows = query(
            build.server,
            "SELECT j.updated_at - i.created_at FROM instances i JOIN journal j ON j.tenant_id = i.tenant_id "
            "AND j.workflow = i.workflow AND j.instance_id = i.instance_id AND j.position = 0 "
            "WHERE i.workflow = 'first' AND i.instance_id LIKE 'm%'",
        )
        times = sorted(1000 * r[0] for r in rows)
        deciles = statistics.quantiles(times, n=10)
        figures[build.label] = {
            "p50_ms": statistics.median(times),
            "p90_ms": deciles[8],
            "n": len(times),
            "round_trip_p50_ms": statistics.median(round_trips[build.label]),
            "round_trip_p90_ms": trips[8],
        }
    return figures


def fan_out(server: Server, http: httpx.Client, n: int) -> dict[str, Any]:
    started = time.time()
    for first in range(0, n, BATCH):
        answer = http.post(
            "/v1/workflows/ten/instances/batch", json=[{"id": f"t{k}"} for k in range(first, min(n, first + BATCH))]
        )
        if answer.status_code != 201:
            raise RuntimeError(f"batch: HTTP {answer.status_code} {answer.text[:300]}")
    wait_finished(server, "ten", "t", n, 600)
    last = query(server, "SELECT MAX(finished_at) FROM instances WHERE workflow = 'ten' AND instance_id LIKE 't%'")
    errored = query(server, "SELECT COUNT(*) FROM instances WHERE workflow = 'ten' AND status <> 'complete'")[0][0]
    return {"instances_per_s": n / (last[0][0] - started), "not_complete": errored}


def sequential(server: Server, http: httpx.Client, steps: int) -> dict[str, Any]:
    create(http, "seq", {"id": "long", "params": {"steps": steps}})
    wait_finished(server, "seq", "long", 1, 600)
    ((created, finished, status),) = query(
        server, "SELECT created_at, finished_at, status FROM instances WHERE workflow = 'seq' AND instance_id = 'long'"
    )
    return {"steps_per_s": steps / (finished - created), "status": status}


def warm_up(server: Server, http: httpx.Client) -> None:
    for name, source in WORKFLOWS.items():
        answer = http.put(f"/v1/workflows/{name}", json={"source": source})
        if answer.status_code not in (200, 201):
            raise RuntimeError(f"deploy {name}: HTTP {answer.status_code} {answer.text[:300]}")
    for i in range(20):
        create(http, "first", {"id": f"w{i}"})
        http.get(f"/v1/workflows/first/instances/w{i}", params={"wait": 10})
    answer = http.post("/v1/workflows/ten/instances/batch", json=[{"id": f"w{k}"} for k in range(20)])
    answer.raise_for_status()
    create(http, "seq", {"id": "w", "params": {"steps": 20}})
    wait_finished(server, "ten", "w", 20, 60)
    wait_finished(server, "seq", "w", 1, 60)


Scenario = Callable[[Server, httpx.Client, int], dict[str, Any]]


@dataclass
class Build:
    label: str
    server: Server
    http: httpx.Client


def bracketed(
    workdir: Path, measure: Callable[[], dict[str, Any]], database: str = "sqlite"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The figures of `measure`, and the raw commit rate measured right before and after it."""
    before = raw(workdir, database)
    figures = measure()
    after = raw(workdir, database)
    return figures, {"raw_commits_per_s": round((before + after) / 2), "raw_brackets": [round(before), round(after)]}


def one_round(
    workdir: Path, servers: Sequence[tuple[str, list[str]]], args: argparse.Namespace, n: int
) -> list[dict[str, Any]]:
    """A fresh server of every build, all up at once; each scenario runs on each build in turn (first_step:
    instance by instance), the order flipping every round."""
    out: list[dict[str, Any]] = []

    def emitted(label: str, scenario: str, figures: dict[str, Any], raw_rate: dict[str, Any]) -> None:
        record = {"bench": "fast_path", "build": label, "round": n, "scenario": scenario, **figures, **raw_rate}
        if scenario == "sequential":
            record["ratio_to_raw"] = figures["steps_per_s"] / raw_rate["raw_commits_per_s"]
        emit(record)
        out.append(record)

    with ExitStack() as stack:
        builds = []
        for label, program in servers if n % 2 == 0 else servers[::-1]:
            db = stack.enter_context(pg_bench.fresh_database(scenarios.ADMIN_PG)) if args.db == "postgres" else None
            extra = args.server_args.get(label, [])
            server = stack.enter_context(running_server(workdir, f"{label}-{n}", extra, program, db))
            http = stack.enter_context(server.client(server.create_tenant("bench")))
            warm_up(server, http)
            builds.append(Build(label, server, http))
        if "first_step" in args.scenarios:
            by_build, raw_rate = bracketed(workdir, lambda: first_step(builds, args.first), args.db)
            for label, figures in by_build.items():
                emitted(label, "first_step", figures, raw_rate)
        runs: list[tuple[str, Scenario, int]] = [
            ("fan_out", fan_out, args.fan_out),
            ("sequential", sequential, args.steps),
        ]
        for name, scenario, size in runs:
            if name not in args.scenarios:
                continue
            for build in builds:
                figures, raw_rate = bracketed(workdir, partial(scenario, build.server, build.http, size), args.db)
                emitted(build.label, name, figures, raw_rate)
    return out


FIGURES = {
    "first_step": ("p50_ms", "p90_ms", "round_trip_p50_ms", "round_trip_p90_ms"),
    "fan_out": ("instances_per_s",),
    "sequential": ("steps_per_s", "ratio_to_raw"),
}


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for record in records:
        build = summary.setdefault(record["build"], {})
        scenario = build.setdefault(record["scenario"], {})
        for figure in (*FIGURES[record["scenario"]], "raw_commits_per_s"):
            scenario.setdefault(figure, []).append(record[figure])
    for build in summary.values():
        for scenario in build.values():
            for figure, values in scenario.items():
                scenario[figure] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return summary


def table(summary: dict[str, Any]) -> str:
    lines = [
        "| build | scenario | figure | median (min–max) | raw commits/s beside it |",
        "| --- | --- | --- | ---: | ---: |",
    ]
    for build, by_scenario in summary.items():
        for scenario, figures in by_scenario.items():
            raw_rate = figures["raw_commits_per_s"]
            for figure in FIGURES[scenario]:
                f = figures[figure]
                lines.append(
                    f"| {build} | {scenario} | {figure} | {f['median']:.3g} ({f['min']:.3g}–{f['max']:.3g}) "
                    f"| {raw_rate['median']:,.0f} ({raw_rate['min']:,.0f}–{raw_rate['max']:,.0f}) |"
                )
    return "\n".join(lines)


def measure(workdir: Path, first: int, fan_out: int, steps: int) -> dict[str, Any]:
    """One round on a real server of this checkout (the full benchmark runner's figures): by scenario, its record."""
    args = argparse.Namespace(
        scenarios=list(FIGURES), first=first, fan_out=fan_out, steps=steps, db="sqlite", server_args={}
    )
    records = one_round(workdir, [("this", tenantflow_command())], args, 0)
    return {record["scenario"]: record for record in records}


def parse_server_args(text: str) -> tuple[str, list[str]]:
    label, _, extra = text.partition("=")
    if not label:
        raise argparse.ArgumentTypeError("--server-args is LABEL=ARGS")
    return label, shlex.split(extra)


def parse_server(text: str) -> tuple[str, list[str]]:
    label, _, path = text.partition("=")
    if not label or not path:
        raise argparse.ArgumentTypeError("--server is LABEL=PATH (PATH: a `tenantflow` console script)")
    return label, [str(Path(path).resolve())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--first", type=int, default=200, help="instances created one at a time")
    parser.add_argument("--fan-out", type=int, default=500, help="ten-step instances, in batches of 100")
    parser.add_argument("--steps", type=int, default=2000, help="steps of the sequential instance")
    parser.add_argument("--server", type=parse_server, action="append", help="LABEL=PATH/TO/tenantflow (repeat)")
    parser.add_argument(
        "--server-args",
        type=parse_server_args,
        action="append",
        default=[],
        help="LABEL=ARGS: more `serve` options for that build, e.g. this2='--processes 2' (repeat)",
    )
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite", help="each server's database")
    parser.add_argument(
        "--scenarios", type=lambda text: text.split(","), default=list(FIGURES), help="first_step,fan_out,sequential"
    )
    parser.add_argument("--quick", action="store_true", help="1 round, 50 first steps, 200 instances, 500 steps")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.first, args.fan_out, args.steps = 1, 50, 200, 500
    servers: list[tuple[str, list[str]]] = args.server or [("this", tenantflow_command())]
    args.server_args = dict(args.server_args)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fast-path-") as tmp:
        for n in range(args.rounds):
            log(f"round {n + 1}/{args.rounds}: {', '.join(label for label, _ in servers)}")
            records += one_round(Path(tmp), servers, args, n)
    summary = summarise(records)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    document = {
        "measured_at": stamp,
        "commit": head.stdout.strip(),
        "servers": {label: program for label, program in servers},
        "args": {k: v for k, v in vars(args).items() if k != "server"},
        "records": records,
        "summary": summary,
    }
    (RESULTS / f"fast-path-{stamp}.json").write_text(json.dumps(document, indent=2))
    emit({"bench": "fast_path", "summary": summary})
    print(table(summary), file=sys.stderr)


if __name__ == "__main__":
    main()
