"""Instance creation rate per tenant: a token bucket in this process."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from tenantflow.runtime.errors import QuotaExceeded


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per tenant: `per_minute` creations, bursting up to the same number."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}

    def take(self, tenant_id: str, per_minute: int, count: int) -> None:
        now = time.monotonic()
        rate = per_minute / 60
        with self._lock:
            bucket = self._buckets.setdefault(tenant_id, _Bucket(float(per_minute), now))
            bucket.tokens = min(float(per_minute), bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            if bucket.tokens < count:
                wait = (count - bucket.tokens) / rate if rate > 0 else 60.0
                raise QuotaExceeded(f"instance creation is limited to {per_minute} per minute", retry_after_s=wait)
            bucket.tokens -= count
