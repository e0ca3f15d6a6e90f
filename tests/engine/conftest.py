"""The engine tests' service: a real SQLite file, the session's sandbox, and a manual clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tenantflow.host import Sandbox
from tenantflow.runtime.engine.clock import ManualClock
from tenantflow.runtime.records import Tenant
from tenantflow.runtime.service import Service
from tenantflow.runtime.store.sqlite import SQLiteStore


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_800_000_000.0)


@pytest.fixture
def service(tmp_path: Path, sandbox: Sandbox, clock: ManualClock) -> Iterator[Service]:
    store = SQLiteStore(str(tmp_path / "tf.db"), synchronous="normal")
    svc = Service(store, sandbox, clock)
    yield svc
    store.close()


@pytest.fixture
def tenant(service: Service) -> Tenant:
    return service.create_tenant("acme")[0]
