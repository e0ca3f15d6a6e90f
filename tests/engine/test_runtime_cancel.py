"""Running activations end when the instance is no longer theirs, and host faults are bounded.

In-process: a real Service on a real SQLite file with the real guest and a running worker pool.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tenantflow.host import Sandbox
from tenantflow.runtime.engine.clock import ManualClock
from tenantflow.runtime.engine.executor import MAX_HOST_FAULTS
from tenantflow.runtime.records import Instance, Quotas, Tenant
from tenantflow.runtime.service import Service
from tenantflow.runtime.store.sqlite import SQLiteStore

# Spins outside any step for up to 50 s: only a cancellation (or the 60 s deadline) ends it early.
SPIN = """
import time

def run(event, step):
    start = time.time()
    while time.time() - start < 50:
        pass
    return step.do("after", lambda: 1)
"""

ECHO = """
def run(event, step):
    return step.do("echo", lambda: event.payload)
"""


@pytest.fixture
def service(tmp_path: Path, sandbox: Sandbox) -> Iterator[Service]:
    store = SQLiteStore(str(tmp_path / "tf.db"), synchronous="normal")
    svc = Service(store, sandbox, workers=2).start()
    yield svc
    svc.stop()
    store.close()


@pytest.fixture
def tenant(service: Service) -> Tenant:
    return service.create_tenant("acme", Quotas(fuel=10**13))[0]


def start(service: Service, tenant: Tenant, source: str, name: str, params: Any = None) -> Instance:
    service.deploy(tenant, name, source)
    return service.create_instances(tenant, name, [{"params": params}])[0]


def wait_status(service: Service, instance: Instance, statuses: set[str], timeout: float) -> Instance:
    deadline = time.monotonic() + timeout
    while True:
        current = service.store.instance(instance.key)
        if current.status in statuses:
            return current
        assert time.monotonic() < deadline, f"{instance.instance_id} still {current.status}"
        time.sleep(0.01)


def wait_idle(service: Service, timeout: float) -> float:
    started = time.monotonic()
    while service.pool.busy:
        assert time.monotonic() - started < timeout, "the worker is still busy"
        time.sleep(0.005)
    return time.monotonic() - started


@pytest.mark.parametrize("control", ["terminate", "restart"])
def test_a_control_cancels_the_running_activation(service: Service, tenant: Tenant, control: str) -> None:
    instance = start(service, tenant, SPIN, "spin")
    wait_status(service, instance, {"running"}, 10)
    time.sleep(0.2)
    service.control(tenant, "spin", instance.instance_id, control)
    if control == "terminate":
        assert wait_idle(service, 2.0) < 0.5
        assert service.store.instance(instance.key).status == "terminated"
    else:
        # The restarted instance is claimed again at once; the old activation ends, the new one runs on.
        deadline = time.monotonic() + 1.0
        while service.pool.busy != 1:
            assert time.monotonic() < deadline, f"{service.pool.busy} activations still run"
            time.sleep(0.005)
        time.sleep(0.7)  # past a cancel check: the new activation was not cancelled
        assert service.pool.busy == 1
        assert service.store.instance(instance.key).status == "running"
        service.control(tenant, "spin", instance.instance_id, "terminate")
        assert wait_idle(service, 2.0) < 0.5


def test_a_lease_taken_elsewhere_cancels_within_the_check_interval(service: Service, tenant: Tenant) -> None:
    instance = start(service, tenant, SPIN, "spin")
    wait_status(service, instance, {"running"}, 10)
    # Another process terminates it straight in the store: this pool sees it at its next check.
    service.store.terminate(instance.key, time.time())
    assert wait_idle(service, 3.0) < 1.5


def test_stop_cancels_after_the_grace_period_and_hands_the_instance_back(service: Service, tenant: Tenant) -> None:
    instance = start(service, tenant, SPIN, "spin")
    wait_status(service, instance, {"running"}, 10)
    started = time.monotonic()
    service.pool.stop(grace_s=0.3)
    assert time.monotonic() - started < 2.0
    back = service.store.instance(instance.key)
    assert back.status == "waiting" and back.error is None
    assert back.wake_at is not None and back.wake_at <= time.time()


def test_host_faults_are_retried_then_error_the_instance(tmp_path: Path, sandbox: Sandbox) -> None:
    clock = ManualClock(1_800_000_000.0)
    store = SQLiteStore(str(tmp_path / "faults.db"), synchronous="normal")
    service = Service(store, sandbox, clock)
    tenant = service.create_tenant("acme")[0]
    instance = start(service, tenant, ECHO, "echo", {"x": 1})
    broken = threading.Event()
    broken.set()
    real_record, real_recordings = store.record, store.recordings

    def record(*args: Any, **kwargs: Any) -> Any:
        if broken.is_set():
            raise RuntimeError("the disk is on fire")
        return real_record(*args, **kwargs)

    def recordings(*args: Any, **kwargs: Any) -> Any:  # the steps' writes, made with the activation's end
        if broken.is_set():
            return lambda tx: record()
        return real_recordings(*args, **kwargs)

    store.record = record  # type: ignore[method-assign]
    store.recordings = recordings  # type: ignore[method-assign]
    for n in range(1, MAX_HOST_FAULTS + 1):
        claims = store.claim("test", 1, clock.now(), 60.0)
        assert len(claims) == 1, n
        service.executor.activate(claims[0])
        current = store.instance(instance.key)
        if n < MAX_HOST_FAULTS:
            assert current.status == "waiting", current
            clock.advance(10)
    assert current.status == "errored"
    assert current.error is not None and current.error["name"] == "HostFault"
    store.close()
