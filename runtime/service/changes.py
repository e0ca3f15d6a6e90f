"""Long polls on an instance's status: wait for it to change without asking the store in a loop.

This process signals a change when one of its activations ends and when it applies a control or an
event; a long poll wakes at once then, and otherwise looks at the store every RECHECK_S (for what other
processes did). Waits are bounded per tenant and per process: beyond, QuotaExceeded (retry shortly).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter

from tenantflow.runtime.errors import QuotaExceeded
from tenantflow.runtime.records import InstanceKey

__all__ = ["MAX_WAITS", "MAX_WAITS_PER_TENANT", "RECHECK_S", "Changes"]

# How often a long poll reads the instance again when nothing here signalled (another process may have
# changed it).
RECHECK_S = 1.0
MAX_WAITS_PER_TENANT = 100
MAX_WAITS = 4096

_Waiter = tuple[asyncio.AbstractEventLoop, asyncio.Event]


class Changes:
    def __init__(self, max_waits: int = MAX_WAITS, max_per_tenant: int = MAX_WAITS_PER_TENANT) -> None:
        self.max_waits = max_waits
        self.max_per_tenant = max_per_tenant
        self._lock = threading.Lock()
        self._waiters: dict[InstanceKey, list[_Waiter]] = {}
        self._per_tenant: Counter[str] = Counter()

    def changed(self, key: InstanceKey) -> None:
        """`key` may have changed (safe from any thread): wake its long polls."""
        with self._lock:
            waiters = list(self._waiters.get(key, ()))
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # the waiter's loop has closed
                loop.call_soon_threadsafe(event.set)

    async def wait(self, key: InstanceKey, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a signal about `key`; whether one came."""
        event = asyncio.Event()
        waiter = (asyncio.get_running_loop(), event)
        with self._lock:
            if self._per_tenant[key.tenant_id] >= self.max_per_tenant:
                raise QuotaExceeded(f"at most {self.max_per_tenant} long polls at once per tenant", retry_after_s=1.0)
            if self._per_tenant.total() >= self.max_waits:
                raise QuotaExceeded("the server holds as many long polls as it takes", retry_after_s=1.0)
            self._per_tenant[key.tenant_id] += 1
            self._waiters.setdefault(key, []).append(waiter)
        try:
            await asyncio.wait_for(event.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                self._per_tenant[key.tenant_id] -= 1
                if self._per_tenant[key.tenant_id] <= 0:
                    del self._per_tenant[key.tenant_id]
                waiters = self._waiters.get(key, [])
                waiters.remove(waiter)
                if not waiters:
                    self._waiters.pop(key, None)

    @property
    def waiting(self) -> int:
        with self._lock:
            return self._per_tenant.total()
