"""The comparison's scenarios, one function per (engine, scenario), each on a fresh database.

Engines: tenantflow (in this process; the recovery scenario in worker processes), DBOS (in processes
of the benchmark's own environment, see bench/dbos_bench.py), a plain-Python baseline (the same
workflows as direct function calls with one INSERT + COMMIT per step, no sandbox, no scheduler), and
the raw single-row commit rate of the same database (the physical limit of a durable step).

Databases: a SQLite file in a scratch directory, or a scratch PostgreSQL database created on the
server at 127.0.0.1:5432 and dropped afterwards. tenantflow's SQLite is WAL, synchronous=FULL
(its default); DBOS's SQLite is SQLite's default rollback journal (DELETE), synchronous=FULL.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from tenantflow.host import Sandbox
from tenantflow.runtime.contract import MAX_BATCH
from tenantflow.runtime.records import Quotas
from tenantflow.runtime.service import Service
from tenantflow.runtime.store import open_store

from bench import pg_bench, runtime_bench, sandbox_bench

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
ADMIN_PG = os.environ.get("TENANTFLOW_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
WORKERS = 4  # tenantflow worker threads = DBOS queue worker_concurrency = baseline threads
POLL_S = 0.05


# -- scratch databases -----------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    name: str  # "sqlite" | "postgres"
    scratch: Path

    @contextlib.contextmanager
    def database(self, label: str) -> Iterator[str]:
        """A URL of a fresh, empty database; removed afterwards."""
        tag = f"{label}_{uuid.uuid4().hex[:10]}"
        if self.name == "sqlite":
            path = self.scratch / f"{tag}.db"
            try:
                yield f"sqlite:///{path}"
            finally:
                for suffix in ("", "-wal", "-shm", "-journal"):
                    path.with_name(path.name + suffix).unlink(missing_ok=True)
            return
        with pg_bench.fresh_database(ADMIN_PG) as url:
            yield url


def sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


class Reader:
    """Reads from a database another process writes to: a count, a max."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pg: psycopg.Connection[Any] | None = None
        self._sqlite: sqlite3.Connection | None = None
        if url.startswith("sqlite"):
            self._sqlite = sqlite3.connect(sqlite_path(url), timeout=30, isolation_level=None)
        else:
            self._pg = psycopg.connect(url, autocommit=True)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        try:
            if self._sqlite is not None:
                return self._sqlite.execute(sql).fetchall()
            assert self._pg is not None
            return self._pg.execute(sql).fetchall()
        except (sqlite3.OperationalError, psycopg.errors.UndefinedTable):
            return []  # the schema is not there yet

    def scalar(self, sql: str) -> Any:
        rows = self.rows(sql)
        return rows[0][0] if rows else None

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
        if self._pg is not None:
            self._pg.close()


# -- the physical limit ----------------------------------------------------------------


def raw_commit_rate(backend: Backend, n: int, journal_mode: str = "WAL") -> float:
    """One-row INSERT + COMMIT per iteration on a fresh database of `backend`. SQLite: `n` commits in
    `journal_mode`, synchronous=FULL. PostgreSQL: pg_bench's one-round-trip autocommit INSERT for about
    n / 2000 seconds (synchronous_commit as the server has it, i.e. on)."""
    with backend.database("raw") as url:
        if backend.name == "sqlite":
            return runtime_bench.raw_commit_rate(Path(sqlite_path(url)), "full", n, journal_mode)
        return pg_bench.raw_commit_rate(url, n / 2000, one_round_trip=True)


# -- tenantflow -------------------------------------------------------------------------


def tf_sequential(backend: Backend, sandbox: Sandbox, steps: int) -> dict[str, Any]:
    with backend.database("tf_seq") as url:
        store = open_store(url)
        try:
            rate = runtime_bench.sequential_steps(backend.scratch, sandbox, "full", steps, store=store)
        finally:
            store.close()
    return {"steps_per_s": rate}


def tf_fan_out(backend: Backend, sandbox: Sandbox, instances: int) -> dict[str, Any]:
    with backend.database("tf_fan") as url:
        store = open_store(url)
        try:
            rate = runtime_bench.fan_out(backend.scratch, sandbox, "full", instances, WORKERS, store=store)
        finally:
            store.close()
    return {"instances_per_s": rate}


def _tf_worker(url: str, log: Path) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "tenantflow.runtime.cli", "worker", "--db", url, "--workers", str(WORKERS)]
    command += ["--ready-json", "--log-level", "warning"]
    with log.open("a") as err:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT)


def tf_recovery(backend: Backend, instances: int, kill_at: float) -> dict[str, Any]:
    with backend.database("tf_rec") as url:
        setup = Service.open(url)
        try:
            tenant = setup.create_tenant("bench", Quotas(max_concurrent=WORKERS, max_instances_per_minute=10**9))[0]
            setup.deploy(tenant, "ten", runtime_bench.TEN_STEPS)
            for first in range(0, instances, MAX_BATCH):
                batch = [{"id": f"i{n}"} for n in range(first, min(first + MAX_BATCH, instances))]
                setup.create_instances(tenant, "ten", batch)
        finally:
            setup.close()
        log = backend.scratch / "tf-worker.log"
        return _recovery(
            url,
            lambda first: _tf_worker(url, log),
            "SELECT COUNT(*) FROM instances WHERE status IN ('complete', 'errored')",
            "SELECT MAX(updated_at) FROM instances",
            instances,
            kill_at,
            log,
        )


def _recovery(
    url: str,
    spawn: Callable[[bool], subprocess.Popen[str]],
    done_sql: str,
    last_sql: str,
    total: int,
    kill_at: float,
    log: Path,
    last_scale: float = 1.0,
) -> dict[str, Any]:
    """Start a worker, kill -9 it once `kill_at` of the instances are done, start a new one; time from
    spawning the new one until the last instance finished (as the database recorded it)."""
    reader = Reader(url)
    first = spawn(True)
    try:
        deadline = time.monotonic() + 600
        while (reader.scalar(done_sql) or 0) < total * kill_at:
            if first.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker exited or stalled before the kill; see {log}")
            time.sleep(POLL_S / 5)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        done_at_kill = int(reader.scalar(done_sql) or 0)
        spawned = time.time()
        second = spawn(False)
        ready: list[float] = []

        def watch() -> None:
            if second.stdout is not None and second.stdout.readline():
                ready.append(time.time())

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            while (reader.scalar(done_sql) or 0) < total:
                if second.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"recovering worker exited or stalled; see {log}")
                time.sleep(POLL_S)
            last = float(reader.scalar(last_sql)) * last_scale
        finally:
            os.kill(second.pid, signal.SIGKILL)
            second.wait()
            watcher.join()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        reader.close()
    return {
        "recovery_s": last - spawned,
        "remaining_at_kill": total - done_at_kill,
        "spawn_to_ready_s": ready[0] - spawned if ready and ready[0] <= last else None,
        "instances": total,
    }


# -- DBOS -------------------------------------------------------------------------------


def dbos_python() -> Path:
    return BENCH / ".venv-dbos" / "bin" / "python"


def _dbos(command: str, url: str, *args: str, timeout: float = 900) -> dict[str, Any]:
    done = subprocess.run(
        [str(dbos_python()), "-m", "bench.dbos_bench", command, "--db", url, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"dbos_bench {command} failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def dbos_sequential(backend: Backend, steps: int) -> dict[str, Any]:
    with backend.database("dbos_seq") as url:
        return _dbos("sequential", url, "--steps", str(steps))


def dbos_fan_out(backend: Backend, instances: int) -> dict[str, Any]:
    with backend.database("dbos_fan") as url:
        return _dbos("fan-out", url, "--instances", str(instances), "--concurrency", str(WORKERS))


def dbos_recovery(backend: Backend, instances: int, kill_at: float) -> dict[str, Any]:
    with backend.database("dbos_rec") as url:
        log = backend.scratch / "dbos-worker.log"

        def spawn(first: bool) -> subprocess.Popen[str]:
            command = [str(dbos_python()), "-m", "bench.dbos_bench", "worker", "--db", url]
            command += ["--concurrency", str(WORKERS), "--enqueue", str(instances if first else 0)]
            with log.open("a") as err:
                return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT)

        table = "workflow_status" if backend.name == "sqlite" else "dbos.workflow_status"
        return _recovery(
            url,
            spawn,
            f"SELECT COUNT(*) FROM {table} WHERE status IN ('SUCCESS', 'ERROR')",
            f"SELECT MAX(updated_at) FROM {table}",
            instances,
            kill_at,
            log,
            last_scale=1 / 1000,
        )


# -- the in-process baseline -------------------------------------------------------------


class _Steps:
    """A journal of plain Python: one INSERT + COMMIT per step on its own connection."""

    def __init__(self, url: str) -> None:
        self.sqlite = url.startswith("sqlite")
        if self.sqlite:
            self.connection: Any = sqlite3.connect(
                sqlite_path(url), isolation_level=None, timeout=30, check_same_thread=False
            )
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute("PRAGMA synchronous=FULL")
        else:
            self.connection = psycopg.connect(url, autocommit=True)
        self.sql = "INSERT INTO journal (instance_id, position, result) VALUES " + (
            "(?, ?, ?)" if self.sqlite else "(%s, %s, %s)"
        )

    def record(self, instance_id: str, position: int, result: Any) -> Any:
        self.connection.execute(self.sql, (instance_id, position, json.dumps(result)))
        return result

    def close(self) -> None:
        self.connection.close()


def _baseline_schema(url: str) -> None:
    steps = _Steps(url)
    steps.connection.execute(
        "CREATE TABLE journal (instance_id TEXT, position INTEGER, result TEXT, PRIMARY KEY (instance_id, position))"
    )
    steps.close()


def _small_step(i: int) -> dict[str, Any]:
    return {"i": i, "ok": True}


def _ten_step(i: int) -> dict[str, int]:
    return {"i": i}


def baseline_sequential(backend: Backend, steps: int) -> dict[str, Any]:
    with backend.database("base_seq") as url:
        _baseline_schema(url)
        journal = _Steps(url)
        started = time.perf_counter()
        for i in range(steps):
            journal.record("i0", i, _small_step(i))
        elapsed = time.perf_counter() - started
        journal.close()
    return {"steps_per_s": steps / elapsed}


def baseline_fan_out(backend: Backend, instances: int) -> dict[str, Any]:
    with backend.database("base_fan") as url:
        _baseline_schema(url)
        local = threading.local()
        opened: list[_Steps] = []

        def instance(n: int) -> None:
            if not hasattr(local, "journal"):
                local.journal = _Steps(url)
                opened.append(local.journal)
            for i in range(10):
                local.journal.record(f"i{n}", i, _ten_step(i))

        started = time.perf_counter()
        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(instance, range(instances)))
        elapsed = time.perf_counter() - started
        for journal in opened:
            journal.close()
    return {"instances_per_s": instances / elapsed}


# -- tenantflow only -------------------------------------------------------------------


def sleepers(backend: Backend, instances: int, park_rate: float, margin_s: float) -> dict[str, Any]:
    """Scenario 3, in a process of its own (its RSS is the service's alone)."""
    with backend.database("sleepers") as url:
        command = [sys.executable, "-m", "bench.sleepers", "--db", url, "--instances", str(instances)]
        command += ["--park-rate", str(park_rate), "--margin", str(margin_s), "--workers", str(WORKERS)]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=3600)
        if done.returncode != 0:
            raise RuntimeError(f"sleepers failed:\n{done.stderr[-4000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result


def isolate_start() -> dict[str, Any]:
    """Scenario 5: sandbox_bench's fresh-instance-to-first-tenant-instruction figures (p50, p99): a fresh isolate
    made on the spot and the source compiled in the guest; and (`pooled`) as the runtime starts an activation."""
    box = sandbox_bench.FirstLogSandbox()
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            sandbox_bench.bench_first_instruction(box)
    finally:
        box.close()
    figures = {line["name"]: line for line in map(json.loads, out.getvalue().splitlines())}
    first: dict[str, Any] = figures["fresh_instance_to_first_instruction"]
    pooled: dict[str, Any] = figures["pooled_isolate_to_first_instruction"]
    return {
        "p50_ms": first["p50_ms"],
        "p99_ms": first["p99_ms"],
        "n": first["n"],
        "what": first["what"],
        "pooled": {k: pooled[k] for k in ("p50_ms", "p99_ms", "n", "what", "from_the_pool")},
    }
