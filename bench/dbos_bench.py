"""The DBOS Transact side of the comparison; runs in the benchmark's own environment, never in tenantflow's.

`bench/.venv-dbos/bin/python -m bench.dbos_bench COMMAND --db URL ...` (the runner, `python -m bench`,
creates that environment from bench/requirements-dbos.txt and calls this). Every command prints one
JSON object on its last line. This module must not import tenantflow.

The workflows are what a DBOS user writes: `@DBOS.workflow()` functions calling `@DBOS.step()`
functions, DBOS configured with the system database URL (SQLite file or PostgreSQL), fan-out through
a DBOS queue whose per-process concurrency equals tenantflow's worker threads. DBOS's SQLite system
database keeps SQLite's default rollback journal (journal_mode=DELETE, synchronous=FULL): DBOS sets
neither pragma.

Commands:
  sequential --db URL --steps N               one workflow of N steps, timed in-process
  fan-out --db URL --instances N --concurrency C
                                              N ten-step workflows enqueued at once, until all finish
  worker --db URL [--enqueue N] --concurrency C
                                              launch (recovering whatever a killed worker left), optionally
                                              enqueue N ten-step workflows, print "ready", serve until killed
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from typing import Any

from dbos import DBOS, DBOSConfig

QUEUE = "fan_out"
QUEUE_POLL_S = 0.01  # DBOS's default is 1 s; a short poll is DBOS's best case for a burst like this
RESULT_POLL_S = 0.05  # as tenantflow's side polls for completion


@DBOS.step()
def small_step(i: int) -> dict[str, Any]:
    return {"i": i, "ok": True}


@DBOS.workflow()
def sequential(steps: int) -> str:
    for i in range(steps):
        small_step(i)
    return "done"


@DBOS.step()
def ten_step(i: int) -> dict[str, int]:
    return {"i": i}


@DBOS.workflow()
def ten_steps() -> list[dict[str, int]]:
    return [ten_step(i) for i in range(10)]


def launch(db: str, concurrency: int | None = None) -> Any:
    config: DBOSConfig = {"name": "tfbench", "system_database_url": db, "log_level": "WARNING"}
    DBOS(config=config)
    DBOS.launch()
    if concurrency is None:
        return None
    return DBOS.register_queue(QUEUE, worker_concurrency=concurrency, polling_interval_sec=QUEUE_POLL_S)


def finished_at(db: str) -> float:
    """Wall-clock time (epoch seconds) of the last workflow status update, as DBOS recorded it."""
    if db.startswith("sqlite"):
        connection = sqlite3.connect(db.removeprefix("sqlite:///"), timeout=30)
        try:
            row = connection.execute("SELECT MAX(updated_at) FROM workflow_status").fetchone()
        finally:
            connection.close()
    else:
        import psycopg

        with psycopg.connect(db) as pg:
            row = pg.execute("SELECT MAX(updated_at) FROM dbos.workflow_status").fetchone()
    assert row is not None and row[0] is not None
    return float(row[0]) / 1000


def journal_mode(db: str) -> str:
    if not db.startswith("sqlite"):
        return "postgresql (synchronous_commit=on)"
    connection = sqlite3.connect(db.removeprefix("sqlite:///"), timeout=30)
    try:
        mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
        sync = {0: "off", 1: "normal", 2: "full", 3: "extra"}[connection.execute("PRAGMA synchronous").fetchone()[0]]
    finally:
        connection.close()
    return f"{mode}, synchronous={sync} (SQLite defaults: DBOS sets neither)"


def run_sequential(db: str, steps: int) -> dict[str, Any]:
    launch(db)
    started = time.time()
    assert sequential(steps) == "done"
    elapsed = time.time() - started
    DBOS.destroy()
    return {"steps": steps, "steps_per_s": steps / elapsed, "elapsed_s": elapsed, "mode": journal_mode(db)}


def run_fan_out(db: str, instances: int, concurrency: int) -> dict[str, Any]:
    queue = launch(db, concurrency)
    started = time.time()
    handles = [queue.enqueue(ten_steps) for _ in range(instances)]
    enqueued = time.time()
    for handle in handles:
        assert len(handle.get_result(polling_interval_sec=RESULT_POLL_S)) == 10
    DBOS.destroy()
    elapsed = finished_at(db) - started
    return {
        "instances": instances,
        "instances_per_s": instances / elapsed,
        "elapsed_s": elapsed,
        "enqueue_s": enqueued - started,
        "mode": journal_mode(db),
    }


def run_worker(db: str, enqueue: int, concurrency: int) -> None:
    queue = launch(db, concurrency)
    for _ in range(enqueue):
        queue.enqueue(ten_steps)
    print(json.dumps({"ready": True}), flush=True)
    while True:
        time.sleep(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dbos_bench")
    parser.add_argument("command", choices=["sequential", "fan-out", "worker"])
    parser.add_argument("--db", required=True)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--enqueue", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args(argv)
    if args.command == "sequential":
        result = run_sequential(args.db, args.steps)
    elif args.command == "fan-out":
        result = run_fan_out(args.db, args.instances, args.concurrency)
    else:
        run_worker(args.db, args.enqueue, args.concurrency)
        return
    import dbos

    result["dbos_version"] = getattr(dbos, "__version__", None) or _dist_version()
    print(json.dumps(result), flush=True)


def _dist_version() -> str:
    from importlib.metadata import version

    return version("dbos")


if __name__ == "__main__":
    main(sys.argv[1:])
