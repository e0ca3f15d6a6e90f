"""A version's code is compiled once per process and handed to each activation ready (not compiled again)."""

from __future__ import annotations

from tenantflow.runtime.engine.clock import ManualClock
from tenantflow.runtime.records import Tenant
from tenantflow.runtime.service import Service
from tenantflow.runtime.service.local import drive

SOURCE = """
def run(event, step):
    total = step.do("add", lambda: event.payload + 1)
    step.sleep("nap", "1 minute")
    if total > 5:
        raise ValueError(f"too big: {total}")
    return total
"""


def test_activations_get_compiled_code_once_per_version(service: Service, tenant: Tenant, clock: ManualClock) -> None:
    service.deploy(tenant, "wf", SOURCE)
    small, big = service.create_instances(tenant, "wf", [{"id": "s", "params": 1}, {"id": "b", "params": 9}])
    drive(service, clock, small.key)
    drive(service, clock, big.key)
    assert service.store.instance(small.key).output == 2
    failed = service.store.instance(big.key)
    assert failed.status == "errored" and failed.error is not None
    # Tracebacks still show the tenant's lines (the source is handed over with the code).
    assert failed.error["line"] == 6 and 'raise ValueError(f"too big: {total}")' in failed.error["traceback"]
    codes = service.executor.codes
    assert codes.compiles == 1  # four activations, one compile
    service.deploy(tenant, "wf", SOURCE + "\n# v2\n")
    v2 = service.create_instances(tenant, "wf", [{"id": "v2", "params": 2}])[0]
    drive(service, clock, v2.key)
    assert service.store.instance(v2.key).output == 3 and codes.compiles == 2


def test_a_version_that_does_not_compile_within_the_limits_runs_from_source(
    service: Service, tenant: Tenant, clock: ManualClock
) -> None:
    service.deploy(tenant, "wf", SOURCE)
    instance = service.create_instances(tenant, "wf", [{"params": 1}])[0]
    version = service.store.instance(instance.key).source_hash
    service.executor.codes._codes[version] = None  # as if its compile had failed
    drive(service, clock, instance.key)
    assert service.store.instance(instance.key).output == 2
