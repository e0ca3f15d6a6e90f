"""Runtime benchmark on SQLite: sequential steps, concurrent instances, restart-to-resume, raw commit rate.

Run: `python -m bench.runtime_bench [--quick]`. Prints one JSON object per line.
Ratios are measured within one run, since this machine's disk speed swings.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tenantflow.host import Sandbox
from tenantflow.runtime.records import Quotas
from tenantflow.runtime.service import Service
from tenantflow.runtime.store import SQLStore
from tenantflow.runtime.store.sqlite import SQLiteStore

SEQUENTIAL = """
def run(event, step):
    for i in range(event.payload["steps"]):
        step.do("step", lambda: {"i": i, "ok": True})
    return "done"
"""

TEN_STEPS = """
def run(event, step):
    return [step.do(f"s{i}", lambda: {"i": i}) for i in range(10)]
"""


def emit(name: str, **figures: Any) -> None:
    print(json.dumps({"bench": "runtime", "name": name, **figures}), flush=True)


def raw_commit_rate(path: Path, synchronous: str, n: int, journal_mode: str = "WAL") -> float:
    """One-row INSERT + COMMIT per iteration (WAL by default): the physical limit for durable steps."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute(f"PRAGMA journal_mode={journal_mode}")
    connection.execute(f"PRAGMA synchronous={synchronous}")
    connection.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB)")
    started = time.perf_counter()
    for i in range(n):
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT INTO t (v) VALUES (?)", (b"x" * 64 + str(i).encode(),))
        connection.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return n / elapsed


def wait_all(service: Service, total: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = {status: n for _, status, n in service.store.status_counts()}
        if counts.get("complete", 0) + counts.get("errored", 0) >= total:
            return
        time.sleep(0.05)
    raise TimeoutError("instances did not finish")


def finished_at(store: SQLStore) -> float:
    """When the last instance finished, as the store recorded it (not when a poll noticed)."""
    with store.transaction() as tx:
        return float(tx.execute("SELECT MAX(updated_at) FROM instances")[0][0])


def sequential_steps(tmp: Path, sandbox: Sandbox, synchronous: str, steps: int, store: SQLStore | None = None) -> float:
    """Steps/s of one instance; on a fresh SQLite file in `tmp`, or on `store` (left open) when given."""
    own = store is None
    store = store or SQLiteStore(str(tmp / f"seq-{synchronous}-{time.monotonic_ns()}.db"), synchronous=synchronous)
    service = Service(store, sandbox, workers=1).start()
    try:
        tenant = service.create_tenant("bench")[0]
        service.deploy(tenant, "seq", SEQUENTIAL)
        started = time.time()
        service.create_instances(tenant, "seq", [{"params": {"steps": steps}}])
        wait_all(service, 1, 300)
        return steps / (finished_at(store) - started)
    finally:
        service.stop()
        if own:
            store.close()


def fan_out(
    tmp: Path, sandbox: Sandbox, synchronous: str, instances: int, workers: int, store: SQLStore | None = None
) -> float:
    """Instances/s of `instances` ten-step instances created at once; `store` as in sequential_steps."""
    own = store is None
    store = store or SQLiteStore(str(tmp / f"fan-{synchronous}-{time.monotonic_ns()}.db"), synchronous=synchronous)
    service = Service(store, sandbox, workers=workers).start()
    try:
        tenant = service.create_tenant("bench", Quotas(max_concurrent=workers, max_instances_per_minute=10**9))[0]
        service.deploy(tenant, "ten", TEN_STEPS)
        started = time.time()
        for first in range(0, instances, 100):
            batch = [{"id": f"i{n}"} for n in range(first, min(first + 100, instances))]
            service.create_instances(tenant, "ten", batch)
        wait_all(service, instances, 600)
        return instances / (finished_at(store) - started)
    finally:
        service.stop()
        if own:
            store.close()


RESUMER = """
import sys, time
from tenantflow.runtime.service import Service
service = Service.open(sys.argv[1], workers=2).start()
print("ready", time.time(), flush=True)
while True:
    time.sleep(1)
"""


def restart_to_resume(tmp: Path, sandbox: Sandbox) -> dict[str, float]:
    """Kill -9 a worker process mid-workflow; time from the new process being ready to the first new step."""
    db = tmp / f"restart-{time.monotonic_ns()}.db"
    store = SQLiteStore(str(db))
    setup = Service(store, sandbox)
    tenant = setup.create_tenant("bench")[0]
    setup.deploy(tenant, "seq", SEQUENTIAL)
    setup.create_instances(tenant, "seq", [{"id": "r", "params": {"steps": 100_000}}])
    store.close()
    url = f"sqlite:///{db}"
    first = subprocess.Popen([sys.executable, "-c", RESUMER, url], stdout=subprocess.PIPE, text=True)
    assert first.stdout is not None
    first.stdout.readline()
    time.sleep(0.3)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    connection = sqlite3.connect(db)
    before = connection.execute("SELECT MAX(updated_at), COUNT(*) FROM journal").fetchone()
    spawned = time.time()
    second = subprocess.Popen([sys.executable, "-c", RESUMER, url], stdout=subprocess.PIPE, text=True)
    assert second.stdout is not None
    ready_at = float(second.stdout.readline().split()[1])
    try:
        while True:
            row = connection.execute("SELECT MIN(updated_at) FROM journal WHERE position >= ?", (before[1],)).fetchone()
            if row[0] is not None:
                break
            time.sleep(0.002)
    finally:
        second.send_signal(signal.SIGKILL)
        second.wait()
        connection.close()
    return {
        "ready_to_first_step_ms": (row[0] - ready_at) * 1000,
        "spawn_to_first_step_ms": (row[0] - spawned) * 1000,
        "steps_before_kill": before[1],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    steps = 300 if args.quick else 1000
    instances = 200 if args.quick else 1000
    sandbox = Sandbox()
    with tempfile.TemporaryDirectory(prefix="tf-bench-") as name:
        tmp = Path(name)
        for synchronous in ("full", "normal"):
            raw = raw_commit_rate(tmp / f"raw-{synchronous}.db", synchronous, 2000)
            seq = sequential_steps(tmp, sandbox, synchronous, steps)
            raw_after = raw_commit_rate(tmp / f"raw2-{synchronous}.db", synchronous, 2000)
            limit = (raw + raw_after) / 2
            emit(
                "sequential_steps",
                synchronous=synchronous,
                steps=steps,
                steps_per_s=round(seq),
                raw_commits_per_s=round(limit),
                ratio_to_raw=round(seq / limit, 3),
            )
        for synchronous in ("full", "normal"):
            rate = fan_out(tmp, sandbox, synchronous, instances, workers=4)
            emit("fan_out", synchronous=synchronous, instances=instances, steps_each=10, instances_per_s=round(rate))
        emit("restart_to_resume", **restart_to_resume(tmp, sandbox))
    sandbox.close()


if __name__ == "__main__":
    main()
