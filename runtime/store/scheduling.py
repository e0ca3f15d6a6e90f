"""Who runs what: claims (leases with a fence, fair across tenants), heartbeats, lease expiry, wake times.

These are the store's reads across tenants: what is due, and which leases are live or expired, found through
the scheduling indexes (`instances_wake` on wake_at, `instances_leases` on lease_until); everything they then
read or write of one tenant is keyed by tenant_id.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from tenantflow.runtime.records import Claim, Handoff, InstanceKey
from tenantflow.runtime.store._sql import KEY, Later, Tx, columns, key_params
from tenantflow.runtime.store.core import StoreCore
from tenantflow.runtime.store.rows import EndedRow, LiveRow, ReadyTenantRow, max_concurrent

# Reads across tenants name the scheduling column they go by, so that they are range reads of the
# scheduling index led by it (every running instance has a lease_until).
LEASES = "SELECT tenant_id, lease_until FROM instances WHERE status = 'running' AND lease_until IS NOT NULL"
# A queued or waiting instance is due at its wake time, unless a worker holds it parked (hot resume) on a live
# lease; a parked instance whose worker died is due once that lease has run out.
UNLEASED = "(lease_until IS NULL OR lease_until < ?)"
# Leased instances: running ones (the lease index) and parked ones (the parked index).
RUNNING_LEASED = "status = 'running' AND lease_until IS NOT NULL"
PARKED_LEASED = "status IN ('waiting', 'paused') AND lease_until IS NOT NULL"


# The live count given to a tenant marked deleted during a claim: more than any quota allows.
NO_ROOM = 1 << 62
# The earliest time any instance becomes runnable (see `Scheduling.next_wake`).
NEXT_WAKE = (
    "SELECT MIN(t) AS next_wake FROM (SELECT MIN(wake_at) AS t FROM instances "
    f"WHERE status IN ('queued', 'waiting') AND {UNLEASED} "
    "UNION ALL SELECT MIN(lease_until) AS t FROM instances WHERE status = 'running' "
    f"UNION ALL SELECT MIN(lease_until) AS t FROM instances WHERE {PARKED_LEASED}) AS due"
)


def nothing_due(tx: Tx, now: float) -> bool:
    """No instance of any tenant is runnable at `now` (three index seeks)."""
    at = tx.scalar(NEXT_WAKE, (now,))
    return at is None or float(at) > now


def created_room(tx: Tx, tenant_id: str, count: int, handoff: Handoff, now: float) -> int:
    """In the transaction that creates `count` instances (queued, due now) of `tenant_id`, whose tenant row it
    holds: how many of them to lease to the hand-off at once (inserted running), as many as its slots and the
    tenant's room allow (counted as a claim counts it), if nothing else is due (the fair claim would have chosen
    them too); else none."""
    if not count or not nothing_due(tx, now):
        return 0
    quotas = tx.scalar("SELECT quotas FROM tenants WHERE tenant_id = ?", (tenant_id,))
    live = tx.scalar(
        "SELECT COUNT(*) AS n FROM instances WHERE tenant_id = ? AND status = 'running' AND lease_until >= ?",
        (tenant_id, now),
    )
    room = min(max_concurrent(quotas), handoff.max_per_tenant) - int(live or 0)
    return max(0, min(room, handoff.slots, count))


def leased(leases: Sequence[tuple[InstanceKey, Later]]) -> list[Claim]:
    """The claims of leases taken in a transaction (read once their statements have run): those whose instance was
    still runnable."""
    return [Claim(key, int(fence)) for key, lease in leases if (fence := lease.scalar()) is not None]


class Scheduling(StoreCore):
    def next_wake(self, now: float = math.inf) -> float | None:
        """The earliest time any instance becomes runnable (its wake time, or the expiry of its lease if it
        runs or waits parked): three index-ordered minimums, since every idle worker asks about once a second.
        A parked instance's own wake (its lease is live at `now`; by default none is) is its worker's business."""
        with self.read() as tx:
            at = tx.scalar(NEXT_WAKE, (now,))
        return None if at is None else float(at)

    def claim(
        self,
        owner: str,
        limit: int,
        now: float,
        lease_s: float,
        running: Mapping[str, int] | None = None,
        *,
        max_per_tenant: int | None = None,
    ) -> list[Claim]:
        """Lease up to `limit` runnable instances, fairly across tenants.

        The tenant with the fewest activations running now (live leases, in every process) goes first,
        then round-robin: candidates are ordered by (running + their rank in the tenant's queue, due time).
        A tenant never runs more than min(its `max_concurrent`, `max_per_tenant`) at once, counted across
        processes. `running` is ignored (kept for old callers): the store counts live leases itself.
        """

        with self.transaction() as tx:
            leases = self._lease_next(tx, owner, limit, now, lease_s, max_per_tenant)
        return leased(leases)

    def _lease_next(
        self, tx: Tx, owner: str, limit: int, now: float, lease_s: float, cap: int | None
    ) -> list[tuple[InstanceKey, Later]]:
        """In `tx`: lease up to `limit` runnable instances as `claim` chooses them; read with `leased` after the
        commit."""
        rooms = self._tenant_rooms(tx, limit, now, cap)
        if not rooms:
            return []
        return [
            (candidate, self._lease(tx, candidate, owner, now, lease_s))
            for candidate in self._ranked_candidates(tx, rooms, limit, now)
        ]

    def _tenant_rooms(self, tx: Tx, limit: int, now: float, cap: int | None) -> dict[str, tuple[int, int]]:
        """(running, room) of up to `limit` tenants with runnable work and room, fewest running first.

        Live and expired leases are read from the lease index (`instances_leases`) once: few rows, one per
        activation running. Each tenant costs one index seek for its earliest wake time, however many
        instances wait."""
        ready = tx.records(
            ReadyTenantRow,
            f"WITH leases AS MATERIALIZED ({LEASES}), "
            "live AS (SELECT tenant_id, COUNT(*) AS n FROM leases WHERE lease_until >= ? GROUP BY tenant_id), "
            "expired AS (SELECT tenant_id, MIN(lease_until) AS at FROM leases WHERE lease_until < ? "
            "GROUP BY tenant_id), "
            "ready AS (SELECT t.tenant_id, t.quotas, COALESCE(l.n, 0) AS running, e.at AS expired_at, "
            "(SELECT MIN(d.wake_at) FROM instances d WHERE d.tenant_id = t.tenant_id "
            "AND d.status IN ('queued', 'waiting') AND (d.lease_until IS NULL OR d.lease_until < ?)) AS due_at "
            "FROM tenants t LEFT JOIN live l ON l.tenant_id = t.tenant_id "
            "LEFT JOIN expired e ON e.tenant_id = t.tenant_id WHERE t.deleted_at IS NULL) "
            f"SELECT {columns(ReadyTenantRow)} FROM ready WHERE due_at <= ? OR expired_at IS NOT NULL "
            "ORDER BY running, COALESCE(expired_at, due_at), tenant_id",
            (now, now, now, now),
        )
        chosen: list[tuple[str, int, int]] = []
        for tenant in ready:
            allowed = max_concurrent(tenant.quotas)
            if cap is not None:
                allowed = min(allowed, cap)
            if allowed > tenant.running:
                chosen.append((tenant.tenant_id, int(tenant.running), allowed))
                if len(chosen) == limit:
                    break
        live_now = self._lock_tenants(tx, sorted(t for t, _, _ in chosen), now)
        rooms: dict[str, tuple[int, int]] = {}
        for tenant_id, live, allowed in chosen:
            live = live_now.get(tenant_id, live)
            if allowed > live:
                rooms[tenant_id] = (live, min(allowed - live, limit))
        return rooms

    def _lock_tenants(self, tx: Tx, tenant_ids: list[str], now: float) -> dict[str, int]:
        """Where claims of several processes interleave: lock the tenants' rows (in a fixed order) and count
        their live leases again, so two processes never both fill a tenant's last slot. Where every writer
        takes its turn (no `for_update` clause), the count already read stands."""
        if not self.for_update or not tenant_ids:
            return {}
        marks = ", ".join("?" for _ in tenant_ids)
        locked = tx.run(
            f"SELECT tenant_id FROM tenants WHERE tenant_id IN ({marks}) AND deleted_at IS NULL "
            f"ORDER BY tenant_id{self.for_update}",
            tenant_ids,
        ).values()
        rows = tx.records(
            LiveRow,
            f"SELECT {columns(LiveRow)} FROM instances WHERE tenant_id IN ({marks}) AND status = 'running' "
            "AND lease_until >= ? GROUP BY tenant_id",
            (*tenant_ids, now),
        )
        live = dict.fromkeys(tenant_ids, 0)
        live.update((r.tenant_id, int(r.running)) for r in rows)
        # A tenant marked deleted since it was read: no room (its instances are being purged).
        for gone in set(tenant_ids) - set(locked):
            live[gone] = NO_ROOM
        return live

    def _ranked_candidates(
        self, tx: Tx, rooms: Mapping[str, tuple[int, int]], limit: int, now: float
    ) -> list[InstanceKey]:
        """The first runnable instances of each tenant, ranked within the tenant, best first."""
        quota_rows = ", ".join("(?, CAST(? AS INTEGER), CAST(? AS INTEGER))" for _ in rooms)
        due_parts: list[str] = []
        params: list[Any] = []
        for tenant_id, (live, room) in rooms.items():
            params += [tenant_id, live, room]
        for n, (tenant_id, (_, room)) in enumerate(rooms.items()):
            due_parts.append(
                "SELECT * FROM (SELECT tenant_id, workflow, instance_id, lease_until AS due_at FROM instances "
                f"WHERE tenant_id = ? AND status = 'running' AND lease_until < ? ORDER BY lease_until LIMIT ?) AS e{n}"
            )
            due_parts.append(
                "SELECT * FROM (SELECT tenant_id, workflow, instance_id, wake_at AS due_at FROM instances "
                f"WHERE tenant_id = ? AND status IN ('queued', 'waiting') AND wake_at <= ? AND {UNLEASED} "
                f"ORDER BY wake_at LIMIT ?) AS d{n}"
            )
            params += [tenant_id, now, room, tenant_id, now, now, room]
        params.append(limit)
        return tx.records(
            InstanceKey,
            f"WITH quota (tenant_id, running, room) AS (VALUES {quota_rows}), "
            f"due AS ({' UNION ALL '.join(due_parts)}), "
            "ranked AS (SELECT d.tenant_id, d.workflow, d.instance_id, d.due_at, q.running, q.room, "
            "ROW_NUMBER() OVER (PARTITION BY d.tenant_id ORDER BY d.due_at, d.workflow, d.instance_id) AS rank "
            "FROM due d JOIN quota q ON q.tenant_id = d.tenant_id) "
            f"SELECT {columns(InstanceKey)} FROM ranked WHERE rank <= room "
            "ORDER BY running + rank, due_at, tenant_id, workflow, instance_id LIMIT ?",
            params,
        )

    def _lease(self, tx: Tx, key: InstanceKey, owner: str, now: float, lease_s: float) -> Later:
        """Take the lease on one instance if it is still runnable (and not locked by another claim: that one
        gets it); its new fence, or no row."""
        runnable = (
            f"((status IN ('queued', 'waiting') AND wake_at <= ? AND {UNLEASED}) "
            "OR (status = 'running' AND lease_until < ?))"
        )
        return tx.send(
            "UPDATE instances SET status = 'running', lease_owner = ?, lease_until = ?, fence = fence + 1 "
            "WHERE (tenant_id, workflow, instance_id) IN (SELECT tenant_id, workflow, instance_id FROM instances "
            f"WHERE {KEY} AND {runnable} {self.skip_locked}) RETURNING fence",
            (owner, now + lease_s, *key_params(key), now, now, now),
        )

    def heartbeat(self, owner: str, claims: Sequence[Claim], lease_until: float) -> None:
        if not claims:
            return
        with self.transaction() as tx:
            for claim in claims:
                tx.send(
                    f"UPDATE instances SET lease_until = ? WHERE {KEY} AND fence = ? AND lease_owner = ?",
                    (lease_until, *key_params(claim.key), claim.fence, owner),
                )

    def expire_leases(self, owners: Sequence[str]) -> int:
        """Make the instances of dead workers runnable at once: running ones by an expired lease, parked ones
        by no lease at all (they wait as if their isolate had been evicted)."""
        if not owners:
            return 0
        with self.transaction() as tx:
            expired = [
                tx.send(
                    f"UPDATE instances SET lease_until = 0 WHERE {RUNNING_LEASED} AND lease_owner = ? "
                    "RETURNING instance_id",
                    (owner,),
                )
                for owner in owners
            ] + [
                tx.send(
                    "UPDATE instances SET lease_owner = NULL, lease_until = NULL "
                    f"WHERE {PARKED_LEASED} AND lease_owner = ? RETURNING instance_id",
                    (owner,),
                )
                for owner in owners
            ]
        count = sum(len(e.values()) for e in expired)
        if count:
            self._notify()
        return count

    def held(self, owner: str, claims: Sequence[Claim]) -> dict[Claim, EndedRow]:
        """The claims `owner` still holds (not terminated, restarted or taken over since they were claimed), each
        with its instance's status and wake time (whether a parked one is due)."""
        with self.transaction() as tx:
            found = [
                (
                    claim,
                    tx.send(
                        f"SELECT status, wake_at FROM instances WHERE {KEY} AND fence = ? AND lease_owner = ?",
                        (*key_params(claim.key), claim.fence, owner),
                    ),
                )
                for claim in claims
            ]
        rows = {claim: later.record(EndedRow) for claim, later in found}
        return {claim: row for claim, row in rows.items() if row is not None}

    def lease_owners(self) -> list[str]:
        with self.read() as tx:
            owners = {
                owner
                for leased in (RUNNING_LEASED, PARKED_LEASED)
                for owner in tx.run(f"SELECT DISTINCT lease_owner FROM instances WHERE {leased}").values()
            }
        return sorted(o for o in owners if o)
