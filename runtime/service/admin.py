"""The admin API's operations: tenants, their quotas and keys, and deletion, for operator keys only.

Every operation takes the actor (the key's tenant) and raises Forbidden unless it is an operator.
Deleting a tenant marks it first (its key stops working, its instances are no longer claimed), then
purges its instances a batch per transaction (so the writer is never held for long), then the rest.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tenantflow.runtime import logs
from tenantflow.runtime.engine.clock import Clock
from tenantflow.runtime.errors import Conflict, Forbidden
from tenantflow.runtime.records import Tenant, check_id, check_quotas
from tenantflow.runtime.service.tenants import Tenants, new_key
from tenantflow.runtime.store import SQLStore

__all__ = ["PURGE_BATCH", "Admin", "DeletedTenant"]

log = logging.getLogger("tenantflow.admin")

# Instances purged per transaction when a tenant is deleted.
PURGE_BATCH = 50


@dataclass(frozen=True)
class DeletedTenant:
    name: str
    workflows: int
    instances: int


class Admin:
    def __init__(
        self, store: SQLStore, registry: Tenants, clock: Clock, on_purged: Callable[[str], None] | None = None
    ) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self.on_purged = on_purged

    @staticmethod
    def check(actor: Tenant) -> None:
        if not actor.operator:
            raise Forbidden("the admin API needs an operator key, not a tenant key")

    def create_tenant(
        self, actor: Tenant, name: str, quotas: dict[str, Any] | None = None, operator: bool = False
    ) -> tuple[Tenant, str]:
        """A new tenant and its key (shown this once; only its hash is stored)."""
        self.check(actor)
        given = {k: v for k, v in (quotas or {}).items() if v is not None}
        tenant, key = self.registry.create(check_id(name, "tenant name"), check_quotas(given), operator)
        logs.event("tenant created", tenant=tenant.tenant_id, by=actor.tenant_id, operator=operator)
        return tenant, key

    def tenants(self, actor: Tenant) -> list[Tenant]:
        self.check(actor)
        return self.store.tenants()

    def tenant(self, actor: Tenant, name: str) -> Tenant:
        self.check(actor)
        return self.store.tenant(check_id(name, "tenant name"))

    def update_quotas(self, actor: Tenant, name: str, changes: dict[str, Any]) -> Tenant:
        """Change some of a tenant's quotas (the rest, and any given as None, stay); running activations keep
        theirs until they end."""
        self.check(actor)
        given = {key: value for key, value in changes.items() if value is not None}
        check_quotas(given)  # bad input is refused before the store is touched
        updated = self.store.change_quotas(check_id(name, "tenant name"), lambda current: check_quotas(given, current))
        logs.event("tenant quotas changed", tenant=updated.tenant_id, by=actor.tenant_id, changed=sorted(given))
        return updated

    def rotate_key(self, actor: Tenant, name: str) -> tuple[Tenant, str]:
        """A new key for the tenant; the old one stops working at once."""
        self.check(actor)
        tenant = self.store.tenant(check_id(name, "tenant name"))
        key = new_key()
        self.registry.set_key(tenant.tenant_id, key)
        logs.event("tenant key rotated", tenant=tenant.tenant_id, by=actor.tenant_id)
        return tenant, key

    def delete_tenant(self, actor: Tenant, name: str) -> DeletedTenant:
        """Delete a tenant with all its workflows, instances and journals (it cannot delete itself). Asked
        again while a deletion is under way (or was cut short), it goes on with it."""
        self.check(actor)
        tenant_id = check_id(name, "tenant name")
        if tenant_id == actor.tenant_id:
            raise Conflict("an operator key cannot delete its own tenant; use another operator key")
        workflows, instances = self.store.mark_deleted(tenant_id, self.clock.now())
        self.purge(tenant_id)
        logs.event("tenant deleted", tenant=tenant_id, by=actor.tenant_id, workflows=workflows, instances=instances)
        return DeletedTenant(tenant_id, workflows, instances)

    def purge(self, tenant_id: str) -> None:
        """Remove a tenant marked deleted: what runs or is parked first (it stops at its next write, or here
        at once), then the other instances, a bounded batch per transaction, then the rest."""
        while self.store.purge_instances(tenant_id, PURGE_BATCH, leased=True):
            pass
        if self.on_purged is not None:
            self.on_purged(tenant_id)
        while self.store.purge_instances(tenant_id, PURGE_BATCH):
            pass
        self.store.finish_purge(tenant_id)

    def resume_purges(self) -> threading.Thread | None:
        """Finish, on a background thread, the deletions a crash cut short (None: there are none)."""
        pending = self.store.deleting_tenants()
        if not pending:
            return None

        def run() -> None:
            for tenant_id in pending:
                try:
                    self.purge(tenant_id)
                    log.info("finished deleting tenant %s", tenant_id)
                except Exception:
                    log.exception("deleting tenant %s failed; it is retried at the next start", tenant_id)

        thread = threading.Thread(target=run, name="tenantflow-purge", daemon=True)
        thread.start()
        return thread
