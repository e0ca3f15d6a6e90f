"""PostgreSQL: the same schema and SQL as SQLite, for many worker processes on many machines.

What it supplies to the shared store (see `core.StoreCore`), and nothing else:

- Connections from a `psycopg_pool.ConnectionPool` (autocommit connections). `transaction()` is a
  transaction in pipeline mode: the statements a write `send`s and its commit take one round trip (see
  `_PostgresTx`; a nested `transaction()` on the same thread is a savepoint in the outer one); `read()` runs
  one statement on its own.
- Statements written with `?` are translated to `%s` once.
- `FOR UPDATE` on the reads that decide a write, and `FOR UPDATE SKIP LOCKED` on claims, so the
  read-then-write operations behave as under SQLite's single writer.
- `_notify()`: NOTIFY after a commit that made work runnable; `listen(callback)` runs a LISTEN connection on a
  thread that calls back, so idle workers in other processes claim it at once. Workers still poll, so a lost
  notification only costs latency.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout
from tenantflow.runtime.errors import Unavailable
from tenantflow.runtime.store._sql import Later, Params, Result, Tx
from tenantflow.runtime.store.sqlstore import SQLStore

log = logging.getLogger("tenantflow.store.postgres")

CHANNEL_PREFIX = "tenantflow_wake"
MIGRATION_LOCK = 7_406_031_805  # pg_advisory_lock key: one migrating process at a time
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


def _result(cursor: psycopg.Cursor[Any]) -> Result:
    if cursor.description is None:
        return Result((), [])
    return Result([column.name for column in cursor.description], cursor.fetchall())


class _Sent(Later):
    """A statement sent in a transaction: its answer is there once the transaction has ended, or is waited for
    (one round trip, for everything sent so far) when asked before."""

    def __init__(self, cursor: psycopg.Cursor[Any], tx: _PostgresTx) -> None:
        self._cursor = cursor
        self._tx = tx
        self._result: Result | None = None

    def result(self) -> Result:
        if self._result is None:
            if self._cursor.pgresult is None:
                self._tx.sync()
            self._result = _result(self._cursor)
        return self._result


class _PostgresTx(Tx):
    """A transaction on one connection in pipeline mode.

    Statements are sent without waiting, and what is sent up to the next Sync is one transaction (the
    protocol's implicit transaction): a write that only sends is committed by the Sync that collects its
    answers, one round trip with no BEGIN or COMMIT. Waiting for an answer inside the transaction first makes
    it explicit (BEGIN), so that its Sync commits nothing; it then ends with COMMIT. Without a pipeline (a
    `read()`), each statement runs at once on its own."""

    def __init__(self, connection: psycopg.Connection[Any], pipeline: psycopg.Pipeline | None = None) -> None:
        self.connection = connection
        self.pipeline = pipeline
        self.explicit = False
        self._savepoints = 0

    def run(self, sql: str, params: Params = ()) -> Result:
        return self.send(sql, params).result()

    def send(self, sql: str, params: Params = ()) -> Later:
        cursor = self.connection.cursor()
        cursor.execute(translate(sql), params)
        return _Sent(cursor, self)

    def begin(self) -> None:
        """Make the transaction explicit: from here on only COMMIT commits it."""
        if not self.explicit and self.pipeline is not None:
            self.explicit = True
            self.connection.cursor().execute("BEGIN")

    def sync(self) -> None:
        """The answers to everything sent, now, without ending the transaction."""
        if self.pipeline is not None:
            self.begin()
            self.pipeline.sync()

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested transaction: undone alone if its block raises."""
        self.begin()
        self._savepoints += 1
        name = f"tenantflow_{self._savepoints}"
        try:
            self.send(f"SAVEPOINT {name}")
            try:
                yield
            except BaseException:
                # A failed statement aborts the ones sent after it until the next Sync: collect them first.
                with suppress(psycopg.Error):
                    self.sync()
                self.run(f"ROLLBACK TO SAVEPOINT {name}")
                raise
            self.send(f"RELEASE SAVEPOINT {name}")
        finally:
            self._savepoints -= 1


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
        """A transaction in pipeline mode (see `_PostgresTx`): what it sends goes out at once, and the answers
        come back, with the commit, in one round trip at its end. Nested on one thread, a savepoint of the
        outer one."""
        current: _PostgresTx | None = getattr(self._local, "tx", None)
        if current is not None:
            with current.savepoint():
                yield current
            return
        self._local.notify = False
        with self._connection() as connection:
            tx = _PostgresTx(connection)
            try:
                with connection.pipeline() as pipeline:
                    tx.pipeline = pipeline
                    self._local.tx = tx
                    try:
                        yield tx
                    except BaseException:
                        tx.begin()  # the pipeline's closing Sync must not commit what was sent: rolled back below
                        raise
                    finally:
                        self._local.tx = None
                    if tx.explicit:
                        tx.send("COMMIT")
            except BaseException:
                self._local.notify = False
                if connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    connection.execute("ROLLBACK")
                raise
            finally:
                tx.pipeline = None
        if self._local.notify:
            self._local.notify = False
            self.notify()

    @contextmanager
    def read(self) -> Iterator[Tx]:
        """One statement on a pooled connection, which is its own transaction (or in this thread's one)."""
        current: _PostgresTx | None = getattr(self._local, "tx", None)
        if current is not None:
            yield current
            return
        with self._connection() as connection:
            yield _PostgresTx(connection)

    def close(self) -> None:
        self._closed.set()
        thread = self._listen_thread
        if thread is not None:
            thread.join(5.0)
        self._pool.close()

    def _lock_migrations(self, tx: Tx) -> None:
        # Several worker processes may start at once: one of them migrates, the others wait for its
        # transaction and find the work done.
        tx.run("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))

    # -- wakeups ---------------------------------------------------------------

    def _notify(self) -> None:
        """After the commit: now, or when this thread's transaction commits."""
        if getattr(self._local, "tx", None) is not None:
            self._local.notify = True
        else:
            self.notify()

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
