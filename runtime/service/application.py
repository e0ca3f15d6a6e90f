"""The service: what the HTTP API and the CLI do, on one store, one sandbox and one worker pool."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from tenantflow.host import ISOLATE_SLOTS, ErrorInfo, Sandbox
from tenantflow.runtime.engine.clock import Clock, SystemClock
from tenantflow.runtime.engine.executor import Executor, limits_for
from tenantflow.runtime.engine.metrics import Metrics
from tenantflow.runtime.engine.worker import DEFAULT_LEASE_S, WorkerPool
from tenantflow.runtime.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    QuotaExceeded,
    TooLarge,
    Unauthorized,
    Unavailable,
    WorkflowCodeError,
)
from tenantflow.runtime.records import (
    STATUSES,
    Instance,
    InstanceKey,
    Quotas,
    Tenant,
    Version,
    check_event_type,
    check_id,
)
from tenantflow.runtime.store import SQLStore, open_store

MAX_BATCH = 100
# Each activation thread holds at most one isolate; keep a margin of pool slots for deploy checks.
MAX_WORKERS = ISOLATE_SLOTS - 8
MAX_PAGE = 1000
# A tenant out of storage frees some only by an operator's action: no point retrying soon.
STORAGE_RETRY_AFTER_S = 60.0

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


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def source_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def _json_size(value: Any) -> int:
    return len(json.dumps(value))


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
        self._reserve(tenant.tenant_id)
        limits = dataclasses.replace(
            limits_for(tenant.quotas), fuel=min(tenant.quotas.fuel, CHECK_FUEL), deadline_s=CHECK_DEADLINE_S
        )
        try:
            future = self._pool.submit(self.sandbox.check, source, limits)
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


class Service:
    def __init__(
        self,
        store: SQLStore,
        sandbox: Sandbox | None = None,
        clock: Clock | None = None,
        *,
        workers: int = 4,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        if not 1 <= workers <= MAX_WORKERS:
            raise InvalidInput(f"workers is between 1 and {MAX_WORKERS} (the sandbox's pool of isolate slots)")
        self.store = store
        self.sandbox = sandbox or Sandbox()
        self.clock = clock or SystemClock()
        self.metrics = Metrics(store.status_counts)
        self.stopping = threading.Event()
        self.executor = Executor(store, self.sandbox, self.clock, self.metrics, self.stopping)
        self.pool = WorkerPool(store, self.executor, self.clock, threads=workers, lease_s=lease_s)
        self.limiter = RateLimiter()
        self.checks = DeployChecks(self.sandbox)
        self._started = False

    @classmethod
    def open(cls, url: str, **kwargs: Any) -> Service:
        return cls(open_store(url), **kwargs)

    def start(self) -> Service:
        self.pool.start()
        self._started = True
        return self

    def stop(self) -> None:
        if self._started:
            self.pool.stop()
            self._started = False

    def close(self) -> None:
        self.stop()
        self.checks.close()
        self.sandbox.close()
        self.store.close()

    # -- tenants -------------------------------------------------------------

    def create_tenant(self, name: str, quotas: Quotas | None = None, operator: bool = False) -> tuple[Tenant, str]:
        check_id(name, "tenant name")
        api_key = "tf_" + secrets.token_urlsafe(32)
        tenant = Tenant(name, name, quotas or Quotas(), self.clock.now(), operator)
        try:
            self.store.tenant(name)
        except NotFound:
            self.store.create_tenant(tenant, hash_key(api_key))
            return tenant, api_key
        raise Conflict(f"tenant {name!r} already exists")

    def authenticate(self, api_key: str | None) -> Tenant:
        if not api_key:
            raise Unauthorized("send the tenant's API key as 'Authorization: Bearer <key>'")
        tenant = self.store.tenant_by_key(hash_key(api_key))
        if tenant is None:
            raise Unauthorized("unknown API key")
        return tenant

    def tenants(self, actor: Tenant) -> list[Tenant]:
        """The tenants `actor` may look at: every tenant for an operator, else only itself."""
        if not actor.operator:
            return [actor]
        return sorted(self.store.tenants(), key=lambda t: (t.tenant_id != actor.tenant_id, t.name))

    def view_as(self, actor: Tenant, tenant_id: str | None) -> Tenant:
        """The tenant whose resources `actor` reads: itself, or (for an operator only) the one named.

        Anyone else asking for another tenant gets NotFound, as for another tenant's resources."""
        if tenant_id is None or tenant_id == actor.tenant_id:
            return actor
        if not actor.operator:
            raise NotFound(f"no tenant {tenant_id!r}")
        return self.store.tenant(check_id(tenant_id, "tenant name"))

    # -- workflows -----------------------------------------------------------

    def deploy(self, tenant: Tenant, workflow: str, source: Any) -> tuple[Version, bool]:
        checked = self.begin_deploy(tenant, workflow, source).result()
        return self.finish_deploy(tenant, workflow, source, checked)

    def begin_deploy(self, tenant: Tenant, workflow: str, source: Any) -> Future[ErrorInfo | None]:
        """Validate a deploy and start checking its source (see DeployChecks); does not block."""
        check_id(workflow, "workflow name")
        if not isinstance(source, str):
            raise InvalidInput("source is a string of Python")
        if len(source.encode("utf-8", "surrogatepass")) > tenant.quotas.max_source_bytes:
            raise TooLarge(f"the source is larger than {tenant.quotas.max_source_bytes} bytes")
        return self.checks.submit(tenant, source)

    def finish_deploy(
        self, tenant: Tenant, workflow: str, source: str, error: ErrorInfo | None
    ) -> tuple[Version, bool]:
        """Store the checked source as a version, or WorkflowCodeError (422) naming what the check hit."""
        if error is not None:
            message = error.message if error.name == "WorkflowCodeError" else f"{error.name}: {error.message}"
            raise WorkflowCodeError(message, error.line)
        return self.store.deploy(tenant.tenant_id, workflow, source, source_hash(source), self.clock.now())

    def workflows(self, tenant: Tenant) -> list[Version]:
        return self.store.workflows(tenant.tenant_id)

    def versions(self, tenant: Tenant, workflow: str) -> list[Version]:
        return self.store.versions(tenant.tenant_id, check_id(workflow, "workflow name"))

    def source(self, tenant: Tenant, workflow: str, version: int | None = None) -> tuple[Version, str]:
        versions = self.versions(tenant, workflow)
        chosen = versions[-1] if version is None else next((v for v in versions if v.version == version), None)
        if chosen is None:
            raise NotFound(f"workflow {workflow!r} has no version {version}")
        return chosen, self.store.source(tenant.tenant_id, chosen.source_hash)

    # -- instances -----------------------------------------------------------

    def create_instances(self, tenant: Tenant, workflow: str, items: Sequence[Any]) -> list[Instance]:
        check_id(workflow, "workflow name")
        if not isinstance(items, list) or not items:
            raise InvalidInput("a batch is a non-empty JSON array of {id?, params?}")
        if len(items) > MAX_BATCH:
            raise TooLarge(f"a batch creates at most {MAX_BATCH} instances")
        parsed: list[tuple[str, Any]] = []
        for item in items:
            if not isinstance(item, dict):
                raise InvalidInput("each instance is a JSON object {id?, params?}")
            unknown = set(item) - {"id", "params"}
            if unknown:
                raise InvalidInput(f"unknown fields: {sorted(unknown)}")
            instance_id = item.get("id")
            instance_id = uuid.uuid4().hex if instance_id is None else check_id(instance_id, "instance id")
            params = item.get("params")
            if _json_size(params) > tenant.quotas.max_payload_bytes:
                raise TooLarge(f"params are larger than {tenant.quotas.max_payload_bytes} bytes")
            parsed.append((instance_id, params))
        if len({i for i, _ in parsed}) != len(parsed):
            raise InvalidInput("instance ids in a batch must differ")
        version = self.versions(tenant, workflow)[-1]
        self._check_storage(tenant)
        self.limiter.take(tenant.tenant_id, tenant.quotas.max_instances_per_minute, len(parsed))
        created = self.store.create_instances(tenant.tenant_id, version, parsed, self.clock.now())
        self.pool.wake()
        return created

    def instance(self, tenant: Tenant, workflow: str, instance_id: str) -> Instance:
        return self.store.instance(self._key(tenant, workflow, instance_id))

    def instances(
        self, tenant: Tenant, workflow: str, status: str | None = None, limit: int = 100, after: str | None = None
    ) -> list[Instance]:
        check_id(workflow, "workflow name")
        if status is not None and status not in STATUSES:
            raise InvalidInput(f"status is one of {', '.join(STATUSES)}")
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit is between 1 and {MAX_PAGE}")
        self.versions(tenant, workflow)
        return self.store.instances(tenant.tenant_id, workflow, status, limit, after)

    def _key(self, tenant: Tenant, workflow: str, instance_id: str) -> InstanceKey:
        return InstanceKey(tenant.tenant_id, check_id(workflow, "workflow name"), check_id(instance_id, "instance id"))

    # -- controls ------------------------------------------------------------

    def control(self, tenant: Tenant, workflow: str, instance_id: str, action: str) -> Instance:
        key = self._key(tenant, workflow, instance_id)
        now = self.clock.now()
        if action == "pause":
            self.store.pause(key, now)
        elif action == "resume":
            self.store.resume(key, now)
        elif action == "terminate":
            self.store.terminate(key, now)
            self.pool.cancel(key)
        elif action == "restart":
            self.store.restart(key, now)
            self.pool.cancel(key)
        else:
            raise NotFound(f"no control {action!r}; use pause, resume, terminate or restart")
        self.pool.wake()
        return self.store.instance(key)

    def send_event(self, tenant: Tenant, workflow: str, instance_id: str, event_type: Any, payload: Any) -> int:
        key = self._key(tenant, workflow, instance_id)
        check_event_type(event_type)
        if _json_size(payload) > tenant.quotas.max_payload_bytes:
            raise TooLarge(f"the payload is larger than {tenant.quotas.max_payload_bytes} bytes")
        self._check_storage(tenant)
        seq = self.store.send_event(key, event_type, payload, self.clock.now())
        self.pool.wake()
        return seq

    def _check_storage(self, tenant: Tenant) -> None:
        """QuotaExceeded (429) once the tenant's instances store its quota (summed every few seconds)."""
        if self.store.storage_exhausted(tenant.tenant_id, tenant.quotas):
            raise QuotaExceeded(tenant.quotas.storage_exhausted(), retry_after_s=STORAGE_RETRY_AFTER_S)

    def journal(
        self, tenant: Tenant, workflow: str, instance_id: str, after: int = -1, limit: int = MAX_PAGE
    ) -> dict[str, Any]:
        """A page of the journal: positions after `after`, at most `limit` of them and a bounded number of bytes."""
        key = self._key(tenant, workflow, instance_id)
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit is between 1 and {MAX_PAGE}")
        page = self.store.journal_page(key, after, limit)
        by_position: dict[int, list[dict[str, Any]]] = {}
        for attempt in page.attempts:
            by_position.setdefault(attempt.position, []).append(asdict(attempt))
        steps = []
        for entry in page.entries:
            item = asdict(entry)
            item["result"] = None if entry.result is None else json.loads(entry.result)
            item["attempt_log"] = by_position.get(entry.position, [])
            steps.append(item)
        return {
            "id": instance_id,
            "workflow": workflow,
            "steps": steps,
            "events": [asdict(e) for e in page.events],
            "log": self.store.instance(key).log,
            "next_after": page.next_after,
        }
