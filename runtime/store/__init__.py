"""Journal stores, chosen by URL: sqlite:///path (default) or postgresql://..."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from tenantflow.runtime.errors import InvalidInput
from tenantflow.runtime.store.base import LeaseLost, SQLStore

DEFAULT_DB = "sqlite:///./tenantflow.db"

__all__ = ["DEFAULT_DB", "LeaseLost", "SQLStore", "open_store"]


def open_store(url: str) -> SQLStore:
    """sqlite:///relative.db, sqlite:////absolute.db (?synchronous=normal), or postgresql://..."""
    if url.startswith("sqlite://"):
        from tenantflow.runtime.store.sqlite import SQLiteStore

        parts = urlsplit(url)
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path:
            raise InvalidInput("a SQLite URL names a file: sqlite:///./tenantflow.db")
        synchronous = parse_qs(parts.query).get("synchronous", ["full"])[0]
        return SQLiteStore(path, synchronous=synchronous)
    if url.startswith(("postgresql://", "postgres://")):
        from tenantflow.runtime.store.postgres import PostgresStore

        return PostgresStore(url)
    raise InvalidInput(f"unsupported database URL {url!r}; use sqlite:///FILE or postgresql://...")
