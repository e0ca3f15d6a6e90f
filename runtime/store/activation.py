"""An activation's reads and writes: load what it needs, commit each step, end it.

Every write on behalf of an activation is fenced: it applies only while the instance's `fence` is the one the
worker claimed it with, so a worker whose lease was taken over can no longer change anything. A step commit
and an activation's end are each written as statements that all check the fence themselves, so a dialect can
send them and their commit in one round trip (PostgreSQL: a step commit, or a batch of them, is one statement)
and the outcome is read after the commit: a lost lease committed nothing, and raises LeaseLost (or returns False)
then.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypedDict, Unpack

from tenantflow.runtime.records import (
    ERROR_SUMMARY_CHARS,
    FINISHED,
    ActivationState,
    AttemptRecord,
    Claim,
    Entry,
    EventRecord,
    Handoff,
    InstanceKey,
    Quotas,
)
from tenantflow.runtime.store import codec
from tenantflow.runtime.store._sql import APPLIED, KEY, Later, Statement, Tx, applied, columns, key_params
from tenantflow.runtime.store.rows import EndedRow, EntryRow, EventRow, FaultRow, InstanceRow, TenantRow
from tenantflow.runtime.store.scheduling import Scheduling, leased, nothing_due
from tenantflow.runtime.store.usage import shard_of, upsert_sql
from tenantflow.runtime.usage import day_of

logger = logging.getLogger("tenantflow.store")

HOST_FAULT = "HostFault"
# An activation that ends waiting for a timer due within this many seconds wakes the workers of other
# processes; timers further out are found by the workers' polling anyway.
NOTIFY_WITHIN_S = 1.0

# The instance is held with the claim's fence and may take steps (KEY, then the fence).
# Held by an activation: running, or paused (or about to be: `waiting_for_pause`) while it goes on.
HELD = f"{KEY} AND fence = ? AND status IN ('running', 'waiting_for_pause', 'paused')"
PAUSING_STATUSES = ("waiting_for_pause", "paused")
PAUSING = "('waiting_for_pause', 'paused')"
# What a journal row (of the table as `{j}`) stores, as `_entry_size` counts it.
ROW_SIZE_SQL = (
    "COALESCE(LENGTH({j}result), 0) + LENGTH({j}name) + COALESCE(LENGTH({j}error_name), 0) "
    "+ COALESCE(LENGTH({j}error_message), 0)"
)
# The stored size of the journal row at a position (0 if none).
ENTRY_SIZE_SQL = (
    f"COALESCE((SELECT {ROW_SIZE_SQL.format(j='j.')} FROM journal j WHERE j.tenant_id = ? AND j.workflow = ? "
    "AND j.instance_id = ? AND j.position = ?), 0)"
)
# What a finish replaces: the instance's current output, error and log.
FINISHED_SIZE_SQL = "COALESCE(LENGTH(output), 0) + COALESCE(LENGTH(error), 0) + COALESCE(LENGTH(log), 0)"
# A step commit's fenced write: the instance's step count and stored bytes, if it is held; a rollback's
# entry marks the instance as rolling back (after an error, unless a terminate asked for it).
STEP = (
    "UPDATE instances SET updated_at = ?, steps = steps + ?, "
    "rollback = CASE WHEN ? = 'rollback' THEN COALESCE(rollback, 'error') ELSE rollback END, "
    f"stored_bytes = stored_bytes + ? - {ENTRY_SIZE_SQL} WHERE {HELD} RETURNING status"
)
# What a step commit writes with its fenced write, each only if that applied: its journal row and its attempt, from
# parameters (`?`) or, for a batch, from arrays (`_unnest`).
JOURNAL_UPSERT = (
    "INSERT INTO journal (tenant_id, workflow, instance_id, position, name, kind, state, attempts, result, "
    "error_name, error_message, wake_at, event_type, fuel, duration_ms, created_at, updated_at, parent, occurrence, "
    f"attempt_limit) SELECT {{rows}} WHERE {APPLIED} "
    "ON CONFLICT (tenant_id, workflow, instance_id, position) DO UPDATE SET state = excluded.state, "
    "attempts = excluded.attempts, result = excluded.result, error_name = excluded.error_name, "
    "error_message = excluded.error_message, wake_at = excluded.wake_at, fuel = excluded.fuel, "
    "duration_ms = excluded.duration_ms, updated_at = excluded.updated_at, attempt_limit = excluded.attempt_limit"
)
ATTEMPT_INSERT = (
    "INSERT INTO attempts (tenant_id, workflow, instance_id, position, attempt, ok, error_name, "
    f"error_message, fuel, duration_ms, finished_at, traceback) SELECT {{rows}} WHERE {APPLIED} "
    "ON CONFLICT DO NOTHING"
)
UPSERT_ENTRY = JOURNAL_UPSERT.replace("{rows}", ", ".join("?" * 20))
INSERT_ATTEMPT = ATTEMPT_INSERT.replace("{rows}", ", ".join("?" * 12))
CONSUME_EVENT = f"UPDATE events SET consumed_at = ? WHERE {KEY} AND seq = ? AND {APPLIED}"
# The step commit's usage: its step, attempt and journal bytes (what it writes less what the position held: sent
# before the journal row's upsert, so that SQLite, running them in turn, still reads the row as it was).
STEP_USAGE = upsert_sql(
    ("steps", "attempts", "fuel", "duration_ms", "journal_bytes"),
    APPLIED,
    ("?", "?", "?", "?", f"? - {ENTRY_SIZE_SQL}"),
)
# A batch of journal writes of distinct positions (`Activation._batch`, where statements run at once): the sizes of
# the rows it replaces (BATCH_ROWS positions, padded with -1), its instance's write (its steps, and its stored bytes
# by what it writes less what its positions held), then, once that applied, each write's usage and its rows. The
# journal commits its pending writes at 64 (engine/journal.py MAX_PENDING_STEPS): more go one at a time.
BATCH_ROWS = 64
ROW_SIZES = (
    f"SELECT position, {ROW_SIZE_SQL.format(j='')} AS size FROM journal "
    f"WHERE {KEY} AND position IN ({', '.join('?' * BATCH_ROWS)})"
)
STEPS = (
    "UPDATE instances SET updated_at = ?, steps = steps + ?, "
    "rollback = CASE WHEN ? = 1 THEN COALESCE(rollback, 'error') ELSE rollback END, "
    f"stored_bytes = stored_bytes + ? WHERE {HELD} RETURNING status"
)
_USAGE_COUNTERS = ("steps", "attempts", "fuel", "duration_ms", "journal_bytes")
STEPS_USAGE = upsert_sql(_USAGE_COUNTERS, "TRUE")
# The same batch where statements are held back and writers interleave (PostgreSQL): one fenced statement, its
# rows as one array a column (`_batch_arrays`), whose parts see the journal as it was before it. The instance's
# stored bytes and each day's usage count what the batch writes less what its positions held.
POSITIONS_HELD = (
    f"COALESCE((SELECT SUM({ROW_SIZE_SQL.format(j='j.')}) FROM journal j WHERE j.tenant_id = ? AND j.workflow = ? "
    "AND j.instance_id = ? AND j.position IN (SELECT unnest(CAST(? AS INTEGER[])))), 0)"
)
STEPS_HELD = (
    "UPDATE instances SET updated_at = ?, steps = steps + ?, "
    "rollback = CASE WHEN ? = 1 THEN COALESCE(rollback, 'error') ELSE rollback END, "
    f"stored_bytes = stored_bytes + ? - {POSITIONS_HELD} WHERE {HELD} RETURNING status"
)
# The journal's columns after the key, each an array, and the type of its elements.
ENTRY_ARRAYS = (
    ("position", "INTEGER"),
    ("name", "TEXT"),
    ("kind", "TEXT"),
    ("state", "TEXT"),
    ("attempts", "INTEGER"),
    ("result", "BYTEA"),
    ("error_name", "TEXT"),
    ("error_message", "TEXT"),
    ("wake_at", "DOUBLE PRECISION"),
    ("event_type", "TEXT"),
    ("fuel", "BIGINT"),
    ("duration_ms", "DOUBLE PRECISION"),
    ("created_at", "DOUBLE PRECISION"),
    ("updated_at", "DOUBLE PRECISION"),
    ("parent", "INTEGER"),
    ("occurrence", "INTEGER"),
    ("attempt_limit", "INTEGER"),
)
ATTEMPT_ARRAYS = (
    ("position", "INTEGER"),
    ("attempt", "INTEGER"),
    ("ok", "INTEGER"),
    ("error_name", "TEXT"),
    ("error_message", "TEXT"),
    ("fuel", "BIGINT"),
    ("duration_ms", "DOUBLE PRECISION"),
    ("finished_at", "DOUBLE PRECISION"),
    ("traceback", "TEXT"),
)
USAGE_ARRAYS = (
    ("day", "TEXT"),
    ("position", "INTEGER"),
    ("steps", "BIGINT"),
    ("attempts", "BIGINT"),
    ("fuel", "BIGINT"),
    ("duration_ms", "DOUBLE PRECISION"),
    ("added", "BIGINT"),
)
_AS_PYTHON: dict[str, Callable[[Any], Any]] = {"INTEGER": int, "BIGINT": int, "DOUBLE PRECISION": float}


def _arrays(rows: Sequence[Sequence[Any]], arrays: Sequence[tuple[str, str]]) -> list[list[Any]]:
    """Rows as one list a column, each value of the column's Python type (psycopg types a list by its elements,
    and refuses one of mixed ints and floats)."""
    columns = []
    for values, (_, kind) in zip(zip(*rows, strict=True), arrays, strict=True):
        convert = _AS_PYTHON.get(kind)
        columns.append([v if convert is None or v is None else convert(v) for v in values])
    return columns


def _unnest(arrays: Sequence[tuple[str, str]]) -> str:
    """The columns of `r`, and `FROM` it: the arrays (one parameter each) as rows."""
    names = [name for name, _ in arrays]
    casts = ", ".join(f"CAST(? AS {kind}[])" for _, kind in arrays)
    return f"{', '.join(f'r.{name}' for name in names)} FROM unnest({casts}) AS r({', '.join(names)})"


ROWS_USAGE = (
    f"INSERT INTO usage (tenant_id, workflow, day, shard, {', '.join(_USAGE_COUNTERS)}) "
    "SELECT ?, ?, r.day, ?, SUM(r.steps), SUM(r.attempts), SUM(r.fuel), SUM(r.duration_ms), "
    f"SUM(r.added - COALESCE((SELECT {ROW_SIZE_SQL.format(j='j.')} FROM journal j WHERE j.tenant_id = ? "
    "AND j.workflow = ? AND j.instance_id = ? AND j.position = r.position), 0)) "
    f"FROM unnest({', '.join(f'CAST(? AS {kind}[])' for _, kind in USAGE_ARRAYS)}) "
    f"AS r({', '.join(name for name, _ in USAGE_ARRAYS)}) WHERE {APPLIED} GROUP BY r.day "
    "ON CONFLICT (tenant_id, workflow, day, shard) DO UPDATE SET "
    + ", ".join(f"{name} = usage.{name} + excluded.{name}" for name in _USAGE_COUNTERS)
)
UPSERT_ENTRIES = JOURNAL_UPSERT.replace("{rows}", f"?, ?, ?, {_unnest(ENTRY_ARRAYS)}")
INSERT_ATTEMPTS = ATTEMPT_INSERT.replace("{rows}", f"?, ?, ?, {_unnest(ATTEMPT_ARRAYS)}")
CONSUMED_ARRAYS = (("seq", "BIGINT"), ("position", "INTEGER"))
CONSUME_EVENTS = (
    "UPDATE events SET consumed_at = r.position FROM unnest(CAST(? AS BIGINT[]), CAST(? AS INTEGER[])) "
    "AS r(seq, position) WHERE events.tenant_id = ? "
    f"AND events.workflow = ? AND events.instance_id = ? AND events.seq = r.seq AND {APPLIED}"
)
# An activation's end: the activations, isolate starts and replayed positions it adds to its instance's.
END_USAGE = upsert_sql(("activations", "isolate_starts", "replayed_steps", "workflow_fuel"), APPLIED)


# What an activation loads.
LOAD_INSTANCE = f"SELECT {columns(InstanceRow)} FROM instances WHERE {KEY} AND fence = ?"
LOAD_SOURCE = (
    f"SELECT source FROM sources WHERE tenant_id = ? AND source_hash = (SELECT source_hash FROM instances WHERE {KEY})"
)
LOAD_TENANT = f"SELECT {columns(TenantRow)} FROM tenants WHERE tenant_id = ?"
LOAD_ENTRIES = f"SELECT {columns(EntryRow)} FROM journal WHERE {KEY} ORDER BY position"
LOAD_EVENTS = f"SELECT {columns(EventRow)} FROM events WHERE {KEY} AND consumed_at IS NULL ORDER BY seq"


class EndFields(TypedDict, total=False):
    """How an activation ends, besides its status (see `Activation.finish`)."""

    output: str | None
    error: dict[str, Any] | None
    wake_at: float | None
    waiting_for: str | None
    log: str
    replayed: int
    activations: int
    resumes: int
    workflow_fuel: int


class LeaseLost(Exception):
    """The worker no longer holds the instance (lease expired and taken over, or restarted)."""


def _entry_size(entry: Entry, result: bytes | None) -> int:
    """What a journal row stores; `ENTRY_SIZE_SQL` measures a stored row the same way."""
    return (
        (0 if result is None else len(result))
        + len(entry.name)
        + len(entry.error_name or "")
        + len(entry.error_message or "")
    )


def _attempt_size(attempt: AttemptRecord | None) -> int:
    if attempt is None:
        return 0
    return len(attempt.error_name or "") + len(attempt.error_message or "") + len(attempt.traceback or "")


def _wake(
    key: tuple[str, str, str], waiting_for: str | None, now: float, wake_at: float | None
) -> tuple[str, tuple[Any, ...]]:
    """The wake time an activation leaves its instance with, as SQL and its parameters: `wake_at`, or now if
    it waits for an event of type `waiting_for` that has already come."""
    if waiting_for is None:
        return "CAST(? AS DOUBLE PRECISION)", (wake_at,)
    sql = (
        "CASE WHEN EXISTS (SELECT 1 FROM events e WHERE e.tenant_id = ? AND e.workflow = ? "
        "AND e.instance_id = ? AND e.consumed_at IS NULL AND e.type = ?) "
        "THEN CAST(? AS DOUBLE PRECISION) ELSE CAST(? AS DOUBLE PRECISION) END"
    )
    return sql, (*key, waiting_for, now, wake_at)


def _error_columns(error: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """The error's name and the start of its message, as lists show them."""
    if error is None:
        return None, None
    return str(error.get("name"))[:ERROR_SUMMARY_CHARS], str(error.get("message"))[:ERROR_SUMMARY_CHARS]


def fenced_with_usage(
    tx: Tx, claim: Claim, now: float, counts: tuple[int, int, int, int], sql: str, params: tuple[Any, ...], shards: int
) -> Later:
    """An activation's end (`sql`, an UPDATE ... RETURNING of its instance) with its usage, which applies only
    with it: `counts` (replayed positions, activations, hot resumes, the workflow's fuel) as its instance counts
    them."""
    replayed, activations, resumes, workflow_fuel = counts
    if not (replayed or activations or resumes or workflow_fuel):
        return tx.send(sql, params)
    key = claim.key
    usage = (key.tenant_id, key.workflow, day_of(now), shard_of(key.instance_id, shards))
    added = (activations + resumes, activations, replayed, workflow_fuel)
    return tx.fenced(Statement(sql, params), [Statement(END_USAGE, (*usage, *added))])


class _Row:
    """One position's write, as its statements' parameters: its journal row, its attempt and the event it consumed
    (None if none); `added`, what it stores (the row and the attempt), and `size`, the row's part."""

    __slots__ = ("added", "attempt", "consumed", "done", "entry", "kind", "position", "size", "updated_at", "usage")

    def __init__(
        self, k: tuple[str, str, str], entry: Entry, attempt: AttemptRecord | None, consumed: int | None
    ) -> None:
        result = None if entry.result is None else codec.encode_text(entry.result)
        self.position, self.kind, self.updated_at = entry.position, entry.kind, entry.updated_at
        self.size = _entry_size(entry, result)
        self.added = self.size + _attempt_size(attempt)
        self.done = 1 if entry.state == "done" else 0
        # Usage: a step (a `step.do`'s, done), an attempt, its fuel and duration.
        self.usage = (
            self.done if entry.kind == "do" else 0,
            0 if attempt is None else 1,
            0 if attempt is None else attempt.fuel,
            0.0 if attempt is None else attempt.duration_ms,
        )
        self.entry = (
            *k,
            entry.position,
            entry.name,
            entry.kind,
            entry.state,
            entry.attempts,
            result,
            entry.error_name,
            entry.error_message,
            entry.wake_at,
            entry.event_type,
            entry.fuel,
            entry.duration_ms,
            entry.created_at,
            entry.updated_at,
            entry.parent,
            entry.occurrence,
            entry.attempt_limit,
        )
        self.attempt = (
            None
            if attempt is None
            else (
                *k,
                attempt.position,
                attempt.attempt,
                int(attempt.ok),
                attempt.error_name,
                attempt.error_message,
                attempt.fuel,
                attempt.duration_ms,
                attempt.finished_at,
                attempt.traceback,
            )
        )
        self.consumed = None if consumed is None else (entry.position, *k, consumed)


# What a batch writes once its fenced write applied (where statements run at once: `Tx.fenced`'s rule there).
UPSERT_ENTRY_NOW, INSERT_ATTEMPT_NOW, CONSUME_EVENT_NOW = map(applied, (UPSERT_ENTRY, INSERT_ATTEMPT, CONSUME_EVENT))


class Recording:
    """Journal writes that go first, in order, in another write's transaction (`Activation.recordings`): `status`,
    the instance's status the last of them found once they ran (None: the claim is no longer held, nothing was
    written). Each is written even if an earlier one found the instance being paused; the other write goes on
    unless they did not apply or the instance is being paused (what follows is then the pause's)."""

    def __init__(self, *writes: Callable[[Tx], Later]) -> None:
        self._writes = writes
        self.status: str | None = None
        # Whether a transaction has run them (a write given them may have made none).
        self.ran = False

    def __call__(self, tx: Tx) -> bool:
        self.ran = True
        # All sent before any is read (PostgreSQL pipelines them): each is fenced, so if one does not apply, none do.
        for written in [write(tx) for write in self._writes]:
            found = written.scalar()
            self.status = None if found is None else str(found)
        return self.status is not None and self.status not in PAUSING_STATUSES


def _held(claim: Claim, status: Any) -> str:
    """A journal write's status, or LeaseLost if it found the claim no longer held (None)."""
    if status is None:
        raise LeaseLost(f"{claim.key} is no longer held with fence {claim.fence}")
    return str(status)


class Activation(Scheduling):
    def load(self, claim: Claim) -> ActivationState:
        """Everything an activation needs; read in one snapshot, decoded after it."""
        k = key_params(claim.key)
        with self.snapshot() as tx:
            instance = tx.send(LOAD_INSTANCE, (*k, claim.fence))
            source = tx.send(LOAD_SOURCE, (claim.key.tenant_id, *k))
            tenant = tx.send(LOAD_TENANT, (claim.key.tenant_id,))
            entries = tx.send(LOAD_ENTRIES, k)
            events = tx.send(LOAD_EVENTS, k)
        row = instance.record(InstanceRow)
        if row is None:
            raise LeaseLost(f"{claim.key} is no longer held with fence {claim.fence}")
        tenant_row = tenant.record(TenantRow)
        return ActivationState(
            instance=row.instance(),
            source=codec.decode_text(source.scalar()) or "",
            entries={e.position: e for e in (r.entry() for r in entries.records(EntryRow))},
            events=[r.event() for r in events.records(EventRow)],
            quotas=tenant_row.tenant().quotas if tenant_row else Quotas(),
        )

    def record(
        self,
        claim: Claim,
        entry: Entry,
        attempt: AttemptRecord | None,
        now: float,
        consumed_event: int | None = None,
        before: Recording | None = None,
    ) -> str:
        """Write one journal position (and its attempt) durably; the instance's status, or LeaseLost.

        `before`: another position's write that goes first in the same commit; if it finds the instance being
        paused, this one is not written and its status (the pause's) is answered."""
        write = self._recording(claim, entry, attempt, now, consumed_event)
        if before is None:
            status = self.write(write).scalar()
        else:

            def both(tx: Tx) -> Any:
                return write(tx).scalar() if before(tx) else before.status

            status = self.write(both)
        return _held(claim, status)

    def record_all(self, claim: Claim, writes: Recording) -> str:
        """Commit `writes` (a `recordings`) alone: the instance's status they found, or LeaseLost."""
        self.write(writes)
        return _held(claim, writes.status)

    def recordings(self, claim: Claim, writes: Sequence[tuple[Entry, AttemptRecord | None, int | None]]) -> Recording:
        """Positions' writes (each at its entry's `updated_at`, with the event it consumed), in order, to go first
        in another's transaction: the activation's end (`finish_and_claim(before=)`), another position's write
        (`record(before=)`), a park (`park(before=)`), or alone (`record_all`). Where statements run at once
        (`immediate`), the writes of distinct positions go as one batch (`_batch`), which stores what they would,
        one after the other; a position written twice (an event wait's entry, then the event it consumed) goes
        write by write, the second counting what the first stored."""
        if len(writes) > 1 and len({entry.position for entry, _, _ in writes}) == len(writes):
            if not self.immediate:
                return Recording(self._batch_arrays(claim, writes))
            if len(writes) <= BATCH_ROWS:
                return Recording(self._batch(claim, writes))
        return Recording(
            *(self._recording(claim, entry, attempt, entry.updated_at, consumed) for entry, attempt, consumed in writes)
        )

    def _recording(
        self,
        claim: Claim,
        entry: Entry,
        attempt: AttemptRecord | None,
        now: float,
        consumed_event: int | None = None,
    ) -> Callable[[Tx], Later]:
        """`record`'s write, to run in a transaction: its result's scalar is the instance's status, None if the
        claim is no longer held.

        The fenced write is the instance's: its step count, and its stored bytes, by what this writes less what
        the position held before. The journal row, the attempt and the consumed event apply only with it (see
        `Tx.fenced`: on PostgreSQL, one statement)."""
        k = key_params(claim.key)
        row = _Row(k, entry, attempt, consumed_event)
        usage = Statement(
            STEP_USAGE,
            (
                *k[:2],
                day_of(now),
                shard_of(claim.key.instance_id, self.usage_shards),
                *row.usage,
                row.added,
                *k,
                entry.position,
            ),
        )
        then = [usage, Statement(UPSERT_ENTRY, row.entry)]
        if row.attempt is not None:
            then.append(Statement(INSERT_ATTEMPT, row.attempt))
        if row.consumed is not None:
            then.append(Statement(CONSUME_EVENT, row.consumed))
        step = Statement(STEP, (now, row.done, entry.kind, row.added, *k, entry.position, *k, claim.fence))
        return lambda tx: tx.fenced(step, then)

    def _batch(
        self, claim: Claim, writes: Sequence[tuple[Entry, AttemptRecord | None, int | None]]
    ) -> Callable[[Tx], Later]:
        """`_recording`'s writes of distinct positions as one: what the rows they replace held is read first (the
        statements run at once), so that the instance's step count and stored bytes are written once for all; then,
        if that applied, each write's usage (in order: the sums come out as one at a time) and its rows, many to a
        statement. The result's scalar is as `_recording`'s."""
        k = key_params(claim.key)
        rows = [_Row(k, entry, attempt, consumed) for entry, attempt, consumed in writes]
        shard = shard_of(claim.key.instance_id, self.usage_shards)
        padded = (*k, *(row.position for row in rows), *[-1] * (BATCH_ROWS - len(rows)))
        rollback = int(any(row.kind == "rollback" for row in rows))

        def write(tx: Tx) -> Later:
            held: dict[int, int] = {int(position): int(size) for position, size in tx.run(ROW_SIZES, padded).rows}
            written = [row.added - held.get(row.position, 0) for row in rows]
            steps = sum(row.done for row in rows)
            step = Statement(STEPS, (rows[-1].updated_at, steps, rollback, sum(written), *k, claim.fence))
            found = tx.fenced(step, ())
            if found.result().rows:
                usage = [
                    (*k[:2], day_of(row.updated_at), shard, *row.usage, size)
                    for row, size in zip(rows, written, strict=True)
                ]
                tx.send_many(STEPS_USAGE, usage)
                tx.send_many(UPSERT_ENTRY_NOW, [row.entry for row in rows])
                attempts = [row.attempt for row in rows if row.attempt is not None]
                if attempts:
                    tx.send_many(INSERT_ATTEMPT_NOW, attempts)
                consumed = [row.consumed for row in rows if row.consumed is not None]
                if consumed:  # most batches consume no event: no statement for none
                    tx.send_many(CONSUME_EVENT_NOW, consumed)
            return found

        return write

    def _batch_arrays(
        self, claim: Claim, writes: Sequence[tuple[Entry, AttemptRecord | None, int | None]]
    ) -> Callable[[Tx], Later]:
        """`_batch` where statements are held back (PostgreSQL): one fenced statement, whose parts all read the
        journal as it was before it, so what the positions held is subtracted in SQL; its rows go as one array a
        column. The result's scalar is as `_recording`'s."""
        k = key_params(claim.key)
        rows = [_Row(k, entry, attempt, consumed) for entry, attempt, consumed in writes]
        positions = [row.position for row in rows]
        step = Statement(
            STEPS_HELD,
            (
                rows[-1].updated_at,
                sum(row.done for row in rows),
                int(any(row.kind == "rollback" for row in rows)),
                sum(row.added for row in rows),
                *k,
                positions,
                *k,
                claim.fence,
            ),
        )
        usage = [(day_of(row.updated_at), row.position, *row.usage, row.added) for row in rows]
        shard = shard_of(claim.key.instance_id, self.usage_shards)
        then = [
            Statement(ROWS_USAGE, (*k[:2], shard, *k, *_arrays(usage, USAGE_ARRAYS))),
            Statement(UPSERT_ENTRIES, (*k, *_arrays([row.entry[3:] for row in rows], ENTRY_ARRAYS))),
        ]
        attempts = [row.attempt[3:] for row in rows if row.attempt is not None]
        if attempts:
            then.append(Statement(INSERT_ATTEMPTS, (*k, *_arrays(attempts, ATTEMPT_ARRAYS))))
        consumed = [(row.consumed[4], row.consumed[0]) for row in rows if row.consumed is not None]
        if consumed:
            then.append(Statement(CONSUME_EVENTS, (*_arrays(consumed, CONSUMED_ARRAYS), *k)))
        return lambda tx: tx.fenced(step, then)

    def finish(self, claim: Claim, now: float, *, status: str, **ending: Unpack[EndFields]) -> bool:
        """End an activation: complete, errored or waiting; False if the claim is no longer held. A paused
        instance stays paused (when it would wait) and a terminated one keeps its status.

        A normal end resets the count of host faults in a row; output, error and log replace the previous
        ones, in the stored bytes too. An instance that waits for an event that has already come wakes now.
        `replayed` journal positions, `activations` and hot `resumes` are added to the instance's counts."""
        return self.finish_and_claim(claim, now, None, status=status, **ending)[0]

    def finish_and_claim(
        self,
        claim: Claim,
        now: float,
        successor: Handoff | None,
        *,
        status: str,
        output: str | None = None,
        error: dict[str, Any] | None = None,
        wake_at: float | None = None,
        waiting_for: str | None = None,
        log: str = "",
        replayed: int = 0,
        activations: int = 1,
        resumes: int = 0,
        workflow_fuel: int = 0,
        before: Callable[[Tx], bool] | None = None,
    ) -> tuple[bool, list[Claim]]:
        """`finish`, and with `successor` the next runnable instances for the slots it offers (the claims a
        dispatcher would make now, fair across tenants), leased to its owner with the end: where every writer
        takes its turn (SQLite), in the end's own transaction, so that one commit does both; elsewhere in one
        of their own after it (a claim locks tenants' rows, which an end that holds its instance's row must
        not wait for). Whether the claim was still held, and what was leased.

        `before`: writes that go first in the end's transaction (the activation's pending journal writes, see
        `recordings`); if it answers False, the end is not written (what `before` wrote commits alone) and this
        answers (False, [])."""
        k = key_params(claim.key)
        output_blob = None if output is None else codec.encode_text(output)
        error_blob = None if error is None else codec.encode(error)
        log_blob = codec.encode_text(log) if log else None
        stored = sum(len(b) for b in (output_blob, error_blob, log_blob) if b is not None)
        wake, wake_params = _wake(k, waiting_for, now, wake_at)
        counts = (replayed, activations, resumes, workflow_fuel)

        # Where every writer takes its turn, the end's own transaction leases the successors too: one commit.
        chained = None if self.for_update else successor

        def write(tx: Tx) -> tuple[Later, Later, list[tuple[InstanceKey, Later]]] | None:
            if before is not None and not before(tx):
                return None
            # Read first (and, where writers interleave, lock): the update below then sees whatever committed
            # while this waited, a terminate or an event.
            held = tx.send(
                f"SELECT status FROM instances WHERE {KEY} AND fence = ?{self.for_update}", (*k, claim.fence)
            )
            ended = fenced_with_usage(
                tx,
                claim,
                now,
                counts,
                f"UPDATE instances SET status = CASE WHEN status IN {PAUSING} THEN ? ELSE ? END, output = ?, "
                f"error = ?, error_name = ?, error_summary = ?, wake_at = {wake}, waiting_for = ?, lease_owner = NULL, "
                "lease_until = NULL, log = ?, host_faults = 0, finished_at = ?, "
                f"stored_bytes = stored_bytes + ? - ({FINISHED_SIZE_SQL}), updated_at = ?, "
                "replayed_steps = replayed_steps + ?, activations = activations + ?, hot_resumes = hot_resumes + ?, "
                "workflow_fuel = workflow_fuel + ? "
                f"WHERE {KEY} AND fence = ? AND status <> 'terminated' RETURNING status, wake_at",
                (
                    "paused" if status == "waiting" else status,
                    status,
                    output_blob,
                    error_blob,
                    *_error_columns(error),
                    *wake_params,
                    waiting_for,
                    log_blob,
                    now if status in FINISHED else None,
                    stored,
                    now,
                    replayed,
                    activations,
                    resumes,
                    workflow_fuel,
                    *k,
                    claim.fence,
                ),
                self.usage_shards,
            )
            if chained is None or nothing_due(tx, now):
                return held, ended, []
            # The end stands whatever the claim does: a claim that fails is undone alone (the dispatcher claims).
            tx.run("SAVEPOINT successors")
            try:
                leases = self._lease_next(
                    tx, chained.owner, chained.slots, now, chained.lease_s, chained.max_per_tenant
                )
            except Exception:
                logger.exception("leasing what runs next failed; the dispatcher will claim")
                tx.run("ROLLBACK TO successors")
                leases = []
            tx.run("RELEASE successors")
            return held, ended, leases

        written = self.write(write)
        if written is None:
            return False, []
        held, ended, leases = written
        claims = leased(leases)
        ok = bool(held.result().rows)
        end_row = ended.record(EndedRow) if ok else None
        if end_row is not None and end_row.runnable_before(now + NOTIFY_WITHIN_S):
            self._notify()
        if successor is not None and chained is None:
            claims = self._claim_after(successor, now)
        return ok, claims

    def _claim_after(self, successor: Handoff, now: float) -> list[Claim]:
        """The claim of an end's successors in a transaction of its own (where writers interleave), if anything is
        due; a claim that fails leaves the slot to the dispatcher, the end being recorded already."""
        try:
            wake = self.next_wake(now)
            if wake is None or wake > now:
                return []
            return self.claim(
                successor.owner, successor.slots, now, successor.lease_s, max_per_tenant=successor.max_per_tenant
            )
        except Exception:
            logger.exception("leasing what runs next failed; the dispatcher will claim")
            return []

    def park(
        self,
        claim: Claim,
        now: float,
        *,
        wake_at: float | None,
        waiting_for: str | None,
        lease_until: float,
        log: str | None,
        replayed: int,
        activations: int,
        resumes: int = 0,
        workflow_fuel: int = 0,
        before: Recording | None = None,
    ) -> EndedRow | None:
        """The activation's isolate waits parked (hot resume): the instance is `waiting` (or stays `paused`)
        with its wake time, still leased by the claim's owner until `lease_until`. None if the claim is no
        longer held. As `finish`: an event already there for `waiting_for` makes it due now; `log` (None:
        unchanged) replaces the stored one; the counts are added. `before`: journal writes that go first in
        the same commit (a pause they find is the park's to keep: it leaves the instance `paused`)."""
        k = key_params(claim.key)
        wake, wake_params = _wake(k, waiting_for, now, wake_at)
        log_sql, log_params = "", ()  # type: tuple[str, tuple[Any, ...]]
        if log is not None:
            blob = codec.encode_text(log) if log else None
            log_sql = "log = ?, stored_bytes = stored_bytes + ? - COALESCE(LENGTH(log), 0), "
            log_params = (blob, 0 if blob is None else len(blob))

        def write(tx: Tx) -> Later | None:
            if before is not None and not before(tx) and before.status is None:
                return None
            return fenced_with_usage(
                tx,
                claim,
                now,
                (replayed, activations, resumes, workflow_fuel),
                f"UPDATE instances SET status = CASE WHEN status IN {PAUSING} THEN 'paused' ELSE 'waiting' END, "
                f"wake_at = {wake}, waiting_for = ?, lease_until = ?, {log_sql}host_faults = 0, updated_at = ?, "
                "replayed_steps = replayed_steps + ?, activations = activations + ?, hot_resumes = hot_resumes + ?, "
                "workflow_fuel = workflow_fuel + ? "
                f"WHERE {KEY} AND fence = ? AND status IN ('running', {PAUSING[1:-1]}) RETURNING status, wake_at",
                (
                    *wake_params,
                    waiting_for,
                    lease_until,
                    *log_params,
                    now,
                    replayed,
                    activations,
                    resumes,
                    workflow_fuel,
                    *k,
                    claim.fence,
                ),
                self.usage_shards,
            )

        parked = self.write(write)
        return None if parked is None else parked.record(EndedRow)

    def unpark(
        self, claim: Claim, now: float, lease_until: float, max_running: int
    ) -> tuple[EndedRow | None, list[EventRecord] | None]:
        """Take a parked instance back to `running` if it is due (or resumed meanwhile) and its tenant has room
        under `max_running` live activations: its row as found and, if taken, the events it has not consumed.
        The row is None when the claim is no longer held (terminated, restarted, taken over)."""
        k = key_params(claim.key)

        def write(tx: Tx) -> tuple[EndedRow | None, list[EventRecord] | None]:
            row = tx.record(
                EndedRow,
                f"SELECT status, wake_at FROM instances WHERE {KEY} AND fence = ?{self.for_update}",
                (*k, claim.fence),
            )
            if row is None:
                return None, None
            if not (row.status == "waiting" and row.due(now)) and row.status != "running":
                return row, None
            live = tx.scalar(
                "SELECT COUNT(*) FROM instances WHERE tenant_id = ? AND status = 'running' AND lease_until >= ? "
                f"AND NOT ({KEY})",
                (claim.key.tenant_id, now, *k),
            )
            if int(live or 0) >= max_running:
                return row, None
            tx.send(
                "UPDATE instances SET status = 'running', wake_at = NULL, waiting_for = NULL, lease_until = ?, "
                f"updated_at = ? WHERE {KEY} AND fence = ?",
                (lease_until, now, *k, claim.fence),
            )
            events = tx.records(EventRow, LOAD_EVENTS, k)
            return row, [event.event() for event in events]

        return self.write(write)

    def host_fault(self, claim: Claim, now: float, retry_at: float, max_faults: int) -> bool:
        """An activation failed in the host, not in the guest: count it and retry at `retry_at`, until
        `max_faults` in a row; then the instance is errored with HostFault. True when it was errored.

        A terminated instance, or one no longer held with this fence, is left alone (False)."""
        k = key_params(claim.key)

        def write(tx: Tx) -> bool:
            row = tx.record(
                FaultRow,
                f"SELECT {columns(FaultRow)} FROM instances WHERE {KEY} AND fence = ?{self.for_update}",
                (*k, claim.fence),
            )
            if row is None or row.status == "terminated":
                return False
            faults = row.host_faults + 1
            if faults >= max_faults:
                message = f"the activation failed in the host {faults} times in a row; the instance is errored"
                error = codec.encode({"name": HOST_FAULT, "message": message})
                tx.send(
                    "UPDATE instances SET status = 'errored', error = ?, error_name = ?, error_summary = ?, "
                    "host_faults = ?, wake_at = NULL, waiting_for = NULL, lease_owner = NULL, lease_until = NULL, "
                    "stored_bytes = stored_bytes + ? - COALESCE(LENGTH(error), 0), updated_at = ?, finished_at = ? "
                    f"WHERE {KEY} AND fence = ?",
                    (error, HOST_FAULT, message, faults, len(error), now, now, *k, claim.fence),
                )
                return True
            tx.send(
                "UPDATE instances SET status = ?, host_faults = ?, wake_at = ?, waiting_for = NULL, "
                f"lease_owner = NULL, lease_until = NULL, updated_at = ? WHERE {KEY} AND fence = ?",
                (
                    "paused" if row.status in ("paused", "waiting_for_pause") else "waiting",
                    faults,
                    retry_at,
                    now,
                    *k,
                    claim.fence,
                ),
            )
            return False

        return self.write(write)
