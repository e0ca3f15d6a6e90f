"""The journal store: SQL shared by the SQLite and PostgreSQL backends.

Statements are written with `?` placeholders; a backend translates them.
Every write made on behalf of an activation is fenced: it only applies while
the instance's `fence` is the one the worker claimed it with, so a worker
whose lease was taken over can no longer change anything.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

from tenantflow.runtime.errors import Conflict, InvalidState, NotFound, QuotaExceeded
from tenantflow.runtime.records import (
    ERROR_SUMMARY_CHARS,
    FINISHED,
    MAX_BUFFERED_EVENT_BYTES,
    MAX_BUFFERED_EVENTS,
    ActivationState,
    AttemptRecord,
    Claim,
    Entry,
    EventRecord,
    Instance,
    InstanceKey,
    Quotas,
    Tenant,
    Version,
)
from tenantflow.runtime.store import codec
from tenantflow.runtime.store.schema import MIGRATIONS

Row = Sequence[Any]
T = TypeVar("T")

INSTANCE_COLUMNS = (
    "tenant_id, workflow, instance_id, version, source_hash, status, params, output, error, "
    "created_at, updated_at, wake_at, fence, steps, log, stored_bytes"
)
# A list's columns: no params, output or log, and of the error only its name and summary (an error stored
# before those columns existed is decoded only when it is small).
SUMMARY_COLUMNS = (
    "tenant_id, workflow, instance_id, version, source_hash, status, error_name, error_summary, "
    "created_at, updated_at, wake_at, fence, steps, stored_bytes, "
    "CASE WHEN error_name IS NULL AND LENGTH(error) <= ? THEN error END"
)
LEGACY_ERROR_BYTES = 64 << 10
ENTRY_COLUMNS = (
    "position, name, kind, state, attempts, result, error_name, error_message, wake_at, event_type, "
    "created_at, updated_at, fuel, duration_ms"
)
KEY = "tenant_id = ? AND workflow = ? AND instance_id = ?"
HOST_FAULT = "HostFault"
# The tenant's stored bytes are summed at most this often per store (the quota is checked on every write).
STORAGE_CACHE_S = 2.0
# A journal page holds at most this many bytes of entries (as stored), and always at least one entry.
JOURNAL_PAGE_BYTES = 8 << 20


class LeaseLost(Exception):
    """The worker no longer holds the instance (lease expired and taken over, or restarted)."""


class Tx(ABC):
    """One transaction: run statements, get rows."""

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = self.execute(sql, params)
        return rows[0] if rows else None


def _key(key: InstanceKey) -> tuple[str, str, str]:
    return (key.tenant_id, key.workflow, key.instance_id)


def _instance(row: Row) -> Instance:
    return Instance(
        tenant_id=row[0],
        workflow=row[1],
        instance_id=row[2],
        version=row[3],
        source_hash=row[4],
        status=row[5],
        params=codec.decode(row[6]),
        output=codec.decode(row[7]),
        error=codec.decode(row[8]),
        created_at=row[9],
        updated_at=row[10],
        wake_at=row[11],
        fence=row[12],
        steps=row[13],
        log=codec.decode_text(row[14]) or "",
        stored_bytes=row[15],
    )


def _event(row: Row) -> EventRecord:
    return EventRecord(row[0], row[1], codec.decode(row[2]), row[3], row[4])


@dataclass(frozen=True)
class JournalPage:
    entries: list[Entry]
    attempts: list[AttemptRecord]
    events: list[EventRecord]
    next_after: int | None  # pass as `after` for the next page; None on the last page


def _summary(row: Row) -> Instance:
    error: dict[str, Any] | None = None
    if row[6] is not None:
        error = {"name": row[6], "message": row[7] or ""}
    elif row[14] is not None:
        legacy = codec.decode(row[14])
        if isinstance(legacy, dict):
            error = {"name": str(legacy.get("name")), "message": str(legacy.get("message"))[:ERROR_SUMMARY_CHARS]}
    return Instance(
        tenant_id=row[0],
        workflow=row[1],
        instance_id=row[2],
        version=row[3],
        source_hash=row[4],
        status=row[5],
        params=None,
        error=error,
        created_at=row[8],
        updated_at=row[9],
        wake_at=row[10],
        fence=row[11],
        steps=row[12],
        detail=False,
        stored_bytes=row[13],
    )


def _error_columns(error: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """The error's name and the start of its message, as lists show them."""
    if error is None:
        return None, None
    return str(error.get("name"))[:ERROR_SUMMARY_CHARS], str(error.get("message"))[:ERROR_SUMMARY_CHARS]


def _entry_size(entry: Entry, result: bytes | None) -> int:
    """What a journal row stores; `_ENTRY_SIZE_SQL` measures a stored row the same way."""
    return (
        (0 if result is None else len(result))
        + len(entry.name)
        + len(entry.error_name or "")
        + len(entry.error_message or "")
    )


def _attempt_size(attempt: AttemptRecord | None) -> int:
    return 0 if attempt is None else len(attempt.error_name or "") + len(attempt.error_message or "")


def _entry(row: Row) -> Entry:
    return Entry(
        position=row[0],
        name=row[1],
        kind=row[2],
        state=row[3],
        attempts=row[4],
        result=codec.decode_text(row[5]),
        error_name=row[6],
        error_message=row[7],
        wake_at=row[8],
        event_type=row[9],
        created_at=row[10],
        updated_at=row[11],
        fuel=row[12],
        duration_ms=row[13],
    )


QUOTA_FIELDS = frozenset(f.name for f in fields(Quotas))
# The stored size of the journal row at a position (0 if none), as `_entry_size` counts it.
_ENTRY_SIZE_SQL = (
    "COALESCE((SELECT COALESCE(LENGTH(j.result), 0) + LENGTH(j.name) + COALESCE(LENGTH(j.error_name), 0) "
    "+ COALESCE(LENGTH(j.error_message), 0) FROM journal j WHERE j.tenant_id = ? AND j.workflow = ? "
    "AND j.instance_id = ? AND j.position = ?), 0)"
)
# What a finish replaces: the instance's current output, error and log.
_FINISHED_SIZE_SQL = "COALESCE(LENGTH(output), 0) + COALESCE(LENGTH(error), 0) + COALESCE(LENGTH(log), 0)"


@functools.lru_cache(maxsize=4096)
def _max_concurrent(quotas: str) -> int:
    """A tenant's max_concurrent from its stored quotas (parsed once per distinct text: claims read it often)."""
    return int(json.loads(quotas).get("max_concurrent", Quotas.max_concurrent))


def _tenant(row: Row) -> Tenant:
    quotas = {k: v for k, v in json.loads(row[2]).items() if k in QUOTA_FIELDS}
    quotas["egress"] = tuple(quotas.get("egress", ()))
    return Tenant(tenant_id=row[0], name=row[1], quotas=Quotas(**quotas), created_at=row[3], operator=bool(row[4]))


class SQLStore(ABC):
    """Everything the runtime stores, for any SQL backend."""

    dialect: dict[str, str]
    skip_locked = ""
    # Appended to the reads that decide a write (a control's status check, finish): where transactions
    # do not serialize all writers (PostgreSQL), they lock the instance row so nothing changes under them.
    for_update = ""
    # Guards every store's cache of stored bytes per tenant (see `stored_bytes`).
    _storage_lock = threading.Lock()

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Tx]: ...

    @abstractmethod
    def close(self) -> None: ...

    def write(self, fn: Callable[[Tx], T]) -> T:
        """Run `fn` in a write transaction; backends may commit several callers' writes together."""
        with self.transaction() as tx:
            return fn(tx)

    def listen(self, callback: Callable[[], None]) -> None:
        """Call `callback` when another process may have made work runnable; backends without
        notifications (SQLite) do nothing and the workers' polling finds the work."""
        return None

    # -- schema ------------------------------------------------------------

    def migrate(self) -> None:
        with self.transaction() as tx:
            tx.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
            row = tx.one("SELECT MAX(version) FROM schema_migrations")
            current = row[0] if row and row[0] is not None else 0
            for number, statements in enumerate(MIGRATIONS, start=1):
                if number <= current:
                    continue
                for statement in statements:
                    tx.execute(statement.format(**self.dialect))
                tx.execute("INSERT INTO schema_migrations (version) VALUES (?)", (number,))

    # -- tenants -----------------------------------------------------------

    def create_tenant(self, tenant: Tenant, key_hash: str) -> None:
        with self.transaction() as tx:
            tx.execute(
                "INSERT INTO tenants (tenant_id, name, key_hash, quotas, operator, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    tenant.tenant_id,
                    tenant.name,
                    key_hash,
                    json.dumps(asdict(tenant.quotas)),
                    int(tenant.operator),
                    tenant.created_at,
                ),
            )

    def tenant_by_key(self, key_hash: str) -> Tenant | None:
        with self.transaction() as tx:
            row = tx.one(
                "SELECT tenant_id, name, quotas, created_at, operator FROM tenants WHERE key_hash = ?", (key_hash,)
            )
        return _tenant(row) if row else None

    def tenant(self, tenant_id: str) -> Tenant:
        with self.transaction() as tx:
            row = tx.one(
                "SELECT tenant_id, name, quotas, created_at, operator FROM tenants WHERE tenant_id = ?", (tenant_id,)
            )
        if row is None:
            raise NotFound(f"no tenant {tenant_id!r}")
        return _tenant(row)

    def tenants(self) -> list[Tenant]:
        with self.transaction() as tx:
            rows = tx.execute("SELECT tenant_id, name, quotas, created_at, operator FROM tenants ORDER BY created_at")
        return [_tenant(r) for r in rows]

    # -- workflows ---------------------------------------------------------

    def deploy(self, tenant_id: str, workflow: str, source: str, source_hash: str, now: float) -> tuple[Version, bool]:
        """Store a version; the latest one again (and False) when its source is the same."""
        with self.transaction() as tx:
            latest = tx.one(
                "SELECT version, source_hash, created_at FROM versions WHERE tenant_id = ? AND workflow = ? "
                "ORDER BY version DESC LIMIT 1",
                (tenant_id, workflow),
            )
            if latest and latest[1] == source_hash:
                return Version(workflow, latest[0], latest[1], latest[2]), False
            tx.execute(
                "INSERT INTO sources (tenant_id, source_hash, source) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (tenant_id, source_hash, codec.encode_text(source)),
            )
            number = (latest[0] if latest else 0) + 1
            tx.execute(
                "INSERT INTO versions (tenant_id, workflow, version, source_hash, created_at) VALUES (?, ?, ?, ?, ?)",
                (tenant_id, workflow, number, source_hash, now),
            )
        return Version(workflow, number, source_hash, now), True

    def versions(self, tenant_id: str, workflow: str) -> list[Version]:
        with self.transaction() as tx:
            rows = tx.execute(
                "SELECT workflow, version, source_hash, created_at FROM versions WHERE tenant_id = ? AND workflow = ? "
                "ORDER BY version",
                (tenant_id, workflow),
            )
        if not rows:
            raise NotFound(f"no workflow {workflow!r}")
        return [Version(*r) for r in rows]

    def workflows(self, tenant_id: str) -> list[Version]:
        """The latest version of each workflow."""
        with self.transaction() as tx:
            rows = tx.execute(
                "SELECT v.workflow, v.version, v.source_hash, v.created_at FROM versions v "
                "JOIN (SELECT workflow, MAX(version) AS version FROM versions WHERE tenant_id = ? GROUP BY workflow) m "
                "ON v.workflow = m.workflow AND v.version = m.version WHERE v.tenant_id = ? ORDER BY v.workflow",
                (tenant_id, tenant_id),
            )
        return [Version(*r) for r in rows]

    def source(self, tenant_id: str, source_hash: str) -> str:
        with self.transaction() as tx:
            row = tx.one("SELECT source FROM sources WHERE tenant_id = ? AND source_hash = ?", (tenant_id, source_hash))
        if row is None:
            raise NotFound(f"no source {source_hash}")
        return codec.decode_text(row[0]) or ""

    # -- instances ---------------------------------------------------------

    def create_instances(
        self, tenant_id: str, version: Version, items: Sequence[tuple[str, Any]], now: float
    ) -> list[Instance]:
        created = []
        with self.transaction() as tx:
            for instance_id, params in items:
                exists = tx.one(f"SELECT 1 FROM instances WHERE {KEY}", (tenant_id, version.workflow, instance_id))
                if exists:
                    raise Conflict(f"instance {instance_id!r} already exists")
                blob = codec.encode(params)
                tx.execute(
                    "INSERT INTO instances (tenant_id, workflow, instance_id, version, source_hash, status, params, "
                    "created_at, updated_at, wake_at, stored_bytes) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
                    (
                        tenant_id,
                        version.workflow,
                        instance_id,
                        version.version,
                        version.source_hash,
                        blob,
                        now,
                        now,
                        now,
                        len(blob),
                    ),
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
                    )
                )
        return created

    def instance(self, key: InstanceKey) -> Instance:
        """One instance with everything (params, output, error, log), decoded after the read."""
        with self.transaction() as tx:
            row = tx.one(f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE {KEY}", _key(key))
        if row is None:
            raise NotFound(f"no instance {key.instance_id!r} of workflow {key.workflow!r}")
        return _instance(row)

    def instances(
        self, tenant_id: str, workflow: str, status: str | None, limit: int, after: str | None
    ) -> list[Instance]:
        """A page of summaries (`detail` False): no params, output or log, and of an error only its name and
        the start of its message, so a list never reads or decodes what an instance stores."""
        sql = f"SELECT {SUMMARY_COLUMNS} FROM instances WHERE tenant_id = ? AND workflow = ?"
        params: list[Any] = [LEGACY_ERROR_BYTES, tenant_id, workflow]
        if status:
            sql += " AND status = ?"
            params.append(status)
        if after:
            sql += " AND instance_id > ?"
            params.append(after)
        sql += " ORDER BY instance_id LIMIT ?"
        params.append(limit)
        with self.transaction() as tx:
            rows = tx.execute(sql, params)
        return [_summary(r) for r in rows]

    def status_counts(self) -> list[tuple[str, str, int]]:
        """(tenant_id, status, count) over all instances, for metrics."""
        with self.transaction() as tx:
            rows = tx.execute("SELECT tenant_id, status, COUNT(*) FROM instances GROUP BY tenant_id, status")
        return [(r[0], r[1], r[2]) for r in rows]

    # -- controls ----------------------------------------------------------

    def _status(self, tx: Tx, key: InstanceKey) -> str:
        row = tx.one(f"SELECT status FROM instances WHERE {KEY}{self.for_update}", _key(key))
        if row is None:
            raise NotFound(f"no instance {key.instance_id!r} of workflow {key.workflow!r}")
        return str(row[0])

    def pause(self, key: InstanceKey, now: float) -> None:
        with self.transaction() as tx:
            status = self._status(tx, key)
            if status not in ("queued", "running", "waiting"):
                raise InvalidState(f"cannot pause an instance that is {status}")
            tx.execute(f"UPDATE instances SET status = 'paused', updated_at = ? WHERE {KEY}", (now, *_key(key)))

    def resume(self, key: InstanceKey, now: float) -> None:
        with self.transaction() as tx:
            status = self._status(tx, key)
            if status != "paused":
                raise InvalidState(f"cannot resume an instance that is {status}")
            # Still held by a worker (paused mid-activation): it goes on running. Otherwise it is replayed
            # now, and the replay finds out what it waits for (a timer, an event that came while paused).
            tx.execute(
                "UPDATE instances SET status = CASE WHEN lease_owner IS NOT NULL AND lease_until > ? THEN 'running' "
                f"ELSE 'queued' END, wake_at = ?, updated_at = ? WHERE {KEY}",
                (now, now, now, *_key(key)),
            )

    def terminate(self, key: InstanceKey, now: float) -> None:
        with self.transaction() as tx:
            status = self._status(tx, key)
            if status in FINISHED:
                raise InvalidState(f"cannot terminate an instance that is {status}")
            tx.execute(
                f"UPDATE instances SET status = 'terminated', wake_at = NULL, waiting_for = NULL, lease_owner = NULL, "
                f"lease_until = NULL, updated_at = ? WHERE {KEY}",
                (now, *_key(key)),
            )

    def restart(self, key: InstanceKey, now: float) -> None:
        """From scratch with the same params and version: the journal and events go, the fence moves on."""
        with self.transaction() as tx:
            self._status(tx, key)
            for table in ("journal", "attempts", "events"):
                tx.execute(f"DELETE FROM {table} WHERE {KEY}", _key(key))
            tx.execute(
                "UPDATE instances SET status = 'queued', output = NULL, error = NULL, error_name = NULL, "
                "error_summary = NULL, wake_at = ?, waiting_for = NULL, lease_owner = NULL, lease_until = NULL, "
                "fence = fence + 1, steps = 0, log = NULL, host_faults = 0, "
                f"stored_bytes = COALESCE(LENGTH(params), 0), updated_at = ? WHERE {KEY}",
                (now, now, *_key(key)),
            )

    def send_event(self, key: InstanceKey, event_type: str, payload: Any, now: float) -> int:
        """Buffer an event for the instance; QuotaExceeded (429) when it already holds MAX_BUFFERED_EVENTS
        events it has not consumed, or their payloads would pass MAX_BUFFERED_EVENT_BYTES (as JSON)."""
        text = json.dumps(payload)
        size = len(text.encode())
        blob = codec.encode_text(text)
        with self.transaction() as tx:
            status = self._status(tx, key)  # locks the instance row where needed: the check and insert are one
            if status in FINISHED:
                raise InvalidState(f"cannot send an event to an instance that is {status}")
            self._check_buffered_events(tx, key, size)
            row = tx.one(f"SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE {KEY}", _key(key))
            seq = int(row[0]) if row else 1
            tx.execute(
                "INSERT INTO events (tenant_id, workflow, instance_id, seq, type, payload, created_at, size) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (*_key(key), seq, event_type, blob, now, size),
            )
            tx.execute(
                f"UPDATE instances SET stored_bytes = stored_bytes + ? WHERE {KEY}",
                (len(blob) + len(event_type), *_key(key)),
            )
            tx.execute(
                f"UPDATE instances SET wake_at = ?, updated_at = ? WHERE {KEY} AND status = 'waiting' "
                f"AND waiting_for = ?",
                (now, now, *_key(key), event_type),
            )
        return seq

    def _check_buffered_events(self, tx: Tx, key: InstanceKey, size: int) -> None:
        row = tx.one(
            "SELECT COUNT(*), COALESCE(SUM(COALESCE(size, LENGTH(payload))), 0) FROM events "
            f"WHERE {KEY} AND consumed_at IS NULL",
            _key(key),
        )
        count, buffered = (int(row[0]), int(row[1])) if row else (0, 0)
        if count >= MAX_BUFFERED_EVENTS:
            raise QuotaExceeded(
                f"instance {key.instance_id!r} already holds {count} events it has not consumed "
                f"(at most {MAX_BUFFERED_EVENTS}); send more once it has waited for some"
            )
        if buffered + size > MAX_BUFFERED_EVENT_BYTES:
            raise QuotaExceeded(
                f"instance {key.instance_id!r} already holds {buffered} bytes of events it has not consumed; "
                f"with this one they would pass {MAX_BUFFERED_EVENT_BYTES} bytes"
            )

    # -- storage -------------------------------------------------------------

    def stored_bytes(self, tenant_id: str, max_age_s: float = STORAGE_CACHE_S) -> int:
        """What the tenant's instances and sources store, in bytes (as stored, i.e. compressed); summed at most
        every `max_age_s` by this store object, so checking it on every write is cheap."""
        cache = self._storage_cache()
        with self._storage_lock:
            cached = cache.get(tenant_id)
        if cached is not None and time.monotonic() - cached[1] < max_age_s:
            return cached[0]
        with self.transaction() as tx:
            row = tx.one(
                "SELECT (SELECT COALESCE(SUM(stored_bytes), 0) FROM instances WHERE tenant_id = ?) + "
                "(SELECT COALESCE(SUM(LENGTH(source)), 0) FROM sources WHERE tenant_id = ?)",
                (tenant_id, tenant_id),
            )
        total = int(row[0]) if row and row[0] is not None else 0
        with self._storage_lock:
            cache[tenant_id] = (total, time.monotonic())
        return total

    def storage_exhausted(self, tenant_id: str, quotas: Quotas) -> bool:
        return self.stored_bytes(tenant_id) >= quotas.max_stored_bytes

    def _storage_cache(self) -> dict[str, tuple[int, float]]:
        cache: dict[str, tuple[int, float]] = self.__dict__.setdefault("_storage", {})
        return cache

    # -- the journal, read ---------------------------------------------------

    def journal(
        self, key: InstanceKey, after: int = -1, limit: int = 1000
    ) -> tuple[list[Entry], list[AttemptRecord], list[EventRecord]]:
        """The first page of the journal after position `after` (see `journal_page`)."""
        page = self.journal_page(key, after, limit)
        return page.entries, page.attempts, page.events

    def journal_page(self, key: InstanceKey, after: int = -1, limit: int = 1000) -> JournalPage:
        """Entries at positions > `after`, at most `limit` of them and JOURNAL_PAGE_BYTES of results and messages
        (decoded size; at least one entry), with their attempts and the events consumed at those positions;
        the last page also has the events not consumed yet (at most MAX_BUFFERED_EVENTS). `next_after` is the
        position to pass as `after` for the next page, None on the last page."""
        with self.transaction() as tx:
            self._status(tx, key)
            last, more = self._page_end(tx, key, after, limit)
            bounds = (*_key(key), after, last)
            entry_rows = tx.execute(
                f"SELECT {ENTRY_COLUMNS} FROM journal WHERE {KEY} AND position > ? AND position <= ? ORDER BY position",
                bounds,
            )
            attempt_rows = tx.execute(
                "SELECT position, attempt, ok, error_name, error_message, fuel, duration_ms, finished_at "
                f"FROM attempts WHERE {KEY} AND position > ? AND position <= ? ORDER BY position, attempt",
                bounds,
            )
            event_rows = tx.execute(
                "SELECT seq, type, payload, created_at, consumed_at FROM events "
                f"WHERE {KEY} AND consumed_at > ? AND consumed_at <= ?",
                bounds,
            )
            if not more:
                event_rows += tx.execute(
                    "SELECT seq, type, payload, created_at, consumed_at FROM events "
                    f"WHERE {KEY} AND consumed_at IS NULL ORDER BY seq LIMIT ?",
                    (*_key(key), MAX_BUFFERED_EVENTS),
                )
        return JournalPage(
            entries=[_entry(r) for r in entry_rows],
            attempts=[AttemptRecord(r[0], r[1], bool(r[2]), r[3], r[4], r[5], r[6], r[7]) for r in attempt_rows],
            events=sorted((_event(r) for r in event_rows), key=lambda e: e.seq),
            next_after=last if more else None,
        )

    def _page_end(self, tx: Tx, key: InstanceKey, after: int, limit: int) -> tuple[int, bool]:
        """The last position of the page after `after`, and whether more entries follow it."""
        rows = tx.execute(
            f"SELECT position, substr(result, 1, {codec.HEAD_BYTES}), COALESCE(LENGTH(result), 0), "
            f"COALESCE(LENGTH(error_message), 0) FROM journal WHERE {KEY} AND position > ? ORDER BY position LIMIT ?",
            (*_key(key), after, limit + 1),
        )
        last, total = after, 0
        for n, (position, head, stored, message) in enumerate(rows):
            size = codec.raw_size(head, int(stored)) + int(message)
            if n == limit or (n > 0 and total + size > JOURNAL_PAGE_BYTES):
                return last, True
            last, total = position, total + size
        return last, False

    # -- scheduling --------------------------------------------------------

    def next_wake(self) -> float | None:
        """The earliest time any instance becomes runnable (its wake time or its lease expiry)."""
        with self.transaction() as tx:
            row = tx.one(
                "SELECT MIN(t) FROM (SELECT MIN(wake_at) AS t FROM instances WHERE status IN ('queued', 'waiting') "
                "UNION ALL SELECT MIN(lease_until) AS t FROM instances WHERE status = 'running') AS due"
            )
        return float(row[0]) if row and row[0] is not None else None

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
        claims: list[Claim] = []
        with self.transaction() as tx:
            rooms = self._tenant_rooms(tx, limit, now, max_per_tenant)
            if not rooms:
                return claims
            for tenant_id, workflow, instance_id in self._ranked_candidates(tx, rooms, limit, now):
                fence = self._lease(tx, InstanceKey(tenant_id, workflow, instance_id), owner, now, lease_s)
                if fence is not None:
                    claims.append(Claim(InstanceKey(tenant_id, workflow, instance_id), fence))
        return claims

    def _tenant_rooms(self, tx: Tx, limit: int, now: float, cap: int | None) -> dict[str, tuple[int, int]]:
        """(running, room) of up to `limit` tenants with runnable work and room, fewest running first.

        Live and expired leases are read from the lease index once (few rows: one per activation running);
        each tenant costs one index seek for its earliest wake time, however many instances wait."""
        rows = tx.execute(
            "WITH live AS (SELECT tenant_id, COUNT(*) AS n FROM instances WHERE status = 'running' "
            "AND lease_until >= ? GROUP BY tenant_id), "
            "expired AS (SELECT tenant_id, MIN(lease_until) AS at FROM instances WHERE status = 'running' "
            "AND lease_until < ? GROUP BY tenant_id), "
            "ready AS (SELECT t.tenant_id, t.quotas, COALESCE(l.n, 0) AS running, e.at AS expired_at, "
            "(SELECT MIN(d.wake_at) FROM instances d WHERE d.tenant_id = t.tenant_id "
            "AND d.status IN ('queued', 'waiting')) AS due_at "
            "FROM tenants t LEFT JOIN live l ON l.tenant_id = t.tenant_id "
            "LEFT JOIN expired e ON e.tenant_id = t.tenant_id) "
            "SELECT tenant_id, quotas, running FROM ready WHERE due_at <= ? OR expired_at IS NOT NULL "
            "ORDER BY running, COALESCE(expired_at, due_at), tenant_id",
            (now, now, now),
        )
        chosen: list[tuple[str, int, int]] = []
        for tenant_id, quotas, live in rows:
            allowed = _max_concurrent(quotas) if cap is None else min(_max_concurrent(quotas), cap)
            if allowed > live:
                chosen.append((tenant_id, int(live), allowed))
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
        """Where claims of several processes can interleave (PostgreSQL): lock the tenants' rows (in a fixed
        order) and count their live leases again, so two processes never both fill a tenant's last slot.
        A backend whose transactions serialize every writer (SQLite) needs neither."""
        return {}

    def _ranked_candidates(
        self, tx: Tx, rooms: Mapping[str, tuple[int, int]], limit: int, now: float
    ) -> list[tuple[str, str, str]]:
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
                "WHERE tenant_id = ? AND status IN ('queued', 'waiting') AND wake_at <= ? ORDER BY wake_at LIMIT ?) "
                f"AS d{n}"
            )
            params += [tenant_id, now, room, tenant_id, now, room]
        params.append(limit)
        rows = tx.execute(
            f"WITH quota (tenant_id, running, room) AS (VALUES {quota_rows}), "
            f"due AS ({' UNION ALL '.join(due_parts)}), "
            "ranked AS (SELECT d.tenant_id, d.workflow, d.instance_id, d.due_at, q.running, q.room, "
            "ROW_NUMBER() OVER (PARTITION BY d.tenant_id ORDER BY d.due_at, d.workflow, d.instance_id) AS rank "
            "FROM due d JOIN quota q ON q.tenant_id = d.tenant_id) "
            "SELECT tenant_id, workflow, instance_id FROM ranked WHERE rank <= room "
            "ORDER BY running + rank, due_at, tenant_id, workflow, instance_id LIMIT ?",
            params,
        )
        return [(r[0], r[1], r[2]) for r in rows]

    def _lease(self, tx: Tx, key: InstanceKey, owner: str, now: float, lease_s: float) -> int | None:
        """Take the lease on one instance if it is still runnable (and, on PostgreSQL, not locked by another
        claim: that one gets it); its new fence."""
        runnable = "((status IN ('queued', 'waiting') AND wake_at <= ?) OR (status = 'running' AND lease_until < ?))"
        row = tx.one(
            f"UPDATE instances SET status = 'running', lease_owner = ?, lease_until = ?, fence = fence + 1 "
            f"WHERE (tenant_id, workflow, instance_id) IN (SELECT tenant_id, workflow, instance_id FROM instances "
            f"WHERE {KEY} AND {runnable} {self.skip_locked}) RETURNING fence",
            (owner, now + lease_s, *_key(key), now, now),
        )
        return None if row is None else int(row[0])

    def heartbeat(self, owner: str, claims: Sequence[Claim], lease_until: float) -> None:
        if not claims:
            return
        with self.transaction() as tx:
            for claim in claims:
                tx.execute(
                    f"UPDATE instances SET lease_until = ? WHERE {KEY} AND fence = ? AND lease_owner = ?",
                    (lease_until, *_key(claim.key), claim.fence, owner),
                )

    def expire_leases(self, owners: Sequence[str]) -> int:
        """Make the instances of dead workers runnable at once."""
        if not owners:
            return 0
        count = 0
        with self.transaction() as tx:
            for owner in owners:
                rows = tx.execute(
                    "UPDATE instances SET lease_until = 0 WHERE status = 'running' AND lease_owner = ? "
                    "RETURNING instance_id",
                    (owner,),
                )
                count += len(rows)
        return count

    def held(self, owner: str, claims: Sequence[Claim]) -> set[Claim]:
        """The claims `owner` still holds: not terminated, restarted or taken over since they were claimed."""
        held: set[Claim] = set()
        with self.transaction() as tx:
            for claim in claims:
                row = tx.one(
                    f"SELECT 1 FROM instances WHERE {KEY} AND fence = ? AND lease_owner = ?",
                    (*_key(claim.key), claim.fence, owner),
                )
                if row is not None:
                    held.add(claim)
        return held

    def lease_owners(self) -> list[str]:
        with self.transaction() as tx:
            rows = tx.execute("SELECT DISTINCT lease_owner FROM instances WHERE status = 'running'")
        return [r[0] for r in rows if r[0]]

    # -- an activation -----------------------------------------------------

    def load(self, claim: Claim) -> ActivationState:
        """Everything an activation needs; read under the store's lock, decoded after it."""
        with self.transaction() as tx:
            row = tx.one(
                f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE {KEY} AND fence = ?", (*_key(claim.key), claim.fence)
            )
            if row is None:
                raise LeaseLost(f"{claim.key} is no longer held with fence {claim.fence}")
            tenant_id, source_hash = row[0], row[4]
            source = tx.one(
                "SELECT source FROM sources WHERE tenant_id = ? AND source_hash = ?", (tenant_id, source_hash)
            )
            tenant = tx.one(
                "SELECT tenant_id, name, quotas, created_at, operator FROM tenants WHERE tenant_id = ?", (tenant_id,)
            )
            entry_rows = tx.execute(
                f"SELECT {ENTRY_COLUMNS} FROM journal WHERE {KEY} ORDER BY position", _key(claim.key)
            )
            event_rows = tx.execute(
                "SELECT seq, type, payload, created_at, consumed_at FROM events "
                f"WHERE {KEY} AND consumed_at IS NULL ORDER BY seq",
                _key(claim.key),
            )
        return ActivationState(
            instance=_instance(row),
            source=(codec.decode_text(source[0]) or "") if source else "",
            entries={e.position: e for e in map(_entry, entry_rows)},
            events=[_event(r) for r in event_rows],
            quotas=_tenant(tenant).quotas if tenant else Quotas(),
        )

    def record(
        self,
        claim: Claim,
        entry: Entry,
        attempt: AttemptRecord | None,
        now: float,
        consumed_event: int | None = None,
    ) -> str:
        """Write one journal position (and its attempt) durably; the instance's status, or LeaseLost.

        The instance's stored bytes change in the same statement that checks the fence: by what this
        writes, less what the position held before."""
        result = None if entry.result is None else codec.encode_text(entry.result)
        added = _entry_size(entry, result) + _attempt_size(attempt)

        def write(tx: Tx) -> str:
            row = tx.one(
                f"UPDATE instances SET updated_at = ?, steps = steps + ?, stored_bytes = stored_bytes + ? - "
                f"{_ENTRY_SIZE_SQL} WHERE {KEY} AND fence = ? AND status IN ('running', 'paused') RETURNING status",
                (
                    now,
                    1 if entry.state == "done" else 0,
                    added,
                    *_key(claim.key),
                    entry.position,
                    *_key(claim.key),
                    claim.fence,
                ),
            )
            if row is None:
                raise LeaseLost(f"{claim.key} is no longer held with fence {claim.fence}")
            self._upsert_entry(tx, claim.key, entry, result)
            if attempt is not None:
                tx.execute(
                    "INSERT INTO attempts (tenant_id, workflow, instance_id, position, attempt, ok, error_name, "
                    "error_message, fuel, duration_ms, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    (
                        *_key(claim.key),
                        attempt.position,
                        attempt.attempt,
                        int(attempt.ok),
                        attempt.error_name,
                        attempt.error_message,
                        attempt.fuel,
                        attempt.duration_ms,
                        attempt.finished_at,
                    ),
                )
            if consumed_event is not None:
                tx.execute(
                    f"UPDATE events SET consumed_at = ? WHERE {KEY} AND seq = ?",
                    (entry.position, *_key(claim.key), consumed_event),
                )
            return str(row[0])

        return self.write(write)

    def _upsert_entry(self, tx: Tx, key: InstanceKey, e: Entry, result: bytes | None) -> None:
        tx.execute(
            "INSERT INTO journal (tenant_id, workflow, instance_id, position, name, kind, state, attempts, result, "
            "error_name, error_message, wake_at, event_type, fuel, duration_ms, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (tenant_id, workflow, instance_id, position) DO UPDATE SET state = excluded.state, "
            "attempts = excluded.attempts, result = excluded.result, error_name = excluded.error_name, "
            "error_message = excluded.error_message, wake_at = excluded.wake_at, fuel = excluded.fuel, "
            "duration_ms = excluded.duration_ms, updated_at = excluded.updated_at",
            (
                *_key(key),
                e.position,
                e.name,
                e.kind,
                e.state,
                e.attempts,
                result,
                e.error_name,
                e.error_message,
                e.wake_at,
                e.event_type,
                e.fuel,
                e.duration_ms,
                e.created_at,
                e.updated_at,
            ),
        )

    def finish(
        self,
        claim: Claim,
        now: float,
        *,
        status: str,
        output: str | None = None,
        error: dict[str, Any] | None = None,
        wake_at: float | None = None,
        waiting_for: str | None = None,
        log: str = "",
    ) -> bool:
        """End an activation: complete, errored or waiting. A paused or terminated instance keeps its status.

        A normal end resets the count of host faults in a row; output, error and log replace the previous
        ones, in the stored bytes too."""
        output_blob = None if output is None else codec.encode_text(output)
        error_blob = None if error is None else codec.encode(error)
        log_blob = codec.encode_text(log) if log else None

        def write(tx: Tx) -> bool:
            row = tx.one(
                f"SELECT status FROM instances WHERE {KEY} AND fence = ?{self.for_update}",
                (*_key(claim.key), claim.fence),
            )
            if row is None:
                return False
            current = row[0]
            if current == "terminated":
                return True
            new_status = "paused" if current == "paused" and status == "waiting" else status
            new_wake_at = wake_at
            if waiting_for is not None:
                arrived = tx.one(
                    f"SELECT 1 FROM events WHERE {KEY} AND consumed_at IS NULL AND type = ? LIMIT 1",
                    (*_key(claim.key), waiting_for),
                )
                if arrived:
                    new_wake_at = now
            tx.execute(
                "UPDATE instances SET status = ?, output = ?, error = ?, error_name = ?, error_summary = ?, "
                "wake_at = ?, waiting_for = ?, lease_owner = NULL, lease_until = NULL, log = ?, host_faults = 0, "
                f"stored_bytes = stored_bytes + ? - ({_FINISHED_SIZE_SQL}), updated_at = ? WHERE {KEY} AND fence = ?",
                (
                    new_status,
                    output_blob,
                    error_blob,
                    *_error_columns(error),
                    new_wake_at,
                    waiting_for,
                    log_blob,
                    sum(len(b) for b in (output_blob, error_blob, log_blob) if b is not None),
                    now,
                    *_key(claim.key),
                    claim.fence,
                ),
            )
            return True

        return self.write(write)

    def host_fault(self, claim: Claim, now: float, retry_at: float, max_faults: int) -> bool:
        """An activation failed in the host, not in the guest: count it and retry at `retry_at`, until
        `max_faults` in a row; then the instance is errored with HostFault. True when it was errored.

        A terminated instance, or one no longer held with this fence, is left alone (False)."""

        def write(tx: Tx) -> bool:
            row = tx.one(
                f"SELECT status, host_faults FROM instances WHERE {KEY} AND fence = ?{self.for_update}",
                (*_key(claim.key), claim.fence),
            )
            if row is None or row[0] == "terminated":
                return False
            faults = int(row[1]) + 1
            if faults >= max_faults:
                message = f"the activation failed in the host {faults} times in a row; the instance is errored"
                error = codec.encode({"name": HOST_FAULT, "message": message})
                tx.execute(
                    "UPDATE instances SET status = 'errored', error = ?, error_name = ?, error_summary = ?, "
                    "host_faults = ?, wake_at = NULL, waiting_for = NULL, lease_owner = NULL, lease_until = NULL, "
                    f"stored_bytes = stored_bytes + ? - COALESCE(LENGTH(error), 0), updated_at = ? "
                    f"WHERE {KEY} AND fence = ?",
                    (error, HOST_FAULT, message, faults, len(error), now, *_key(claim.key), claim.fence),
                )
                return True
            tx.execute(
                "UPDATE instances SET status = ?, host_faults = ?, wake_at = ?, waiting_for = NULL, "
                f"lease_owner = NULL, lease_until = NULL, updated_at = ? WHERE {KEY} AND fence = ?",
                (
                    "paused" if row[0] == "paused" else "waiting",
                    faults,
                    retry_at,
                    now,
                    *_key(claim.key),
                    claim.fence,
                ),
            )
            return False

        return self.write(write)
