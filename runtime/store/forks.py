"""Forking an instance: a new instance whose journal is a copy of another's up to a step, in one transaction.

The copy is made by the database (INSERT ... SELECT), so it never passes through the process; its length is
bounded by the tenant's step quota, as the original's journal is.
"""

from __future__ import annotations

from tenantflow.runtime.errors import Conflict, NotFound
from tenantflow.runtime.records import Instance, InstanceKey, Version
from tenantflow.runtime.store import codec
from tenantflow.runtime.store._sql import KEY, Tx, columns, key_params
from tenantflow.runtime.store.core import StoreCore
from tenantflow.runtime.store.instances import take_tokens
from tenantflow.runtime.store.journal import cut_position
from tenantflow.runtime.store.rows import OriginalRow
from tenantflow.runtime.store.tenants import lock_live_tenant
from tenantflow.runtime.store.usage import add_usage, journal_part
from tenantflow.runtime.usage import day_of

# The columns a fork copies as they are, but for the instance id (the copy's).
JOURNAL_COLUMNS = (
    "position, name, kind, state, attempts, result, error_name, error_message, wake_at, event_type, fuel, "
    "duration_ms, created_at, updated_at, parent, occurrence, attempt_limit"
)
ATTEMPT_COLUMNS = "position, attempt, ok, error_name, error_message, fuel, duration_ms, finished_at, traceback"
EVENT_COLUMNS = "seq, type, payload, created_at, consumed_at, size"


class Forks(StoreCore):
    def fork(
        self,
        original: InstanceKey,
        instance_id: str,
        version: Version,
        from_step: tuple[str, int],
        now: float,
        per_minute: int | None = None,
    ) -> Instance:
        """A new instance `instance_id` of the original's workflow, running `version`, queued now: the original's
        params, its effective seed and clock origin (a replay of what was copied draws and reads the same), and a
        copy of its journal (with attempts) before the `from_step` (name, count) call, and of the events the
        copied waits consumed. The original is not changed.

        NotFound (no such instance or version), InvalidInput (no such call), Conflict (the id is taken),
        QuotaExceeded (the tenant's creation rate, a token bucket as `create_instances` takes from)."""
        tenant_id = original.tenant_id
        fork = InstanceKey(tenant_id, original.workflow, instance_id)
        with self.transaction() as tx:
            lock_live_tenant(tx, tenant_id, self.for_update)
            if not tx.scalar(
                "SELECT 1 AS n FROM versions WHERE tenant_id = ? AND workflow = ? AND version = ?",
                (tenant_id, version.workflow, version.version),
            ):
                raise NotFound(f"workflow {version.workflow!r} has no version {version.version}")
            row = tx.record(
                OriginalRow,
                f"SELECT {columns(OriginalRow)} FROM instances WHERE {KEY}{self.for_update}",
                key_params(original),
            )
            if row is None:
                raise NotFound(f"no instance {original.instance_id!r} of workflow {original.workflow!r}")
            at = cut_position(tx, original, *from_step, verb="fork")
            if per_minute is not None:
                take_tokens(tx, self.for_update, tenant_id, per_minute, 1, now)
            journal = journal_part(tx, original, 0, at)
            params = None if row.params is None else bytes(row.params)
            stored = journal.bytes + self._consumed_bytes(tx, original, at) + (0 if params is None else len(params))
            copied = row.instance(tenant_id)
            seed, clock = copied.seed_bytes().hex(), copied.clock_origin()
            inserted = tx.run(
                "INSERT INTO instances (tenant_id, workflow, instance_id, version, source_hash, status, params, "
                "created_at, updated_at, wake_at, steps, stored_bytes, seed, clock_start) "
                "VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING instance_id",
                (
                    *key_params(fork),
                    version.version,
                    version.source_hash,
                    params,
                    now,
                    now,
                    now,
                    journal.steps,
                    stored,
                    seed,
                    clock,
                ),
            )
            if inserted.scalar() is None:
                raise Conflict(f"instance {instance_id!r} already exists")
            # A copy is no new work (its steps, attempts and fuel are the original's), but it is an instance and
            # its journal is stored.
            add_usage(
                tx,
                tenant_id,
                original.workflow,
                day_of(now),
                instances=1,
                journal_bytes=journal.bytes,
            )
            copy = (instance_id, *key_params(original), at)
            tx.send(
                f"INSERT INTO journal (tenant_id, workflow, instance_id, {JOURNAL_COLUMNS}) "
                f"SELECT tenant_id, workflow, ?, {JOURNAL_COLUMNS} FROM journal WHERE {KEY} AND position < ?",
                copy,
            )
            tx.send(
                f"INSERT INTO attempts (tenant_id, workflow, instance_id, {ATTEMPT_COLUMNS}) "
                f"SELECT tenant_id, workflow, ?, {ATTEMPT_COLUMNS} FROM attempts WHERE {KEY} AND position < ?",
                copy,
            )
            tx.send(
                f"INSERT INTO events (tenant_id, workflow, instance_id, {EVENT_COLUMNS}) "
                f"SELECT tenant_id, workflow, ?, {EVENT_COLUMNS} FROM events WHERE {KEY} AND consumed_at < ?",
                copy,
            )
        self._notify()
        return Instance(
            tenant_id,
            original.workflow,
            instance_id,
            version.version,
            version.source_hash,
            "queued",
            codec.decode(params),
            created_at=now,
            updated_at=now,
            wake_at=now,
            steps=journal.steps,
            stored_bytes=stored,
            seed=seed,
            clock_start=clock,
        )

    @staticmethod
    def _consumed_bytes(tx: Tx, original: InstanceKey, at: int) -> int:
        """What the events taken by the waits before `at` store (copied with them, counted as a send counts)."""
        events = tx.scalar(
            "SELECT COALESCE(SUM(COALESCE(LENGTH(payload), 0) + LENGTH(type)), 0) AS bytes "
            f"FROM events WHERE {KEY} AND consumed_at < ?",
            (*key_params(original), at),
        )
        return int(events or 0)
