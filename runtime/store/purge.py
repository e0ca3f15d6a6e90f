"""Deleting instances with everything they store (journal, attempts, events), a bounded batch per
transaction: what deleting a tenant, a workflow or one instance, and a retention's purge share."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from tenantflow.runtime.records import InstanceKey
from tenantflow.runtime.store._sql import Tx
from tenantflow.runtime.store.schema import INSTANCE_TABLES
from tenantflow.runtime.store.usage import take_journal_bytes
from tenantflow.runtime.usage import day_of

# A batch stops taking instances once their journals reach this many rows (see `bounded`).
PURGE_ROWS = 5000


def delete_batch(tx: Tx, tenant_id: str, where: str, params: Sequence[Any], limit: int) -> list[InstanceKey]:
    """Delete, in `tx`, up to `limit` of the tenant's instances that match `where` (SQL that follows
    `tenant_id = ?`, e.g. " AND workflow = ?"), stopping early once their journals reach PURGE_ROWS; the
    instances deleted (none: none is left)."""
    rows = tx.execute(
        f"SELECT workflow, instance_id, steps FROM instances WHERE tenant_id = ?{where} "
        "ORDER BY workflow, instance_id LIMIT ?",
        (tenant_id, *params, limit),
    )
    keys = bounded(tenant_id, rows, limit)
    delete_instances(tx, keys)
    return keys


def bounded(tenant_id: str, rows: Iterable[Sequence[Any]], limit: int) -> list[InstanceKey]:
    """The instances of `rows` (workflow, instance_id, steps), in order, up to `limit`, stopping once their
    journals reach PURGE_ROWS (at least one instance: its own rows are bounded by the tenant's max_steps)."""
    keys: list[InstanceKey] = []
    budget = PURGE_ROWS
    for workflow, instance_id, steps in rows:
        if len(keys) >= limit or (keys and budget <= 0):
            break
        keys.append(InstanceKey(tenant_id, str(workflow), str(instance_id)))
        budget -= int(steps) + 1
    return keys


def delete_instances(tx: Tx, keys: Sequence[InstanceKey]) -> None:
    """Delete, in `tx`, these instances of one tenant with everything they store."""
    if not keys:
        return
    # Deletions take no clock of the caller's: what they remove leaves the usage on the day it goes.
    take_journal_bytes(tx, keys, day_of(time.time()))
    pairs = ", ".join("(?, ?)" for _ in keys)
    values = [v for key in keys for v in (key.workflow, key.instance_id)]
    for table in INSTANCE_TABLES:
        tx.run(
            f"DELETE FROM {table} WHERE tenant_id = ? AND (workflow, instance_id) IN (VALUES {pairs})",
            (keys[0].tenant_id, *values),
        )
