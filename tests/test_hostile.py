"""Hostile tenants against a real server: one class of attack per test.

Tenant A (the attacker) runs hostile workflow code; tenant B (the victim) runs a one-step
instance. Each test measures what the attack costs others: B's start-to-complete latency
(it must stay within about one activation of its baseline), the server's RSS and CPU, and
whether the workers are freed. The server runs with two workers, so two hostile activations
are enough to hold every worker if anything lets them.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from helpers_server import ServerProcess, Servers, servers
from tenantflow.runtime.records import MAX_BUFFERED_EVENT_BYTES

ECHO = """
def run(event, step):
    return step.do("echo", lambda: {"echo": event.payload})
"""

# The real `time` module, rebuilt from the builtin importer: its sleep reaches WASI's clocks and poll.
REAL_SLEEP = """
import _imp

def run(event, step):
    spec = type("Spec", (), {"name": "time", "origin": "built-in"})()
    _imp.create_builtin(spec).sleep(90)
    return "slept"
"""

# Spins for `ms` of wall time outside any step (the tenant's fuel quota decides when it stops).
SPIN = """
import time

def run(event, step):
    ms = event.payload["ms"]
    start = time.time()
    while time.time() - start < ms / 1000:
        pass
    return step.do("after", lambda: ms)
"""

# Hands the host ~60 MiB of small JSON objects through the capability import.
FLOOD_CALL = """
from wit_world.imports import host

def run(event, step):
    request = "[" + "{}," * 20_000_000 + "{}]"
    host.call("fetch", request)
    return "done"
"""

# Builds 8 MiB of JSON once, then makes the host parse it again and again.
HOST_CPU = """
from wit_world.imports import host

def run(event, step):
    request = '{"url": "http://example.invalid/", "body": "' + "x" * (8 << 20) + '"}'
    for _ in range(100_000):
        try:
            host.call("fetch", request)
        except Exception:
            pass
    return "done"
"""

HUGE_TIMEOUT = """
def run(event, step):
    return step.do("huge", lambda: 1, timeout=10**400)
"""

# Commits a step result that is not JSON by calling the host binding directly.
RAW_RESULT = """
from wit_world.imports import host
from wit_world.imports.host import Attempt_Ok

def run(event, step):
    host.step_begin("raw", "{}")
    host.step_complete("raw", 1, Attempt_Ok("this is not json {"))
    return "done"
"""

LONG_NAMES = """
def run(event, step):
    for i in range(10):
        step.do(str(i) * (20 << 20), lambda: 1)
    raise ValueError("m" * (20 << 20))
"""

# A failed attempt whose error message is 16 MiB, handed over through the binding (the SDK would clip it).
BIG_ERROR = """
import tenantflow
from wit_world.imports import host

def run(event, step):
    host.step_begin("big", '{"limit": 0}')
    plan = host.step_complete("big", 1, host.Attempt_Fatal(host.Failure("E", "e" * (16 << 20))))
    raise tenantflow.StepError(plan.value.name, plan.value.message)
"""

WAITER = """
def run(event, step):
    return step.wait_for_event("go", event_type="go", timeout="1 hour")
"""

RETRY_STORM = """
def run(event, step):
    def fail():
        raise ValueError("again")
    return step.do("storm", fail, retries={"limit": 10**9, "delay": 1, "backoff": "constant"})
"""

FINISHED = {"complete", "errored", "terminated"}


def rss_peak(server: ServerProcess) -> int:
    assert server.proc is not None
    with open(f"/proc/{server.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def cpu_seconds(server: ServerProcess) -> float:
    assert server.proc is not None
    with open(f"/proc/{server.proc.pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Tenant:
    def __init__(self, server: ServerProcess, name: str, *options: str) -> None:
        self.key = server.create_tenant(name, *options)["api_key"]
        self.http = server.http(self.key)

    def deploy(self, name: str, source: str) -> None:
        answer = self.http.put(f"/v1/workflows/{name}", json={"source": source})
        assert answer.status_code in (200, 201), answer.text

    def start(self, workflow: str, params: Any = None) -> str:
        answer = self.http.post(f"/v1/workflows/{workflow}/instances", json={"params": params})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    def status(self, workflow: str, instance_id: str) -> dict[str, Any]:
        answer = self.http.get(f"/v1/workflows/{workflow}/instances/{instance_id}")
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    def wait(self, workflow: str, instance_id: str, timeout: float, until: set[str] = FINISHED) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(workflow, instance_id)
            if status["status"] in until:
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"{workflow}/{instance_id} still {status['status']} after {timeout} s")
            time.sleep(0.02)

    def run_echo(self, timeout: float) -> float:
        """Seconds from creating a one-step instance to seeing it complete."""
        started = time.monotonic()
        done = self.wait("echo", self.start("echo", {"n": 1}), timeout)
        assert done["status"] == "complete", done
        return time.monotonic() - started


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with servers(tmp_path_factory.mktemp("hostile")) as started:
        yield started


@pytest.fixture(scope="module")
def server(group: Servers) -> ServerProcess:
    return group.start("hostile", workers=2)


@pytest.fixture(scope="module")
def victim(server: ServerProcess) -> Tenant:
    tenant = Tenant(server, "victim")
    tenant.deploy("echo", ECHO)
    tenant.run_echo(30)  # warm up
    return tenant


@pytest.fixture(scope="module")
def baseline(victim: Tenant) -> float:
    return min(victim.run_echo(30) for _ in range(3))


@pytest.fixture(scope="module")
def attacker(server: ServerProcess) -> Tenant:
    return Tenant(server, "attacker", "--memory-mb", "128")


# The default fuel budget (2e10) is about 2 s of guest CPU here; an activation is "about one" of that.
ONE_ACTIVATION_S = 4.0


def test_a_wasi_sleep_holds_no_worker(attacker: Tenant, victim: Tenant, baseline: float) -> None:
    attacker.deploy("sleeper", REAL_SLEEP)
    sleepers = [attacker.start("sleeper") for _ in range(4)]
    time.sleep(0.3)  # let the sleepers take both workers
    latency = victim.run_echo(baseline + ONE_ACTIVATION_S + 2)
    assert latency < baseline + ONE_ACTIVATION_S
    started = time.monotonic()
    for instance in sleepers:
        done = attacker.wait("sleeper", instance, 2 * ONE_ACTIVATION_S + 4)
        assert done["status"] == "errored"
        assert done["error"]["name"] in {"FuelExhausted", "DeadlineExceeded"}, done["error"]
    assert time.monotonic() - started < 2 * ONE_ACTIVATION_S + 4


def test_b_terminate_frees_the_worker(server: ServerProcess, victim: Tenant, baseline: float) -> None:
    # A tenant with a large fuel budget legitimately spins for 50 s on both workers.
    rich = Tenant(server, "rich", "--fuel", str(10**13))
    rich.deploy("spin", SPIN)
    spinners = [rich.start("spin", {"ms": 50_000}) for _ in range(2)]
    for instance in spinners:
        rich.wait("spin", instance, 10, until={"running"})
    time.sleep(0.2)
    started = time.monotonic()
    for instance in spinners:
        answer = rich.http.post(f"/v1/workflows/spin/instances/{instance}/terminate")
        assert answer.status_code == 200, answer.text
    latency = victim.run_echo(baseline + 5)
    assert time.monotonic() - started < baseline + 2.0, latency
    for instance in spinners:
        assert rich.status("spin", instance)["status"] == "terminated"


def test_c_a_backlog_does_not_starve_another_tenant(server: ServerProcess, victim: Tenant, baseline: float) -> None:
    busy = Tenant(server, "backlog")
    busy.deploy("spin", SPIN)
    backlog = [busy.start("spin", {"ms": 700}) for _ in range(30)]  # 15 activations or more on each worker
    time.sleep(0.3)
    latency = victim.run_echo(baseline + 60)
    # "About one activation": the first two of the backlog took the workers at once; the victim waits at most for
    # one of them to end. How long one lasts depends on the machine: 700 ms of the guest's clock, or until the
    # spin's fuel runs out (its host calls are charged to it), which took ~3.5 s on a slow machine.
    first = busy.wait("spin", backlog[0], 60)
    one = first["updated_at"] - first["created_at"]
    assert latency < baseline + one + 1.5, (latency, one)
    for instance in backlog:
        busy.http.post(f"/v1/workflows/spin/instances/{instance}/terminate")


def test_d_host_memory_is_bounded(server: ServerProcess, attacker: Tenant, victim: Tenant, baseline: float) -> None:
    before = rss_peak(server)
    attacker.deploy("flood", FLOOD_CALL)
    floods = [attacker.start("flood") for _ in range(4)]
    for instance in floods:
        done = attacker.wait("flood", instance, 60)
        assert done["status"] == "errored", done
    growth = rss_peak(server) - before
    # Two workers, each at most its 128 MiB isolate plus a bounded host-side copy of what it hands over.
    assert growth < 2 * 3 * (128 << 20), f"server peak RSS grew {growth >> 20} MiB"
    assert victim.run_echo(baseline + ONE_ACTIVATION_S) < baseline + ONE_ACTIVATION_S


def test_e_host_cpu_is_charged_to_the_activation(server: ServerProcess, attacker: Tenant) -> None:
    attacker.deploy("hostcpu", HOST_CPU)
    cpu_before = cpu_seconds(server)
    done = attacker.wait("hostcpu", attacker.start("hostcpu"), 60)
    used = cpu_seconds(server) - cpu_before
    assert done["status"] == "errored", done
    assert done["error"]["name"] in {"FuelExhausted", "InvalidHostCall"}, done["error"]
    assert used < 10, f"one activation used {used:.1f} s of server CPU"


def test_f_guest_input_that_breaks_a_host_function_is_a_named_error(attacker: Tenant) -> None:
    attacker.deploy("huge", HUGE_TIMEOUT)
    done = attacker.wait("huge", attacker.start("huge"), 15)
    assert done["status"] == "errored", done
    assert done["error"]["name"] == "InvalidHostCall", done["error"]


def test_g_results_that_are_not_json_are_refused(server: ServerProcess, attacker: Tenant) -> None:
    attacker.deploy("raw", RAW_RESULT)
    instance = attacker.start("raw")
    done = attacker.wait("raw", instance, 15)
    assert done["status"] == "errored", done
    assert done["error"]["name"] == "InvalidHostCall", done["error"]
    for path in (
        "/v1/workflows/raw/instances",
        f"/v1/workflows/raw/instances/{instance}",
        f"/v1/workflows/raw/instances/{instance}/journal",
    ):
        answer = attacker.http.get(path)
        assert answer.status_code == 200, (path, answer.text)
        json.loads(answer.text)


def test_h_stored_strings_are_capped(server: ServerProcess, attacker: Tenant) -> None:
    size = server.db_path.stat().st_size
    attacker.deploy("names", LONG_NAMES)
    done = attacker.wait("names", attacker.start("names"), 30)
    assert done["status"] == "errored", done
    assert len(json.dumps(done["error"])) < 100_000
    wal = server.db_path.with_name(server.db_path.name + "-wal")
    grown = server.db_path.stat().st_size - size + (wal.stat().st_size if wal.exists() else 0)
    assert grown < 20 << 20, f"the database grew {grown >> 20} MiB"


def test_i_lists_of_big_errors_stay_small(server: ServerProcess, attacker: Tenant, victim: Tenant) -> None:
    attacker.deploy("bigerror", BIG_ERROR)
    errored = [attacker.start("bigerror") for _ in range(4)]
    for instance in errored:
        assert attacker.wait("bigerror", instance, 60)["status"] == "errored"
    reads: list[tuple[float, int, int]] = []

    def read_lists() -> None:
        for _ in range(5):
            started = time.monotonic()
            answer = attacker.http.get("/v1/workflows/bigerror/instances")
            reads.append((time.monotonic() - started, answer.status_code, len(answer.content)))

    reader = threading.Thread(target=read_lists)
    reader.start()
    started = time.monotonic()
    answer = victim.http.get("/v1/workflows")
    assert answer.status_code == 200
    assert time.monotonic() - started < 1.0
    reader.join(60)
    assert [status for _, status, _ in reads] == [200] * 5
    assert max(size for _, _, size in reads) < 1 << 20, reads
    assert max(seconds for seconds, _, _ in reads) < 2.0, reads


def test_j_events_are_bounded_and_the_journal_is_paged(attacker: Tenant) -> None:
    attacker.deploy("waiter", WAITER)
    instance = attacker.start("waiter")
    attacker.wait("waiter", instance, 15, until={"waiting"})
    payload = "p" * ((1 << 20) - 100)
    statuses = []
    for _ in range(12):
        answer = attacker.http.post(
            f"/v1/workflows/waiter/instances/{instance}/events", json={"type": "other", "payload": payload}
        )
        statuses.append(answer.status_code)
        if answer.status_code == 429:
            assert answer.headers["content-type"].startswith("application/problem+json")
            break
    assert statuses[-1] == 429, statuses
    assert statuses.count(202) <= 8, statuses
    bad_type = attacker.http.post(
        f"/v1/workflows/waiter/instances/{instance}/events", json={"type": "a/b c" + "x" * 100, "payload": 1}
    )
    assert bad_type.status_code == 422, bad_type.text
    page = attacker.http.get(f"/v1/workflows/waiter/instances/{instance}/journal", params={"limit": 1})
    assert page.status_code == 200, page.text
    # One step, and the buffered events: at most their cap, however many were sent.
    assert len(page.content) < MAX_BUFFERED_EVENT_BYTES + (64 << 10)


def test_k_retries_are_capped(attacker: Tenant) -> None:
    attacker.deploy("storm", RETRY_STORM)
    instance = attacker.start("storm")
    done = attacker.wait("storm", instance, 30)
    assert done["status"] == "errored", done
    journal = attacker.http.get(f"/v1/workflows/storm/instances/{instance}/journal").json()
    attempts = sum(len(step["attempt_log"]) for step in journal["steps"])
    assert attempts <= 101, attempts


def test_l_metrics_need_a_key(server: ServerProcess, victim: Tenant) -> None:
    assert httpx.get(server.url + "/metrics").status_code == 401
    assert victim.http.get("/metrics").status_code in (401, 403)


def test_m_sigterm_does_not_wait_for_a_spinning_guest(group: Servers) -> None:
    server = group.start("sigterm", workers=2)
    rich = Tenant(server, "rich", "--fuel", str(10**13))
    rich.deploy("spin", SPIN)
    spinners = [rich.start("spin", {"ms": 50_000}) for _ in range(2)]
    for instance in spinners:
        rich.wait("spin", instance, 10, until={"running"})
    started = time.monotonic()
    assert server.terminate(timeout=10) == 0
    assert time.monotonic() - started < 5
    again = group.start("sigterm", workers=2)
    rich.http = again.http(rich.http.headers["Authorization"].removeprefix("Bearer "))
    for instance in spinners:
        status = rich.status("spin", instance)
        assert status["status"] in {"waiting", "queued", "running"}, status
        assert status["error"] is None
        rich.http.post(f"/v1/workflows/spin/instances/{instance}/terminate")
