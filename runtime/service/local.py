"""`tenantflow run FILE.py`: one workflow, to completion, on a temporary database.

Time is a manual clock that jumps to the next timer, so `step.sleep("1 day")`
takes no time; the given events are buffered up front and matched when waited for.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tenantflow.host import Sandbox
from tenantflow.runtime.engine.clock import ManualClock
from tenantflow.runtime.records import FINISHED, Instance, InstanceKey
from tenantflow.runtime.service import Service
from tenantflow.runtime.store.sqlite import SQLiteStore

MAX_ACTIVATIONS = 10_000


@dataclass
class LocalRun:
    instance: Instance
    journal: dict[str, Any]
    activations: int
    stuck: bool


def drive(service: Service, clock: ManualClock, key: InstanceKey, limit: int = MAX_ACTIVATIONS) -> tuple[int, bool]:
    """Run the instance's activations in this thread, jumping the clock to each timer, until it finishes.

    Returns the number of activations and whether it got stuck (waiting for an event that never comes).
    """
    activations = 0
    while activations < limit:
        if service.pool.run_one():
            activations += 1
            continue
        if service.store.instance(key).status in FINISHED:
            return activations, False
        wake = service.pool.next_wake()
        if wake is None:
            return activations, True
        clock.set(wake)
    return activations, False


def run_local(
    source: str,
    params: Any = None,
    events: Sequence[tuple[str, Any]] = (),
    sandbox: Sandbox | None = None,
) -> LocalRun:
    with tempfile.TemporaryDirectory(prefix="tenantflow-run-") as tmp:
        store = SQLiteStore(str(Path(tmp) / "run.db"), synchronous="normal")
        clock = ManualClock()
        service = Service(store, sandbox, clock, workers=1, lease_s=3600.0)
        try:
            tenant, _ = service.create_tenant("local")
            service.deploy(tenant, "local", source)
            instance = service.create_instances(tenant, "local", [{"id": "run", "params": params}])[0]
            for event_type, payload in events:
                service.send_event(tenant, "local", instance.instance_id, event_type, payload)
            activations, stuck = drive(service, clock, instance.key)
            return LocalRun(
                service.instance(tenant, "local", "run"),
                service.journal(tenant, "local", "run"),
                activations,
                stuck,
            )
        finally:
            if sandbox is None:
                service.sandbox.close()
            store.close()
