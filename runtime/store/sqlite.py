"""The embedded default: one SQLite file in WAL mode."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from tenantflow.runtime.errors import Unavailable
from tenantflow.runtime.store._sql import Params, Result, Tx
from tenantflow.runtime.store.sqlstore import SQLStore

SYNCHRONOUS = ("full", "normal", "off")
DEFAULT_BUSY_TIMEOUT_S = 30.0
BUSY_RETRY_AFTER_S = 1.0
T = TypeVar("T")


def _busy(error: BaseException) -> bool:
    """SQLite gave up waiting for another connection's lock (past the busy timeout)."""
    return isinstance(error, sqlite3.OperationalError) and ("locked" in str(error) or "busy" in str(error))


def _store_busy() -> Unavailable:
    return Unavailable("the database is busy; retry shortly", retry_after_s=BUSY_RETRY_AFTER_S)


# The column names of each statement's result (they are the statement's to say: looked up once).
_names: dict[str, tuple[str, ...]] = {}


class _SQLiteTx(Tx):
    """Statements run at once (in the process: no round trips to save)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def run(self, sql: str, params: Params = ()) -> Result:
        cursor = self._connection.execute(sql, params)
        rows = cursor.fetchall()
        names = _names.get(sql)
        if names is None:
            names = _names[sql] = tuple(d[0] for d in cursor.description or ())
        return Result(names, rows)

    def send_many(self, sql: str, rows: Sequence[Params]) -> None:
        self._connection.executemany(sql, rows)


@dataclass
class _Pending:
    fn: Callable[[Tx], Any]
    done: bool = False
    result: Any = None
    error: BaseException | None = None


class SQLiteStore(SQLStore):
    """All threads share one connection behind a lock: SQLite takes one writer at a time anyway,
    and a Python lock hands it over without SQLite's busy-wait sleeps. Every writer taking its turn,
    it needs no row-lock clauses, and it has no notifications (the workers poll).

    Journal writes (and finishes) are group-committed: whoever takes the lock commits every write queued
    meanwhile in one transaction (one fsync); if one raises, each is written again alone, so that one caller's
    error does not undo the others. One-statement reads (`read`) and read-only snapshots (`snapshot`: an
    activation's load) use a second connection, which WAL lets read beside the writer.
    """

    dialect = {"blob": "BLOB", "float": "REAL", "bigint": "INTEGER", "clustered": " WITHOUT ROWID", "bytewise": ""}
    immediate = True

    def __init__(self, path: str, synchronous: str = "full", busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous is one of {SYNCHRONOUS}")
        self.path = path
        self._lock = threading.RLock()
        self._queue_lock = threading.Lock()
        self._queue: list[_Pending] = []
        try:
            self._connection = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_s
            )
            self._connection.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as error:
            raise Unavailable(f"cannot open the SQLite database {path!r}: {error}") from None
        self._connection.execute(f"PRAGMA synchronous={synchronous}")
        self._connection.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        self.migrate()
        # Reads of one statement go through a connection of their own: in WAL mode a reader sees the last
        # commit and neither waits for the writer (nor its fsync) nor holds it up.
        self._reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_s)
        self._reader.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        self._read_lock = threading.Lock()

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """A write transaction; a lock held elsewhere past the busy timeout raises `Unavailable` (503)."""
        with self._lock:
            try:
                self._connection.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as error:
                if _busy(error):
                    raise _store_busy() from error
                raise
            try:
                yield _SQLiteTx(self._connection)
            except BaseException as error:
                if self._connection.in_transaction:
                    self._connection.execute("ROLLBACK")
                if _busy(error):
                    raise _store_busy() from error
                raise
            try:
                self._connection.execute("COMMIT")
            except sqlite3.OperationalError as error:
                if self._connection.in_transaction:
                    self._connection.execute("ROLLBACK")
                if _busy(error):
                    raise _store_busy() from error
                raise

    @contextmanager
    def read(self) -> Iterator[Tx]:
        """One read statement on the reader connection (its own snapshot of the last commit)."""
        with self._read_lock:
            try:
                yield _SQLiteTx(self._reader)
            except sqlite3.OperationalError as error:
                if _busy(error):
                    raise _store_busy() from error
                raise

    @contextmanager
    def snapshot(self) -> Iterator[Tx]:
        """Reads on the reader connection in one read transaction: they see the last commit before the first of
        them, and neither wait for the writer's lock (held through every batch's fsync) nor hold it."""
        with self.read() as tx:
            self._reader.execute("BEGIN")
            try:
                yield tx
            finally:
                if self._reader.in_transaction:
                    self._reader.execute("COMMIT")

    def write(self, fn: Callable[[Tx], T]) -> T:
        pending = _Pending(fn)
        with self._queue_lock:
            self._queue.append(pending)
        with self._lock:
            if not pending.done:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._commit(batch)
        error = pending.error
        if error is not None:
            if _busy(error):
                raise _store_busy() from error
            raise error
        return pending.result  # type: ignore[no-any-return]

    def _commit(self, batch: list[_Pending]) -> None:
        """Every write of `batch` in one transaction. If one raises, none is kept: each is then written again in a
        transaction of its own, so that the error is that write's alone (savepoints around each write would do the
        same, at two more statements a write, each of which lets go of the GIL and waits to take it back)."""
        connection = self._connection
        tx = _SQLiteTx(connection)
        try:
            connection.execute("BEGIN IMMEDIATE")
            for pending in batch:
                pending.result = pending.fn(tx)
            connection.execute("COMMIT")
        except Exception as error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            if len(batch) == 1 or _busy(error):
                for pending in batch:
                    pending.error = error
            else:
                for pending in batch:
                    self._commit([pending])
        except BaseException as error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            for pending in batch:
                pending.error = error
        finally:
            for pending in batch:
                pending.done = True

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._reader.close()
            self._connection.close()
