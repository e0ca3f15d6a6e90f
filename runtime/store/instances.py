"""Instances: created in batches, read one with everything or many as summaries."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from tenantflow.runtime.errors import Conflict, NotFound, QuotaExceeded
from tenantflow.runtime.records import (
    STATUSES,
    Claim,
    Handoff,
    Instance,
    InstanceFilter,
    InstanceKey,
    ListPosition,
    Version,
)
from tenantflow.runtime.store import codec
from tenantflow.runtime.store._sql import KEY, Tx, columns, key_params
from tenantflow.runtime.store.core import StoreCore
from tenantflow.runtime.store.rows import BucketRow, CountRow, InstanceRow, StatusCountRow, SummaryRow, WorkflowCountRow
from tenantflow.runtime.store.scheduling import created_room
from tenantflow.runtime.store.tenants import lock_live_tenant
from tenantflow.runtime.store.usage import add_usage
from tenantflow.runtime.usage import day_of


def take_tokens(tx: Tx, for_update: str, tenant_id: str, per_minute: int, count: int, now: float) -> None:
    """Take `count` instance creations from the tenant's bucket of `per_minute` (QuotaExceeded if it holds fewer)."""
    bucket = tx.record(
        BucketRow, f"SELECT tokens, updated_at FROM creation_buckets WHERE tenant_id = ?{for_update}", (tenant_id,)
    )
    rate = per_minute / 60
    tokens = (
        float(per_minute)
        if bucket is None
        else min(float(per_minute), bucket.tokens + (now - bucket.updated_at) * rate)
    )
    if tokens < count:
        wait = (count - tokens) / rate if rate > 0 else 60.0
        raise QuotaExceeded(f"instance creation is limited to {per_minute} per minute", retry_after_s=wait)
    tx.send(
        "INSERT INTO creation_buckets (tenant_id, tokens, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (tenant_id) DO UPDATE SET tokens = excluded.tokens, updated_at = excluded.updated_at",
        (tenant_id, tokens - count, now),
    )


class Created(NamedTuple):
    """What a create did: the instances it created, the ids that were taken, the claims its hand-off took."""

    instances: list[Instance]
    taken: list[str]
    claims: list[Claim]


# The character after the greatest one an id may hold ('z'): every id that starts with a prefix sorts before the
# prefix followed by it.
ID_AFTER = "{"


class Instances(StoreCore):
    def create_instances(
        self,
        tenant_id: str,
        version: Version,
        items: Sequence[tuple[str, Any]],
        now: float,
        per_minute: int | None = None,
    ) -> list[Instance]:
        """All or nothing: Conflict (and none created) when an id is taken, also by a concurrent creation."""
        return self.create_available(tenant_id, version, items, now, per_minute, all_or_none=True).instances

    def create_available(
        self,
        tenant_id: str,
        version: Version,
        items: Sequence[tuple[str, Any]],
        now: float,
        per_minute: int | None = None,
        *,
        all_or_none: bool = False,
        handoff: Handoff | None = None,
        claimed: Callable[[Created], None] | None = None,
    ) -> Created:
        """Create the instances whose ids are free: those created, the ids that were taken, and the claims the
        hand-off took. With `all_or_none`, Conflict (and none created) when an id is taken, also by a concurrent
        creation.

        With `per_minute`, the tenant's creation rate is a token bucket of that size, refilled at that rate,
        kept in the database (every process takes from the same one): QuotaExceeded, and none created, when
        it holds fewer tokens than `items`.

        With `handoff` (free slots of the creating process's workers), the new instances are leased to it in
        this transaction, as many as it has slots and the tenant has room for, when no other instance is due
        (then the fair claim would take them first anyway): no claim of its own, no fsync of its own. `claimed`
        is called with them in the transaction, before its commit (their activations can start meanwhile); the
        call returns once it has committed, and raises if it has not."""

        with self.transaction() as tx:
            done = self._create(tx, tenant_id, version, items, now, per_minute, all_or_none, handoff)
            if claimed is not None and done.claims:
                claimed(done)
        if len(done.claims) < len(done.instances):
            self._notify()
        if done.instances:
            self._instances_added(tenant_id)
        return done

    def _create(
        self,
        tx: Tx,
        tenant_id: str,
        version: Version,
        items: Sequence[tuple[str, Any]],
        now: float,
        per_minute: int | None,
        all_or_none: bool,
        handoff: Handoff | None,
    ) -> Created:
        created = []
        lock_live_tenant(tx, tenant_id, self.for_update)
        if not tx.scalar(
            "SELECT 1 AS n FROM versions WHERE tenant_id = ? AND workflow = ? AND version = ?",
            (tenant_id, version.workflow, version.version),
        ):
            raise NotFound(f"no workflow {version.workflow!r}")  # deleted since its versions were read
        if per_minute is not None:
            take_tokens(tx, self.for_update, tenant_id, per_minute, len(items), now)
        # The first `leasing` are leased to the hand-off as they are inserted: running, fence 1, as a claim would
        # leave them (no update of their own: four index pages fewer in the create's commit).
        leasing = 0 if handoff is None else created_room(tx, tenant_id, len(items), handoff, now)
        owner, lease_until = (handoff.owner, now + handoff.lease_s) if handoff is not None else (None, None)
        inserts = []
        for index, (instance_id, params) in enumerate(items):
            blob = codec.encode(params)
            leased = index < leasing
            inserts.append(
                tx.send(
                    "INSERT INTO instances (tenant_id, workflow, instance_id, version, source_hash, status, "
                    "params, created_at, updated_at, wake_at, stored_bytes, lease_owner, lease_until, fence) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING instance_id",
                    (
                        tenant_id,
                        version.workflow,
                        instance_id,
                        version.version,
                        version.source_hash,
                        "running" if leased else "queued",
                        blob,
                        now,
                        now,
                        now,
                        len(blob),
                        owner if leased else None,
                        lease_until if leased else None,
                        1 if leased else 0,
                    ),
                )
            )
            created.append(
                Instance(
                    tenant_id,
                    version.workflow,
                    instance_id,
                    version.version,
                    version.source_hash,
                    "queued",
                    params,
                    created_at=now,
                    updated_at=now,
                    wake_at=now,
                    stored_bytes=len(blob),
                )
            )
        inserted = [insert.scalar() is not None for insert in inserts]
        taken = [i.instance_id for i, done in zip(created, inserted, strict=True) if not done]
        if taken and all_or_none:
            raise Conflict(f"instance {taken[0]!r} already exists")
        add_usage(tx, tenant_id, version.workflow, day_of(now), instances=len(created) - len(taken))
        new = [i for i, done in zip(created, inserted, strict=True) if done]
        claims = [Claim(i.key, 1) for i, done in zip(created[:leasing], inserted, strict=False) if done]
        return Created(new, taken, claims)

    def instance(self, key: InstanceKey) -> Instance:
        """One instance with everything (params, output, error, log), decoded after the read."""
        with self.read() as tx:
            row = tx.record(InstanceRow, f"SELECT {columns(InstanceRow)} FROM instances WHERE {KEY}", key_params(key))
        if row is None:
            raise NotFound(f"no instance {key.instance_id!r} of workflow {key.workflow!r}")
        return row.instance()

    def instances(
        self,
        tenant_id: str,
        where: InstanceFilter,
        limit: int,
        after: ListPosition | None = None,
        before: ListPosition | None = None,
    ) -> list[Instance]:
        """A page of summaries (`detail` False): no params, output or log, and of an error only its name and the
        start of its message, so a list never reads or decodes what an instance stores. Newest first; with
        `where.id_prefix`, by id then workflow, ascending. `after`: the page that follows that place in the
        order; `before`: the page that comes just before it (still in the list's order).

        Keyset paging: each list reads an index in its order (see the schema's list indexes), so a page costs
        its own rows, however many instances there are and however deep the page."""
        sql = f"SELECT {columns(SummaryRow)} FROM instances WHERE "
        conditions, params = self._conditions(tenant_id, where)
        sql += conditions
        bytewise = self.dialect["bytewise"]
        searching = where.id_prefix is not None
        if searching:
            # Ids across workflows by id, then workflow; one workflow's by id alone.
            order = [f"instance_id{bytewise}"] if where.workflow is not None else [f"instance_id{bytewise}", "workflow"]
            names = [column.split()[0] for column in order]
        else:
            # With one workflow, the order is (created_at, instance_id); across workflows the workflow comes between.
            order = (
                ["created_at", "instance_id"]
                if where.workflow is not None
                else ["created_at", "workflow", "instance_id"]
            )
            names = order
        place = after if after is not None else before
        # The list's order is descending, or ascending when searching; a page before a place reads backwards.
        descending = not searching
        backwards = after is None and before is not None
        if place is not None:
            less = descending != backwards
            if self.keyset_bound:
                # The row comparison is the exact keyset; `created_at <= ?` (or the id's) states its range on the
                # index's leading sort column in a form SQLite's planner seeks on.
                sql += f" AND {order[0]} {'<=' if less else '>='} ?"
                params.append(getattr(place, names[0]))
            sql += f" AND ({', '.join(order)}) {'<' if less else '>'} ({', '.join('?' * len(order))})"
            params += [getattr(place, name) for name in names]
        direction = "DESC" if descending != backwards else "ASC"
        sql += f" ORDER BY {', '.join(f'{column} {direction}' for column in order)} LIMIT ?"
        params.append(limit)
        with self.read() as tx:
            rows = tx.records(SummaryRow, sql, params)
        found = [r.instance() for r in rows]
        return found[::-1] if backwards else found

    def _conditions(self, tenant_id: str, where: InstanceFilter, status: bool = True) -> tuple[str, list[Any]]:
        """The WHERE of a list or a count (its filters; without `status`, not the status)."""
        sql = "tenant_id = ?"
        params: list[Any] = [tenant_id]
        for column, value in (("workflow", where.workflow), ("status", where.status if status else None)):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        if where.created_after is not None:
            sql += " AND created_at > ?"
            params.append(where.created_after)
        if where.created_before is not None:
            sql += " AND created_at < ?"
            params.append(where.created_before)
        if where.id_prefix is not None:
            # Every id that starts with the prefix sorts (by its bytes) from it to just before the prefix followed
            # by ID_AFTER: one range of the index by id.
            bytewise = self.dialect["bytewise"]
            sql += f" AND instance_id{bytewise} >= ? AND instance_id{bytewise} < ?"
            params += [where.id_prefix, where.id_prefix + ID_AFTER]
        return sql, params

    def count_instances(self, tenant_id: str, where: InstanceFilter, cap: int) -> dict[str, int]:
        """How many instances the filter matches in each status (only `where.status` if it names one), each
        counted up to `cap` + 1 (a count above `cap` means more than `cap`): every status reads at most that many
        entries of the index its list reads, however many instances there are."""
        conditions, params = self._conditions(tenant_id, where, status=False)
        parts: list[str] = []
        values: list[Any] = []
        for n, status in enumerate([where.status] if where.status is not None else STATUSES):
            parts.append(
                f"SELECT {n} AS place, COUNT(*) AS count FROM "
                f"(SELECT 1 AS one FROM instances WHERE {conditions} AND status = ? LIMIT ?) AS matched{n}"
            )
            values += [*params, status, cap + 1]
        with self.read() as tx:
            rows = tx.records(CountRow, " UNION ALL ".join(parts), values)
        statuses = [where.status] if where.status is not None else list(STATUSES)
        return {statuses[r.place]: int(r.count) for r in rows}

    def workflow_counts(self, tenant_id: str, workflow: str) -> dict[str, int]:
        """How many of a workflow's instances are in each status (from the index by status)."""
        with self.read() as tx:
            rows = tx.records(
                WorkflowCountRow,
                f"SELECT {columns(WorkflowCountRow)} FROM instances WHERE tenant_id = ? AND workflow = ? "
                "GROUP BY status",
                (tenant_id, workflow),
            )
        return {r.status: int(r.count) for r in rows}

    def status_counts(self) -> list[tuple[str, str, int]]:
        """(tenant_id, status, count) over all instances, for metrics."""
        with self.read() as tx:
            rows = tx.records(
                StatusCountRow,
                f"SELECT {columns(StatusCountRow)} FROM instances GROUP BY tenant_id, status",
            )
        return [(r.tenant_id, r.status, r.count) for r in rows]
