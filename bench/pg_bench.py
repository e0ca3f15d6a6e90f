"""PostgreSQL benchmark: steps/s and instances/s with 1, 2 and 4 worker processes, sequential steps
against the raw single-commit rate, and how long a surviving worker takes to take over a killed
worker's instances.

Run: `python -m bench.pg_bench [--quick] [--db postgresql://...]`. Prints one JSON object per line.
It creates a fresh database (tf_bench_<random>) on the server and drops it at the end. The raw
commit rate is measured right before and after each figure it is compared with, since this
machine's disk flush speed swings within minutes. Workers are real processes
(`tenantflow worker`), as in a deployment.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from tenantflow.host import Sandbox
from tenantflow.runtime.records import AttemptRecord, Entry, Quotas, Tenant
from tenantflow.runtime.service import Service
from tenantflow.runtime.store import SQLStore
from tenantflow.runtime.store.postgres import PostgresStore

from bench.runtime_bench import SEQUENTIAL

DEFAULT_SERVER = os.environ.get("TENANTFLOW_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")

TWENTY_STEPS = """
def run(event, step):
    return sum(step.do(f"s{i}", lambda: i) for i in range(20))
"""


def emit(name: str, **figures: Any) -> None:
    print(json.dumps({"bench": "pg", "name": name, **figures}), flush=True)


@contextmanager
def fresh_database(server: str) -> Iterator[str]:
    name = f"tf_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(server)._replace(path="/" + name))
    finally:
        with psycopg.connect(server, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def raw_commit_rate(url: str, seconds: float, one_round_trip: bool) -> float:
    """A one-row INSERT committed per iteration, on one connection.

    `one_round_trip`: the INSERT alone in autocommit (the statement is the transaction: one round trip,
    one WAL flush), the strictest baseline. Otherwise the plain loop an application writes,
    INSERT then COMMIT (psycopg sends BEGIN, INSERT, COMMIT: three round trips, one WAL flush).
    """
    with psycopg.connect(url, autocommit=one_round_trip) as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS raw_commits (id BIGSERIAL PRIMARY KEY, v BYTEA)")
        connection.commit()
        payload = b"x" * 64
        count = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            connection.execute("INSERT INTO raw_commits (v) VALUES (%s)", (payload,))
            connection.commit()
            count += 1
        return count / (time.perf_counter() - started)


class Worker:
    """One worker process; `owner` is its lease owner name. Every one started is stopped by `stop_all`."""

    started: list[Worker] = []

    def __init__(self, url: str, threads: int, lease_s: float) -> None:
        command = [sys.executable, "-m", "tenantflow.runtime.cli", "worker", "--db", url, "--ready-json"]
        command += ["--workers", str(threads), "--lease", str(lease_s), "--log-level", "warning"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        Worker.started.append(self)
        stdout: IO[str] | None = self.process.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"worker exited with {self.process.wait()}")
        self.owner: str = json.loads(line)["owner"]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    @classmethod
    def stop_all(cls) -> None:
        for worker in cls.started:
            worker.stop()
        cls.started = []

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def counts(store: SQLStore) -> dict[str, int]:
    return {status: n for _, status, n in store.status_counts()}


def wait_complete(store: SQLStore, total: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = counts(store)
        if seen.get("complete", 0) >= total:
            return
        if seen.get("errored"):
            raise RuntimeError(f"instances errored: {seen}")
        time.sleep(0.02)
    raise TimeoutError(f"instances did not finish: {counts(store)}")


def setup(url: str, sandbox: Sandbox, source: str) -> tuple[Service, Tenant]:
    service = Service(PostgresStore(url), sandbox)
    tenant = service.create_tenant("bench", Quotas(max_concurrent=1000, max_instances_per_minute=10**9))[0]
    service.deploy(tenant, "wf", source)
    return service, tenant


def raw_pair(url: str, seconds: float) -> tuple[float, float]:
    """Both raw rates: (INSERT + COMMIT loop, one-round-trip autocommit INSERT)."""
    return raw_commit_rate(url, seconds, False), raw_commit_rate(url, seconds, True)


def with_raw(rate: float, before: tuple[float, float], after: tuple[float, float]) -> dict[str, float]:
    """A rate with the raw rates measured right before and after it, and the ratios."""
    insert_commit = (before[0] + after[0]) / 2
    autocommit = (before[1] + after[1]) / 2
    return {
        "per_s": rate,
        "raw_insert_commit_per_s": insert_commit,
        "raw_autocommit_insert_per_s": autocommit,
        "ratio_to_insert_commit": rate / insert_commit,
        "ratio_to_autocommit_insert": rate / autocommit,
    }


def summary(rounds: list[dict[str, float]]) -> dict[str, Any]:
    """Medians over rounds (each round compared with the raw rate around it), and the rounds."""
    keys = list(rounds[0])
    out: dict[str, Any] = {k: round(statistics.median(r[k] for r in rounds), 3 if "ratio" in k else 0) for k in keys}
    out["rounds"] = [[round(r[k], 3 if "ratio" in k else 0) for k in keys] for r in rounds]
    out["round_columns"] = keys
    return out


def sequential_steps(
    server: str, raw_url: str, sandbox: Sandbox, steps: int, rounds: int, raw_s: float
) -> list[dict[str, float]]:
    """Instances of `steps` steps, one at a time, on one worker process with one thread: each step's
    commit waits for the last. The rate is from the journal's commit times (first to last step)."""
    results = []
    with fresh_database(server) as url:
        service, tenant = setup(url, sandbox, SEQUENTIAL)
        worker = Worker(url, threads=1, lease_s=30)
        try:
            for n in range(rounds):
                before = raw_pair(raw_url, raw_s)
                service.create_instances(tenant, "wf", [{"id": f"seq{n}", "params": {"steps": steps}}])
                wait_complete(service.store, n + 1, 600)
                with service.store.transaction() as tx:
                    first, last = tx.execute(
                        "SELECT MIN(updated_at), MAX(updated_at) FROM journal WHERE tenant_id = ? AND instance_id = ?",
                        ("bench", f"seq{n}"),
                    )[0]
                after = raw_pair(raw_url, raw_s)
                results.append(with_raw((steps - 1) / (last - first), before, after))
        finally:
            worker.stop()
            service.store.close()
    return results


def record_only(server: str, raw_url: str, rounds: int, seconds: float) -> list[dict[str, float]]:
    """The store's step commit alone (PostgresStore.record in a loop on one claimed instance), no guest:
    what the journal write costs next to a raw commit."""
    results = []
    with fresh_database(server) as url:
        store = PostgresStore(url)
        try:
            store.create_tenant(Tenant("bench", "bench", Quotas(), 0.0), "bench-key")
            version, _ = store.deploy("bench", "wf", SEQUENTIAL, "h", 0.0)
            store.create_instances("bench", version, [("only", {"steps": 1})], 0.0)
            claim = store.claim("bench", 1, time.time(), 3600.0, {})[0]
            position = 0
            for _ in range(rounds):
                before = raw_pair(raw_url, seconds)
                count = 0
                started = time.perf_counter()
                while time.perf_counter() - started < seconds:
                    now = time.time()
                    entry = Entry(position, "step", "do", "done", 1, '{"i": 1}', created_at=now, updated_at=now)
                    store.record(claim, entry, AttemptRecord(position, 1, True, None, None, 1000, 0.1, now), now)
                    count += 1
                    position += 1
                rate = count / (time.perf_counter() - started)
                results.append(with_raw(rate, before, raw_pair(raw_url, seconds)))
        finally:
            store.close()
    return results


def fan_out(server: str, sandbox: Sandbox, processes: int, threads: int, instances: int) -> dict[str, float]:
    """`instances` instances of 20 steps each on `processes` worker processes (started before timing)."""
    with fresh_database(server) as url:
        service, tenant = setup(url, sandbox, TWENTY_STEPS)
        workers = [Worker(url, threads=threads, lease_s=30) for _ in range(processes)]
        try:
            started = time.perf_counter()
            for first in range(0, instances, 100):
                batch = [{"id": f"i{n}"} for n in range(first, min(first + 100, instances))]
                service.create_instances(tenant, "wf", batch)
            wait_complete(service.store, instances, 600)
            elapsed = time.perf_counter() - started
        finally:
            for worker in workers:
                worker.stop()
            service.store.close()
    return {"instances_per_s": instances / elapsed, "steps_per_s": instances * 20 / elapsed, "seconds": elapsed}


def held_by(store: SQLStore, owner: str) -> dict[str, int]:
    """Instances leased to `owner`: their committed step counts."""
    with store.transaction() as tx:
        rows = tx.execute("SELECT instance_id, steps FROM instances WHERE lease_owner = ?", (owner,))
    return {r[0]: r[1] for r in rows}


def takeover(server: str, sandbox: Sandbox, lease_s: float, runs: int) -> list[dict[str, float]]:
    """Kill -9 a worker in the middle of long-running instances; time until a surviving worker
    holds them all, and until each has committed a new step."""
    results = []
    with fresh_database(server) as url:
        service, tenant = setup(url, sandbox, SEQUENTIAL)
        store = service.store
        try:
            for run in range(runs):
                ids = [f"r{run}-{n}" for n in range(6)]
                victim = Worker(url, threads=len(ids), lease_s=lease_s)
                service.create_instances(tenant, "wf", [{"id": i, "params": {"steps": 10**7}} for i in ids])
                deadline = time.monotonic() + 30
                while len(held_by(store, victim.owner)) < len(ids):
                    assert time.monotonic() < deadline, "the victim did not claim its instances"
                    time.sleep(0.01)
                survivor = Worker(url, threads=16, lease_s=lease_s)
                try:
                    time.sleep(lease_s / 2)  # heartbeats have run; steps are being committed
                    marks = held_by(store, victim.owner)
                    killed = time.time()
                    victim.kill()
                    taken_at: dict[str, float] = {}
                    resumed_at: dict[str, float] = {}
                    deadline = time.monotonic() + 10 * lease_s
                    while len(resumed_at) < len(marks):
                        assert time.monotonic() < deadline, f"no takeover: {held_by(store, survivor.owner)}"
                        now = time.time()
                        for instance_id, steps in held_by(store, survivor.owner).items():
                            taken_at.setdefault(instance_id, now)
                            if steps > marks[instance_id] + 1:
                                resumed_at.setdefault(instance_id, now)
                        time.sleep(0.005)
                    for instance_id in ids:
                        service.control(tenant, "wf", instance_id, "terminate")
                finally:
                    survivor.stop()
                results.append(
                    {
                        "instances": len(marks),
                        "takeover_s": max(taken_at.values()) - killed,
                        "resumed_s": max(resumed_at.values()) - killed,
                    }
                )
        finally:
            store.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs")
    parser.add_argument("--db", default=DEFAULT_SERVER, help="a database on the server (for CREATE DATABASE)")
    parser.add_argument("--lease", type=float, default=2.0, help="lease period for the takeover figure")
    args = parser.parse_args()
    steps = 500 if args.quick else 1000
    rounds = 3 if args.quick else 7
    instances = 200 if args.quick else 600
    raw_s = 1.0 if args.quick else 2.0
    sandbox = Sandbox()
    try:
        with fresh_database(args.db) as raw_url:

            def around(run: Any) -> tuple[Any, dict[str, float]]:
                """`run()` between two raw measurements; its result and the mean raw rates."""
                before = raw_pair(raw_url, raw_s)
                result = run()
                after = raw_pair(raw_url, raw_s)
                return result, {
                    "raw_insert_commit_per_s": (before[0] + after[0]) / 2,
                    "raw_autocommit_insert_per_s": (before[1] + after[1]) / 2,
                }

            emit("record_only", **summary(record_only(args.db, raw_url, rounds, raw_s / 2)))
            emit(
                "sequential_steps",
                steps_per_round=steps,
                worker_processes=1,
                threads=1,
                target_ratio=0.6,
                **summary(sequential_steps(args.db, raw_url, sandbox, steps, rounds, raw_s / 2)),
            )
            for processes in (1, 2, 4):
                figures, raw = around(lambda n=processes: fan_out(args.db, sandbox, n, threads=4, instances=instances))
                emit(
                    "fan_out",
                    worker_processes=processes,
                    threads=4,
                    instances=instances,
                    steps_each=20,
                    instances_per_s=round(figures["instances_per_s"], 1),
                    steps_per_s=round(figures["steps_per_s"]),
                    **{k: round(v) for k, v in raw.items()},
                )
        for result in takeover(args.db, sandbox, args.lease, runs=2 if args.quick else 3):
            emit(
                "takeover",
                lease_s=args.lease,
                instances=result["instances"],
                takeover_s=round(result["takeover_s"], 3),
                resumed_s=round(result["resumed_s"], 3),
                takeover_to_lease=round(result["takeover_s"] / args.lease, 2),
                target_to_lease=2.0,
            )
    finally:
        Worker.stop_all()
        sandbox.close()


if __name__ == "__main__":
    main()
