"""An agent loop on a real `tenantflow serve`: server CPU, wall time and replays per turn, for N turns.

    python -m bench.agent_loop [--n 100,800,2000] [--variants sleep,event] [--modes parked,evicted]
                               [--quick] [--timeout 900] [--markdown] [--keep]

What it measures. One instance of N turns; each turn is a `step.do` with a small JSON result, then
a wait of 20-50 ms:

  sleep   `step.sleep(f"think {i}", 20 + (i * 7) % 31)` (milliseconds), in the workflow itself
  event   `step.wait_for_event(f"tool {i}", event_type="tool_result")`; this script sends one
          `tool_result` event every 20-50 ms (uniform, seeded; start to start, never before the
          previous one was accepted) while the instance runs, N in all. The server buffers at most
          100 unconsumed events per instance: a 429 (or a 503) is retried after a back-off (50 ms,
          doubling, at most 1 s) and counted (`events_429`); `events_mean_interval_ms` is the
          measured mean time between two accepted events. A wait whose event is already buffered
          does not suspend, so `activations` can be below N + 1.

for N in 100, 800 and 2,000 (`--quick`: 100 and 300). For each run it prints one JSON line:

  server_cpu_s             the server process's CPU time (utime + stime of every thread, from
                           /proc/PID/stat) from just before the create request until the status poll
                           that saw the instance finished, minus the cost of those status polls
                           (polls x the CPU of one status GET, calibrated on the same server before
                           the runs; `server_cpu_raw_s` and `poll_cpu_s` are in the line too).
                           It includes what the server spends receiving the events (event variant)
                           and its idle background work (timers, leases; `idle_cpu_s_per_s` in the
                           results file; `idle_cpu_est_s` = that rate x the run's wall time, an
                           estimate of its share), which a real server pays for such an instance too.
  cpu_per_turn_ms          server_cpu_s / N
  wall_s, wall_per_turn_ms the instance's own created_at -> updated_at (server clock) once complete;
                           `wall_client_s` is create request -> finished poll (+0..200 ms of polling)
  replayed_steps_per_turn  the increase of `tenantflow_replayed_steps_total` (all labels summed) over
                           the run / N; null when the server has no such metric
  hot_resumes, evictions   the increase of `tenantflow_hot_resumes_total` / `tenantflow_evictions_total`;
                           null when the server has no such metric
  activations              the increase of `tenantflow_activations_total` (present in every build)

The metrics are read from GET /metrics (with the server's `--metrics-token`) outside the CPU window.
Status is polled every 200 ms.

Modes. "parked" is the server's default; "evicted" starts it with `--park-memory-mb 0`, which turns
hot resume off, so every wait drops the isolate and the next wake replays the journal from the top
(the fallback, to show it costs no more than before hot resume). When `tenantflow serve --help` has
no `--park-memory-mb`, the build has no hot resume and one mode runs, labelled "replay (no hot resume
in this build)". Each mode gets a fresh server on a fresh SQLite file in a temp directory (default
settings: WAL, synchronous=FULL, 4 workers), loopback only, a warm-up run of each variant (3 turns)
and the poll calibration; then the runs, one after another.

Targets (from the issue), checked per mode and variant at the end: CPU per turn at N = 2,000 within
1.3x of N = 100; total server CPU for N = 800 under 1.5 s. They are printed as JSON lines too, then a
short summary and a Markdown table on stderr (`--markdown`: the table on stdout as well). Everything
goes to bench/results/agent-loop-<time>.json (gitignored), with the server log's errors and warnings.

A run that does not finish within `--timeout` seconds (default 900) is terminated, reported with
`"timed_out": true` and the figures measured until then. The server is always stopped (SIGTERM,
then SIGKILL after 15 s), on errors, Ctrl-C and SIGTERM too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

FULL_NS = (100, 800, 2000)
QUICK_NS = (100, 300)
VARIANTS = ("sleep", "event")
POLL_S = 0.2
FINISHED = frozenset({"complete", "errored", "terminated"})
PARK_FLAG = "--park-memory-mb"
REPLAY_MODE = "replay (no hot resume in this build)"
MODE_FLAGS: dict[str, list[str]] = {"parked": [], "evicted": [PARK_FLAG, "0"]}

REPLAYED = "tenantflow_replayed_steps_total"
HOT_RESUMES = "tenantflow_hot_resumes_total"
EVICTIONS = "tenantflow_evictions_total"
ACTIVATIONS = "tenantflow_activations_total"
METRICS = (REPLAYED, HOT_RESUMES, EVICTIONS, ACTIVATIONS)

CPU_RATIO_TARGET = 1.3  # cpu_per_turn(N = 2000) / cpu_per_turn(N = 100)
CPU_800_TARGET_S = 1.5  # total server CPU for N = 800

EVENT_TYPE = "tool_result"
SLEEP_WORKFLOW = '''\
def run(event, step):
    """N turns: a step with a small JSON result, then a durable sleep of 20-50 ms."""
    n = int(event.payload["n"])
    last = None
    for i in range(n):
        last = step.do(f"turn {i}", lambda: {"turn": i, "ok": True})
        step.sleep(f"think {i}", 20 + (i * 7) % 31)
    return {"turns": n, "last": last}
'''
EVENT_WORKFLOW = '''\
def run(event, step):
    """N turns: a step with a small JSON result, then a wait for one tool_result event."""
    n = int(event.payload["n"])
    events = 0
    last = None
    for i in range(n):
        step.do(f"turn {i}", lambda: {"turn": i, "ok": True})
        last = step.wait_for_event(f"tool {i}", event_type="tool_result", timeout="1 hour")
        events += 1
    return {"turns": n, "events": events, "last": last["payload"] if last else None}
'''
WORKFLOWS = {"sleep": ("agent-sleep", SLEEP_WORKFLOW), "event": ("agent-event", EVENT_WORKFLOW)}


def log(message: str) -> None:
    print(f"[agent_loop {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Stopped(BaseException):
    """SIGTERM to the benchmark: unwind so the server is stopped."""


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise Stopped("SIGTERM")


# -- the server process ---------------------------------------------------------------------


def tenantflow_command() -> list[str]:
    """The `tenantflow` console script next to this interpreter (.venv/bin), else `python -m`."""
    script = Path(sys.executable).parent / "tenantflow"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tenantflow.runtime.cli"]


def has_park_flag() -> bool:
    done = subprocess.run(
        [*tenantflow_command(), "serve", "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    return PARK_FLAG in done.stdout


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    children: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as listed:
                children.extend(int(c) for c in listed.read().split())
    except OSError:
        pass
    return children


class Server:
    """`tenantflow serve` on 127.0.0.1, a free port and its own SQLite file, in a session of its own
    (so Ctrl-C reaches only the benchmark, which then stops it). `program`: the command that is
    `tenantflow` (this interpreter's by default; another tree's, to compare builds in one run)."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        extra: Sequence[str],
        program: Sequence[str] | None = None,
        db: str | None = None,
    ) -> None:
        """`db`: the database's URL (default: a SQLite file of its own in `workdir`)."""
        self.program = list(program or tenantflow_command())
        self.db = db or f"sqlite:///{workdir / (name + '.db')}"
        self.log_path = workdir / f"{name}.serve.log"
        self.extra = list(extra)
        self.metrics_token = secrets.token_urlsafe(24)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        return [
            *self.program,
            "serve",
            "--db",
            self.db,
            "--port",
            str(self.port),
            "--host",
            "127.0.0.1",
            "--metrics-token",
            self.metrics_token,
            *self.extra,
        ]

    def start(self, timeout: float = 60.0) -> None:
        self.port = free_port()
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tenantflow serve exited {self.proc.returncode}:\n{self.log_text()[-4000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"tenantflow serve did not answer within {timeout} s:\n{self.log_text()[-4000:]}")

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 15 s; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                log(f"server pid {self.proc.pid} still up 15 s after SIGTERM: killing it")
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def create_tenant(self, name: str) -> str:
        """`tenantflow tenants create NAME --db DB --json` on the server's database; the API key."""
        environ = {k: v for k, v in os.environ.items() if not k.startswith("TENANTFLOW_")}
        done = subprocess.run(
            [*self.program, "tenants", "create", name, "--db", self.db, "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=environ,
            cwd=ROOT,
        )
        if done.returncode != 0:
            raise RuntimeError(f"tenants create exited {done.returncode}: {done.stdout}{done.stderr}")
        return str(json.loads(done.stdout)["api_key"])

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


@contextmanager
def running_server(
    workdir: Path, name: str, extra: Sequence[str], program: Sequence[str] | None = None, db: str | None = None
) -> Iterator[Server]:
    server = Server(workdir, name, extra, program, db)
    try:
        server.start()
        log(f"{name}: server pid {server.pid} on {server.url} ({' '.join(server.extra) or 'default settings'})")
        yield server
    except Exception:
        log(f"{name}: server log tail:\n{server.log_text()[-3000:]}")
        raise
    finally:
        code = server.stop()
        log(f"{name}: server stopped (exit {code})")


# -- metrics ------------------------------------------------------------------------------------


def parse_metrics(text: str, names: Sequence[str]) -> dict[str, float | None]:
    """The sum over all labels of each sample name; None when the server does not have that metric
    (neither a sample nor a `# TYPE` line for its family)."""
    sums: dict[str, float | None] = dict.fromkeys(names)
    families = {name.removesuffix("_total"): name for name in names}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            family = line.split()[2]
            if family in families and sums[families[family]] is None:
                sums[families[family]] = 0.0
            continue
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, rest = line.split("{", 1)[0], line.rpartition("}")[2]
        else:
            name, _, rest = line.partition(" ")
        if name in sums:
            sums[name] = (sums[name] or 0.0) + float(rest.split()[0])
    return sums


def scrape(server: Server) -> dict[str, float | None]:
    answer = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {server.metrics_token}"}, timeout=30)
    answer.raise_for_status()
    return parse_metrics(answer.text, METRICS)


def delta(before: dict[str, float | None], after: dict[str, float | None], name: str) -> float | None:
    start, end = before.get(name), after.get(name)
    return None if start is None or end is None else end - start


# -- the event sender ---------------------------------------------------------------------------


class EventSender(threading.Thread):
    """Sends `count` tool_result events, one every 20-50 ms (uniform, seeded; start to start, and
    never before the previous one was accepted); backs off on 429/503 (and transport errors) and
    retries. There is no catching up: a slow or refused send delays the ones after it."""

    def __init__(self, server: Server, key: str, workflow: str, instance: str, count: int, seed: int) -> None:
        super().__init__(daemon=True, name=f"events-{instance}")
        self.server = server
        self.key = key
        self.path = f"/v1/workflows/{workflow}/instances/{instance}/events"
        self.count = count
        self.rng = random.Random(seed)
        self.halt = threading.Event()
        self.sent = 0
        self.accepted_at: list[float] = []
        self.throttled: dict[int, int] = {}
        self.transport_errors = 0
        self.failure: str | None = None

    def run(self) -> None:
        with self.server.client(self.key) as http:
            previous = time.monotonic()  # the instance was just created
            for k in range(self.count):
                due = previous + self.rng.uniform(0.020, 0.050)
                if self.halt.wait(max(due - time.monotonic(), 0.0)):
                    return
                previous = time.monotonic()
                if not self._send(http, k):
                    return
                self.accepted_at.append(time.monotonic())

    def mean_interval_ms(self) -> float | None:
        """Mean time between two accepted events."""
        if len(self.accepted_at) < 2:
            return None
        return (self.accepted_at[-1] - self.accepted_at[0]) / (len(self.accepted_at) - 1) * 1000

    def _send(self, http: httpx.Client, k: int) -> bool:
        backoff = 0.05
        while not self.halt.is_set():
            try:
                answer = http.post(self.path, json={"type": EVENT_TYPE, "payload": {"k": k}})
            except httpx.HTTPError as error:
                self.transport_errors += 1
                if self.transport_errors > 20:
                    self.failure = f"transport: {error}"
                    return False
            else:
                if answer.status_code == 202:
                    self.sent += 1
                    return True
                if answer.status_code not in (429, 503):
                    self.failure = f"HTTP {answer.status_code}: {answer.text[:300]}"
                    return False
                self.throttled[answer.status_code] = self.throttled.get(answer.status_code, 0) + 1
            self.halt.wait(backoff)
            backoff = min(backoff * 2, 1.0)
        return False


# -- one server: set-up, calibration, runs ------------------------------------------------------


@dataclass
class Setup:
    key: str
    idle_cpu_s_per_s: float = 0.0
    poll_cpu_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def deploy(http: httpx.Client) -> None:
    for name, source in WORKFLOWS.values():
        answer = http.put(f"/v1/workflows/{name}", json={"source": source})
        if answer.status_code not in (200, 201):
            raise RuntimeError(f"deploy {name}: HTTP {answer.status_code} {answer.text[:500]}")


def status_of(http: httpx.Client, workflow: str, instance: str) -> dict[str, Any]:
    answer = http.get(f"/v1/workflows/{workflow}/instances/{instance}")
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return result


def calibrate(server: Server, http: httpx.Client, workflow: str, instance: str, gets: int = 300) -> tuple[float, float]:
    """(idle server CPU per second, server CPU of one status GET net of idle), on a finished instance."""
    cpu0, t0 = server.cpu(), time.monotonic()
    time.sleep(5.0)
    idle_rate = (server.cpu() - cpu0) / (time.monotonic() - t0)
    cpu0, t0 = server.cpu(), time.monotonic()
    for _ in range(gets):
        status_of(http, workflow, instance)
    spent = server.cpu() - cpu0 - idle_rate * (time.monotonic() - t0)
    return idle_rate, max(spent, 0.0) / gets


def measure(
    server: Server, setup: Setup, mode: str, variant: str, n: int, seed: int, timeout: float, tag: str
) -> dict[str, Any]:
    """One instance of `n` turns, from create to finished; the figures of the module docstring."""
    workflow = WORKFLOWS[variant][0]
    instance = f"{tag}-{variant}-{n}"
    sender: EventSender | None = None
    with server.client(setup.key) as http:
        before = scrape(server)
        cpu0 = server.cpu()
        t0 = time.monotonic()
        answer = http.post(f"/v1/workflows/{workflow}/instances", json={"id": instance, "params": {"n": n}})
        if answer.status_code != 201:
            raise RuntimeError(f"create {workflow}/{instance}: HTTP {answer.status_code} {answer.text[:500]}")
        try:
            if variant == "event":
                sender = EventSender(server, setup.key, workflow, instance, n, seed)
                sender.start()
            polls = 0
            poll_errors: dict[str, int] = {}
            timed_out = False
            status: dict[str, Any] = {}
            while True:
                time.sleep(POLL_S)
                polls += 1
                try:
                    status = status_of(http, workflow, instance)
                except httpx.HTTPError as problem:  # e.g. 503 store busy: counted, polled again
                    kind = str(problem.response.status_code) if isinstance(problem, httpx.HTTPStatusError) else "other"
                    poll_errors[kind] = poll_errors.get(kind, 0) + 1
                if status.get("status") in FINISHED:
                    break
                if time.monotonic() - t0 > timeout:
                    timed_out = True
                    break
                if server.proc is not None and server.proc.poll() is not None:
                    raise RuntimeError(f"the server exited {server.proc.returncode} during {instance}")
            t1 = time.monotonic()
            cpu1 = server.cpu()
        finally:
            if sender is not None:
                sender.halt.set()
                sender.join(10)
        if timed_out:
            log(f"{instance}: not finished after {timeout:g} s ({status.get('status')}): terminating it")
            http.post(f"/v1/workflows/{workflow}/instances/{instance}/terminate")
        after = scrape(server)
    children = child_pids(server.pid)
    if children:
        setup.notes.append(f"{instance}: the server had child processes {children} (their CPU is not counted)")

    raw = cpu1 - cpu0
    poll_cpu = polls * setup.poll_cpu_s
    cpu = raw - poll_cpu
    complete = status.get("status") == "complete"
    wall = float(status["updated_at"]) - float(status["created_at"]) if complete else t1 - t0
    replayed = delta(before, after, REPLAYED)
    output = status.get("output") if complete else None
    error = status.get("error")
    record: dict[str, Any] = {
        "mode": mode,
        "variant": variant,
        "n": n,
        "server_cpu_s": round(cpu, 3),
        "cpu_per_turn_ms": round(cpu / n * 1000, 3),
        "wall_s": round(wall, 3),
        "wall_per_turn_ms": round(wall / n * 1000, 2),
        "replayed_steps_per_turn": None if replayed is None else round(replayed / n, 2),
        "hot_resumes": delta(before, after, HOT_RESUMES),
        "evictions": delta(before, after, EVICTIONS),
        "activations": delta(before, after, ACTIVATIONS),
        "status": status.get("status"),
        "timed_out": timed_out,
        "turns_done": output.get("turns") if isinstance(output, dict) else None,
        "server_cpu_raw_s": round(raw, 3),
        "polls": polls,
        "poll_cpu_s": round(poll_cpu, 4),
        "poll_errors": poll_errors,
        "wall_client_s": round(t1 - t0, 3),
        "idle_cpu_est_s": round(setup.idle_cpu_s_per_s * (t1 - t0), 3),
    }
    if error:
        record["error"] = {"name": error.get("name"), "message": str(error.get("message"))[:300]}
    if sender is not None:
        record["events_sent"] = sender.sent
        interval = sender.mean_interval_ms()
        record["events_mean_interval_ms"] = None if interval is None else round(interval, 1)
        record["events_429"] = sender.throttled.get(429, 0)
        record["events_503"] = sender.throttled.get(503, 0)
        record["event_transport_errors"] = sender.transport_errors
        if sender.failure:
            record["event_failure"] = sender.failure
    return record


def prepare(server: Server, mode: str, variants: Sequence[str], seed: int) -> Setup:
    """Tenant, deploys, a warm-up run of each variant (3 turns), then the poll calibration."""
    setup = Setup(key=server.create_tenant("bench"))
    with server.client(setup.key) as http:
        deploy(http)
    for variant in variants:
        warm = measure(server, setup, mode, variant, 3, seed, 120, "warmup")
        if warm["status"] != "complete":
            raise RuntimeError(f"warm-up of {variant} ended {warm['status']}: {warm.get('error')}")
    with server.client(setup.key) as http:
        setup.idle_cpu_s_per_s, setup.poll_cpu_s = calibrate(
            server, http, WORKFLOWS[variants[0]][0], f"warmup-{variants[0]}-3"
        )
    log(
        f"{mode}: idle server CPU {setup.idle_cpu_s_per_s * 1000:.1f} ms/s; "
        f"one status GET {setup.poll_cpu_s * 1000:.2f} ms of server CPU"
    )
    return setup


def log_findings(text: str, limit: int = 20) -> dict[str, Any]:
    """Errors, warnings and tracebacks in the server's log; HTTP 429/5xx in its access log."""
    notable = [
        line
        for line in text.splitlines()
        if any(word in line for word in (" ERROR ", " WARNING ", " CRITICAL ", "Traceback", "ERROR:", "WARNING:"))
    ]
    statuses: dict[str, int] = {}
    for line in text.splitlines():
        if '" 429' in line or '" 5' in line:
            code = line.rpartition('" ')[2].split()[0]
            statuses[code] = statuses.get(code, 0) + 1
    return {"notable_lines": len(notable), "first": notable[:limit], "access_log_429_5xx": statuses}


# -- report -------------------------------------------------------------------------------------


def targets(runs: Sequence[dict[str, Any]], mode: str, variants: Sequence[str]) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    for variant in variants:
        by_n = {r["n"]: r for r in runs if r["mode"] == mode and r["variant"] == variant and r["status"] == "complete"}
        small, large = by_n.get(100), by_n.get(2000)
        ratio = None if small is None or large is None else large["cpu_per_turn_ms"] / small["cpu_per_turn_ms"]
        checks.append(
            {
                "target": f"cpu_per_turn N=2000 / N=100 <= {CPU_RATIO_TARGET}",
                "mode": mode,
                "variant": variant,
                "value": None if ratio is None else round(ratio, 3),
                "met": None if ratio is None else ratio <= CPU_RATIO_TARGET,
                "note": None if ratio is not None else "not measured (needs complete runs at N=100 and N=2000)",
            }
        )
        mid = by_n.get(800)
        checks.append(
            {
                "target": f"server CPU for N=800 < {CPU_800_TARGET_S} s",
                "mode": mode,
                "variant": variant,
                "value": None if mid is None else mid["server_cpu_s"],
                "met": None if mid is None else mid["server_cpu_s"] < CPU_800_TARGET_S,
                "note": None if mid is not None else "not measured (no complete run at N=800)",
            }
        )
    return checks


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def markdown(runs: Sequence[dict[str, Any]]) -> str:
    rows = [
        "| mode | variant | N | server CPU (s) | CPU / turn (ms) | wall (s) | wall / turn (ms) "
        "| replayed steps / turn | hot resumes | evictions | activations | status |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in runs:
        rows.append(
            f"| {r['mode']} | {r['variant']} | {r['n']:,} | {fmt(r['server_cpu_s'])} | {fmt(r['cpu_per_turn_ms'])} "
            f"| {fmt(r['wall_s'], 1)} | {fmt(r['wall_per_turn_ms'], 1)} | {fmt(r['replayed_steps_per_turn'], 1)} "
            f"| {fmt(r['hot_resumes'], 0)} | {fmt(r['evictions'], 0)} | {fmt(r['activations'], 0)} "
            f"| {r['status']}{' (timed out)' if r['timed_out'] else ''} |"
        )
    return "\n".join(rows)


def summary_lines(checks: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    for c in checks:
        verdict = "not measured" if c["met"] is None else ("met" if c["met"] else "NOT met")
        value = "" if c["value"] is None else f" = {c['value']}"
        lines.append(f"{c['mode']} / {c['variant']}: {c['target']}{value}: {verdict}")
    return lines


def parse_ns(text: str) -> list[int]:
    ns = [int(part) for part in text.split(",") if part.strip()]
    if not ns or any(n < 1 or n > 10_000 for n in ns):
        raise argparse.ArgumentTypeError("N is 1..10000 (step.do calls per instance are capped at 10,000)")
    return ns


def parse_list(allowed: Sequence[str]) -> Any:
    def parse(text: str) -> list[str]:
        items = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [item for item in items if item not in allowed]
        if not items or unknown:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}")
        return items

    return parse


def git_commit() -> str:
    done = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--n", type=parse_ns, help="turns per instance, comma-separated (default 100,800,2000)")
    parser.add_argument("--quick", action="store_true", help="N = 100 and 300 only")
    parser.add_argument("--variants", type=parse_list(VARIANTS), default=list(VARIANTS), help="sleep,event")
    parser.add_argument(
        "--modes",
        type=parse_list(tuple(MODE_FLAGS)),
        help="parked,evicted (default both; ignored when the server has no --park-memory-mb)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per instance (default 900)")
    parser.add_argument("--seed", type=int, default=12, help="seed of the event intervals (default 12)")
    parser.add_argument("--markdown", action="store_true", help="print the Markdown table on stdout too")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory (databases, server logs)")
    args = parser.parse_args()
    ns: list[int] = args.n or list(QUICK_NS if args.quick else FULL_NS)
    variants: list[str] = args.variants

    signal.signal(signal.SIGTERM, _on_sigterm)
    if has_park_flag():
        modes = [(mode, MODE_FLAGS[mode]) for mode in (args.modes or list(MODE_FLAGS))]
    else:
        if args.modes:
            log(f"this build's `tenantflow serve` has no {PARK_FLAG}: --modes ignored")
        modes = [(REPLAY_MODE, [])]
    log(f"modes {[m for m, _ in modes]}, variants {variants}, N {ns}, timeout {args.timeout:g} s per instance")

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report: dict[str, Any] = {
        "when": stamp,
        "commit": git_commit(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "load_before": os.getloadavg(),
        "config": {"ns": ns, "variants": variants, "timeout_s": args.timeout, "seed": args.seed, "poll_s": POLL_S},
        "modes": {},
        "runs": [],
        "targets": [],
    }
    runs: list[dict[str, Any]] = report["runs"]
    began = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="tf-agent-loop-")
    interrupted: str | None = None
    failure: str | None = None
    try:
        for index, (mode, flags) in enumerate(modes):
            name = f"mode{index}"
            info: dict[str, Any] = {"flags": flags}
            report["modes"][mode] = info
            with running_server(Path(tmp), name, flags) as server:
                info["server_command"] = " ".join(server.command()).replace(server.metrics_token, "<token>")
                setup = prepare(server, mode, variants, args.seed)
                info["idle_cpu_s_per_s"] = round(setup.idle_cpu_s_per_s, 5)
                info["status_get_cpu_s"] = round(setup.poll_cpu_s, 6)
                info["notes"] = setup.notes
                for variant in variants:
                    for n in ns:
                        log(f"{mode} / {variant} / N={n} ...")
                        record = measure(server, setup, mode, variant, n, args.seed + n, args.timeout, "run")
                        runs.append(record)
                        print(json.dumps(record), flush=True)
            info["server_log"] = log_findings(server.log_text())
            if info["server_log"]["notable_lines"] or info["server_log"]["access_log_429_5xx"]:
                log(f"{mode}: server log: {json.dumps(info['server_log'])[:2000]}")
    except (KeyboardInterrupt, Stopped) as stop:
        interrupted = type(stop).__name__
        log(f"interrupted ({interrupted}); the server was stopped")
    except Exception as error:  # report what was measured, then exit 1
        failure = "".join(traceback.format_exception(error))
        log(f"failed:\n{failure}")
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            subprocess.run(["rm", "-rf", tmp], check=False)

    checks: list[dict[str, Any]] = report["targets"]
    for mode, _ in modes:
        checks.extend(targets(runs, mode, variants))
    for check in checks:
        print(json.dumps(check), flush=True)
    table = markdown(runs)
    print("\n".join(["", "Summary:", *summary_lines(checks), "", table]), file=sys.stderr, flush=True)
    if args.markdown:
        print("\n" + table, flush=True)

    report["interrupted"] = interrupted
    report["failure"] = failure
    report["load_after"] = os.getloadavg()
    report["total_s"] = round(time.monotonic() - began, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"agent-loop-{stamp}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {out.relative_to(ROOT)} ({report['total_s']} s)")
    if interrupted:
        sys.exit(130)
    if failure:
        sys.exit(1)


if __name__ == "__main__":
    main()
