"""The retention purger: finished instances of a real workflow go once past their retention, in bounded ticks,
round robin over the workflows, and in the background of a started service."""

from __future__ import annotations

import threading
import time

import pytest
from tenantflow.runtime.engine.clock import ManualClock
from tenantflow.runtime.engine.retention import RetentionPurger, Tick
from tenantflow.runtime.errors import InvalidInput, NotFound
from tenantflow.runtime.records import InstanceKey, Tenant
from tenantflow.runtime.retention import Retention
from tenantflow.runtime.service import Service
from tenantflow.runtime.service.local import drive

SOURCE = """
def run(event, step):
    return step.do("double", lambda: event.payload * 2)
"""
MINUTE = 60.0


def terminated(service: Service, tenant: Tenant, workflow: str, count: int) -> list[InstanceKey]:
    """`count` instances of `workflow`, terminated now (finished without running)."""
    service.deploy(tenant, workflow, SOURCE)
    created = service.create_instances(tenant, workflow, [{"params": n} for n in range(count)])
    for instance in created:
        service.store.terminate(instance.key, service.clock.now())
    return [i.key for i in created]


def left(service: Service, keys: list[InstanceKey]) -> int:
    found = 0
    for key in keys:
        try:
            service.store.instance(key)
            found += 1
        except NotFound:
            pass
    return found


def test_a_finished_instance_goes_once_past_its_retention(service: Service, tenant: Tenant, clock: ManualClock) -> None:
    service.deploy(tenant, "wf", SOURCE)
    done = service.create_instances(tenant, "wf", [{"params": 21}])[0]
    drive(service, clock, done.key)
    assert service.store.instance(done.key).output == 42
    service.retentions.set(tenant, "wf", {"complete": "1 minute"})
    running = service.create_instances(tenant, "wf", [{"params": 1}])[0]  # never run: unfinished
    purger = RetentionPurger(service.store, clock, threading.Event())

    clock.advance(MINUTE - 1)
    assert purger.tick().purged == 0
    clock.advance(2)
    assert purger.tick().purged == 1
    with pytest.raises(NotFound):
        service.store.instance(done.key)
    assert service.store.instance(running.key).status == "queued"


def test_a_tick_is_bounded_and_the_next_one_goes_on(service: Service, tenant: Tenant, clock: ManualClock) -> None:
    keys = {name: terminated(service, tenant, name, 5) for name in ("a", "b", "c")}
    for name in keys:
        service.retentions.set(tenant, name, {"terminated": "1 minute"})
    clock.advance(2 * MINUTE)
    purger = RetentionPurger(service.store, clock, threading.Event(), batch=2, batches=2)

    tick = purger.tick()  # two transactions of two: a's and b's oldest
    assert (tick.purged, tick.more) == (4, True)
    assert [left(service, keys[n]) for n in "abc"] == [3, 3, 5]
    tick = purger.tick()  # the round goes on from c, which has the rest of the tick to itself
    assert (tick.purged, tick.more) == (4, True)
    assert [left(service, keys[n]) for n in "abc"] == [3, 3, 1]
    ticks = [purger.tick()]
    while ticks[-1].more and len(ticks) < 10:
        ticks.append(purger.tick())
    assert all(t.purged <= 4 for t in ticks)
    assert sum(t.purged for t in ticks) == 7
    assert all(left(service, keys[n]) == 0 for n in "abc")
    assert ticks[-1] == Tick(0, False)


def test_a_retention_is_checked(service: Service, tenant: Tenant) -> None:
    service.deploy(tenant, "wf", SOURCE)
    for bad in (
        {"complete": "59 seconds"},
        {"errored": "11 years"},
        {"terminated": "soon"},
        {"terminated": 60_000},
        {"paused": "1 day"},
    ):
        with pytest.raises(InvalidInput):
            service.retentions.set(tenant, "wf", bad)
    assert service.retentions.get(tenant, "wf") == Retention()
    assert service.retentions.set(tenant, "wf", {"complete": "10 years", "errored": "1 minute"}).public() == {
        "complete": "3650 days",
        "errored": "1 minute",
        "terminated": None,
    }
    with pytest.raises(NotFound):
        service.retentions.set(tenant, "nope", {"complete": "1 day"})


def test_a_started_service_purges_in_the_background(service: Service, tenant: Tenant, clock: ManualClock) -> None:
    keys = terminated(service, tenant, "wf", 3)
    service.retentions.set(tenant, "wf", {"terminated": "1 minute"})
    clock.advance(2 * MINUTE)
    service.purger.idle_s = 0.05  # the first tick runs at start; later ones soon, for the test
    service.start()
    try:
        deadline = time.monotonic() + 10
        while left(service, keys) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert left(service, keys) == 0
    finally:
        service.stop()
