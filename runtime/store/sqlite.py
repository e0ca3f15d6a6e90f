"""The embedded default: one SQLite file in WAL mode."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from tenantflow.runtime.store.base import Row, SQLStore, Tx

SYNCHRONOUS = ("full", "normal", "off")


class _SQLiteTx(Tx):
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._connection.execute(sql, params).fetchall()


class SQLiteStore(SQLStore):
    """All threads share one connection behind a lock: SQLite takes one writer at a time anyway,
    and a Python lock hands it over without SQLite's busy-wait sleeps."""

    dialect = {"blob": "BLOB", "float": "REAL", "bigint": "INTEGER"}

    def __init__(self, path: str, synchronous: str = "full") -> None:
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous is one of {SYNCHRONOUS}")
        self.path = path
        self._lock = threading.RLock()
        self._connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute(f"PRAGMA synchronous={synchronous}")
        self._connection.execute("PRAGMA busy_timeout=30000")
        self.migrate()

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield _SQLiteTx(self._connection)
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._connection.close()
