"""Deploy checks: the tenant's module-level code, run once at deploy, off the request threads."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from tenantflow.host import ErrorInfo, Sandbox
from tenantflow.runtime.engine.executor import limits_for
from tenantflow.runtime.errors import QuotaExceeded, Unavailable
from tenantflow.runtime.records import Tenant

T = TypeVar("T")

# Deploy checks run the tenant's module-level code: on a pool of their own (never the request
# threads), a few at a time, under the tenant's memory quota and a small fuel and time budget.
CHECK_THREADS = 2
CHECK_QUEUE = 16
"""Deploy checks waiting or running at once, across tenants; beyond it: 503 Unavailable."""
CHECKS_PER_TENANT = 2
"""Deploy checks of one tenant waiting or running at once; beyond it: 429 QuotaExceeded."""
CHECK_DEADLINE_S = 5.0
CHECK_FUEL = 2_000_000_000
"""Fuel for a deploy check (the tenant's fuel quota if lower): ~0.2 s of guest CPU."""


class DeployChecks:
    """Runs `Sandbox.check` on CHECK_THREADS threads of its own, with bounded waiting room."""

    def __init__(self, sandbox: Sandbox, threads: int = CHECK_THREADS) -> None:
        self.sandbox = sandbox
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="deploy-check")
        self._lock = threading.Lock()
        self._by_tenant: dict[str, int] = {}
        self._total = 0

    def submit(self, tenant: Tenant, source: str) -> Future[ErrorInfo | None]:
        """The check's future (its error or None); QuotaExceeded or Unavailable when it cannot wait."""
        limits = dataclasses.replace(
            limits_for(tenant.quotas), fuel=min(tenant.quotas.fuel, CHECK_FUEL), deadline_s=CHECK_DEADLINE_S
        )
        return self.run(tenant, self.sandbox.check, source, limits)

    def run(self, tenant: Tenant, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        """Any other sandbox job of a tenant's (an upgrade's replay check) with the same bounds as a check."""
        self._reserve(tenant.tenant_id)
        try:
            future = self._pool.submit(fn, *args, **kwargs)
        except BaseException:
            self._release(tenant.tenant_id)
            raise
        future.add_done_callback(lambda _: self._release(tenant.tenant_id))
        return future

    def _reserve(self, tenant_id: str) -> None:
        with self._lock:
            if self._by_tenant.get(tenant_id, 0) >= CHECKS_PER_TENANT:
                raise QuotaExceeded(
                    f"at most {CHECKS_PER_TENANT} deploys of a tenant are checked at once", CHECK_DEADLINE_S
                )
            if self._total >= CHECK_QUEUE:
                raise Unavailable("the server is checking too many deploys; retry shortly", CHECK_DEADLINE_S)
            self._by_tenant[tenant_id] = self._by_tenant.get(tenant_id, 0) + 1
            self._total += 1

    def _release(self, tenant_id: str) -> None:
        with self._lock:
            self._total -= 1
            left = self._by_tenant.pop(tenant_id) - 1
            if left:
                self._by_tenant[tenant_id] = left

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
