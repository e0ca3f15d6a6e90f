"""Tenants: the registry of who may use the store, with their quotas, keys and deletion.

A tenant being deleted keeps its row, marked (`deleted_at`), until its data is purged: it cannot sign in,
its instances are not claimed and its name is not free, so a purge cut short by a crash leaves nothing a
new tenant of the same name could see, and resumes (`deleting_tenants`).
"""

from __future__ import annotations

from collections.abc import Callable

from tenantflow.runtime.errors import Conflict, NotFound
from tenantflow.runtime.records import InstanceKey, Quotas, Tenant
from tenantflow.runtime.store._sql import Tx, columns
from tenantflow.runtime.store.core import StoreCore
from tenantflow.runtime.store.purge import delete_batch
from tenantflow.runtime.store.rows import TenantRow, quotas_text
from tenantflow.runtime.store.schema import TENANT_TABLES

ALIVE = "deleted_at IS NULL"
# A deleted tenant's key_hash: never the SHA-256 of a key (which is 64 hex digits), unique per tenant.
DELETED_KEY = "deleted:{tenant_id}"


def lock_live_tenant(tx: Tx, tenant_id: str, for_update: str) -> None:
    """Lock the tenant's row for this transaction (where writers interleave), or NotFound if it is gone or
    marked deleted: what a write of a tenant's data checks, so that a request authenticated just before the
    tenant was deleted stores nothing after its purge."""
    if tx.scalar(f"SELECT tenant_id FROM tenants WHERE tenant_id = ? AND {ALIVE}{for_update}", (tenant_id,)) is None:
        raise NotFound(f"no tenant {tenant_id!r}")


def _check_marked(tx: Tx, tenant_id: str) -> None:
    """Conflict unless the tenant is marked deleted: only then are its rows purged."""
    if tx.scalar(f"SELECT tenant_id FROM tenants WHERE tenant_id = ? AND {ALIVE}", (tenant_id,)):
        raise Conflict(f"tenant {tenant_id!r} is not marked deleted")


class Tenants(StoreCore):
    def create_tenant(self, tenant: Tenant, key_hash: str) -> None:
        """Store a new tenant; Conflict if the name is taken (or still being deleted)."""
        with self.transaction() as tx:
            created = tx.scalar(
                "INSERT INTO tenants (tenant_id, name, key_hash, quotas, operator, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING tenant_id",
                (
                    tenant.tenant_id,
                    tenant.name,
                    key_hash,
                    quotas_text(tenant.quotas),
                    int(tenant.operator),
                    tenant.created_at,
                ),
            )
            if created is None:
                deleting = tx.scalar("SELECT deleted_at FROM tenants WHERE tenant_id = ?", (tenant.tenant_id,))
        if created is None:
            if deleting is not None:
                raise Conflict(f"tenant {tenant.name!r} is being deleted; try again when it is gone")
            raise Conflict(f"tenant {tenant.name!r} already exists (rotate its key for a new one)")

    def tenant_by_key(self, key_hash: str) -> Tenant | None:
        with self.read() as tx:
            row = tx.record(
                TenantRow, f"SELECT {columns(TenantRow)} FROM tenants WHERE key_hash = ? AND {ALIVE}", (key_hash,)
            )
        return row.tenant() if row else None

    def tenant(self, tenant_id: str) -> Tenant:
        with self.read() as tx:
            row = tx.record(
                TenantRow, f"SELECT {columns(TenantRow)} FROM tenants WHERE tenant_id = ? AND {ALIVE}", (tenant_id,)
            )
        if row is None:
            raise NotFound(f"no tenant {tenant_id!r}")
        return row.tenant()

    def tenants(self) -> list[Tenant]:
        with self.read() as tx:
            rows = tx.records(
                TenantRow, f"SELECT {columns(TenantRow)} FROM tenants WHERE {ALIVE} ORDER BY created_at, tenant_id"
            )
        return [r.tenant() for r in rows]

    def change_quotas(self, tenant_id: str, change: Callable[[Quotas], Quotas]) -> Tenant:
        """Replace the tenant's quotas with `change(current)`, read and written in one transaction (with the
        row locked where writers interleave), so that two changes at once both apply."""
        with self.transaction() as tx:
            row = tx.record(
                TenantRow,
                f"SELECT {columns(TenantRow)} FROM tenants WHERE tenant_id = ? AND {ALIVE}{self.for_update}",
                (tenant_id,),
            )
            if row is None:
                raise NotFound(f"no tenant {tenant_id!r}")
            quotas = change(row.tenant().quotas)
            tx.run("UPDATE tenants SET quotas = ? WHERE tenant_id = ?", (quotas_text(quotas), tenant_id))
        tenant = row.tenant()
        return Tenant(tenant.tenant_id, tenant.name, quotas, tenant.created_at, tenant.operator)

    def set_key(self, tenant_id: str, key_hash: str) -> None:
        """Replace the tenant's key (the old one stops working with this commit)."""
        with self.transaction() as tx:
            done = tx.scalar(
                f"UPDATE tenants SET key_hash = ? WHERE tenant_id = ? AND {ALIVE} RETURNING tenant_id",
                (key_hash, tenant_id),
            )
        if done is None:
            raise NotFound(f"no tenant {tenant_id!r}")

    def mark_deleted(self, tenant_id: str, now: float) -> tuple[int, int]:
        """Mark the tenant deleted (its key stops working, nothing of it is claimed or written any more) and
        return how many workflows and instances it has, which `purge_instances` and `finish_purge` then
        remove. A tenant already marked (a purge cut short) stays marked: its purge goes on."""
        with self.transaction() as tx:
            done = tx.scalar(
                "UPDATE tenants SET deleted_at = COALESCE(deleted_at, ?), key_hash = ? WHERE tenant_id = ? "
                "RETURNING tenant_id",
                (now, DELETED_KEY.format(tenant_id=tenant_id), tenant_id),
            )
            if done is None:
                raise NotFound(f"no tenant {tenant_id!r}")
            workflows = tx.scalar(
                "SELECT COUNT(DISTINCT workflow) AS n FROM versions WHERE tenant_id = ?", (tenant_id,)
            )
            instances = tx.scalar("SELECT COUNT(*) AS n FROM instances WHERE tenant_id = ?", (tenant_id,))
        return int(workflows or 0), int(instances or 0)

    def deleting_tenants(self) -> list[str]:
        """Tenants marked deleted whose purge has not finished (a crash cut it short)."""
        with self.read() as tx:
            return [str(v) for v in tx.run("SELECT tenant_id FROM tenants WHERE deleted_at IS NOT NULL").values()]

    def purge_instances(self, tenant_id: str, limit: int, *, leased: bool = False) -> list[InstanceKey]:
        """Delete up to `limit` of a deleted tenant's instances, with everything they store, in one
        transaction, stopping early once their journals reach purge.PURGE_ROWS; the instances deleted (none:
        they are all gone). `leased`: only those running or parked (purged first, so that they stop soon)."""
        with self.transaction() as tx:
            _check_marked(tx, tenant_id)
            return delete_batch(tx, tenant_id, " AND lease_until IS NOT NULL" if leased else "", (), limit)

    def finish_purge(self, tenant_id: str) -> None:
        """Delete what is left of a deleted tenant (workflows, sources, the tenant itself) in one transaction."""
        with self.transaction() as tx:
            _check_marked(tx, tenant_id)
            for table in TENANT_TABLES:
                tx.run(f"DELETE FROM {table} WHERE tenant_id = ?", (tenant_id,))
