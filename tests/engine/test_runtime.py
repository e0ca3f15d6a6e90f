"""The durable runtime on a real SQLite file with the real guest: replay, retries, sleeps, events, controls."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from pg import fresh_schema
from tenantflow.host import ISOLATE_SLOTS, Sandbox
from tenantflow.runtime.engine.clock import ManualClock
from tenantflow.runtime.engine.worker import max_workers
from tenantflow.runtime.errors import InvalidInput, InvalidState, QuotaExceeded
from tenantflow.runtime.records import Instance, Quotas, Tenant
from tenantflow.runtime.service import Service
from tenantflow.runtime.service.local import drive
from tenantflow.runtime.store import open_store
from tenantflow.runtime.store.sqlite import SQLiteStore


def start(service: Service, tenant: Tenant, source: str, params: Any = None, name: str = "wf") -> Instance:
    service.deploy(tenant, name, source)
    return service.create_instances(tenant, name, [{"params": params}])[0]


def run_once(service: Service, clock: ManualClock) -> bool:
    """One activation of whatever is runnable now; whether there was one."""
    claims = service.store.claim("test", 1, clock.now(), 60.0, {})
    for claim in claims:
        service.executor.activate(claim)
    return bool(claims)


def finish(service: Service, clock: ManualClock, instance: Instance) -> Instance:
    drive(service, clock, instance.key)
    return service.store.instance(instance.key)


RANDOM_STEPS = """
import random
def run(event, step):
    a = step.do("a", lambda: random.random())
    step.sleep("nap", "1 hour")
    b = step.do("b", lambda: random.random())
    return [a, b]
"""


def test_replay_returns_journaled_results(service: Service, tenant: Tenant, clock: ManualClock) -> None:
    instance = start(service, tenant, RANDOM_STEPS)
    assert run_once(service, clock)
    waiting = service.store.instance(instance.key)
    assert waiting.status == "waiting"
    assert waiting.wake_at == pytest.approx(clock.now() + 3600, abs=0.01)
    first = service.journal(tenant, "wf", instance.instance_id)["steps"][0]["result"]
    done = finish(service, clock, instance)
    assert done.status == "complete"
    assert done.output[0] == first
    steps = service.journal(tenant, "wf", instance.instance_id)["steps"]
    assert [s["result"] for s in steps if s["kind"] == "do"] == done.output
    assert all(s["attempts"] == 1 for s in steps if s["kind"] == "do")


def test_steps_in_a_loop_are_keyed_by_occurrence(service: Service, tenant: Tenant, clock: ManualClock) -> None:
    source = """
def run(event, step):
    out = []
    for i in range(3):
        out.append(step.do("item", lambda: i * 10))
        step.sleep("tick", 1000)
    return out
"""
    instance = start(service, tenant, source)
    done = finish(service, clock, instance)
    assert done.output == [0, 10, 20]
    names = [(s["name"], s["kind"]) for s in service.journal(tenant, "wf", instance.instance_id)["steps"]]
    assert names == [("item", "do"), ("tick", "sleep")] * 3


@pytest.mark.parametrize(
    ("backoff", "gaps"),
    [("constant", [10, 10, 10]), ("linear", [10, 20, 30]), ("exponential", [10, 20, 40])],
)
def test_retry_backoff_timing(
    service: Service, tenant: Tenant, clock: ManualClock, backoff: str, gaps: list[int]
) -> None:
    source = f"""
def run(event, step):
    try:
        step.do("flaky", lambda: 1 / 0, retries={{"limit": 3, "delay": "10 seconds", "backoff": "{backoff}"}})
    except Exception as error:
        return str(error)
"""
    instance = start(service, tenant, source)
    t0 = clock.now()
    expected = t0
    for gap in gaps:
        assert run_once(service, clock)
        current = service.store.instance(instance.key)
        expected += gap
        assert current.status == "waiting"
        assert current.wake_at == pytest.approx(expected, abs=0.01)
        clock.advance(gap - 0.5)
        assert not run_once(service, clock), "the retry ran before its back-off was over"
        clock.advance(0.5)
    assert run_once(service, clock)
    done = service.store.instance(instance.key)
    assert done.status == "complete"
    assert done.output == "ZeroDivisionError: division by zero"
    journal = service.journal(tenant, "wf", instance.instance_id)["steps"][0]
    assert journal["state"] == "failed"
    assert [a["attempt"] for a in journal["attempt_log"]] == [1, 2, 3, 4]
    finished = [a["finished_at"] - t0 for a in journal["attempt_log"]]
    assert finished == pytest.approx([0, gaps[0], gaps[0] + gaps[1], sum(gaps)], abs=0.01)


def test_default_retries(service: Service, tenant: Tenant, clock: ManualClock) -> None:
    flaky = """
def run(event, step):
    def body():
        raise ValueError("nope")
    return step.do("s", body)
"""
    instance = start(service, tenant, flaky, name="flaky")
    assert run_once(service, clock)
    assert service.store.instance(instance.key).wake_at == pytest.approx(clock.now() + 10, abs=0.01)
    done = finish(service, clock, instance)
    assert done.status == "errored"
    assert done.error is not None and done.error["name"] == "ValueError"
    attempts = service.journal(tenant, "flaky", instance.instance_id)["steps"][0]["attempt_log"]
    assert len(attempts) == 6  # Cloudflare's default: limit 5 retries after the first attempt


def test_non_retryable_error_fails_at_once_and_can_be_caught(
    service: Service, tenant: Tenant, clock: ManualClock
) -> None:
    source = """
from tenantflow import NonRetryableError
def run(event, step):
    def body():
        raise NonRetryableError("card declined")
    try:
        step.do("charge", body)
    except NonRetryableError as error:
        caught = str(error)
    step.do("uncaught", body)
    return caught
"""
    instance = start(service, tenant, source)
    assert run_once(service, clock)
    done = service.store.instance(instance.key)
    assert done.status == "errored"
    assert done.error is not None
    assert done.error["name"] == "NonRetryableError"
    assert "card declined" in done.error["message"]
    steps = service.journal(tenant, "wf", instance.instance_id)["steps"]
    assert [s["attempts"] for s in steps] == [1, 1]


def test_results_must_be_json_and_bounded(service: Service, tenant: Tenant, clock: ManualClock) -> None:
    source = """
def run(event, step):
    errors = []
    for name, fn in [("set", lambda: {1, 2}), ("big", lambda: "x" * (2 << 20))]:
        try:
            step.do(name, fn)
        except Exception as error:
            errors.append(type(error).__name__ + ": " + getattr(error, "name", ""))
    return errors
"""
    instance = start(service, tenant, source)
    done = finish(service, clock, instance)
    assert done.output == ["StepError: ResultNotSerializable", "StepError: OutputLimitExceeded"]


EVENTS = """
def run(event, step):
    first = step.wait_for_event("first", event_type="go", timeout="1 hour")
    second = step.wait_for_event("second", event_type="go", timeout="1 hour")
    return [first["payload"], second["payload"]]
"""


def test_events_buffered_before_the_wait_match_in_order(service: Service, tenant: Tenant, clock: ManualClock) -> None:
    instance = start(service, tenant, EVENTS)
    service.send_event(tenant, "wf", instance.instance_id, "other", {"n": 0})
    service.send_event(tenant, "wf", instance.instance_id, "go", {"n": 1})
    service.send_event(tenant, "wf", instance.instance_id, "go", {"n": 2})
    assert run_once(service, clock)
    assert service.store.instance(instance.key).output == [{"n": 1}, {"n": 2}]


def test_event_after_the_wait_wakes_the_instance(service: Service, tenant: Tenant, clock: ManualClock) -> None:
    instance = start(service, tenant, EVENTS)
    assert run_once(service, clock)
    waiting = service.store.instance(instance.key)
    assert waiting.status == "waiting"
    assert not run_once(service, clock)
    service.send_event(tenant, "wf", instance.instance_id, "go", "a")
    assert run_once(service, clock)
    service.send_event(tenant, "wf", instance.instance_id, "go", "b")
    assert run_once(service, clock)
    assert service.store.instance(instance.key).output == ["a", "b"]


def test_event_timeout_is_catchable(service: Service, tenant: Tenant, clock: ManualClock) -> None:
    source = """
from tenantflow import WaitTimeoutError
def run(event, step):
    try:
        step.wait_for_event("approval", event_type="approved", timeout="10 minutes")
    except WaitTimeoutError:
        return "timed out"
    return "approved"
"""
    instance = start(service, tenant, source)
    assert run_once(service, clock)
    clock.advance(599)
    assert not run_once(service, clock)
    clock.advance(2)
    assert run_once(service, clock)
    assert service.store.instance(instance.key).output == "timed out"
    # a late event does not change a finished wait
    with pytest.raises(InvalidState):
        service.send_event(tenant, "wf", instance.instance_id, "approved", None)


def test_pause_resume_terminate_restart(service: Service, tenant: Tenant, clock: ManualClock) -> None:
    instance = start(service, tenant, RANDOM_STEPS)
    assert run_once(service, clock)
    paused = service.control(tenant, "wf", instance.instance_id, "pause")
    assert paused.status == "paused"
    with pytest.raises(InvalidState):
        service.control(tenant, "wf", instance.instance_id, "pause")
    clock.advance(7200)
    assert not run_once(service, clock), "a paused instance ran"
    assert service.control(tenant, "wf", instance.instance_id, "resume").status == "queued"
    with pytest.raises(InvalidState):
        service.control(tenant, "wf", instance.instance_id, "resume")
    done = finish(service, clock, instance)
    assert done.status == "complete"
    with pytest.raises(InvalidState):
        service.control(tenant, "wf", instance.instance_id, "terminate")

    restarted = service.control(tenant, "wf", instance.instance_id, "restart")
    assert restarted.status == "queued" and restarted.output is None
    assert service.journal(tenant, "wf", instance.instance_id)["steps"] == []
    again = finish(service, clock, instance)
    assert again.status == "complete"
    assert again.output != done.output  # ran from scratch: fresh random values

    other = start(service, tenant, RANDOM_STEPS, name="other")
    assert run_once(service, clock)
    assert service.control(tenant, "other", other.instance_id, "terminate").status == "terminated"
    clock.advance(7200)
    assert not run_once(service, clock)
    with pytest.raises(InvalidState):
        service.control(tenant, "other", other.instance_id, "resume")


def test_pause_while_running_takes_effect_at_the_next_commit(
    service: Service, tenant: Tenant, clock: ManualClock
) -> None:
    """The steps before the commit that finds the pause are journaled; what came after them (a sleep, here) is
    not, and runs once resumed."""
    source = """
def run(event, step):
    done = [step.do(f"s{i}", lambda: i) for i in range(3)]
    step.sleep("nap", "1 second")
    return done + [step.do("after", lambda: 3)]
"""
    instance = start(service, tenant, source)
    claim = service.store.claim("test", 1, clock.now(), 60.0, {})[0]
    service.control(tenant, "wf", instance.instance_id, "pause")
    assert service.store.instance(instance.key).status == "waiting_for_pause"
    service.executor.activate(claim)
    paused = service.store.instance(instance.key)
    assert paused.status == "paused"
    steps = service.journal(tenant, "wf", instance.instance_id)["steps"]
    assert [s["name"] for s in steps] == ["s0", "s1", "s2"]
    service.control(tenant, "wf", instance.instance_id, "resume")
    clock.advance(2)
    assert finish(service, clock, instance).output == [0, 1, 2, 3]
    steps = service.journal(tenant, "wf", instance.instance_id)["steps"]
    assert [(s["name"], len(s["attempt_log"])) for s in steps] == [
        ("s0", 1),
        ("s1", 1),
        ("s2", 1),
        ("nap", 0),
        ("after", 1),
    ]


def test_non_determinism_is_detected(service: Service, tenant: Tenant, clock: ManualClock) -> None:
    source = """
import random
def run(event, step):
    name = "heads" if random.random() < 2 else "tails"
    step.do(name, lambda: 1)
    step.sleep("nap", "1 minute")
    return 1
"""
    instance = start(service, tenant, source)
    assert run_once(service, clock)
    # rewrite history: the journal now says a different step ran at position 0
    with service.store.transaction() as tx:
        tx.execute("UPDATE journal SET name = 'tails' WHERE position = 0")
    clock.advance(61)
    assert run_once(service, clock)
    failed = service.store.instance(instance.key)
    assert failed.status == "errored"
    assert failed.error is not None
    assert failed.error["name"] == "NonDeterminismError"
    assert "'tails'" in failed.error["message"] and "'heads'" in failed.error["message"]


def test_version_pinning(service: Service, tenant: Tenant, clock: ManualClock) -> None:
    v1 = """
def run(event, step):
    step.sleep("nap", "1 minute")
    return "v1"
"""
    instance = start(service, tenant, v1)
    assert run_once(service, clock)
    version, created = service.deploy(tenant, "wf", v1.replace("v1", "v2"))
    assert created and version.version == 2
    assert service.deploy(tenant, "wf", v1.replace("v1", "v2")) == (version, False)
    newer = service.create_instances(tenant, "wf", [{}])[0]
    assert newer.version == 2
    assert finish(service, clock, instance).output == "v1"
    assert finish(service, clock, newer).output == "v2"


def test_instance_ids(service: Service, tenant: Tenant) -> None:
    service.deploy(tenant, "wf", RANDOM_STEPS)
    for bad in ["", "-x", "a" * 65, "a b", "ü", 5]:
        with pytest.raises(InvalidInput):
            service.create_instances(tenant, "wf", [{"id": bad}])
    created = service.create_instances(tenant, "wf", [{"id": "a" * 64}, {"id": "_ok-1"}])
    assert [i.instance_id for i in created] == ["a" * 64, "_ok-1"]


def test_ten_thousand_steps(service: Service, tenant: Tenant, clock: ManualClock) -> None:
    source = """
def run(event, step):
    total = 0
    for i in range(10_000):
        total += step.do("add", lambda: i)
    return total
"""
    instance = start(service, tenant, source)
    started = time.perf_counter()
    done = finish(service, clock, instance)
    assert done.status == "complete", done.error
    assert done.output == sum(range(10_000))
    assert done.steps == 10_000
    print(f"10,000 steps in {time.perf_counter() - started:.2f} s")


def test_step_limit(service: Service, clock: ManualClock) -> None:
    from tenantflow.runtime.records import Quotas

    tenant = service.create_tenant("small", Quotas(max_steps=5))[0]
    source = """
def run(event, step):
    for i in range(6):
        step.do("s", lambda: i)
"""
    instance = start(service, tenant, source)
    done = finish(service, clock, instance)
    assert done.status == "errored"
    assert done.error is not None and done.error["name"] == "StepLimitExceeded"


def test_event_sent_while_paused_is_not_lost(service: Service, tenant: Tenant, clock: ManualClock) -> None:
    instance = start(service, tenant, EVENTS)
    assert run_once(service, clock)
    service.control(tenant, "wf", instance.instance_id, "pause")
    service.send_event(tenant, "wf", instance.instance_id, "go", 1)
    service.send_event(tenant, "wf", instance.instance_id, "go", 2)
    assert not run_once(service, clock)
    service.control(tenant, "wf", instance.instance_id, "resume")
    assert finish(service, clock, instance).output == [1, 2]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_creation_rate_holds_across_processes(
    backend: str, tmp_path: Path, sandbox: Sandbox, request: pytest.FixtureRequest
) -> None:
    # Two services on one database, as two `serve` processes would be: they take from one bucket.
    url = (
        f"sqlite:///{tmp_path / 'rate.db'}"
        if backend == "sqlite"
        else fresh_schema(request.getfixturevalue("pg_server"))
    )
    first, second = (Service(open_store(url), sandbox) for _ in range(2))
    try:
        tenant = first.create_tenant("acme", Quotas(max_instances_per_minute=10))[0]
        first.deploy(tenant, "wf", "def run(event, step):\n    return 1\n")
        first.create_instances(tenant, "wf", [{} for _ in range(6)])
        with pytest.raises(QuotaExceeded, match="10 per minute") as refused:
            second.create_instances(tenant, "wf", [{} for _ in range(5)])
        assert 0 < refused.value.retry_after_s <= 60
        second.create_instances(tenant, "wf", [{} for _ in range(4)])  # 6 + 4 = the 10 a minute allows
        with pytest.raises(QuotaExceeded):
            first.create_instances(tenant, "wf", [{}])
        assert (
            len(second.instances(tenant, "wf", None, 100, None).instances) == 10
        )  # nothing of a refused batch was created
    finally:
        for service in (first, second):
            service.store.close()


def test_workers_leave_the_isolate_pools_slots_free(tmp_path: Path, sandbox: Sandbox) -> None:
    """Each worker holds one of the allocator's slots: the most a process runs is what its sandbox's isolate pool
    (as large as TENANTFLOW_ISOLATE_POOL asks) and the deploy checks leave."""
    store = SQLiteStore(str(tmp_path / "tf.db"), synchronous="normal")
    unpooled = Sandbox(sandbox.component, sandbox.engine, pool=0)
    try:
        assert max_workers(unpooled) == ISOLATE_SLOTS - 3
        assert max_workers(sandbox) == ISOLATE_SLOTS - sandbox.isolates.slots - 3
        with pytest.raises(InvalidInput, match=f"between 1 and {max_workers(sandbox)}"):
            Service(store, sandbox, workers=max_workers(sandbox) + 1)
        Service(store, unpooled, workers=max_workers(sandbox) + 1)  # no pool: its slots are the workers'
        with pytest.raises(InvalidInput):
            Service(store, sandbox, workers=0)
    finally:
        unpooled.close()
        store.close()
