"""Hot resume on the real clock: waits go on in the parked isolate, controls reach it, eviction replays.

Each test reads what the instance itself recorded (activations, replayed journal positions, hot resumes)
and the pool's parking lot, so a park that silently fell back to replay fails it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pg
import pytest
import waiting
from tenantflow.host import Sandbox
from tenantflow.runtime.records import FINISHED, Instance, Quotas, Tenant
from tenantflow.runtime.service import Service
from tenantflow.runtime.store import open_store
from tenantflow.runtime.store.sqlite import SQLiteStore

LOOP = """
def run(event, step):
    total = 0
    for i in range(event.payload["turns"]):
        total += step.do(f"turn {i}", lambda: i * i)
        step.sleep(f"think {i}", 60 + i % 3 * 15)  # long enough that a stall under load does not make it due first
    return total
"""

# Every kind of wait: sleeps, retries' back-offs, an event that comes later, an event already buffered,
# a wait that times out, a failed step caught, sleep_until. (Deterministic, as workflow code must be: a step
# body that kept state between its attempts in workflow memory would see it kept when parked, not replayed.)
MIXED = """
import time
from tenantflow import NonRetryableError

def run(event, step):
    out = []

    def flaky():
        raise RuntimeError("not yet")

    try:
        step.do("flaky", flaky, retries={"limit": 2, "delay": 30, "backoff": "constant"})
    except Exception as error:
        out.append(str(error))
    step.sleep("nap", 25)
    first = step.wait_for_event("first", event_type="go", timeout="1 minute")
    out.append(first["payload"])
    second = step.wait_for_event("second", event_type="go", timeout="1 minute")
    out.append(second["payload"])
    try:
        step.wait_for_event("never", event_type="nope", timeout=60)
    except Exception as error:
        out.append(type(error).__name__)
    def bad():
        raise NonRetryableError("no")
    try:
        step.do("bad", bad)
    except Exception as error:
        out.append(str(error))
    step.sleep_until("later", time.time() + 0.03)
    out.append(step.do("last", lambda: len(out)))
    return out
"""

WAITER = """
def run(event, step):
    got = step.wait_for_event("approval", event_type="approved")
    return step.do("after", lambda: got["payload"])
"""


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    return waiting.wait_until(predicate, timeout, what, every=0.01)


def start(tmp_path: Path, sandbox: Sandbox, name: str = "tf.db", **options: Any) -> Service:
    store = SQLiteStore(str(tmp_path / name), synchronous="normal")
    return Service(store, sandbox, workers=2, **options).start()


@pytest.fixture
def live(tmp_path: Path, sandbox: Sandbox) -> Iterator[Service]:
    service = start(tmp_path, sandbox)
    yield service
    service.stop()
    service.store.close()


def finished(service: Service, tenant: Tenant, instance_id: str, timeout: float = 60) -> Instance:
    def done() -> Instance | None:
        instance = service.instance(tenant, "wf", instance_id)
        return instance if instance.status in FINISHED else None

    instance: Instance = wait_until(done, timeout, f"{instance_id} to finish")
    return instance


def parked(service: Service, tenant: Tenant, instance_id: str) -> bool:
    instance = service.instance(tenant, "wf", instance_id)
    return instance.status == "waiting" and instance.parked_in == service.pool.owner


def _timeless(result: Any) -> Any:
    """A step's result without the time an event was sent at."""
    if isinstance(result, dict) and "timestamp" in result:
        return {k: v for k, v in result.items() if k != "timestamp"}
    return result


def journal_shape(service: Service, tenant: Tenant, instance_id: str) -> list[tuple[Any, ...]]:
    """The journal without times: what replay and hot resume must agree on."""
    steps = service.journal(tenant, "wf", instance_id)["steps"]
    return [
        (
            s["position"],
            s["name"],
            s["kind"],
            s["state"],
            json.dumps(_timeless(s.get("result")), sort_keys=True),
            s.get("error"),
            s["attempts"],
            [(a["attempt"], a["ok"], a.get("error_name")) for a in s.get("attempt_log", [])],
        )
        for s in steps
    ]


def test_waits_go_on_in_the_parked_isolate(live: Service) -> None:
    tenant = live.create_tenant("acme")[0]
    live.deploy(tenant, "wf", LOOP)
    live.create_instances(tenant, "wf", [{"id": "a", "params": {"turns": 30}}])
    instance = finished(live, tenant, "a")
    assert instance.status == "complete", instance.error
    assert instance.output == sum(i * i for i in range(30))
    # One activation ran all 30 turns: every sleep ended in the same isolate, nothing was replayed.
    assert (instance.activations, instance.replayed_steps, instance.hot_resumes) == (1, 0, 30)
    metrics = live.metrics.render().decode()
    assert 'tenantflow_hot_resumes_total{tenant="acme"} 30.0' in metrics
    assert live.pool.lot.usage() == (0, 0)


TOOL_LOOP = """
def run(event, step):
    got = []
    for i in range(3):
        step.do(f"think {i}", lambda: i)
        got.append(step.wait_for_event(f"tool {i}", event_type="tool")["payload"])
    return got
"""


def test_an_event_waits_park_carries_the_steps_and_the_wait_in_one_commit(
    live: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn of an agent loop (a step, then an event wait that parks) makes one commit before it waits: the
    step's write and the wait's own entry go with the park's."""
    tenant = live.create_tenant("acme")[0]
    live.deploy(tenant, "wf", TOOL_LOOP)
    writes: list[str] = []
    real = live.store.write

    def write(fn: Any) -> Any:
        writes.append(getattr(fn, "__qualname__", repr(fn)))
        return real(fn)

    monkeypatch.setattr(live.store, "write", write)
    live.create_instances(tenant, "wf", [{"id": "loop"}])

    def parks() -> int:
        return sum(w.startswith("Activation.park") for w in writes)

    for turn in range(3):
        wait_until(lambda turn=turn: parks() == turn + 1 and parked(live, tenant, "loop"), 20, f"turn {turn}'s park")
        states = [(s["name"], s["state"]) for s in live.journal(tenant, "wf", "loop")["steps"]]
        assert states[-2:] == [(f"think {turn}", "done"), (f"tool {turn}", "waiting")], states
        live.send_event(tenant, "wf", "loop", "tool", turn)
    instance = finished(live, tenant, "loop")
    assert instance.output == [0, 1, 2] and (instance.activations, instance.hot_resumes) == (1, 3)
    # A turn: the unpark, then the park carrying the event consumed, the step and the next wait; the last event,
    # consumed, goes with the end.
    assert [w.split(".<locals>")[0] for w in writes] == [
        "Activation.park",
        "Activation.unpark",
        "Activation.park",
        "Activation.unpark",
        "Activation.park",
        "Activation.unpark",
        "Activation.finish_and_claim",
    ], writes


def test_hot_resume_off_replays_the_same_run(tmp_path: Path, sandbox: Sandbox) -> None:
    service = start(tmp_path, sandbox, park_memory_mb=0)
    try:
        tenant = service.create_tenant("acme")[0]
        service.deploy(tenant, "wf", LOOP)
        service.create_instances(tenant, "wf", [{"id": "a", "params": {"turns": 10}}])
        instance = finished(service, tenant, "a")
        assert instance.output == sum(i * i for i in range(10))
        # Woken 10 times, each wake a fresh activation replaying the journal so far (2 positions a turn).
        assert instance.hot_resumes == 0
        assert instance.activations == 11
        assert instance.replayed_steps == sum(2 * k for k in range(1, 11))
    finally:
        service.stop()
        service.store.close()


def _run_mixed(service: Service, tenant: Tenant, instance_id: str) -> Instance:
    service.create_instances(tenant, "wf", [{"id": instance_id}])
    # One event before the instance waits for it (buffered), one after (it must be woken).
    service.send_event(tenant, "wf", instance_id, "go", {"n": 1})
    wait_until(
        lambda: (
            service.instance(tenant, "wf", instance_id).status == "waiting"
            and len(service.journal(tenant, "wf", instance_id)["steps"]) >= 4
        ),
        30,
        "the second wait",
    )
    service.send_event(tenant, "wf", instance_id, "go", {"n": 2})
    return finished(service, tenant, instance_id)


def test_replay_and_hot_resume_give_identical_journals_and_outputs(tmp_path: Path, sandbox: Sandbox) -> None:
    results = {}
    for mode, options in (("parked", {}), ("evicted", {"park_memory_mb": 0})):
        service = start(tmp_path, sandbox, f"{mode}.db", **options)
        try:
            tenant = service.create_tenant("acme")[0]
            service.deploy(tenant, "wf", MIXED)
            mixed = _run_mixed(service, tenant, "m")
            service.deploy(tenant, "wf", LOOP)
            service.create_instances(tenant, "wf", [{"id": "l", "params": {"turns": 12}}])
            loop = finished(service, tenant, "l")
            results[mode] = {
                "outputs": (mixed.status, mixed.output, loop.status, loop.output),
                "journals": (journal_shape(service, tenant, "m"), journal_shape(service, tenant, "l")),
                "counts": (mixed.activations, mixed.replayed_steps, mixed.hot_resumes, loop.activations),
            }
        finally:
            service.stop()
            service.store.close()
    parked, evicted = results["parked"], results["evicted"]
    assert parked["outputs"][0] == "complete", parked
    assert parked["outputs"][1] == ["RuntimeError: not yet", {"n": 1}, {"n": 2}, "WaitTimeoutError", "no", 5]
    assert parked["outputs"] == evicted["outputs"]
    assert parked["journals"] == evicted["journals"]
    # The two runs did differ in how: one activation each when parked, replays when evicted.
    assert parked["counts"][0] == 1 and parked["counts"][1] == 0 and parked["counts"][2] >= 5
    assert parked["counts"][3] == 1
    assert evicted["counts"][0] > 3 and evicted["counts"][1] > 0 and evicted["counts"][2] == 0


def test_pause_resume_terminate_restart_reach_a_parked_isolate(live: Service) -> None:
    tenant = live.create_tenant("acme")[0]
    live.deploy(tenant, "wf", WAITER)
    live.create_instances(tenant, "wf", [{"id": f"w{n}"} for n in range(3)])
    for n in range(3):
        wait_until(lambda n=n: parked(live, tenant, f"w{n}"), 20, f"w{n} to park")
    assert live.pool.lot.usage()[0] == 3
    assert live.pool.busy == 0  # parked isolates hold no activation slot

    live.control(tenant, "wf", "w0", "pause")
    wait_until(lambda: live.instance(tenant, "wf", "w0").parked_in is None, 5, "the pause to evict w0")
    assert live.instance(tenant, "wf", "w0").status == "paused"
    live.control(tenant, "wf", "w0", "resume")
    wait_until(lambda: parked(live, tenant, "w0"), 20, "w0 to park again after resume")
    live.send_event(tenant, "wf", "w0", "approved", "yes")
    assert finished(live, tenant, "w0").output == "yes"

    started = time.monotonic()
    live.control(tenant, "wf", "w1", "terminate")
    wait_until(lambda: live.pool.lot.usage()[0] == 1, 5, "the terminated isolate to go")
    assert time.monotonic() - started < 1.0
    assert live.instance(tenant, "wf", "w1").status == "terminated"

    live.control(tenant, "wf", "w2", "restart")
    wait_until(lambda: parked(live, tenant, "w2"), 20, "the restarted w2 to park")
    live.send_event(tenant, "wf", "w2", "approved", "again")
    restarted = finished(live, tenant, "w2")
    assert restarted.output == "again"
    assert live.pool.lot.usage() == (0, 0)


def test_the_least_recently_parked_is_evicted_and_replays(tmp_path: Path, sandbox: Sandbox) -> None:
    # Room for one isolate of 64 MiB: the second park evicts the first.
    service = start(tmp_path, sandbox, park_memory_mb=64)
    try:
        tenant = service.create_tenant("acme", Quotas(memory_mb=64))[0]
        service.deploy(tenant, "wf", WAITER)
        service.create_instances(tenant, "wf", [{"id": "old"}])
        wait_until(lambda: parked(service, tenant, "old"), 20, "old to park")
        service.create_instances(tenant, "wf", [{"id": "new"}])
        wait_until(lambda: parked(service, tenant, "new"), 20, "new to park")
        wait_until(lambda: service.instance(tenant, "wf", "old").parked_in is None, 5, "old to be evicted")
        assert service.instance(tenant, "wf", "old").status == "waiting"
        for instance_id in ("old", "new"):
            service.send_event(tenant, "wf", instance_id, "approved", instance_id)
        old, new = finished(service, tenant, "old"), finished(service, tenant, "new")
        assert (old.output, new.output) == ("old", "new")
        assert old.activations == 2 and old.replayed_steps == 1  # the wait, replayed
        assert new.activations == 1 and new.hot_resumes == 1
        assert 'tenantflow_evictions_total{reason="memory budget",tenant="acme"} 1.0' in (
            service.metrics.render().decode()
        )
    finally:
        service.stop()
        service.store.close()


def test_a_park_longer_than_max_park_s_is_evicted(tmp_path: Path, sandbox: Sandbox) -> None:
    service = start(tmp_path, sandbox, max_park_s=0.3)
    try:
        tenant = service.create_tenant("acme")[0]
        service.deploy(tenant, "wf", WAITER)
        service.create_instances(tenant, "wf", [{"id": "a"}])
        wait_until(lambda: parked(service, tenant, "a"), 20, "a to park")
        wait_until(lambda: service.instance(tenant, "wf", "a").parked_in is None, 5, "a to be evicted")
        service.send_event(tenant, "wf", "a", "approved", 1)
        assert finished(service, tenant, "a").output == 1
    finally:
        service.stop()
        service.store.close()


def test_a_timer_over_100_ms_parks_waiting_and_one_under_stays_running(live: Service) -> None:
    tenant = live.create_tenant("acme")[0]
    source = """
def run(event, step):
    step.sleep("long nap", "600 milliseconds")
    step.do("between", lambda: 1)
    step.sleep("short nap", "90 milliseconds")
    return "done"
"""
    live.deploy(tenant, "wf", source)
    live.create_instances(tenant, "wf", [{"id": "a"}])
    # Over SHORT_TIMER_S the store says waiting (parked); under it the instance stays running.
    wait_until(lambda: parked(live, tenant, "a"), 20, "a to park at the long nap")
    wait_until(
        lambda: live.pool.lot.usage()[0] == 1 and live.instance(tenant, "wf", "a").status == "running",
        5,
        "the short nap",
    )
    done = finished(live, tenant, "a")
    assert (done.output, done.activations, done.replayed_steps, done.hot_resumes) == ("done", 1, 0, 2)


def test_a_long_sleep_is_not_parked(live: Service) -> None:
    tenant = live.create_tenant("acme")[0]
    live.deploy(tenant, "wf", 'def run(event, step):\n    step.sleep("long", "1 hour")\n')
    live.create_instances(tenant, "wf", [{"id": "a"}])
    wait_until(lambda: live.instance(tenant, "wf", "a").status == "waiting", 20, "a to wait")
    assert live.instance(tenant, "wf", "a").parked_in is None
    assert live.pool.lot.usage() == (0, 0)


WORKER = """
import sys, time
from tenantflow.runtime.service import Service
service = Service.open(sys.argv[1], workers=2, lease_s=float(sys.argv[2])).start()
print("ready", service.pool.owner, flush=True)
while True:
    time.sleep(1)
"""


def _worker(url: str, lease_s: float) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen([sys.executable, "-c", WORKER, url, str(lease_s)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    word, owner = process.stdout.readline().split()
    assert word == "ready"
    return process, owner


def test_a_worker_killed_with_parked_isolates_loses_nothing(tmp_path: Path, sandbox: Sandbox) -> None:
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    service = Service.open(url, sandbox=sandbox, workers=2)  # not started: the API side only
    try:
        tenant = service.create_tenant("acme")[0]
        service.deploy(tenant, "wf", WAITER)
        service.create_instances(tenant, "wf", [{"id": f"k{n}"} for n in range(3)])
        worker, owner = _worker(url, 60.0)
        try:
            for n in range(3):
                wait_until(lambda n=n: service.instance(tenant, "wf", f"k{n}").parked_in == owner, 30, f"k{n} to park")
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait()
            for n in range(3):
                service.send_event(tenant, "wf", f"k{n}", "approved", n)
            # A new worker on this host sees the dead owner's leases at start-up and replays the instances.
            worker, _ = _worker(url, 60.0)
            for n in range(3):
                instance = finished(service, tenant, f"k{n}")
                assert (instance.status, instance.output) == ("complete", n)
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
    finally:
        service.store.close()  # not service.close(): the sandbox is the session's


def test_an_event_through_another_process_wakes_the_parked_isolate(pg_server: str, sandbox: Sandbox) -> None:
    url = pg.fresh_schema(pg_server)
    api = Service(open_store(url), sandbox)  # not started: sends events, runs nothing
    store = open_store(url)
    workers = Service(store, sandbox, workers=2).start()
    try:
        tenant = api.create_tenant("acme")[0]
        api.deploy(tenant, "wf", WAITER)
        api.create_instances(tenant, "wf", [{"id": "a"}])
        wait_until(lambda: api.instance(tenant, "wf", "a").parked_in == workers.pool.owner, 30, "a to park")
        api.send_event(tenant, "wf", "a", "approved", "from afar")
        instance = finished(api, tenant, "a")
        assert instance.output == "from afar"
        assert (instance.activations, instance.replayed_steps, instance.hot_resumes) == (1, 0, 1)
    finally:
        workers.stop()
        store.close()
        api.store.close()
