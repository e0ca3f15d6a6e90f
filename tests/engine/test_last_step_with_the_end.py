"""Steps' writes are answered before they commit and go together with the activation's next write, or its end.

The host flushes them before any call with an effect (tests/host/test_deferred_writes.py); here, the runtime's side:
a workflow that returns after its steps commits them and its end together, a sleep or a wait after steps commits
them all together, the pending writes are bounded (in number, bytes and age), and what the steps' own commits would
have met (a pause, a lost lease, a failing disk) still decides what happens next.
"""

from __future__ import annotations

from typing import Any

import pytest
from tenantflow.runtime.engine import journal as journal_module
from tenantflow.runtime.engine.clock import ManualClock
from tenantflow.runtime.engine.journal import InstanceJournal
from tenantflow.runtime.records import Instance, Tenant
from tenantflow.runtime.service import Service
from tenantflow.runtime.service.local import drive
from tenantflow.runtime.store import SQLStore

ONE_STEP = """
def run(event, step):
    return step.do("only", lambda: {"n": 1})
"""
TWO_STEPS = """
def run(event, step):
    a = step.do("a", lambda: 1)
    print("between", a)
    return [a, step.do("b", lambda: 2)]
"""


def start(service: Service, tenant: Tenant, source: str) -> Instance:
    service.deploy(tenant, "wf", source)
    return service.create_instances(tenant, "wf", [{}])[0]


def count_writes(store: SQLStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each write transaction the store commits, named by the function that asked for it."""
    seen: list[str] = []
    real = store.write

    def write(fn: Any) -> Any:
        seen.append(getattr(fn, "__qualname__", repr(fn)))
        return real(fn)

    monkeypatch.setattr(store, "write", write)
    return seen


def activate(service: Service, clock: ManualClock) -> str:
    claims = service.store.claim("test", 1, clock.now(), 60.0, {})
    assert len(claims) == 1
    return service.executor.activate(claims[0]).status


def test_the_last_step_and_the_end_are_one_commit(
    service: Service, tenant: Tenant, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = start(service, tenant, ONE_STEP)
    writes = count_writes(service.store, monkeypatch)
    assert activate(service, clock) == "complete"
    assert len(writes) == 1, writes  # it was two: the step's commit, then the end's
    done = service.store.instance(instance.key)
    assert done.status == "complete" and done.output == {"n": 1} and done.steps == 1
    [step] = service.journal(tenant, "wf", instance.instance_id)["steps"]
    assert step["name"] == "only" and step["state"] == "done" and step["result"] == {"n": 1}
    assert [a["ok"] for a in step["attempt_log"]] == [True]


def test_steps_with_no_effect_between_them_go_with_the_end(
    service: Service, tenant: Tenant, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = start(service, tenant, TWO_STEPS)
    writes = count_writes(service.store, monkeypatch)
    assert activate(service, clock) == "complete"
    assert len(writes) == 1, writes  # "a", "b" and the end (it was three, then two)
    done = service.store.instance(instance.key)
    assert done.output == [1, 2] and "between 1" in (done.log or "") and done.steps == 2
    journal = service.journal(tenant, "wf", instance.instance_id)["steps"]
    assert [(s["name"], s["result"], len(s["attempt_log"])) for s in journal] == [("a", 1, 1), ("b", 2, 1)]


FIVE_STEPS = "def run(event, step):\n    return [step.do(f's{i}', lambda: 'x' * 10) for i in range(5)]\n"


@pytest.mark.parametrize(
    ("bound", "value", "writes"),
    [
        ("MAX_PENDING_STEPS", 2, 3),  # two, two, then the last with the end
        ("MAX_PENDING_BYTES", 20, 3),  # two results of 12 bytes (JSON) pass 20: the same
        ("MAX_PENDING_S", 0.0, 6),  # each step at once, then the end
    ],
)
def test_pending_step_writes_are_bounded(
    service: Service,
    tenant: Tenant,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    bound: str,
    value: float,
    writes: int,
) -> None:
    monkeypatch.setattr(journal_module, "MAX_PENDING_S", 3600.0)  # a slow machine's steps still go together
    monkeypatch.setattr(journal_module, bound, value)
    instance = start(service, tenant, FIVE_STEPS)
    seen = count_writes(service.store, monkeypatch)
    assert activate(service, clock) == "complete"
    assert len(seen) == writes, seen
    done = service.store.instance(instance.key)
    assert done.output == ["x" * 10] * 5 and done.steps == 5


SLOW_THEN_QUICK = """
import time
def busy():
    began = time.monotonic()
    while time.monotonic() - began < 0.1:
        pass
    return "slow"
def run(event, step):
    return [step.do("slow", busy), step.do("quick", lambda: "quick")]
"""


def test_a_step_whose_body_took_long_commits_as_it_completes(
    service: Service, tenant: Tenant, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a crash would make run again stays cheap: a body longer than MAX_PENDING_S is not left pending."""
    monkeypatch.setattr(journal_module, "MAX_PENDING_S", 0.05)
    instance = start(service, tenant, SLOW_THEN_QUICK)
    writes = count_writes(service.store, monkeypatch)
    assert activate(service, clock) == "complete"
    assert len(writes) == 2, writes  # "slow" as it completed; "quick" with the end
    assert service.store.instance(instance.key).output == ["slow", "quick"]


def test_a_pause_in_the_last_step_still_pauses(service: Service, tenant: Tenant, clock: ManualClock) -> None:
    """As when the step committed alone: the step is journaled, then the instance is paused, not complete."""
    instance = start(service, tenant, ONE_STEP)
    claim = service.store.claim("test", 1, clock.now(), 60.0, {})[0]
    service.control(tenant, "wf", instance.instance_id, "pause")
    assert service.executor.activate(claim).status == "waiting"
    paused = service.store.instance(instance.key)
    assert paused.status == "paused" and paused.output is None
    assert [s["state"] for s in service.journal(tenant, "wf", instance.instance_id)["steps"]] == ["done"]
    service.control(tenant, "wf", instance.instance_id, "resume")
    drive(service, clock, instance.key)
    done = service.store.instance(instance.key)
    assert done.status == "complete" and done.output == {"n": 1}


THREE_THEN_FAIL = """
def run(event, step):
    [step.do(f"s{i}", lambda: i) for i in range(3)]
    raise ValueError("boom")
"""
THREE_THEN_FETCH = """
from tenantflow import CapabilityError, fetch
def run(event, step):
    done = [step.do(f"s{i}", lambda: i) for i in range(3)]
    try:
        fetch("http://127.0.0.1:9/")
    except CapabilityError:
        pass
    return done
"""


@pytest.mark.parametrize("source", [THREE_THEN_FAIL, THREE_THEN_FETCH], ids=["then-fails", "then-fetches"])
def test_a_pause_found_by_a_flush_keeps_every_pending_step(
    service: Service, tenant: Tenant, clock: ManualClock, source: str
) -> None:
    """A flush alone (before a fetch, before a failed end) writes all its steps even when the first finds the pause:
    none is dropped to run again."""
    instance = start(service, tenant, source)
    claim = service.store.claim("test", 1, clock.now(), 60.0, {})[0]
    service.control(tenant, "wf", instance.instance_id, "pause")
    service.executor.activate(claim)
    assert service.store.instance(instance.key).status == "paused"
    assert [s["name"] for s in service.journal(tenant, "wf", instance.instance_id)["steps"]] == ["s0", "s1", "s2"]


def test_a_lease_lost_in_the_last_step_writes_nothing(
    service: Service, tenant: Tenant, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = start(service, tenant, ONE_STEP)
    real = InstanceJournal.carried

    def taken_over(journal: InstanceJournal) -> Any:
        with service.store.transaction() as tx:  # another worker's claim since: a new fence
            tx.execute("UPDATE instances SET fence = fence + 1")
        return real(journal)

    monkeypatch.setattr(InstanceJournal, "carried", taken_over)
    assert activate(service, clock) == "lost"
    after = service.store.instance(instance.key)
    assert after.status == "running" and after.output is None and after.steps == 0
    assert service.journal(tenant, "wf", instance.instance_id)["steps"] == []


def test_a_workflow_that_fails_after_a_step_commits_the_step_first(
    service: Service, tenant: Tenant, clock: ManualClock
) -> None:
    source = """
def run(event, step):
    step.do("kept", lambda: 7)
    raise ValueError("after the step")
"""
    instance = start(service, tenant, source)
    assert activate(service, clock) == "errored"
    failed = service.store.instance(instance.key)
    assert failed.error is not None and failed.error["name"] == "ValueError"
    [step] = service.journal(tenant, "wf", instance.instance_id)["steps"]
    assert step["name"] == "kept" and step["result"] == 7


STEP_THEN_WAITS = """
def run(event, step):
    a = step.do("a", lambda: 1)
    step.sleep("nap", "1 minute")
    got = step.wait_for_event("tool", event_type="tool_result")
    return [a, got["payload"]]
"""


def test_a_step_goes_with_the_sleep_or_wait_after_it(
    service: Service, tenant: Tenant, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = start(service, tenant, STEP_THEN_WAITS)
    writes = count_writes(service.store, monkeypatch)
    assert activate(service, clock) == "waiting"
    assert len(writes) == 2, writes  # the step with the sleep, then the end (it was three)
    journal = service.journal(tenant, "wf", instance.instance_id)["steps"]
    assert [(s["name"], s["state"]) for s in journal] == [("a", "done"), ("nap", "sleeping")]
    clock.advance(61)
    service.send_event(tenant, "wf", instance.instance_id, "tool_result", {"ok": True})
    drive(service, clock, instance.key)
    done = service.store.instance(instance.key)
    assert done.status == "complete" and done.output == [1, {"ok": True}]


def test_a_pause_in_a_step_before_a_sleep_pauses_before_the_sleep(
    service: Service, tenant: Tenant, clock: ManualClock
) -> None:
    instance = start(service, tenant, STEP_THEN_WAITS)
    claim = service.store.claim("test", 1, clock.now(), 60.0, {})[0]
    service.control(tenant, "wf", instance.instance_id, "pause")
    service.executor.activate(claim)
    assert service.store.instance(instance.key).status == "paused"
    journal = service.journal(tenant, "wf", instance.instance_id)["steps"]
    assert [(s["name"], s["state"]) for s in journal] == [("a", "done")]  # the sleep was never journaled


RANDOM_THEN_SLEEP = """
import random
def run(event, step):
    a = step.do("a", lambda: random.random())
    step.sleep("nap", "1 minute")
    return a
"""


RANDOM_STEP = "import random\ndef run(event, step):\n    return step.do('a', lambda: random.random())\n"


def fail_once_when_carrying(store: SQLStore, method: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The store's `method` raises a store error (not a lost lease) the first time it carries a step (`before=`)."""
    real = getattr(store, method)
    failures: list[str] = []

    def failing(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("before") is not None and not failures:
            failures.append("once")
            raise RuntimeError("the disk hiccups")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, method, failing)
    return failures


@pytest.mark.parametrize(
    ("source", "method"),
    [
        (RANDOM_THEN_SLEEP, "record"),  # the sleep's write carries the step
        (RANDOM_STEP, "finish_and_claim"),  # the end carries it
    ],
)
def test_a_write_that_fails_with_the_step_keeps_the_step(
    service: Service, tenant: Tenant, clock: ManualClock, monkeypatch: pytest.MonkeyPatch, source: str, method: str
) -> None:
    """The write that carried the step fails once: the step is written alone, as when it committed in its own
    call, and is not run again (its random result is the instance's output)."""
    instance = start(service, tenant, source)
    failures = fail_once_when_carrying(service.store, method, monkeypatch)
    assert activate(service, clock) == "waiting"  # a host fault: retried
    assert failures == ["once"]
    [kept] = service.journal(tenant, "wf", instance.instance_id)["steps"]
    assert kept["name"] == "a" and kept["state"] == "done"
    clock.advance(120)
    drive(service, clock, instance.key)
    done = service.store.instance(instance.key)
    assert done.status == "complete" and done.output == kept["result"]
