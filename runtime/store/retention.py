"""Retention: how long a workflow's finished instances are kept, and purging those kept past it.

Workflows that keep everything forever have no row. `expired_workflows` finds, across tenants, the workflows
with an instance past its retention (one row read per workflow that has one); `purge_expired` deletes a bounded
batch of one workflow's, oldest first, in one transaction. Several processes may purge at once: a purge locks
its tenant's row and skips the instances another transaction holds (where writers interleave), so it never
deletes an instance a control (a restart) has just changed, nor races a workflow's or tenant's deletion.
"""

from __future__ import annotations

from typing import Any

from tenantflow.runtime.errors import NotFound
from tenantflow.runtime.records import InstanceKey
from tenantflow.runtime.retention import RETAINED, Retention
from tenantflow.runtime.store._sql import Tx, columns
from tenantflow.runtime.store.core import StoreCore
from tenantflow.runtime.store.purge import bounded, delete_instances
from tenantflow.runtime.store.tenants import lock_live_tenant


def _expired(status: str) -> str:
    return (
        "EXISTS (SELECT 1 FROM instances i WHERE i.tenant_id = r.tenant_id AND i.workflow = r.workflow "
        f"AND i.status = '{status}' AND i.finished_at < ? - r.{status}_s)"
    )


# The workflows after a (tenant_id, workflow) with an instance past its retention, in key order.
EXPIRED_WORKFLOWS = (
    "SELECT r.tenant_id, r.workflow FROM retention r WHERE (r.tenant_id, r.workflow) > (?, ?) "
    f"AND ({' OR '.join(_expired(status) for status in RETAINED)}) ORDER BY r.tenant_id, r.workflow LIMIT ?"
)


def _retention(tx: Tx, tenant_id: str, workflow: str) -> Retention | None:
    return tx.record(
        Retention,
        f"SELECT {columns(Retention)} FROM retention WHERE tenant_id = ? AND workflow = ?",
        (tenant_id, workflow),
    )


class Retentions(StoreCore):
    def set_retention(self, tenant_id: str, workflow: str, retention: Retention, now: float) -> None:
        """Replace the workflow's retention (all forever: none stored); NotFound without versions."""
        with self.transaction() as tx:
            lock_live_tenant(tx, tenant_id, self.for_update)  # a workflow's deletion takes turns with this
            if not tx.scalar(
                "SELECT 1 AS n FROM versions WHERE tenant_id = ? AND workflow = ? LIMIT 1", (tenant_id, workflow)
            ):
                raise NotFound(f"no workflow {workflow!r}")
            if retention.forever:
                tx.send("DELETE FROM retention WHERE tenant_id = ? AND workflow = ?", (tenant_id, workflow))
                return
            tx.send(
                "INSERT INTO retention (tenant_id, workflow, complete_s, errored_s, terminated_s, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, workflow) DO UPDATE SET "
                "complete_s = excluded.complete_s, errored_s = excluded.errored_s, "
                "terminated_s = excluded.terminated_s, updated_at = excluded.updated_at",
                (tenant_id, workflow, retention.complete_s, retention.errored_s, retention.terminated_s, now),
            )

    def retention(self, tenant_id: str, workflow: str) -> Retention:
        """The workflow's retention (kept forever when none is set)."""
        with self.read() as tx:
            return _retention(tx, tenant_id, workflow) or Retention()

    def expired_workflows(self, now: float, after: tuple[str, str], limit: int) -> list[tuple[str, str]]:
        """Up to `limit` (tenant_id, workflow), after `after` in key order, with an instance past its retention."""
        with self.read() as tx:
            rows = tx.execute(EXPIRED_WORKFLOWS, (*after, now, now, now, limit))
        return [(str(tenant_id), str(workflow)) for tenant_id, workflow in rows]

    def purge_expired(self, tenant_id: str, workflow: str, now: float, limit: int) -> list[InstanceKey]:
        """Delete, in one transaction, up to `limit` of the workflow's instances past its retention, oldest first
        per status, stopping early once their journals reach purge.PURGE_ROWS; the instances deleted. None for a
        tenant being deleted or a workflow whose retention is gone (its own purge deletes them)."""
        with self.transaction() as tx:
            try:
                lock_live_tenant(tx, tenant_id, self.for_update)
            except NotFound:
                return []
            retention = _retention(tx, tenant_id, workflow)
            if retention is None:
                return []
            rows: list[Any] = []
            for status in RETAINED:
                kept = retention.seconds(status)
                if kept is None or len(rows) >= limit:
                    continue
                rows += tx.execute(
                    "SELECT workflow, instance_id, steps FROM instances WHERE tenant_id = ? AND workflow = ? "
                    f"AND status = ? AND finished_at < ? ORDER BY finished_at LIMIT ? {self.skip_locked}",
                    (tenant_id, workflow, status, now - kept, limit - len(rows)),
                )
            keys = bounded(tenant_id, rows, limit)
            delete_instances(tx, keys)
            return keys
