"""PostgreSQL: the same schema and SQL as SQLite, for many worker processes on many machines.

What it supplies to the shared store (see `core.StoreCore`), and nothing else:

- Connections from a `psycopg_pool.ConnectionPool` (autocommit connections). `transaction()` holds its
  statements back and sends them together, in pipeline mode: a write that needs no answer before its end
  takes one round trip (see `_PostgresTx`; a nested `transaction()` on the same thread is a savepoint in the
  outer one); `read()` runs one statement on its own.
- Statements written with `?` are translated to PostgreSQL's `$1`, `$2`, … once, and run on `psycopg.RawCursor`s,
  which send them as they are: psycopg's own `%s` conversion re-parses every statement longer than 4,096 bytes or
  with more than 50 parameters (its cache's limits), which a step's fenced write and an activation's end exceed.
- A fenced write and the writes that go with it (a step commit, or an activation's pending step commits, their
  rows as arrays) are one statement, with data-modifying CTEs.
- `FOR UPDATE` on the reads that decide a write, and `FOR UPDATE SKIP LOCKED` on claims, so the
  read-then-write operations behave as under SQLite's single writer.
- `_instances_added()`: the instances table's first statistics, once a tenant has ANALYZE_AT_ROWS instances and
  PostgreSQL has never analyzed it (see ANALYZE_AT_ROWS).
- `_notify()`: NOTIFY after a commit that made work runnable; `listen(callback)` runs a LISTEN connection on a
  thread that calls back, so idle workers in other processes claim it at once. Workers still poll, so a lost
  notification only costs latency.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg.conninfo
from psycopg_pool import ConnectionPool, PoolTimeout
from tenantflow.runtime.errors import Unavailable
from tenantflow.runtime.store._sql import APPLIED, Later, Params, Result, Statement, Tx
from tenantflow.runtime.store.sqlstore import SQLStore

log = logging.getLogger("tenantflow.store.postgres")

CHANNEL_PREFIX = "tenantflow_wake"
MIGRATION_LOCK = 7_406_031_805  # pg_advisory_lock key: one migrating process at a time
BUSY_RETRY_AFTER_S = 1.0
POOL_PARAMS = ("pool_min", "pool_max")
# A table PostgreSQL has never analyzed has no column statistics, and the planner then takes any equality to match
# 0.5% of the rows, whatever index it is read through: a lookup of one instance by its key (tenant, workflow, id),
# which each step's commit, each claim and each load makes, may go through `instances_by_created` (tenant,
# workflow, created_at, id) or `instances_by_id` as readily as through the primary key, and then reads every instance
# of the workflow or tenant to find it (EXPLAIN ANALYZE in a fan-out of 600 instances: "Rows Removed by Filter:
# 599", ~0.4 ms a lookup; quadratic in the instances). Autovacuum analyzes a new table only when its launcher comes
# round to the database (autovacuum_naptime, a minute by default), and a database restored from a dump has no
# statistics either. So once a tenant has this many instances and the table still has none, the store analyzes it
# after the create, once; autovacuum keeps them up to date from then on. (Analyzed with fewer, every tenant and
# workflow would look unique, and the indexes as good as the key again.)
ANALYZE_AT_ROWS = 100
_STATISTICS = (
    "SELECT EXISTS (SELECT 1 FROM pg_stats WHERE schemaname = current_schema() AND tablename = 'instances') "
    "AS analyzed, (SELECT COUNT(*) FROM (SELECT 1 FROM instances WHERE tenant_id = ? LIMIT ?) AS found) AS rows"
)

_translated: dict[str, str] = {}


def translate(sql: str) -> str:
    """`?` placeholders to PostgreSQL's `$1`, `$2`, … in order (the shared SQL has no `?` inside literals)."""
    out = _translated.get(sql)
    if out is None:
        first, *rest = sql.split("?")
        out = _translated[sql] = first + "".join(f"${n}{part}" for n, part in enumerate(rest, 1))
    return out


def split_url(url: str) -> tuple[str, dict[str, int]]:
    """The conninfo for psycopg and this store's own options (?pool_min=, ?pool_max=)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    own = {k: int(v) for k, v in query if k in POOL_PARAMS}
    rest = [(k, v) for k, v in query if k not in POOL_PARAMS]
    # Spaces as %20, not '+': libpq only percent-decodes (options=-c a=1 -c b=2).
    return urlunsplit(parts._replace(query=urlencode(rest, quote_via=quote))), own


# The column names of each statement's result (they are the statement's to say: looked up once).
_names: dict[str, tuple[str, ...]] = {}


def _result(sql: str, cursor: psycopg.Cursor[Any]) -> Result:
    names = _names.get(sql)
    if names is None:
        names = _names[sql] = tuple(column.name for column in cursor.description or ())
    return Result(names, cursor.fetchall() if names else [])


@functools.lru_cache(maxsize=256)
def _fenced_sql(write: str, then: tuple[str, ...]) -> str:
    parts = [f"fenced AS ({write})"]
    parts += (f"then_{n} AS ({sql.replace(APPLIED, 'EXISTS (SELECT 1 FROM fenced)')})" for n, sql in enumerate(then))
    return f"WITH {', '.join(parts)} SELECT * FROM fenced"


class _Sent(Later):
    """A statement of a transaction: held back until its answer is needed or the transaction ends."""

    def __init__(self, tx: _PostgresTx, sql: str, params: Params) -> None:
        self._tx = tx
        self.sql = sql
        self.params = params
        self.cursor: psycopg.Cursor[Any] | None = None
        self._result: Result | None = None

    def execute(self) -> None:
        self.cursor = psycopg.RawCursor(self._tx.connection)
        self.cursor.execute(self.sql, self.params)

    def result(self) -> Result:
        if self._result is None:
            if self.cursor is None:
                self._tx.flush()
            assert self.cursor is not None
            self._result = _result(self.sql, self.cursor)
        return self._result


class _PostgresTx(Tx):
    """A transaction on one connection, whose statements are held back and sent together.

    What a transaction sends goes to the server when an answer is needed inside it (first opening it with
    BEGIN), or at its end: with COMMIT if it was opened; alone if it is one statement (its own transaction);
    else pipelined and committed by the closing Sync (the protocol's implicit transaction: all or nothing).
    Each time, one round trip. Held back statements of a transaction that raises are never sent. Without
    holding back (a `read()`), each statement runs at once on its own."""

    def __init__(self, connection: psycopg.Connection[Any], *, hold: bool) -> None:
        self.connection = connection
        self.hold = hold
        self.opened = False  # BEGIN was sent: the transaction ends with COMMIT or ROLLBACK
        self._pending: list[_Sent] = []
        self._savepoints = 0

    def run(self, sql: str, params: Params = ()) -> Result:
        return self.send(sql, params).result()

    def send(self, sql: str, params: Params = ()) -> Later:
        sent = _Sent(self, translate(sql), params)
        if self.hold:
            self._pending.append(sent)
        else:
            sent.execute()
        return sent

    def fenced(self, write: Statement, then: Sequence[Statement]) -> Later:
        """One statement: the fenced write and those that go with it as data-modifying CTEs, each applying only
        if the fenced write returned its row. They see one snapshot and the fenced write's own outcome (after
        it waited for a row lock, the row as the other writer left it), so nothing needs locking first."""
        sql = _fenced_sql(write.sql, tuple(s.sql for s in then))
        return self.send(sql, [*write.params, *(p for s in then for p in s.params)])

    def flush(self) -> None:
        """Send what is held back and wait for the answers, inside the transaction (opening it)."""
        self._send(open_=True, commit=False)

    def commit(self) -> None:
        if self.opened:
            self._send(open_=False, commit=True)
        elif len(self._pending) == 1:
            self._pending.pop().execute()
        elif self._pending:
            self._send(open_=False, commit=False)

    def _send(self, *, open_: bool, commit: bool) -> None:
        batch, self._pending = self._pending, []
        if len(batch) == 1 and not commit and (self.opened or not open_):
            batch[0].execute()  # nothing to send with it
            return
        with self.connection.pipeline():
            if open_ and not self.opened:
                self.opened = True
                self.connection.cursor().execute("BEGIN")
            for sent in batch:
                sent.execute()
            if commit:
                self.connection.cursor().execute("COMMIT")

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested transaction: undone alone if its block raises."""
        if not self.opened:
            self.flush()  # a savepoint is part of an opened transaction
        self._savepoints += 1
        name = f"tenantflow_{self._savepoints}"
        try:
            marker = self.send(f"SAVEPOINT {name}")
            assert isinstance(marker, _Sent)
            try:
                yield
            except BaseException:
                if marker.cursor is None:  # nothing since the savepoint was sent: forget it
                    del self._pending[self._pending.index(marker) :]
                else:
                    self.send(f"ROLLBACK TO SAVEPOINT {name}")
                raise
            self.send(f"RELEASE SAVEPOINT {name}")
        finally:
            self._savepoints -= 1


# How long a first connection may take before the database counts as unreachable.
CONNECT_TIMEOUT_S = 5


def _check_reachable(conninfo: str) -> None:
    """Connect once, briefly: a wrong or unreachable database is one clear `Unavailable` within seconds, not
    the pool's 30 s of retries and warnings ending in a traceback."""
    try:
        psycopg.connect(conninfo, connect_timeout=CONNECT_TIMEOUT_S).close()
    except psycopg.Error as error:
        info = psycopg.conninfo.conninfo_to_dict(conninfo)
        where = f"{info.get('user') or ''}@{info.get('host') or 'localhost'}:{info.get('port') or 5432}"
        reason = " ".join(str(error).split())
        raise Unavailable(
            f"cannot reach the PostgreSQL database {info.get('dbname') or ''!r} at {where}: {reason}"
        ) from None


class PostgresStore(SQLStore):
    """postgresql://user@host:port/db[?pool_min=N&pool_max=N&<libpq options>]"""

    dialect = {
        "blob": "BYTEA",
        "float": "DOUBLE PRECISION",
        "bigint": "BIGINT",
        "clustered": "",
        "bytewise": ' COLLATE "C"',
    }
    skip_locked = "FOR UPDATE SKIP LOCKED"
    for_update = " FOR UPDATE"
    # A row lock is held until the commit is flushed: one usage row per workflow and day would make the step
    # commits of its instances wait for each other's flush (measured: about half the commit rate from 8 threads).
    usage_shards = 16
    keyset_bound = False

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 16, timeout_s: float = 30.0) -> None:
        conninfo, own = split_url(url)
        self.conninfo = conninfo
        _check_reachable(conninfo)
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
        # The instances table has statistics (seen or made here), and one thread at a time looks (`_instances_added`).
        self._analyzed = threading.Event()
        self._analyzing = threading.Lock()
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
        """A transaction whose statements are sent together (see `_PostgresTx`): a write that needs no answer
        before its end takes one round trip. Nested on one thread, a savepoint of the outer one."""
        current: _PostgresTx | None = getattr(self._local, "tx", None)
        if current is not None:
            with current.savepoint():
                yield current
            return
        self._local.notify = False
        with self._connection() as connection:
            tx = _PostgresTx(connection, hold=True)
            self._local.tx = tx
            try:
                try:
                    yield tx
                finally:
                    self._local.tx = None
                tx.commit()
            except BaseException:
                self._local.notify = False
                if connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    with suppress(psycopg.Error):  # a broken connection: the pool replaces it
                        connection.execute("ROLLBACK")
                raise
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
            yield _PostgresTx(connection, hold=False)

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

    def _instances_added(self, tenant_id: str) -> None:
        """Analyze the instances table if it has never been and `tenant_id` has ANALYZE_AT_ROWS instances (see
        there). Once it has statistics, or this process has run the ANALYZE (which PostgreSQL skips, with a warning,
        for a user that does not own the table), this process never looks again; until then each create pays this
        one read. A concurrent create goes on meanwhile."""
        if self._analyzed.is_set() or not self._analyzing.acquire(blocking=False):
            return
        try:
            with self.transaction() as tx:
                analyzed, rows = tx.run(_STATISTICS, (tenant_id, ANALYZE_AT_ROWS)).rows[0]
                if not analyzed and rows >= ANALYZE_AT_ROWS:
                    tx.run("ANALYZE instances")
                    log.info("analyzed the instances table: PostgreSQL had no statistics for it yet")
            if analyzed or rows >= ANALYZE_AT_ROWS:
                self._analyzed.set()
        except (psycopg.Error, Unavailable):
            # The instances are created already: a failed look only leaves the statistics to autovacuum.
            log.exception("analyzing the instances table failed")
        finally:
            self._analyzing.release()

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
                psycopg.RawCursor(connection).execute("SELECT pg_notify($1, '')", (self.channel,))
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
