"""Usage counters per (tenant, workflow, UTC day), upserted in the transaction of each write they count.

The step commit adds its step, attempt, fuel, wall time and journal bytes with its own fenced statement (one
upsert, applying only with the fence); an activation's end adds its activation, isolate start and replayed
positions with the instance's update; creating and forking count instances; a restart, a deletion and a
retention purge take the journal bytes they remove away again. Nothing else writes the table, so the counters
cannot drift from what they count.

Each (tenant, workflow, day) is `usage_shards` rows (`shard`, from the instance id): concurrent step commits of
one workflow's instances then seldom wait for each other's row lock (PostgreSQL holds it until the commit is
flushed); reads add the shards up.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tenantflow.runtime.records import InstanceKey
from tenantflow.runtime.store._sql import KEY, Tx, key_params
from tenantflow.runtime.store.core import StoreCore
from tenantflow.runtime.store.rows import CutRow
from tenantflow.runtime.usage import USAGE_COUNTERS, UsageCounts, UsageGroup, UsageLine

# The stored size of journal rows and of attempts, as the step commit counts them (see activation._entry_size).
JOURNAL_ROW_BYTES = (
    "COALESCE(LENGTH(result), 0) + LENGTH(name) + COALESCE(LENGTH(error_name), 0) + COALESCE(LENGTH(error_message), 0)"
)
ATTEMPT_ROW_BYTES = (
    "COALESCE(LENGTH(error_name), 0) + COALESCE(LENGTH(error_message), 0) + COALESCE(LENGTH(traceback), 0)"
)


def shard_of(instance_id: str, shards: int) -> int:
    return zlib.crc32(instance_id.encode()) % shards if shards > 1 else 0


def upsert_sql(counters: Sequence[str], condition: str = "TRUE", values: Sequence[str] = ()) -> str:
    """An upsert adding to `counters` (each a `?`, or its SQL in `values`) if `condition` holds; its parameters
    are tenant_id, workflow, day, shard, then the counters' in order."""
    given = list(values) or ["?"] * len(counters)
    added = ", ".join(f"{name} = usage.{name} + excluded.{name}" for name in counters)
    return (
        f"INSERT INTO usage (tenant_id, workflow, day, shard, {', '.join(counters)}) "
        f"SELECT ?, ?, ?, ?, {', '.join(given)} WHERE {condition} "
        f"ON CONFLICT (tenant_id, workflow, day, shard) DO UPDATE SET {added}"
    )


def add_usage(tx: Tx, tenant_id: str, workflow: str, day: str, shard: int = 0, **counts: float) -> None:
    """Add `counts` (counter: amount; zeros left out) to a usage row in `tx`."""
    given = {name: value for name, value in counts.items() if value}
    if given:
        tx.send(upsert_sql(list(given)), (tenant_id, workflow, day, shard, *given.values()))


@dataclass(frozen=True, slots=True)
class UsageRow:
    """A report's row: what it is for and the sums of its counters (SUM of a bigint is a numeric: cast back)."""

    key: str
    activations: Any
    isolate_starts: Any
    replayed_steps: Any
    steps: Any
    attempts: Any
    fuel: Any
    workflow_fuel: Any
    duration_ms: Any
    journal_bytes: Any
    instances: Any

    def line(self) -> UsageLine:
        counts = {name: int(getattr(self, name) or 0) for name in USAGE_COUNTERS if name != "duration_ms"}
        return UsageLine(str(self.key), UsageCounts(**counts, duration_ms=float(self.duration_ms or 0)))


_SUMS = ", ".join(f"SUM({name}) AS {name}" for name in USAGE_COUNTERS)
_GROUP = {"tenant": "tenant_id", "workflow": "workflow", "day": "day"}


def journal_part(tx: Tx, key: InstanceKey, first: int = 0, before: int | None = None) -> CutRow:
    """The instance's journal at positions `first`.. (up to `before`): its step.do calls, and what its rows and
    their attempts store (what a restart from a step removes, or what a fork copies)."""
    where = f"{KEY} AND position >= ?" + ("" if before is None else " AND position < ?")
    params = (*key_params(key), first) + (() if before is None else (before,))
    entries = tx.record(
        CutRow,
        "SELECT COUNT(CASE WHEN kind = 'do' THEN 1 END) AS steps, "
        f"COALESCE(SUM({JOURNAL_ROW_BYTES}), 0) AS bytes FROM journal WHERE {where}",
        params,
    )
    attempts = tx.scalar(f"SELECT COALESCE(SUM({ATTEMPT_ROW_BYTES}), 0) AS n FROM attempts WHERE {where}", params)
    assert entries is not None  # an aggregate always has its row
    return CutRow(int(entries.steps), int(entries.bytes) + int(attempts or 0))


def take_journal_bytes(tx: Tx, keys: Sequence[InstanceKey], day: str) -> None:
    """Count the journals of `keys` (instances of one tenant about to be deleted in `tx`) as removed on `day`."""
    if not keys:
        return
    pairs = ", ".join("(?, ?)" for _ in keys)
    values = [v for key in keys for v in (key.workflow, key.instance_id)]
    removed: dict[str, int] = {}
    for table, size in (("journal", JOURNAL_ROW_BYTES), ("attempts", ATTEMPT_ROW_BYTES)):
        rows = tx.execute(
            f"SELECT workflow, COALESCE(SUM({size}), 0) AS n FROM {table} WHERE tenant_id = ? "
            f"AND (workflow, instance_id) IN (VALUES {pairs}) GROUP BY workflow",
            (keys[0].tenant_id, *values),
        )
        for workflow, n in rows:
            removed[str(workflow)] = removed.get(str(workflow), 0) + int(n or 0)
    for workflow, n in sorted(removed.items()):
        add_usage(tx, keys[0].tenant_id, workflow, day, journal_bytes=-n)


class Usage(StoreCore):
    def usage(self, tenant_id: str | None, first: str, last: str, group_by: UsageGroup) -> list[UsageLine]:
        """The counters summed per tenant, workflow or day over the days `first`..`last` (YYYY-MM-DD, both
        included), in the order of the key: one tenant's, or (`tenant_id` None) every tenant's."""
        key = _GROUP[group_by]
        scope = "tenant_id = ?" if tenant_id is not None else "tenant_id IN (SELECT tenant_id FROM tenants)"
        params = (tenant_id, first, last) if tenant_id is not None else (first, last)
        with self.read() as tx:
            rows = tx.records(
                UsageRow,
                f"SELECT {key} AS key, {_SUMS} FROM usage WHERE {scope} AND day >= ? AND day <= ? "
                f"GROUP BY {key} ORDER BY {key}",
                params,
            )
        return [row.line() for row in rows]
