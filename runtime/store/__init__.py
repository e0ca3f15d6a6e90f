"""Journal stores, chosen by URL: sqlite:///path (default) or postgresql://..."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from tenantflow.runtime.errors import InvalidInput
from tenantflow.runtime.store import codec
from tenantflow.runtime.store.activation import HOST_FAULT, PAUSING_STATUSES, EndFields, LeaseLost, Recording
from tenantflow.runtime.store.instances import Created
from tenantflow.runtime.store.journal import JOURNAL_PAGE_BYTES, JournalPage
from tenantflow.runtime.store.sqlstore import SQLStore

DEFAULT_DB = "sqlite:///./tenantflow.db"

__all__ = [
    "Created",
    "DEFAULT_DB",
    "EndFields",
    "HOST_FAULT",
    "JOURNAL_PAGE_BYTES",
    "JournalPage",
    "LeaseLost",
    "PAUSING_STATUSES",
    "Recording",
    "SQLStore",
    "codec",
    "open_store",
]


def open_store(url: str) -> SQLStore:
    """sqlite:///relative.db, sqlite:////absolute.db (?synchronous=normal&busy_timeout_ms=N), or postgresql://..."""
    if url.startswith("sqlite://"):
        from tenantflow.runtime.store.sqlite import DEFAULT_BUSY_TIMEOUT_S, SQLiteStore

        parts = urlsplit(url)
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path:
            raise InvalidInput("a SQLite URL names a file: sqlite:///./tenantflow.db")
        query = parse_qs(parts.query)
        synchronous = query.get("synchronous", ["full"])[0]
        busy_ms = query.get("busy_timeout_ms", [""])[0]
        if busy_ms and not busy_ms.isdigit():
            raise InvalidInput("busy_timeout_ms is a whole number of milliseconds")
        busy_timeout_s = int(busy_ms) / 1000 if busy_ms else DEFAULT_BUSY_TIMEOUT_S
        return SQLiteStore(path, synchronous=synchronous, busy_timeout_s=busy_timeout_s)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from tenantflow.runtime.store.postgres import PostgresStore
        except ImportError as error:
            raise InvalidInput(
                f"PostgreSQL needs the postgres extra: pip install 'tenantflow[postgres]' ({error})"
            ) from None

        return PostgresStore(url)
    raise InvalidInput(f"unsupported database URL {url!r}; use sqlite:///FILE or postgresql://...")
