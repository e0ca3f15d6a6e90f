"""PostgreSQL: the same schema and SQL as SQLite, for many worker processes on many machines.

- Connections come from a `psycopg_pool.ConnectionPool` (autocommit connections;
  `transaction()` opens an explicit transaction, and a nested `transaction()` on
  the same thread is a savepoint in the outer one).
- Statements from `SQLStore` are written with `?`; they are translated to `%s` once.
- Reads that decide a write lock the instance row first (`FOR UPDATE`), so the
  read-then-write controls behave as under SQLite's single writer.
- A step result is committed in one statement, so one round trip: the fenced
  `UPDATE instances ... RETURNING` and the journal upsert, the attempt and the
  consumed event are data-modifying CTEs that only write when the fence held.
- Work that becomes runnable (created, event delivered, resumed, restarted, a
  timer due within the polling interval, leases of dead workers expired) is
  announced with NOTIFY; `listen(callback)` runs a LISTEN connection on a thread
  that calls back, so idle workers in other processes claim it at once. Workers
  still poll, so a lost notification only costs latency.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool, PoolTimeout
from tenantflow.runtime.errors import Conflict, Unavailable
from tenantflow.runtime.records import AttemptRecord, Claim, Entry, Instance, InstanceKey, Version
from tenantflow.runtime.store import codec
from tenantflow.runtime.store.base import LeaseLost, Row, SQLStore, Tx, _attempt_size, _entry_size

log = logging.getLogger("tenantflow.store.postgres")

CHANNEL_PREFIX = "tenantflow_wake"
MIGRATION_LOCK = 7_406_031_805  # pg_advisory_lock key: one migrating process at a time
NOTIFY_WITHIN_S = 1.0  # timers further out are found by the workers' polling anyway
BUSY_RETRY_AFTER_S = 1.0
POOL_PARAMS = ("pool_min", "pool_max")

_translated: dict[str, str] = {}


def translate(sql: str) -> str:
    """`?` placeholders to psycopg's `%s` (the shared SQL has no `%` and no `?` inside literals)."""
    out = _translated.get(sql)
    if out is None:
        out = _translated[sql] = sql.replace("%", "%%").replace("?", "%s")
    return out


def split_url(url: str) -> tuple[str, dict[str, int]]:
    """The conninfo for psycopg and this store's own options (?pool_min=, ?pool_max=)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    own = {k: int(v) for k, v in query if k in POOL_PARAMS}
    rest = [(k, v) for k, v in query if k not in POOL_PARAMS]
    return urlunsplit(parts._replace(query=urlencode(rest))), own


class _PostgresTx(Tx):
    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self.connection = connection

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cursor = self.connection.execute(translate(sql), params)
        return cursor.fetchall() if cursor.description is not None else []


# One statement, one round trip: the fence check and every write of a step result. Named parameters
# (psycopg sends a repeated name once). Values are cast because a parameter in a SELECT list has no
# column to take its type from.
_KEY_NAMED = "tenant_id = %(t)s AND workflow = %(w)s AND instance_id = %(i)s"
RECORD_SQL = f"""
WITH inst AS (
    UPDATE instances SET updated_at = %(now)s, steps = steps + %(done)s,
        stored_bytes = stored_bytes + %(added)s - COALESCE((SELECT COALESCE(LENGTH(j.result), 0) + LENGTH(j.name)
            + COALESCE(LENGTH(j.error_name), 0) + COALESCE(LENGTH(j.error_message), 0) FROM journal j
            WHERE j.tenant_id = %(t)s AND j.workflow = %(w)s AND j.instance_id = %(i)s AND j.position = %(pos)s), 0)
    WHERE {_KEY_NAMED} AND fence = %(fence)s AND status IN ('running', 'paused')
    RETURNING status
), entry AS (
    INSERT INTO journal (tenant_id, workflow, instance_id, position, name, kind, state, attempts, result,
        error_name, error_message, wake_at, event_type, fuel, duration_ms, created_at, updated_at)
    SELECT %(t)s::text, %(w)s::text, %(i)s::text, %(pos)s::integer, %(name)s::text, %(kind)s::text,
        %(state)s::text, %(attempts)s::integer, %(result)s::bytea, %(error_name)s::text, %(error_message)s::text,
        %(wake_at)s::double precision, %(event_type)s::text, %(fuel)s::bigint, %(duration_ms)s::double precision,
        %(created_at)s::double precision, %(updated_at)s::double precision
    FROM inst
    ON CONFLICT (tenant_id, workflow, instance_id, position) DO UPDATE SET state = excluded.state,
        attempts = excluded.attempts, result = excluded.result, error_name = excluded.error_name,
        error_message = excluded.error_message, wake_at = excluded.wake_at, fuel = excluded.fuel,
        duration_ms = excluded.duration_ms, updated_at = excluded.updated_at
    RETURNING 1
), attempt AS (
    INSERT INTO attempts (tenant_id, workflow, instance_id, position, attempt, ok, error_name, error_message,
        fuel, duration_ms, finished_at)
    SELECT %(t)s::text, %(w)s::text, %(i)s::text, %(a_pos)s::integer, %(a_attempt)s::integer, %(a_ok)s::integer,
        %(a_error_name)s::text, %(a_error_message)s::text, %(a_fuel)s::bigint, %(a_duration_ms)s::double precision,
        %(a_finished_at)s::double precision
    FROM inst WHERE %(has_attempt)s::boolean
    ON CONFLICT DO NOTHING
    RETURNING 1
), consumed AS (
    UPDATE events SET consumed_at = %(pos)s
    WHERE {_KEY_NAMED} AND seq = %(seq)s AND EXISTS (SELECT 1 FROM inst)
    RETURNING 1
)
SELECT status FROM inst
"""


class PostgresStore(SQLStore):
    """postgresql://user@host:port/db[?pool_min=N&pool_max=N&<libpq options>]"""

    dialect = {"blob": "BYTEA", "float": "DOUBLE PRECISION", "bigint": "BIGINT", "clustered": ""}
    skip_locked = "FOR UPDATE SKIP LOCKED"
    for_update = " FOR UPDATE"

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 16, timeout_s: float = 30.0) -> None:
        conninfo, own = split_url(url)
        self.conninfo = conninfo
        self._local = threading.local()
        self._pool = ConnectionPool(
            conninfo,
            min_size=own.get("pool_min", min_size),
            max_size=max(own.get("pool_max", max_size), own.get("pool_min", min_size)),
            kwargs={"autocommit": True},
            timeout=timeout_s,
            name="tenantflow",
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=timeout_s)
        except PoolTimeout:
            self._pool.close()
            # The pool only says it timed out; connecting once says why (refused, unknown database, auth).
            with psycopg.connect(conninfo, connect_timeout=max(1, int(timeout_s))):
                pass
            raise
        self._listeners: list[Callable[[], None]] = []
        self._listen_lock = threading.Lock()
        self._listen_thread: threading.Thread | None = None
        self._closed = threading.Event()
        with self._pool.connection() as connection:
            row = connection.execute("SELECT current_schema()").fetchone()
        # The schema is part of the channel: stores in different schemas of one database do not wake each other.
        schema = row[0] if row and row[0] else "public"
        self.channel = f"{CHANNEL_PREFIX}_{schema}"[:63]
        self.migrate()

    # -- connections and transactions ----------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; every connection busy past the pool's timeout raises `Unavailable` (503)."""
        try:
            connection = self._pool.getconn()
        except PoolTimeout as error:
            raise Unavailable("the database is busy; retry shortly", retry_after_s=BUSY_RETRY_AFTER_S) from error
        try:
            yield connection
        finally:
            self._pool.putconn(connection)

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """A transaction; nested on one thread, a savepoint of the outer one."""
        current: _PostgresTx | None = getattr(self._local, "tx", None)
        if current is not None:
            with current.connection.transaction():
                yield current
            return
        with self._connection() as connection, connection.transaction():
            tx = _PostgresTx(connection)
            self._local.tx = tx
            try:
                yield tx
            finally:
                self._local.tx = None

    def close(self) -> None:
        self._closed.set()
        thread = self._listen_thread
        if thread is not None:
            thread.join(5.0)
        self._pool.close()

    def migrate(self) -> None:
        # Several worker processes may start at once: one of them migrates, the others wait for its
        # transaction and find the work done (the migrations run in a savepoint of the locking one).
        with self.transaction() as tx:
            tx.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
            super().migrate()

    # -- wakeups ---------------------------------------------------------------

    def notify(self) -> None:
        """Tell listening workers (in every process) to look for runnable work now."""
        try:
            with self._pool.connection() as connection:
                connection.execute("SELECT pg_notify(%s, '')", (self.channel,))
        except psycopg.Error:
            log.warning("NOTIFY failed; workers will find the work by polling", exc_info=True)

    def listen(self, callback: Callable[[], None]) -> None:
        """Call `callback` (on a background thread) whenever a NOTIFY arrives."""
        with self._listen_lock:
            self._listeners.append(callback)
            if self._listen_thread is None:
                self._listen_thread = threading.Thread(target=self._listen_loop, name="tenantflow-listen", daemon=True)
                self._listen_thread.start()

    def _listen_loop(self) -> None:
        while not self._closed.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as connection:
                    connection.execute(f'LISTEN "{self.channel}"')
                    self._wake_all()  # anything announced while we were not listening
                    while not self._closed.is_set():
                        for _ in connection.notifies(timeout=0.5):
                            self._wake_all()
            except psycopg.Error:
                log.warning("LISTEN connection failed; reconnecting", exc_info=True)
                self._closed.wait(1.0)

    def _wake_all(self) -> None:
        with self._listen_lock:
            listeners = list(self._listeners)
        for callback in listeners:
            try:
                callback()
            except Exception:
                log.exception("wakeup callback failed")

    # -- read-then-write made safe under READ COMMITTED ---------------------

    def deploy(self, tenant_id: str, workflow: str, source: str, source_hash: str, now: float) -> tuple[Version, bool]:
        # Deploys of one tenant take turns (on its tenant row), so each gets the next version number.
        with self.transaction() as tx:
            tx.execute("SELECT 1 FROM tenants WHERE tenant_id = ? FOR UPDATE", (tenant_id,))
            return super().deploy(tenant_id, workflow, source, source_hash, now)

    def create_instances(
        self, tenant_id: str, version: Version, items: Sequence[tuple[str, Any]], now: float
    ) -> list[Instance]:
        try:
            created = super().create_instances(tenant_id, version, items, now)
        except psycopg.errors.UniqueViolation:
            raise Conflict("an instance with one of these ids already exists") from None
        self.notify()
        return created

    def resume(self, key: InstanceKey, now: float) -> None:
        super().resume(key, now)
        self.notify()

    def restart(self, key: InstanceKey, now: float) -> None:
        super().restart(key, now)
        self.notify()

    def send_event(self, key: InstanceKey, event_type: str, payload: Any, now: float) -> int:
        seq = super().send_event(key, event_type, payload, now)
        self.notify()
        return seq

    def expire_leases(self, owners: Sequence[str]) -> int:
        count = super().expire_leases(owners)
        if count:
            self.notify()
        return count

    # -- scheduling ------------------------------------------------------------

    def _lock_tenants(self, tx: Tx, tenant_ids: list[str], now: float) -> dict[str, int]:
        if not tenant_ids:
            return {}
        marks = ", ".join("?" for _ in tenant_ids)
        tx.execute(f"SELECT 1 FROM tenants WHERE tenant_id IN ({marks}) ORDER BY tenant_id FOR UPDATE", tenant_ids)
        rows = tx.execute(
            f"SELECT tenant_id, COUNT(*) FROM instances WHERE tenant_id IN ({marks}) AND status = 'running' "
            "AND lease_until >= ? GROUP BY tenant_id",
            (*tenant_ids, now),
        )
        live = dict.fromkeys(tenant_ids, 0)
        live.update((r[0], int(r[1])) for r in rows)
        return live

    def next_wake(self) -> float | None:
        # As SQLStore.next_wake, as two index-ordered minimums: every idle worker asks this about once a
        # second, and a MIN over a CASE reads every waiting instance (~5 ms per 20k here).
        # One statement, so no transaction around it: one round trip.
        with self._connection() as connection:
            row = connection.execute(
                "SELECT LEAST((SELECT MIN(wake_at) FROM instances WHERE status IN ('queued', 'waiting')), "
                "(SELECT MIN(lease_until) FROM instances WHERE status = 'running'))"
            ).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    # -- an activation ---------------------------------------------------------

    def record(
        self,
        claim: Claim,
        entry: Entry,
        attempt: AttemptRecord | None,
        now: float,
        consumed_event: int | None = None,
    ) -> str:
        key = claim.key
        result = None if entry.result is None else codec.encode_text(entry.result)
        params: dict[str, Any] = {
            "t": key.tenant_id,
            "w": key.workflow,
            "i": key.instance_id,
            "now": now,
            "done": 1 if entry.state == "done" else 0,
            "fence": claim.fence,
            "pos": entry.position,
            "name": entry.name,
            "kind": entry.kind,
            "state": entry.state,
            "attempts": entry.attempts,
            "result": result,
            "added": _entry_size(entry, result) + _attempt_size(attempt),
            "error_name": entry.error_name,
            "error_message": entry.error_message,
            "wake_at": entry.wake_at,
            "event_type": entry.event_type,
            "fuel": entry.fuel,
            "duration_ms": entry.duration_ms,
            "created_at": entry.created_at,
            "updated_at": entry.updated_at,
            "has_attempt": attempt is not None,
            "a_pos": None if attempt is None else attempt.position,
            "a_attempt": None if attempt is None else attempt.attempt,
            "a_ok": None if attempt is None else int(attempt.ok),
            "a_error_name": None if attempt is None else attempt.error_name,
            "a_error_message": None if attempt is None else attempt.error_message,
            "a_fuel": None if attempt is None else attempt.fuel,
            "a_duration_ms": None if attempt is None else attempt.duration_ms,
            "a_finished_at": None if attempt is None else attempt.finished_at,
            "seq": consumed_event,
        }
        if getattr(self._local, "tx", None) is not None:
            row = self._local.tx.connection.execute(RECORD_SQL, params).fetchone()
        else:
            with self._connection() as connection:
                row = connection.execute(RECORD_SQL, params).fetchone()
        if row is None:
            raise LeaseLost(f"{claim.key} is no longer held with fence {claim.fence}")
        return str(row[0])

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
        done = super().finish(
            claim, now, status=status, output=output, error=error, wake_at=wake_at, waiting_for=waiting_for, log=log
        )
        if done and status == "waiting" and wake_at is not None and wake_at < now + NOTIFY_WITHIN_S:
            self.notify()
        return done
