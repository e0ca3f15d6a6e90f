"""Tenants: the registry of who may use the store, with their quotas."""

from __future__ import annotations

from tenantflow.runtime.errors import NotFound
from tenantflow.runtime.records import Tenant
from tenantflow.runtime.store._sql import columns
from tenantflow.runtime.store.core import StoreCore
from tenantflow.runtime.store.rows import TenantRow, quotas_text


class Tenants(StoreCore):
    def create_tenant(self, tenant: Tenant, key_hash: str) -> None:
        with self.transaction() as tx:
            tx.run(
                "INSERT INTO tenants (tenant_id, name, key_hash, quotas, operator, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    tenant.tenant_id,
                    tenant.name,
                    key_hash,
                    quotas_text(tenant.quotas),
                    int(tenant.operator),
                    tenant.created_at,
                ),
            )

    def tenant_by_key(self, key_hash: str) -> Tenant | None:
        with self.read() as tx:
            row = tx.record(TenantRow, f"SELECT {columns(TenantRow)} FROM tenants WHERE key_hash = ?", (key_hash,))
        return row.tenant() if row else None

    def tenant(self, tenant_id: str) -> Tenant:
        with self.read() as tx:
            row = tx.record(TenantRow, f"SELECT {columns(TenantRow)} FROM tenants WHERE tenant_id = ?", (tenant_id,))
        if row is None:
            raise NotFound(f"no tenant {tenant_id!r}")
        return row.tenant()

    def tenants(self) -> list[Tenant]:
        with self.read() as tx:
            rows = tx.records(TenantRow, f"SELECT {columns(TenantRow)} FROM tenants ORDER BY created_at")
        return [r.tenant() for r in rows]
