"""A workflow's retention: read it, and replace it after checking it (the API, and the CLI on --db, use this)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tenantflow.runtime import logs
from tenantflow.runtime.engine.clock import Clock
from tenantflow.runtime.records import Tenant, check_id
from tenantflow.runtime.retention import Retention, check_retention
from tenantflow.runtime.store import SQLStore


class Retentions:
    def __init__(self, store: SQLStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def get(self, tenant: Tenant, workflow: str) -> Retention:
        """How long the workflow's finished instances are kept (NotFound for no such workflow)."""
        self.store.latest_version(tenant.tenant_id, check_id(workflow, "workflow name"))
        return self.store.retention(tenant.tenant_id, workflow)

    def set(self, tenant: Tenant, workflow: str, given: Mapping[str, Any]) -> Retention:
        """Replace the workflow's retention with `given` ({status: duration or None}; a status left out is kept
        forever); instances already past it go in the background (engine.retention)."""
        check_id(workflow, "workflow name")
        retention = check_retention(given)
        self.store.set_retention(tenant.tenant_id, workflow, retention, self.clock.now())
        logs.event("workflow retention set", tenant=tenant.tenant_id, workflow=workflow, **retention.public())
        return retention
