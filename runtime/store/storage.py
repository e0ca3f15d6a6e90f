"""What a tenant stores, in bytes, for its storage quota.

Each instance keeps its own total (`stored_bytes`, moved by every write in the statement that makes it);
a tenant's total is their sum plus its sources and its versions (VERSION_BYTES each, about a row's size), summed
at most every STORAGE_CACHE_S by each store object.
"""

from __future__ import annotations

import threading
import time

from tenantflow.runtime.records import Quotas
from tenantflow.runtime.store.core import StoreCore

# The tenant's stored bytes are summed at most this often per store (the quota is checked on every write).
STORAGE_CACHE_S = 2.0
# What one version counts for: a deploy of a source already stored (A, B, A, ...) adds a row and nothing else.
VERSION_BYTES = 128


class Storage(StoreCore):
    # Guards every store's cache of stored bytes per tenant.
    _storage_lock = threading.Lock()

    def stored_bytes(self, tenant_id: str, max_age_s: float = STORAGE_CACHE_S) -> int:
        """What the tenant's instances, sources and versions store, in bytes (as stored, i.e. compressed); summed
        at most every `max_age_s` by this store object, so checking it on every write is cheap."""
        cache = self._storage_cache()
        with self._storage_lock:
            cached = cache.get(tenant_id)
        if cached is not None and time.monotonic() - cached[1] < max_age_s:
            return cached[0]
        with self.read() as tx:
            total = tx.scalar(
                "SELECT (SELECT COALESCE(SUM(stored_bytes), 0) FROM instances WHERE tenant_id = ?) + "
                "(SELECT COALESCE(SUM(LENGTH(source)), 0) FROM sources WHERE tenant_id = ?) + "
                f"(SELECT COUNT(*) FROM versions WHERE tenant_id = ?) * {VERSION_BYTES} AS stored_bytes",
                (tenant_id, tenant_id, tenant_id),
            )
        total = int(total or 0)
        with self._storage_lock:
            cache[tenant_id] = (total, time.monotonic())
        return total

    def storage_exhausted(self, tenant_id: str, quotas: Quotas) -> bool:
        return self.stored_bytes(tenant_id) >= quotas.max_stored_bytes

    def _storage_cache(self) -> dict[str, tuple[int, float]]:
        cache: dict[str, tuple[int, float]] = self.__dict__.setdefault("_storage", {})
        return cache
