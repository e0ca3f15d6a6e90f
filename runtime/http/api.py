"""The HTTP API: a Starlette app over one `Service`.

JSON in and out; every error is an RFC 9457 problem document
(`application/problem+json` with type, title, status, detail). Request bodies
are capped before they are parsed; tenant calls under /v1 need
`Authorization: Bearer <key>`, and a tenant only ever sees its own resources.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from http import HTTPStatus
from typing import Any, TypeVar

from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tenantflow.runtime import contract
from tenantflow.runtime.engine.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from tenantflow.runtime.errors import Forbidden, TenantflowError
from tenantflow.runtime.http.auth import bearer_key
from tenantflow.runtime.http.dashboard import dashboard_routes
from tenantflow.runtime.http.inputs import BODY_TIMEOUT_S, MAX_BODY, BodyTimeout, query, read_body, validate
from tenantflow.runtime.http.observe import RequestMetrics
from tenantflow.runtime.http.openapi import openapi_document
from tenantflow.runtime.http.operations import OPERATIONS
from tenantflow.runtime.http.problems import (
    InternalError,
    dumps,
    problem,
    problem_document,
    problem_for,
    status_problem,
)
from tenantflow.runtime.http.stream import HEARTBEAT_S, open_stream
from tenantflow.runtime.records import FINISHED, Instance, InstanceFilter, Tenant, Version
from tenantflow.runtime.service import Service
from tenantflow.runtime.service.application import COUNT_CAP, BulkOutcome
from tenantflow.runtime.service.changes import RECHECK_S
from tenantflow.runtime.service.pages import InstancePage
from tenantflow.runtime.service.watching import Cursor

T = TypeVar("T")

__all__ = ["BODY_TIMEOUT_S", "MAX_BODY", "Api", "create_app"]

log = logging.getLogger("tenantflow.api")

# An instance in one of these is on its way somewhere: a long poll holds on.
ACTIVE = frozenset({"queued", "running", "waiting_for_pause"})

JSON_CONTENT_TYPE = "application/json"


class JSONBody(Response):
    media_type = JSON_CONTENT_TYPE

    def render(self, content: Any) -> bytes:
        return dumps(content)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _given(model: BaseModel) -> dict[str, Any]:
    """The fields the request set, as they came (not re-serialized: params may nest deeply)."""
    return {name: getattr(model, name) for name in model.model_fields_set}


def version_json(version: Version) -> dict[str, Any]:
    return {
        "name": version.workflow,
        "version": version.version,
        "source_hash": version.source_hash,
        "created_at": version.created_at,
    }


def instance_json(instance: Instance) -> dict[str, Any]:
    return instance.public()


def page_json(page: InstancePage) -> dict[str, Any]:
    return {
        "instances": [instance_json(i) for i in page.instances],
        "next_after": page.next_after,
        "prev_before": page.prev_before,
    }


def bulk_json(outcome: BulkOutcome) -> dict[str, Any]:
    results = [
        {"workflow": r.workflow, "id": r.instance_id, "outcome": r.outcome, "reason": r.reason} for r in outcome.results
    ]
    done = sum(1 for r in outcome.results if r.outcome == "done")
    return {
        "action": outcome.action,
        "results": results,
        "done": done,
        "skipped": len(results) - done,
        "next_after": outcome.next_after,
    }


def bulk_filter(given: contract.BulkFilter, workflow: str | None) -> InstanceFilter:
    return InstanceFilter(workflow, given.status, given.created_after, given.created_before, given.id_prefix)


def tenant_json(tenant: Tenant) -> dict[str, Any]:
    return tenant.public()


class Api:
    def __init__(
        self,
        service: Service,
        max_body: int = MAX_BODY,
        metrics_token: str | None = None,
        watch_heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self.service = service
        self.max_body = max_body
        self.metrics_token = metrics_token or None
        self.watch_heartbeat_s = watch_heartbeat_s

    # -- plumbing -------------------------------------------------------------

    async def tenant(self, request: Request) -> Tenant:
        return await run_in_threadpool(self.service.authenticate, bearer_key(request))

    async def authenticated(
        self, request: Request, then: Callable[[Tenant], T], refused: TenantflowError | None = None
    ) -> tuple[Tenant, T]:
        """The request's tenant and `then(tenant)`, in one trip to a worker thread, the key checked first: 401
        before any other answer, `refused` (what reading the request's body or query raised) next. Each trip
        costs GIL hand-offs while activations run: a create and an instance's read, the client's round trip,
        make one where they made two."""
        key = bearer_key(request)

        def both() -> tuple[Tenant, T]:
            tenant = self.service.authenticate(key)
            if refused is not None:
                raise refused
            return tenant, then(tenant)

        return await run_in_threadpool(both)

    async def metrics_reader(self, request: Request) -> None:
        """Let through the metrics token or an operator key: the metrics name every tenant."""
        key = bearer_key(request, "the operator key or the metrics token")
        if self.metrics_token is not None and hmac.compare_digest(key.encode(), self.metrics_token.encode()):
            return
        tenant = await run_in_threadpool(self.service.authenticate, key)
        if not tenant.operator:
            raise Forbidden("/metrics needs the operator key or the metrics token, not a tenant key")

    # -- public endpoints -------------------------------------------------------

    async def health(self, request: Request) -> Response:
        try:
            await run_in_threadpool(self.service.health)
        except Exception as error:
            log.warning("health check failed: %s", error)
            return problem(503, "Service unavailable", "the database does not answer", "service-unavailable")
        return JSONBody({"status": "ok"})

    async def metrics(self, request: Request) -> Response:
        await self.metrics_reader(request)
        body = await run_in_threadpool(self.service.metrics.render)
        return Response(body, media_type=None, headers={"content-type": METRICS_CONTENT_TYPE})

    async def openapi(self, request: Request) -> Response:
        return JSONBody(openapi_document())

    # -- workflows ---------------------------------------------------------------

    async def deploy_workflow(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        body = validate(contract.Deploy, await read_body(request, self.max_body), "the body")
        name, source = request.path_params["name"], body.source
        # The check (the tenant's module code) runs on the service's own bounded pool: waiting for
        # it holds no thread of the pool the other requests need.
        checked = await asyncio.wrap_future(self.service.begin_deploy(tenant, name, source))
        version, created = await run_in_threadpool(self.service.finish_deploy, tenant, name, source, checked)
        return JSONBody({**version_json(version), "created": created}, status_code=201 if created else 200)

    async def list_workflows(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        asked = query(contract.WorkflowsQuery, request)
        page = await run_in_threadpool(self.service.workflows, tenant, asked.after, asked.limit)
        return JSONBody({"workflows": [version_json(v) for v in page.workflows], "next_after": page.next_after})

    async def get_workflow(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        name = request.path_params["name"]
        asked = query(contract.VersionsQuery, request)
        page = await run_in_threadpool(self.service.versions, tenant, name, asked.before, asked.limit)
        latest = page.versions[-1] if asked.before is None and page.versions else None
        if latest is None:
            latest = await run_in_threadpool(self.service.version, tenant, name)
        counts = await run_in_threadpool(self.service.counts, tenant, name)
        retention = await run_in_threadpool(self.service.retentions.get, tenant, name)
        return JSONBody(
            {
                "name": name,
                "latest": latest.version,
                "versions": [version_json(v) for v in page.versions],
                "next_before": page.next_before,
                "counts": counts,
                "retention": retention.public(),
            }
        )

    async def set_retention(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        body = validate(contract.SetRetention, await read_body(request, self.max_body), "the retention")
        retention = await run_in_threadpool(
            self.service.retentions.set, tenant, request.path_params["name"], body.model_dump()
        )
        return JSONBody(retention.public())

    # -- instances ---------------------------------------------------------------

    async def create_instance(self, request: Request) -> Response:
        bearer_key(request)  # no key at all: 401 before the body is read
        raw: Any = None
        refused: TenantflowError | None = None
        try:
            raw = await read_body(request, self.max_body, default={})
        except TenantflowError as error:
            refused = error
        name = request.path_params["name"]

        def create(tenant: Tenant) -> Instance:
            body = validate(contract.CreateInstance, raw, "the body")
            return self.service.create_instances(tenant, name, [_given(body)])[0]

        _, created = await self.authenticated(request, create, refused)
        return JSONBody(instance_json(created), status_code=201)

    async def create_instances(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        body = await read_body(request, self.max_body)
        if isinstance(body, dict):
            form = validate(contract.CreateCount, body, "a batch")
            items = [{"params": form.params} for _ in range(form.count)]
        else:
            items = [_given(item) for item in validate(contract.CreateBatch, body, "a batch").root]
        created, errors = await run_in_threadpool(self.service.create_batch, tenant, request.path_params["name"], items)
        answer = {
            "instances": [instance_json(i) for i in created],
            "errors": [{"index": e.index, "id": e.instance_id, "problem": problem_document(e.error)} for e in errors],
        }
        return JSONBody(answer, status_code=201 if created else 200)

    async def list_instances(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        asked = query(contract.InstanceQuery, request)
        page = await run_in_threadpool(
            self.service.instances,
            tenant,
            request.path_params["name"],
            asked.status,
            asked.limit,
            asked.after,
            asked.created_after,
            asked.created_before,
            before=asked.before,
            id_prefix=asked.id_prefix,
        )
        return JSONBody(page_json(page))

    async def list_tenant_instances(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        asked = query(contract.InstancesQuery, request)
        page = await run_in_threadpool(
            self.service.tenant_instances,
            tenant,
            asked.workflow,
            asked.status,
            asked.limit,
            asked.after,
            asked.created_after,
            asked.created_before,
            before=asked.before,
            id_prefix=asked.id_prefix,
        )
        return JSONBody(page_json(page))

    async def count_instances(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        asked = query(contract.CountsQuery, request)
        found = await run_in_threadpool(
            self.service.count_instances,
            tenant,
            asked.workflow,
            asked.created_after,
            asked.created_before,
            asked.id_prefix,
        )
        return JSONBody({"counts": found.counts, "cap": COUNT_CAP, "capped": found.capped})

    async def bulk_instances(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        body = validate(contract.TenantBulk, await read_body(request, self.max_body), "the body").root
        if isinstance(body, contract.BulkInstances):
            run = functools.partial(
                self.service.bulk, tenant, body.action, keys=[(ref.workflow, ref.id) for ref in body.instances]
            )
        else:
            where = bulk_filter(body.filter, body.filter.workflow)
            run = functools.partial(
                self.service.bulk, tenant, body.action, where=where, after=body.after, limit=body.limit
            )
        return JSONBody(bulk_json(await run_in_threadpool(run)))

    async def bulk_workflow_instances(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        body = validate(contract.WorkflowBulk, await read_body(request, self.max_body), "the body").root
        name = request.path_params["name"]
        await run_in_threadpool(self.service.versions, tenant, name)  # NotFound for no such workflow
        if isinstance(body, contract.BulkIds):
            run = functools.partial(
                self.service.bulk, tenant, body.action, keys=[(name, instance_id) for instance_id in body.ids]
            )
        else:
            where = bulk_filter(body.filter, name)
            run = functools.partial(
                self.service.bulk, tenant, body.action, where=where, after=body.after, limit=body.limit
            )
        return JSONBody(bulk_json(await run_in_threadpool(run)))

    async def get_instance(self, request: Request) -> Response:
        name, instance_id = request.path_params["name"], request.path_params["id"]
        asked: contract.InstanceWait | None = None
        refused: TenantflowError | None = None
        try:
            asked = query(contract.InstanceWait, request)
        except TenantflowError as error:
            refused = error

        def read(tenant: Tenant) -> Instance:
            return self.service.instance(tenant, name, instance_id)

        tenant, found = await self.authenticated(request, read, refused)
        assert asked is not None  # else `refused` was raised
        if asked.wait > 0 and not self.settled(found, asked.status):
            found = await self.long_poll(request, found, functools.partial(read, tenant), asked.status, asked.wait)
        return JSONBody(instance_json(found))

    @staticmethod
    def settled(found: Instance, seen: str | None) -> bool:
        """Whether a long poll answers: the instance has finished, or is not queued or running (and not in
        `seen`, the status the caller last saw, if it says)."""
        return found.status in FINISHED or (found.status not in ACTIVE and found.status != seen)

    async def long_poll(
        self, request: Request, found: Instance, read: Callable[[], Instance], seen: str | None, wait_s: float
    ) -> Instance:
        """The instance once it has settled (in a status other than `seen`), or after `wait_s`, or as it is
        when the client has gone or the server stops: a waiter sees `waiting` or `complete`, never the
        `running` in between."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        async with self.service.changes.watch(found.key) as watch:
            # Read again now that changes are watched: one that came since the first read is not missed.
            found = await run_in_threadpool(read)
            while not self.settled(found, seen) and not watch.closed:
                left = deadline - loop.time()
                if left <= 0 or await request.is_disconnected():
                    break
                await watch.wait(min(left, RECHECK_S))
                found = await run_in_threadpool(read)
        return found

    async def watch_instance(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        asked = query(contract.WatchQuery, request)
        header = request.headers.get("last-event-id")
        resume = header if header is not None else asked.after  # a reconnect's header wins
        follower = self.service.follow(
            tenant,
            request.path_params["name"],
            request.path_params["id"],
            None if resume is None else Cursor.parse(resume),
        )
        return await open_stream(self.service.changes, follower, self.watch_heartbeat_s)

    async def upgrade_instance(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        body = validate(contract.Upgrade, await read_body(request, self.max_body), "the body")
        name, instance_id = request.path_params["name"], request.path_params["id"]
        upgraded = await run_in_threadpool(self.service.upgrade, tenant, name, instance_id, body.version)
        return JSONBody(instance_json(upgraded))

    async def delete_instance(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        name, instance_id = request.path_params["name"], request.path_params["id"]
        await run_in_threadpool(self.service.delete_instance, tenant, name, instance_id)
        return JSONBody({"id": instance_id, "workflow": name})

    async def delete_workflow(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        name = request.path_params["name"]
        deleted = await run_in_threadpool(self.service.delete_workflow, tenant, name)
        return JSONBody({"name": name, "instances": deleted})

    async def get_journal(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        asked = query(contract.JournalQuery, request)
        journal = await run_in_threadpool(
            self.service.journal,
            tenant,
            request.path_params["name"],
            request.path_params["id"],
            asked.after,
            asked.limit,
        )
        return JSONBody(journal)

    async def export_instance(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        bundle = await run_in_threadpool(
            self.service.export, tenant, request.path_params["name"], request.path_params["id"]
        )
        # Up to tens of MiB of JSON: encoded off the event loop.
        response: Response = await run_in_threadpool(JSONBody, bundle)
        return response

    async def fork_instance(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        body = validate(contract.Fork, await read_body(request, self.max_body), "the body")
        forked = await run_in_threadpool(
            self.service.fork,
            tenant,
            request.path_params["name"],
            request.path_params["id"],
            (body.from_.name, body.from_.count),
            body.version,
            body.id,
        )
        return JSONBody(instance_json(forked), status_code=201)

    async def send_event(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        event = validate(contract.SendEvent, await read_body(request, self.max_body), "the event")
        seq = await run_in_threadpool(
            self.service.send_event,
            tenant,
            request.path_params["name"],
            request.path_params["id"],
            event.type,
            event.payload,
        )
        return JSONBody({"seq": seq, "type": event.type}, status_code=202)

    async def get_usage(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        asked = query(contract.UsageQuery, request)
        report = await run_in_threadpool(self.service.usage.tenant, tenant, asked.from_, asked.to, asked.group_by)
        return JSONBody(report.public())

    # -- admin (operator keys) -------------------------------------------------------

    async def get_admin_usage(self, request: Request) -> Response:
        actor = await self.tenant(request)
        self.service.admin.check(actor)
        asked = query(contract.AdminUsageQuery, request)
        report = await run_in_threadpool(
            self.service.usage.admin, actor, asked.from_, asked.to, asked.group_by, asked.tenant
        )
        return JSONBody(report.public())

    async def list_tenants(self, request: Request) -> Response:
        actor = await self.tenant(request)
        found = await run_in_threadpool(self.service.admin.tenants, actor)
        return JSONBody({"tenants": [tenant_json(t) for t in found]})

    async def create_tenant(self, request: Request) -> Response:
        actor = await self.tenant(request)
        self.service.admin.check(actor)
        body = validate(contract.CreateTenant, await read_body(request, self.max_body), "the body")
        quotas = _given(body.quotas) if body.quotas is not None else {}
        tenant, key = await run_in_threadpool(self.service.admin.create_tenant, actor, body.name, quotas, body.operator)
        return JSONBody({**tenant_json(tenant), "api_key": key}, status_code=201)

    async def get_tenant(self, request: Request) -> Response:
        actor = await self.tenant(request)
        found = await run_in_threadpool(self.service.admin.tenant, actor, request.path_params["tenant"])
        return JSONBody(tenant_json(found))

    async def update_tenant(self, request: Request) -> Response:
        actor = await self.tenant(request)
        self.service.admin.check(actor)
        body = validate(contract.UpdateTenant, await read_body(request, self.max_body), "the body")
        updated = await run_in_threadpool(
            self.service.admin.update_quotas, actor, request.path_params["tenant"], _given(body.quotas)
        )
        return JSONBody(tenant_json(updated))

    async def rotate_tenant_key(self, request: Request) -> Response:
        actor = await self.tenant(request)
        tenant, key = await run_in_threadpool(self.service.admin.rotate_key, actor, request.path_params["tenant"])
        return JSONBody({**tenant_json(tenant), "api_key": key})

    async def delete_tenant(self, request: Request) -> Response:
        actor = await self.tenant(request)
        deleted = await run_in_threadpool(self.service.admin.delete_tenant, actor, request.path_params["tenant"])
        return JSONBody(asdict(deleted))

    def control(self, action: contract.Control) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            tenant = await self.tenant(request)
            restart_from = None
            rollback = False
            if action == "restart":
                body = validate(contract.Restart, await read_body(request, self.max_body, default={}), "the body")
                if body.from_ is not None:
                    restart_from = (body.from_.name, body.from_.count)
            elif action == "terminate":
                terminate = await read_body(request, self.max_body, default={})
                rollback = validate(contract.Terminate, terminate, "the body").rollback
            done = await run_in_threadpool(
                self.service.control,
                tenant,
                request.path_params["name"],
                request.path_params["id"],
                action,
                restart_from,
                rollback,
            )
            return JSONBody(instance_json(done))

        return endpoint

    def endpoint(self, operation_id: str) -> Callable[[Request], Awaitable[Response]]:
        """The method that serves the operation of this id (a control's is made for its action)."""
        for action in contract.CONTROLS:
            if operation_id == f"{action}Instance":
                return self.control(action)
        found: Callable[[Request], Awaitable[Response]] = getattr(self, _snake(operation_id))
        return found

    # -- errors ------------------------------------------------------------------

    async def on_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, TenantflowError)
        return problem_for(exc, instance=request.url.path)

    async def on_http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        phrase = HTTPStatus(exc.status_code).phrase
        detail = exc.detail if exc.detail and exc.detail != phrase else None
        if detail is None:
            detail = {
                404: f"there is no resource at {request.url.path}",
                405: f"{request.method} is not allowed on {request.url.path}",
            }.get(exc.status_code, phrase)
        return status_problem(exc.status_code, detail, request.url.path, dict(exc.headers or {}))

    async def on_crash(self, request: Request, exc: Exception) -> Response:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        detail = "an unexpected error happened; it has been logged and nothing was changed by this request"
        return problem_for(InternalError(detail), instance=request.url.path)


def create_app(
    service: Service,
    *,
    max_body: int = MAX_BODY,
    metrics_token: str | None = None,
    body_timeout_s: float = BODY_TIMEOUT_S,
    watch_heartbeat_s: float = HEARTBEAT_S,
) -> Starlette:
    """The API over `service`; the caller starts and stops the service's workers.

    /metrics answers to an operator key, or to `metrics_token` (for a scraper) if one is given."""
    api = Api(service, max_body, metrics_token, watch_heartbeat_s)
    routes = [Route(op.path, api.endpoint(op.operation_id), methods=[op.method]) for op in OPERATIONS]
    return Starlette(
        routes=[*routes, *dashboard_routes(service)],  # the browser dashboard at /, same Service and keys
        middleware=[
            Middleware(RequestMetrics, metrics=service.metrics),
            Middleware(BodyTimeout, timeout_s=body_timeout_s),
        ],
        exception_handlers={
            TenantflowError: api.on_error,
            HTTPException: api.on_http_error,
            Exception: api.on_crash,
        },
    )
