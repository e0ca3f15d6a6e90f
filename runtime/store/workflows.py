"""Workflows: numbered versions of a tenant's workflow, and the sources they run (stored once per hash)."""

from __future__ import annotations

from tenantflow.runtime.errors import InvalidState, NotFound, QuotaExceeded
from tenantflow.runtime.records import Version
from tenantflow.runtime.store import codec
from tenantflow.runtime.store._sql import columns
from tenantflow.runtime.store.core import StoreCore
from tenantflow.runtime.store.purge import delete_batch
from tenantflow.runtime.store.tenants import lock_live_tenant

# A deploy refused for the workflow quota may go through once a workflow is deleted: ask again after this.
WORKFLOWS_RETRY_AFTER_S = 60.0


class Workflows(StoreCore):
    def deploy(
        self,
        tenant_id: str,
        workflow: str,
        source: str,
        source_hash: str,
        now: float,
        max_workflows: int | None = None,
    ) -> tuple[Version, bool]:
        """Store a version; the latest one again (and False) when its source is the same. A new workflow
        beyond the tenant's `max_workflows` is QuotaExceeded."""
        with self.transaction() as tx:
            # Deploys of one tenant take turns (on its tenant row), so each gets the next version number; a
            # tenant marked deleted since its key was checked gets nothing stored.
            lock_live_tenant(tx, tenant_id, self.for_update)
            latest = tx.record(
                Version,
                f"SELECT {columns(Version)} FROM versions WHERE tenant_id = ? AND workflow = ? "
                "ORDER BY version DESC LIMIT 1",
                (tenant_id, workflow),
            )
            if latest and latest.source_hash == source_hash:
                return latest, False
            if latest is None and max_workflows is not None:
                # Counted under the tenant row's lock: two deploys of new workflows cannot both pass.
                count = tx.scalar(
                    "SELECT COUNT(*) AS n FROM (SELECT DISTINCT workflow FROM versions WHERE tenant_id = ?) w",
                    (tenant_id,),
                )
                if count >= max_workflows:
                    raise QuotaExceeded(
                        f"the tenant has {count} workflows, its quota (max_workflows); delete one to deploy another",
                        retry_after_s=WORKFLOWS_RETRY_AFTER_S,
                    )
            tx.run(
                "INSERT INTO sources (tenant_id, source_hash, source) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (tenant_id, source_hash, codec.encode_text(source)),
            )
            created = Version(workflow, (latest.version if latest else 0) + 1, source_hash, now)
            tx.run(
                "INSERT INTO versions (tenant_id, workflow, version, source_hash, created_at) VALUES (?, ?, ?, ?, ?)",
                (tenant_id, created.workflow, created.version, created.source_hash, created.created_at),
            )
        return created, True

    def delete_versions(self, tenant_id: str, workflow: str) -> int:
        """Delete a workflow's versions (and the sources no other version runs), if none of its instances is
        unfinished: from then on nothing of it can be created; its instances go after (`delete_instances`).
        InvalidState while one is queued, running, waiting or paused; NotFound without versions."""
        with self.transaction() as tx:
            lock_live_tenant(tx, tenant_id, self.for_update)  # deploys and creations of the tenant wait
            unfinished = tx.scalar(
                "SELECT COUNT(*) AS n FROM instances WHERE tenant_id = ? AND workflow = ? "
                "AND status IN ('queued', 'running', 'waiting', 'waiting_for_pause', 'paused')",
                (tenant_id, workflow),
            )
            if unfinished:
                raise InvalidState(
                    f"workflow {workflow!r} has {unfinished} unfinished instance(s); terminate them first"
                )
            hashes = tx.run(
                "SELECT DISTINCT source_hash FROM versions WHERE tenant_id = ? AND workflow = ?", (tenant_id, workflow)
            ).values()
            if not hashes:
                raise NotFound(f"no workflow {workflow!r}")
            tx.run("DELETE FROM versions WHERE tenant_id = ? AND workflow = ?", (tenant_id, workflow))
            tx.run("DELETE FROM retention WHERE tenant_id = ? AND workflow = ?", (tenant_id, workflow))
            for source_hash in hashes:
                tx.run(
                    "DELETE FROM sources WHERE tenant_id = ? AND source_hash = ? AND NOT EXISTS (SELECT 1 FROM "
                    "versions v WHERE v.tenant_id = ? AND v.source_hash = ?)",
                    (tenant_id, source_hash, tenant_id, source_hash),
                )
            return len(hashes)

    def delete_instances(self, tenant_id: str, workflow: str, limit: int) -> int:
        """Delete up to `limit` instances of a workflow whose versions are gone, with their journals, in one
        transaction (bounded in rows as a tenant's purge is); how many (0: none left)."""
        with self.transaction() as tx:
            if tx.scalar(
                "SELECT 1 AS n FROM versions WHERE tenant_id = ? AND workflow = ? LIMIT 1", (tenant_id, workflow)
            ):
                raise InvalidState(f"workflow {workflow!r} still has versions")
            return len(delete_batch(tx, tenant_id, " AND workflow = ?", (workflow,), limit))

    def versions(self, tenant_id: str, workflow: str, before: int | None, limit: int) -> list[Version]:
        """The workflow's newest `limit` versions numbered below `before` (None: all), newest first; NotFound
        if the workflow has no version at all."""
        with self.read() as tx:
            rows = tx.records(
                Version,
                f"SELECT {columns(Version)} FROM versions WHERE tenant_id = ? AND workflow = ? AND version < ? "
                "ORDER BY version DESC LIMIT ?",
                (tenant_id, workflow, before if before is not None else 1 << 62, limit),
            )
            if not rows and not tx.scalar(
                "SELECT 1 AS n FROM versions WHERE tenant_id = ? AND workflow = ? LIMIT 1", (tenant_id, workflow)
            ):
                raise NotFound(f"no workflow {workflow!r}")
        return rows

    def version(self, tenant_id: str, workflow: str, number: int) -> Version:
        """Version `number` of the workflow; NotFound if it has none such."""
        with self.read() as tx:
            found = tx.record(
                Version,
                f"SELECT {columns(Version)} FROM versions WHERE tenant_id = ? AND workflow = ? AND version = ?",
                (tenant_id, workflow, number),
            )
        if found is None:
            raise NotFound(f"workflow {workflow!r} has no version {number}")
        return found

    def latest_version(self, tenant_id: str, workflow: str) -> Version:
        """The workflow's newest version (one row, however many it has); NotFound if it has none."""
        with self.read() as tx:
            rows = tx.records(
                Version,
                f"SELECT {columns(Version)} FROM versions WHERE tenant_id = ? AND workflow = ? "
                "ORDER BY version DESC LIMIT 1",
                (tenant_id, workflow),
            )
        if not rows:
            raise NotFound(f"no workflow {workflow!r}")
        return rows[0]

    def workflows(self, tenant_id: str, after: str = "", limit: int = 1 << 31) -> list[Version]:
        """The latest version of each workflow named after `after`, by name, at most `limit` of them."""
        with self.read() as tx:
            return tx.records(
                Version,
                f"SELECT {columns(Version, 'v')} FROM versions v "
                "JOIN (SELECT workflow, MAX(version) AS version FROM versions WHERE tenant_id = ? AND workflow > ? "
                "GROUP BY workflow ORDER BY workflow LIMIT ?) m "
                "ON v.workflow = m.workflow AND v.version = m.version WHERE v.tenant_id = ? ORDER BY v.workflow",
                (tenant_id, after, limit, tenant_id),
            )

    def source(self, tenant_id: str, source_hash: str) -> str:
        with self.read() as tx:
            found = tx.run(
                "SELECT source FROM sources WHERE tenant_id = ? AND source_hash = ?", (tenant_id, source_hash)
            )
        if not found.rows:
            raise NotFound(f"no source {source_hash}")
        return codec.decode_text(found.scalar()) or ""
