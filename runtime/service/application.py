"""The composition root: one store, one sandbox, one engine (executor and worker pool), and the
application's operations on them (tenants, workflows, instances, controls, events, journals)."""

from __future__ import annotations

import hashlib
import json
import math
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, replace
from typing import Any

from tenantflow.host import ErrorInfo, FailureName, Sandbox
from tenantflow.host.pool import size_from_env
from tenantflow.runtime import logs
from tenantflow.runtime.bounds import CONTROLS, MAX_BATCH, MAX_BULK, MAX_PAGE
from tenantflow.runtime.engine.clock import Clock, SystemClock
from tenantflow.runtime.engine.executor import Executor
from tenantflow.runtime.engine.metrics import Metrics
from tenantflow.runtime.engine.parking import DEFAULT_MAX_PARK_S, DEFAULT_PARK_MEMORY_MB
from tenantflow.runtime.engine.retention import RetentionPurger
from tenantflow.runtime.engine.worker import DEFAULT_LEASE_S, WorkerPool, max_workers
from tenantflow.runtime.errors import (
    Conflict,
    InvalidInput,
    InvalidState,
    NotFound,
    QuotaExceeded,
    TenantflowError,
    TooLarge,
    WorkflowCodeError,
)
from tenantflow.runtime.records import (
    FINISHED,
    STATUSES,
    ActivationState,
    AttemptRecord,
    Instance,
    InstanceFilter,
    InstanceKey,
    Quotas,
    Tenant,
    Version,
    VersionPage,
    WorkflowPage,
    check_event_type,
    check_id,
)
from tenantflow.runtime.service import upgrades
from tenantflow.runtime.service.admin import Admin
from tenantflow.runtime.service.bundles import Bundles
from tenantflow.runtime.service.changes import Changes
from tenantflow.runtime.service.checks import DeployChecks
from tenantflow.runtime.service.pages import InstancePage, cursor, position
from tenantflow.runtime.service.retention import Retentions
from tenantflow.runtime.service.tenants import Tenants
from tenantflow.runtime.service.usage import UsageReports
from tenantflow.runtime.service.watching import Cursor, Follower, entry_json
from tenantflow.runtime.store import Created, SQLStore, open_store

# Instances deleted per transaction when a workflow is deleted (and at most store.purge.PURGE_ROWS journal rows).
DELETE_BATCH = 100
# A tenant out of storage frees some only by an operator's action: no point retrying soon.
STORAGE_RETRY_AFTER_S = 60.0


# Per-status counts of a list stop at this (a status with more is "COUNT_CAP or more"): each reads at most this
# many index entries, however many instances there are.
COUNT_CAP = 10_000

# The statuses each control applies to (the store checks again, in the instance's own transaction).
CONTROL_APPLIES: dict[str, frozenset[str]] = {
    "pause": frozenset({"queued", "running", "waiting"}),
    "resume": frozenset({"paused", "waiting_for_pause"}),
    "terminate": frozenset(STATUSES) - FINISHED,
    "restart": frozenset(STATUSES),
}


@dataclass(frozen=True)
class InstanceCounts:
    counts: dict[str, int]
    capped: list[str]
    """The statuses with more than COUNT_CAP instances (their count says COUNT_CAP)."""


@dataclass(frozen=True)
class BulkResult:
    workflow: str
    instance_id: str
    outcome: str
    """done or skipped"""
    reason: str | None = None


@dataclass(frozen=True)
class BulkOutcome:
    action: str
    results: list[BulkResult]
    next_after: str | None
    """The cursor to go on with a filter from (None: the filter's instances are all done)."""


@dataclass(frozen=True)
class BatchEntryError:
    """An entry of a batch that was not created: its place in the batch, its id if it gave one, and why."""

    index: int
    instance_id: str | None
    error: TenantflowError


def source_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def _json_size(value: Any) -> int:
    return len(json.dumps(value))


def _sandbox_from_env() -> Sandbox:
    """A Sandbox whose isolate pool is as large as TENANTFLOW_ISOLATE_POOL says (InvalidInput if it makes no sense)."""
    try:
        size = size_from_env()
    except ValueError as error:
        raise InvalidInput(str(error)) from None
    return Sandbox(pool=size)


class Service:
    def __init__(
        self,
        store: SQLStore,
        sandbox: Sandbox | None = None,
        clock: Clock | None = None,
        *,
        workers: int = 4,
        lease_s: float = DEFAULT_LEASE_S,
        owner: str | None = None,
        park_memory_mb: int = DEFAULT_PARK_MEMORY_MB,
        max_park_s: float = DEFAULT_MAX_PARK_S,
        tenant_cap: int | None = None,
    ) -> None:
        if workers < 1:
            raise InvalidInput("workers is at least 1")
        self.sandbox = sandbox or _sandbox_from_env()
        # Each activation thread holds at most one isolate; the rest of the allocator's slots are the isolate
        # pool's (as large as TENANTFLOW_ISOLATE_POOL asks) and the deploy checks'.
        limit = max_workers(self.sandbox)
        if workers > limit:
            if sandbox is None:
                self.sandbox.close()
            raise InvalidInput(f"workers is between 1 and {limit} (the sandbox's isolate slots, less its pool's)")
        self.store = store
        self.clock = clock or SystemClock()
        self.metrics = Metrics(store.status_counts)
        self.stopping = threading.Event()
        self.changes = Changes()
        self.executor = Executor(
            store, self.sandbox, self.clock, self.metrics, self.stopping, on_write=self.changes.changed
        )
        self.pool = WorkerPool(
            store,
            self.executor,
            self.clock,
            threads=workers,
            lease_s=lease_s,
            owner=owner,
            park_memory_mb=park_memory_mb,
            max_park_s=max_park_s,
            on_done=lambda done: self.changes.changed(done.claim.key),
            tenant_cap=tenant_cap,
        )
        self.metrics.watch_parking(self.pool.lot.usage)
        self.metrics.watch_queue(lambda: self.store.next_wake(self.clock.now()), self.clock.now)
        self.tenant_registry = Tenants(store, self.clock)
        self.admin = Admin(store, self.tenant_registry, self.clock, on_purged=self.pool.cancel_tenant)
        self.checks = DeployChecks(self.sandbox)
        self.retentions = Retentions(store, self.clock)
        self.bundles = Bundles(store)
        self.usage = UsageReports(store, self.clock)
        self.purger = RetentionPurger(store, self.clock, self.stopping)
        self._started = False

    @classmethod
    def open(cls, url: str, **kwargs: Any) -> Service:
        return cls(open_store(url), **kwargs)

    def start(self) -> Service:
        self.admin.resume_purges()
        self.pool.start()
        self.purger.start()
        self._started = True
        return self

    def stop(self) -> None:
        if self._started:
            self.pool.stop()  # sets `stopping`: the purger ends its tick too
            self.purger.join()
            self._started = False

    def close(self) -> None:
        self.stop()
        self.checks.close()
        self.sandbox.close()
        self.store.close()

    def health(self) -> None:
        """Raise unless the store answers."""
        self.store.ping()

    # -- tenants -------------------------------------------------------------

    def create_tenant(self, name: str, quotas: Quotas | None = None, operator: bool = False) -> tuple[Tenant, str]:
        return self.tenant_registry.create(name, quotas, operator)

    def authenticate(self, api_key: str | None) -> Tenant:
        return self.tenant_registry.authenticate(api_key)

    def tenants(self, actor: Tenant) -> list[Tenant]:
        return self.tenant_registry.tenants(actor)

    def view_as(self, actor: Tenant, tenant_id: str | None) -> Tenant:
        return self.tenant_registry.view_as(actor, tenant_id)

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
        self._check_storage(tenant)  # sources and versions are stored too
        return self.checks.submit(tenant, source)

    def finish_deploy(
        self, tenant: Tenant, workflow: str, source: str, error: ErrorInfo | None
    ) -> tuple[Version, bool]:
        """Store the checked source as a version, or WorkflowCodeError (422) naming what the check hit."""
        if error is not None:
            message = (
                error.message if error.name == FailureName.WORKFLOW_CODE_ERROR else f"{error.name}: {error.message}"
            )
            raise WorkflowCodeError(message, error.line)
        version, created = self.store.deploy(
            tenant.tenant_id, workflow, source, source_hash(source), self.clock.now(), tenant.quotas.max_workflows
        )
        if created:
            logs.event("workflow deployed", tenant=tenant.tenant_id, workflow=workflow, version=version.version)
        return version, created

    def workflows(self, tenant: Tenant, after: str | None = None, limit: int = MAX_PAGE) -> WorkflowPage:
        """The latest version of each workflow named after `after`, by name, `limit` at most."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit is between 1 and {MAX_PAGE}")
        found = self.store.workflows(tenant.tenant_id, after or "", limit + 1)
        more = len(found) > limit
        return WorkflowPage(found[:limit], found[limit - 1].workflow if more else None)

    def delete_workflow(self, tenant: Tenant, workflow: str) -> int:
        """Delete a workflow with its versions and its (finished) instances, a batch per transaction;
        InvalidState while one of its instances is unfinished. How many instances went."""
        check_id(workflow, "workflow name")
        self.store.delete_versions(tenant.tenant_id, workflow)
        deleted = 0
        while batch := self.store.delete_instances(tenant.tenant_id, workflow, DELETE_BATCH):
            deleted += batch
        logs.event("workflow deleted", tenant=tenant.tenant_id, workflow=workflow, instances=deleted)
        return deleted

    def delete_instance(self, tenant: Tenant, workflow: str, instance_id: str) -> None:
        """Delete a finished instance with its journal; InvalidState otherwise."""
        key = self._key(tenant, workflow, instance_id)
        self.store.delete_instance(key)
        self.changes.changed(key)

    def counts(self, tenant: Tenant, workflow: str) -> dict[str, int]:
        """How many of the workflow's instances are in each status (every status named, 0 if none)."""
        found = self.store.workflow_counts(tenant.tenant_id, check_id(workflow, "workflow name"))
        return {status: found.get(status, 0) for status in STATUSES}

    def versions(self, tenant: Tenant, workflow: str, before: int | None = None, limit: int = MAX_PAGE) -> VersionPage:
        """The workflow's newest `limit` versions below `before` (None: of all), oldest first; NotFound if the
        workflow has none at all."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit is between 1 and {MAX_PAGE}")
        found = self.store.versions(tenant.tenant_id, check_id(workflow, "workflow name"), before, limit + 1)
        more = len(found) > limit
        page = found[:limit]
        return VersionPage(page[::-1], page[-1].version if more else None)

    def version(self, tenant: Tenant, workflow: str, version: int | None = None) -> Version:
        """A version of the workflow (None: its latest); NotFound if it has none such."""
        if version is None:
            return self.store.latest_version(tenant.tenant_id, check_id(workflow, "workflow name"))
        return self.store.version(tenant.tenant_id, check_id(workflow, "workflow name"), version)

    def source(self, tenant: Tenant, workflow: str, version: int | None = None) -> tuple[Version, str]:
        chosen = self.version(tenant, workflow, version)
        return chosen, self.store.source(tenant.tenant_id, chosen.source_hash)

    # -- instances -----------------------------------------------------------

    def create_instances(self, tenant: Tenant, workflow: str, items: Sequence[Any]) -> list[Instance]:
        """All or none: the first entry that cannot be created fails the call and nothing is created."""
        check_id(workflow, "workflow name")
        parsed = [self._parse_item(tenant, item) for item in self._check_batch(items)]
        if len({i for i, _ in parsed}) != len(parsed):
            raise InvalidInput("instance ids in a batch must differ")
        version = self.version(tenant, workflow)
        self._check_storage(tenant)
        created, _ = self._create(tenant, version, parsed, all_or_none=True)
        return created

    def create_batch(
        self, tenant: Tenant, workflow: str, items: Sequence[Any]
    ) -> tuple[list[Instance], list[BatchEntryError]]:
        """Each entry that can be created is (as Cloudflare's createBatch); the others come back with their
        error: a bad id or params, an id given twice in the batch, an id already taken. What concerns the
        whole batch (no such workflow, the creation rate, storage) still fails the call."""
        check_id(workflow, "workflow name")
        errors: list[BatchEntryError] = []
        parsed: list[tuple[str, Any]] = []
        index_of: dict[str, int] = {}
        for index, item in enumerate(self._check_batch(items)):
            given = item.get("id") if isinstance(item, dict) else None
            try:
                instance_id, params = self._parse_item(tenant, item)
                if instance_id in index_of:
                    raise Conflict(f"instance id {instance_id!r} is given twice in the batch")
            except TenantflowError as error:
                errors.append(BatchEntryError(index, given if isinstance(given, str) else None, error))
                continue
            index_of[instance_id] = index
            parsed.append((instance_id, params))
        version = self.version(tenant, workflow)
        created: list[Instance] = []
        if parsed:
            self._check_storage(tenant)
            created, taken = self._create(tenant, version, parsed, all_or_none=False)
            for instance_id in taken:
                errors.append(
                    BatchEntryError(
                        index_of[instance_id], instance_id, Conflict(f"instance {instance_id!r} already exists")
                    )
                )
        return created, sorted(errors, key=lambda e: e.index)

    def _create(
        self, tenant: Tenant, version: Version, items: list[tuple[str, Any]], *, all_or_none: bool
    ) -> tuple[list[Instance], list[str]]:
        """Create what can be (all or none, or what is free); the workers of this process take what they have room
        for in the same transaction (the hand-off), the dispatchers (here or elsewhere) the rest."""
        with self.pool.handoff(len(items)) as offer:
            source = None if offer.handoff is None else self.store.source(tenant.tenant_id, version.source_hash)

            def adopt(done: Created) -> None:
                # In the create's transaction: the activations start while it commits, and wait for it (`committed`)
                # before anything with an effect. What they would load: the instance as leased, its source, no
                # journal, no events yet (one sent meanwhile is found where the instance waits for it), the quotas
                # just authenticated with.
                created = {i.key: i for i in done.instances}
                offer.adopt(
                    done.claims,
                    {
                        c: ActivationState(
                            replace(created[c.key], status="running", fence=c.fence),
                            source or "",
                            quotas=tenant.quotas,
                            ready=offer.committed,
                        )
                        for c in done.claims
                    },
                )

            try:
                done = self.store.create_available(
                    tenant.tenant_id,
                    version,
                    items,
                    self.clock.now(),
                    per_minute=tenant.quotas.max_instances_per_minute,
                    all_or_none=all_or_none,
                    handoff=offer.handoff,
                    claimed=adopt,
                )
            except BaseException:
                offer.committed.settle(False)
                raise
            offer.committed.settle(True)
        if len(done.claims) < len(done.instances):
            self.pool.wake()
        self._log_created(tenant, version.workflow, done.instances)
        return done.instances, done.taken

    @staticmethod
    def _check_batch(items: Sequence[Any]) -> Sequence[Any]:
        if not isinstance(items, list) or not items:
            raise InvalidInput("a batch is a non-empty JSON array of {id?, params?}")
        if len(items) > MAX_BATCH:
            raise TooLarge(f"a batch creates at most {MAX_BATCH} instances")
        return items

    @staticmethod
    def _parse_item(tenant: Tenant, item: Any) -> tuple[str, Any]:
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
        return instance_id, params

    def _created(self, tenant: Tenant, workflow: str, created: list[Instance]) -> None:
        if created:
            self.pool.wake()
        self._log_created(tenant, workflow, created)

    @staticmethod
    def _log_created(tenant: Tenant, workflow: str, created: list[Instance]) -> None:
        for instance in created:
            logs.event(
                "instance created",
                tenant=tenant.tenant_id,
                workflow=workflow,
                instance=instance.instance_id,
                version=instance.version,
            )

    def fork(
        self,
        tenant: Tenant,
        workflow: str,
        instance_id: str,
        from_step: tuple[str, int],
        version: int | None = None,
        fork_id: str | None = None,
    ) -> Instance:
        """A new instance of the workflow (`fork_id`, or a random id) running `version` (default: the latest),
        queued now, whose journal is a copy of the instance's before the `from_step` (name, count) call: the
        steps before it are replayed, not run again. The original is not changed. As a create, it takes from
        the tenant's creation rate and needs its storage quota."""
        key = self._key(tenant, workflow, instance_id)
        new_id = uuid.uuid4().hex if fork_id is None else check_id(fork_id, "instance id")
        chosen = self.version(tenant, workflow, version)
        self._check_storage(tenant)
        forked = self.store.fork(
            key, new_id, chosen, from_step, self.clock.now(), per_minute=tenant.quotas.max_instances_per_minute
        )
        self._created(tenant, workflow, [forked])
        logs.event("instance forked", tenant=tenant.tenant_id, workflow=workflow, instance=new_id, original=instance_id)
        return forked

    def export(self, tenant: Tenant, workflow: str, instance_id: str) -> dict[str, Any]:
        """The instance as one self-contained document (see service.bundles)."""
        return self.bundles.export(self._key(tenant, workflow, instance_id))

    def instance(self, tenant: Tenant, workflow: str, instance_id: str) -> Instance:
        return self.store.instance(self._key(tenant, workflow, instance_id))

    def instances(
        self,
        tenant: Tenant,
        workflow: str,
        status: str | None = None,
        limit: int = 100,
        after: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        *,
        before: str | None = None,
        id_prefix: str | None = None,
    ) -> InstancePage:
        """A page of one workflow's instances, newest first (NotFound if there is no such workflow)."""
        self.version(tenant, workflow)  # NotFound if there is no such workflow
        return self.tenant_instances(
            tenant, workflow, status, limit, after, created_after, created_before, before=before, id_prefix=id_prefix
        )

    def tenant_instances(
        self,
        tenant: Tenant,
        workflow: str | None = None,
        status: str | None = None,
        limit: int = 100,
        after: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        *,
        before: str | None = None,
        id_prefix: str | None = None,
    ) -> InstancePage:
        """A page of the tenant's instances across its workflows (or of `workflow`'s: a filter, no NotFound),
        newest first, `after` the cursor of the page before (or `before` the cursor of the page after; `after`
        wins when both are given); with
        `id_prefix`, those whose id starts with it, by id."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit is between 1 and {MAX_PAGE}")
        where = self._filter(workflow, status, created_after, created_before, id_prefix)
        tenant_id = tenant.tenant_id
        if before is not None and after is None:
            # Read backwards from the place, one more than the page: a page before this one only if there is one.
            found = self.store.instances(tenant_id, where, limit + 1, before=position(before))
            page = found[-limit:]
            return InstancePage(
                page,
                cursor(page[-1]) if page else None,
                cursor(page[0]) if len(found) > limit else None,
            )
        # One more than the page: the next page's cursor only when there is a next page.
        found = self.store.instances(tenant_id, where, limit + 1, None if after is None else position(after))
        page = found[:limit]
        return InstancePage(
            page,
            cursor(page[-1]) if len(found) > limit else None,
            cursor(page[0]) if after is not None and page else None,
        )

    @staticmethod
    def _filter(
        workflow: str | None,
        status: str | None,
        created_after: float | None,
        created_before: float | None,
        id_prefix: str | None,
    ) -> InstanceFilter:
        if workflow is not None:
            check_id(workflow, "workflow name")
        if status is not None and status not in STATUSES:
            raise InvalidInput(f"status is one of {', '.join(STATUSES)}")
        for name, value in (("created_after", created_after), ("created_before", created_before)):
            if value is not None and not math.isfinite(value):
                raise InvalidInput(f"{name} is a time: epoch seconds or ISO 8601 with a timezone")
        if id_prefix is not None:
            check_id(id_prefix, "id_prefix (the start of an instance id)")
        return InstanceFilter(workflow, status, created_after, created_before, id_prefix)

    def count_instances(
        self,
        tenant: Tenant,
        workflow: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        id_prefix: str | None = None,
        status: str | None = None,
    ) -> InstanceCounts:
        """How many of the tenant's instances (or `workflow`'s) the filter matches in each status, each counted
        up to COUNT_CAP: a status above it is named in `capped` (its count is then COUNT_CAP, "or more")."""
        where = self._filter(workflow, status, created_after, created_before, id_prefix)
        found = self.store.count_instances(tenant.tenant_id, where, COUNT_CAP)
        statuses = [status] if status is not None else list(STATUSES)
        counts = {s: min(found.get(s, 0), COUNT_CAP) for s in statuses}
        return InstanceCounts(counts, [s for s in statuses if found.get(s, 0) > COUNT_CAP])

    def _key(self, tenant: Tenant, workflow: str, instance_id: str) -> InstanceKey:
        return InstanceKey(tenant.tenant_id, check_id(workflow, "workflow name"), check_id(instance_id, "instance id"))

    # -- controls ------------------------------------------------------------

    def control(
        self,
        tenant: Tenant,
        workflow: str,
        instance_id: str,
        action: str,
        restart_from: tuple[str, int] | None = None,
        rollback: bool = False,
    ) -> Instance:
        """Pause, resume, terminate (`rollback`: after running the rollbacks of its completed steps) or restart
        (from scratch, or from the `restart_from` (name, count) call of a step, keeping the journal before it)."""
        key = self._key(tenant, workflow, instance_id)
        self._control(key, action, self.clock.now(), restart_from, rollback)
        self.pool.wake()
        return self.store.instance(key)

    def _control(
        self,
        key: InstanceKey,
        action: str,
        now: float,
        restart_from: tuple[str, int] | None = None,
        rollback: bool = False,
    ) -> None:
        if action == "pause":
            self.store.pause(key, now)
        elif action == "resume":
            self.store.resume(key, now)
        elif action == "terminate":
            self.store.terminate(key, now, rollback)
            self.pool.cancel(key)
        elif action == "restart":
            self.store.restart(key, now, restart_from)
            self.pool.cancel(key)
        else:
            raise NotFound(f"no control {action!r}; use pause, resume, terminate or restart")
        self.pool.nudge(key)
        self.changes.changed(key)

    def bulk(
        self,
        tenant: Tenant,
        action: str,
        *,
        keys: Sequence[tuple[str, str]] | None = None,
        where: InstanceFilter | None = None,
        after: str | None = None,
        limit: int = MAX_BULK,
    ) -> BulkOutcome:
        """One control on many of the tenant's instances: those `keys` name ((workflow, id) each), or a page of
        at most `limit` of those the filter matches, newest first from `after` (the outcome's `next_after` goes
        on). Each is done on its own, as its single control would be, or skipped with the reason (not found, or
        not in a status the action applies to); nothing is refused as a whole but a bad request."""
        if action not in CONTROLS:
            raise InvalidInput(f"action is one of {', '.join(CONTROLS)}")
        if (keys is None) == (where is None):
            raise InvalidInput("name the instances (ids) or give a filter, one of the two")
        if not 1 <= limit <= MAX_BULK:
            raise InvalidInput(f"limit is between 1 and {MAX_BULK}")
        next_after = None
        targets: list[tuple[str, str, str | None]] = []  # workflow, id, the status it was listed in
        if keys is not None:
            if len(keys) > MAX_BULK:
                raise TooLarge(f"a bulk action names at most {MAX_BULK} instances")
            checked = [(check_id(w, "workflow name"), check_id(i, "instance id")) for w, i in keys]
            targets = [(w, i, None) for w, i in dict.fromkeys(checked)]
        else:
            assert where is not None
            where = self._filter(
                where.workflow, where.status, where.created_after, where.created_before, where.id_prefix
            )
            found = self.store.instances(tenant.tenant_id, where, limit + 1, None if after is None else position(after))
            page = found[:limit]
            next_after = cursor(page[-1]) if len(found) > limit else None
            targets = [(i.workflow, i.instance_id, i.status) for i in page]
        results: list[BulkResult] = []
        now = self.clock.now()
        for workflow, instance_id, listed in targets:
            if listed is not None and listed not in CONTROL_APPLIES[action]:
                results.append(
                    BulkResult(workflow, instance_id, "skipped", f"cannot {action} an instance that is {listed}")
                )
                continue
            try:
                self._control(InstanceKey(tenant.tenant_id, workflow, instance_id), action, now)
            except (InvalidState, NotFound) as error:
                results.append(BulkResult(workflow, instance_id, "skipped", str(error)))
                continue
            results.append(BulkResult(workflow, instance_id, "done"))
        done = sum(1 for r in results if r.outcome == "done")
        if done:
            self.pool.wake()
        logs.event("bulk control", tenant=tenant.tenant_id, action=action, done=done, skipped=len(results) - done)
        return BulkOutcome(action, results, next_after)

    def upgrade(self, tenant: Tenant, workflow: str, instance_id: str, version: int) -> Instance:
        """Move a waiting or paused instance to `version` if its journal replays cleanly under that code
        (Conflict naming where it diverges otherwise); the replay runs on the deploy checks' bounded pool."""
        key = self._key(tenant, workflow, instance_id)
        instance = self.store.instance(key)
        source_hash = upgrades.target_version(self.store, instance, version)
        if instance.version == version:
            return instance
        entries = upgrades.journal_entries(self.store, instance)
        source = self.store.source(tenant.tenant_id, source_hash)
        self.checks.run(
            tenant, upgrades.check_upgrade, self.sandbox, instance, version, source, entries, tenant.quotas
        ).result()
        self.store.upgrade(key, version, source_hash, instance.fence, self.clock.now())
        self.pool.cancel(key)  # an isolate parked with the old code is let go
        self.pool.nudge(key)
        self.changes.changed(key)
        logs.event(
            "instance upgraded", tenant=tenant.tenant_id, workflow=workflow, instance=instance_id, version=version
        )
        return self.store.instance(key)

    def send_event(self, tenant: Tenant, workflow: str, instance_id: str, event_type: Any, payload: Any) -> int:
        key = self._key(tenant, workflow, instance_id)
        check_event_type(event_type)
        if _json_size(payload) > tenant.quotas.max_payload_bytes:
            raise TooLarge(f"the payload is larger than {tenant.quotas.max_payload_bytes} bytes")
        self._check_storage(tenant)
        seq = self.store.send_event(key, event_type, payload, self.clock.now())
        self.pool.nudge(key)
        self.pool.wake()
        return seq

    def follow(self, tenant: Tenant, workflow: str, instance_id: str, cursor: Cursor | None = None) -> Follower:
        """A follower of the instance for a watcher that holds the journal up to `cursor` (see service.watching);
        it reads nothing until its first look."""
        return Follower(self.store, self._key(tenant, workflow, instance_id), cursor or Cursor())

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
        by_position: dict[int, list[AttemptRecord]] = {}
        for attempt in page.attempts:
            by_position.setdefault(attempt.position, []).append(attempt)
        steps = [entry_json(entry, by_position.get(entry.position, [])) for entry in page.entries]
        return {
            "id": instance_id,
            "workflow": workflow,
            "steps": steps,
            "events": [asdict(e) for e in page.events],
            "log": self.store.instance(key).log,
            "next_after": page.next_after,
        }
