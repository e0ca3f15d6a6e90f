"""Chaos: worker processes are killed with SIGKILL every second while instances of a 20-step
workflow with a sleep and an event wait run; a fresh worker replaces each one.

At the end every instance is complete, every step has exactly one committed result (one journal
entry, one attempt), and the step bodies that ran more than once, counted from outside the guest
by an HTTP counter the bodies POST to, are no more than the kills (each worker runs one activation
at a time, so a kill can interrupt at most one body between running and committing).

On PostgreSQL half the workers look remote (another host name in their lease owner), so their
instances are taken over by lease expiry; the others are recovered at once by their replacement,
which sees their process gone. A few instances run an activation longer than the lease, kept by
heartbeats. The same on SQLite with one worker process.

Short form by default (40 instances on PostgreSQL, 60 on SQLite: 20-40 s each on a slow 2-core machine,
a kill every second); TENANTFLOW_CHAOS=long runs 500 instances on PostgreSQL and 200 on SQLite. Also here:
NOTIFY wakes an idle worker process at once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import pytest
from pg import fresh_schema
from tenantflow.host import Sandbox
from tenantflow.runtime.records import InstanceKey, Quotas
from tenantflow.runtime.service import Service
from tenantflow.runtime.store import open_store

LONG = os.environ.get("TENANTFLOW_CHAOS", "").lower() == "long"
STEPS = 20
LEASE_S = 2.0
KILL_EVERY_S = 1.0
# Kills a run must span: the last tenth of the events is held back until the fleet has made them, so a fast
# machine does not finish the run before it has killed anything.
MIN_KILLS = 3
SLOW_MS = 450

WORKFLOW = """
import tenantflow

def run(event, step):
    base = event.payload["counter"] + "/" + event.instance_id
    total = 0
    for i in range(20):
        def body(i=i):
            delay = event.payload["slow_ms"] if i >= 14 else 0
            answer = tenantflow.fetch(f"{base}/{i}?delay_ms={delay}", method="POST", body="x")
            if answer.status != 200:
                raise RuntimeError(f"counter answered {answer.status}")
            return i
        total += step.do(f"step{i}", body)
        if i == 6:
            step.sleep("nap", "700 milliseconds")
        if i == 13:
            approval = step.wait_for_event("approval", event_type="approved", timeout="10 minutes")
    return {"total": total, "approved": approval["payload"]}
"""


class _Counter(BaseHTTPRequestHandler):
    hits: Counter[str]
    lock: threading.Lock

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path, _, query = self.path.partition("?")
        with self.lock:
            self.hits[path] += 1
        if query.startswith("delay_ms="):
            time.sleep(int(query.split("=")[1]) / 1000)
        body = b"ok"
        try:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the worker that asked was killed

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def counter() -> Iterator[tuple[str, Counter[str]]]:
    hits: Counter[str] = Counter()
    handler = type("Handler", (_Counter,), {"hits": hits, "lock": threading.Lock()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hit", hits
    server.shutdown()
    server.server_close()


class Fleet:
    """Worker processes on one database; kill -9 one at random and start a new one."""

    def __init__(self, url: str, size: int, log_dir: Path, remote: bool) -> None:
        self.url = url
        self.remote = remote
        self.log_dir = log_dir
        self.started = 0
        self.kills = 0
        self.workers: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []
        self.ready_at: dict[int, float] = {}
        for _ in range(size):
            self.spawn()

    def spawn(self) -> None:
        self.started += 1
        log = open(self.log_dir / f"worker-{self.started}.log", "wb")  # noqa: SIM115
        command = [sys.executable, "-m", "tenantflow.runtime.cli", "worker", "--db", self.url, "--ready-json"]
        command += ["--workers", "1", "--lease", str(LEASE_S), "--log-level", "warning"]
        if self.remote and self.started % 2:
            # Looks like a worker on another machine: when it dies, its instances come back by lease expiry
            # only (the replacement's check for dead local processes does not apply to it).
            command += ["--host-alias", f"remote-{self.started}"]
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.workers.append((process, log))
        self.ready_at.pop(process.pid, None)

    def _ready_for(self, process: subprocess.Popen[bytes], log: IO[bytes]) -> float:
        """How long the worker has been running activations (0 while it starts)."""
        if process.pid not in self.ready_at:
            if b'"ready": true' not in Path(log.name).read_bytes():
                return 0.0
            self.ready_at[process.pid] = time.monotonic()
        return time.monotonic() - self.ready_at[process.pid]

    def kill_one(self, min_ready_s: float = 0.0) -> bool:
        """SIGKILL a random worker that has been ready for `min_ready_s` (so that each does some work however
        slowly this machine starts a process) and start another; whether one was."""
        ready = [i for i, (p, log) in enumerate(self.workers) if self._ready_for(p, log) >= min_ready_s]
        if not ready:
            return False
        process, log = self.workers.pop(random.choice(ready))
        process.send_signal(signal.SIGKILL)
        process.wait()  # reaped: the replacement sees the pid gone
        log.close()
        self.kills += 1
        self.spawn()
        return True

    def stop(self) -> list[int | None]:
        """SIGTERM all; their exit codes (a worker stopped before Python installed its handler counts as 0)."""
        for process, _ in self.workers:
            process.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        for process, log in self.workers:
            try:
                code = process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
            log.close()
            if code == -signal.SIGTERM and b"ready" not in Path(log.name).read_bytes():
                code = 0
            codes.append(code)
        self.workers = []
        return codes

    def errors(self) -> list[str]:
        """Tracebacks in the workers' logs (a killed worker's log ends abruptly, which is fine)."""
        found = []
        for path in sorted(self.log_dir.glob("worker-*.log")):
            text = path.read_text(errors="replace")
            if "Traceback" in text:
                found.append(f"{path.name}:\n{text[-3000:]}")
        return found


def chaos(
    url: str,
    sandbox: Sandbox,
    counter: tuple[str, Counter[str]],
    tmp_path: Path,
    *,
    workers: int,
    n: int,
    many_hosts: bool,
    slow_every: int = 0,
    kill: bool = True,
) -> None:
    """`many_hosts`: half the workers look remote. Every `slow_every`-th instance has slow steps after
    its event, so that activation outlasts the lease and only heartbeats keep it."""
    base, hits = counter
    budget_s = 600.0 if LONG else 120.0
    setup = Service(open_store(url), sandbox)
    try:
        tenant, _ = setup.create_tenant("chaos", Quotas(max_concurrent=64, egress=("127.0.0.1",)))
        setup.deploy(tenant, "flow", WORKFLOW)
        ids = [f"c{i:04d}" for i in range(n)]
        fleet = Fleet(url, workers, tmp_path, remote=many_hosts)

        def slowness(instance_id: str) -> int:
            return SLOW_MS if slow_every and int(instance_id[1:]) % slow_every == 0 else 0

        try:
            for start in range(0, n, 100):
                batch = ids[start : start + 100]
                setup.create_instances(
                    tenant,
                    "flow",
                    [{"id": i, "params": {"counter": base, "slow_ms": slowness(i)}} for i in batch],
                )
            pending_events = list(ids)
            random.shuffle(pending_events)
            started = time.monotonic()
            next_kill = started + KILL_EVERY_S
            while True:
                counts = {status: count for _, status, count in setup.store.status_counts()}
                if counts.get("complete", 0) == n:
                    break
                assert time.monotonic() - started < budget_s, f"not done in {budget_s} s: {counts}, kills {fleet.kills}"
                # Events trickle in: some arrive before the instance waits (buffered), some after.
                held = n // 10 if kill and fleet.kills < MIN_KILLS else 0
                sent = pending_events[: min(max(1, n // 20), max(0, len(pending_events) - held))]
                for instance_id in sent:
                    setup.send_event(tenant, "flow", instance_id, "approved", {"by": instance_id})
                del pending_events[: len(sent)]
                if kill and time.monotonic() >= next_kill and fleet.kill_one(min_ready_s=KILL_EVERY_S / 2):
                    next_kill = time.monotonic() + KILL_EVERY_S
                time.sleep(0.1)
            elapsed = time.monotonic() - started
        finally:
            codes = fleet.stop()
        assert codes == [0] * workers, f"workers did not stop cleanly: {codes}"
        assert fleet.kills >= MIN_KILLS or not kill, "the run was too short to kill anything"
        assert not fleet.errors(), "\n".join(fleet.errors())

        extra = 0
        for instance_id in ids:
            key = InstanceKey("chaos", "flow", instance_id)
            instance = setup.store.instance(key)
            assert instance.status == "complete", (instance_id, instance.status, instance.error)
            assert instance.output == {"total": sum(range(STEPS)), "approved": {"by": instance_id}}
            entries, attempts, _ = setup.store.journal(key)
            steps = [e for e in entries if e.kind == "do"]
            assert [(e.name, e.state, e.result) for e in steps] == [
                (f"step{i}", "done", json.dumps(i)) for i in range(STEPS)
            ]
            assert [e.position for e in entries] == list(range(STEPS + 2))
            # Exactly one committed attempt per step: no body's result was committed twice.
            assert sorted((a.position, a.attempt, a.ok) for a in attempts) == [(e.position, 1, True) for e in steps]
            for i in range(STEPS):
                runs = hits[f"/hit/{instance_id}/{i}"]
                assert runs >= 1, f"{instance_id} step {i} completed without running"
                extra += runs - 1
        print(
            f"\nchaos: {n} instances x {STEPS} steps, {workers} workers, {fleet.kills} kills, "
            f"{extra} bodies ran twice, {elapsed:.1f} s"
        )
        assert extra <= fleet.kills, f"{extra} step bodies ran more than once, but only {fleet.kills} kills"
    finally:
        setup.store.close()


def test_chaos_postgresql(
    pg_server: str,
    sandbox: Sandbox,
    counter: tuple[str, Counter[str]],
    tmp_path: Path,
) -> None:
    chaos(
        fresh_schema(pg_server),
        sandbox,
        counter,
        tmp_path,
        workers=4,
        n=500 if LONG else 40,
        many_hosts=True,
        slow_every=25,
    )


def test_activations_longer_than_the_lease_keep_it_by_heartbeats(
    pg_server: str,
    sandbox: Sandbox,
    counter: tuple[str, Counter[str]],
    tmp_path: Path,
) -> None:
    """No kills: every instance has an activation longer than the lease, and no body may run twice."""
    chaos(
        fresh_schema(pg_server), sandbox, counter, tmp_path, workers=4, n=4, many_hosts=True, slow_every=1, kill=False
    )


def test_chaos_sqlite(sandbox: Sandbox, counter: tuple[str, Counter[str]], tmp_path: Path) -> None:
    chaos(
        f"sqlite:///{tmp_path / 'chaos.db'}",
        sandbox,
        counter,
        tmp_path,
        workers=1,
        n=200 if LONG else 60,
        many_hosts=False,
    )


QUICK = """
def run(event, step):
    step.do("one", lambda: 1)
    got = step.wait_for_event("go", event_type="go", timeout="1 minute") if event.payload["wait"] else None
    return got and got["payload"]
"""


def test_notify_wakes_an_idle_worker_process_promptly(pg_server: str, sandbox: Sandbox, tmp_path: Path) -> None:
    """New work and delivered events reach an idle worker in another process through NOTIFY, well before its
    one-second poll would find them."""
    url = fresh_schema(pg_server)
    setup = Service(open_store(url), sandbox)
    worker = subprocess.Popen(
        [sys.executable, "-m", "tenantflow.runtime.cli", "worker", "--db", url, "--workers", "2", "--ready-json"],
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "worker.log", "wb"),  # noqa: SIM115
    )
    try:
        assert worker.stdout is not None and b"ready" in worker.stdout.readline()
        tenant, _ = setup.create_tenant("notify")
        setup.deploy(tenant, "quick", QUICK)

        def wait_for(instance_id: str, status: str) -> float:
            started = time.monotonic()
            while setup.instance(tenant, "quick", instance_id).status != status:
                assert time.monotonic() - started < 10, f"{instance_id} never became {status}"
                time.sleep(0.005)
            return time.monotonic() - started

        created, delivered = [], []
        for n in range(3):
            time.sleep(1.2)  # the worker is idle, between polls
            started = time.monotonic()
            setup.create_instances(tenant, "quick", [{"id": f"new{n}", "params": {"wait": False}}])
            wait_for(f"new{n}", "complete")
            created.append(time.monotonic() - started)
        setup.create_instances(tenant, "quick", [{"id": f"ev{n}", "params": {"wait": True}} for n in range(3)])
        for n in range(3):
            wait_for(f"ev{n}", "waiting")
        for n in range(3):
            time.sleep(1.2)
            started = time.monotonic()
            setup.send_event(tenant, "quick", f"ev{n}", "go", n)
            wait_for(f"ev{n}", "complete")
            delivered.append(time.monotonic() - started)
        print(f"\ncreate -> complete {[round(t, 3) for t in created]}")
        print(f"event -> complete {[round(t, 3) for t in delivered]}")
        # Polling alone (every <= 1 s, at a random phase) would make most of these 0.1-1 s.
        assert max(created) < 0.45, created
        assert max(delivered) < 0.45, delivered
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        setup.store.close()
