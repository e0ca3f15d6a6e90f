"""Long polls on an instance's status: wait for it to change without asking the store in a loop.

This process signals a change when one of its activations ends and when it applies a control or an
event; a long poll wakes at once then, and otherwise looks at the store every RECHECK_S (for what other
processes did). A long poll holds one of a bounded number of places for its whole length, per tenant and
per process (well below the server's connection limit): beyond, QuotaExceeded (retry shortly). When the
server stops, every long poll is woken and answers with what it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import AsyncIterator

from tenantflow.runtime.errors import QuotaExceeded
from tenantflow.runtime.records import InstanceKey

__all__ = ["MAX_WAITS", "MAX_WAITS_PER_TENANT", "RECHECK_S", "Changes", "Watch"]

# How often a long poll reads the instance again when nothing here signalled (another process may have
# changed it).
RECHECK_S = 1.0
MAX_WAITS_PER_TENANT = 32
# A quarter of the server's connection limit (http.server.MAX_CONNECTIONS), so that long polls never take
# the connections other requests need.
MAX_WAITS = 250


class Watch:
    """One long poll's place: `wait` returns when the instance may have changed (a signal since the last
    `wait` is not lost), when the server stops, or after a timeout."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.event = asyncio.Event()
        self.closed = False

    async def wait(self, timeout: float) -> None:
        if self.closed:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), timeout)
        self.event.clear()


class Changes:
    def __init__(self, max_waits: int = MAX_WAITS, max_per_tenant: int = MAX_WAITS_PER_TENANT) -> None:
        self.max_waits = max_waits
        self.max_per_tenant = max_per_tenant
        self._lock = threading.Lock()
        self._watches: dict[InstanceKey, list[Watch]] = {}
        self._per_tenant: Counter[str] = Counter()
        self._closed = False

    def changed(self, key: InstanceKey) -> None:
        """`key` may have changed (safe from any thread): wake its long polls."""
        with self._lock:
            watches = list(self._watches.get(key, ()))
        for watch in watches:
            with contextlib.suppress(RuntimeError):  # the watch's loop has closed
                watch.loop.call_soon_threadsafe(watch.event.set)

    def close(self) -> None:
        """The server stops: wake every long poll (it answers with what it has) and hold no new ones."""
        with self._lock:
            self._closed = True
            watches = [w for ws in self._watches.values() for w in ws]
        for watch in watches:
            watch.closed = True
            with contextlib.suppress(RuntimeError):
                watch.loop.call_soon_threadsafe(watch.event.set)

    @contextlib.asynccontextmanager
    async def watch(self, key: InstanceKey) -> AsyncIterator[Watch]:
        """A place for one long poll on `key`, held until the block ends; QuotaExceeded if there is none."""
        watch = Watch(asyncio.get_running_loop())
        with self._lock:
            if self._per_tenant[key.tenant_id] >= self.max_per_tenant:
                raise QuotaExceeded(f"at most {self.max_per_tenant} long polls at once per tenant", retry_after_s=1.0)
            if self._per_tenant.total() >= self.max_waits:
                raise QuotaExceeded("the server holds as many long polls as it takes", retry_after_s=1.0)
            watch.closed = self._closed
            self._per_tenant[key.tenant_id] += 1
            self._watches.setdefault(key, []).append(watch)
        try:
            yield watch
        finally:
            with self._lock:
                self._per_tenant[key.tenant_id] -= 1
                if self._per_tenant[key.tenant_id] <= 0:
                    del self._per_tenant[key.tenant_id]
                watches = self._watches.get(key, [])
                watches.remove(watch)
                if not watches:
                    self._watches.pop(key, None)

    @property
    def waiting(self) -> int:
        with self._lock:
            return self._per_tenant.total()
