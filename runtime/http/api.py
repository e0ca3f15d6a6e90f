"""The HTTP API: a Starlette app over one `Service`.

JSON in and out; every error is an RFC 9457 problem document
(`application/problem+json` with type, title, status, detail). Request bodies
are capped before they are parsed; tenant calls under /v1 need
`Authorization: Bearer <key>`, and a tenant only ever sees its own resources.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tenantflow.runtime import contract
from tenantflow.runtime.engine.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from tenantflow.runtime.errors import InvalidInput, TenantflowError, TooLarge, Unauthorized
from tenantflow.runtime.http.dashboard import dashboard_routes
from tenantflow.runtime.http.openapi import openapi_document
from tenantflow.runtime.http.operations import OPERATIONS
from tenantflow.runtime.http.problems import (
    Forbidden,
    InternalError,
    MalformedRequest,
    RequestTimeout,
    dumps,
    problem,
    problem_for,
    status_problem,
)
from tenantflow.runtime.records import Instance, Tenant, Version, check_event_type, check_id
from tenantflow.runtime.service import Service

__all__ = ["BODY_TIMEOUT_S", "DRAIN_LIMIT", "MAX_BODY", "BodyTimeout", "create_app", "parse_json"]

log = logging.getLogger("tenantflow.api")

MAX_BODY = 2 << 20
"""Raw request bodies larger than this are refused (413) before they are parsed."""

DRAIN_LIMIT = 16 << 20
"""An oversize body is read and dropped up to this size so the client gets its 413 cleanly."""

BODY_TIMEOUT_S = 10.0
"""A request body must arrive whole within this many seconds of the first read (else 408)."""

JSON_CONTENT_TYPE = "application/json"

M = TypeVar("M", bound=BaseModel)


class JSONBody(Response):
    media_type = JSON_CONTENT_TYPE

    def render(self, content: Any) -> bytes:
        return dumps(content)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes) -> Any:
    """Parse a request body; MalformedRequest for anything that is not plain JSON text."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRequest("the body is not UTF-8") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise MalformedRequest("the JSON body is nested too deeply") from None
    except ValueError as error:
        raise MalformedRequest(f"the body is not valid JSON: {error}") from None
    try:
        # Lone surrogates ("\ud800") parse but cannot be stored or compiled: refuse them here.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedRequest(
            "the JSON body holds a lone surrogate (\\ud800-\\udfff), which is not Unicode text"
        ) from None
    except RecursionError:
        raise MalformedRequest("the JSON body is nested too deeply") from None
    return value


# Fields whose rules the records state in words: a wrong value gets the records' own message.
_STRING_ERRORS = {"string_type", "string_too_short", "string_too_long", "string_pattern_mismatch"}
_FIELD_RULES: dict[str, Callable[[Any], Any]] = {
    "id": lambda value: check_id(value, "instance id"),
    "after": lambda value: check_id(value, "after"),
    "type": check_event_type,
}


def _invalid(error: ValidationError, what: str) -> TenantflowError:
    """The domain error for a body or query that does not fit its model, naming the field."""
    problems = error.errors(include_url=False)
    unknown = sorted(str(e["loc"][-1]) for e in problems if e["type"] == "extra_forbidden")
    if unknown:
        return InvalidInput(f"unknown fields in {what}: {unknown}")
    first = problems[0]
    kind, loc = first["type"], first["loc"]
    if not loc:
        if kind == "too_long":
            return TooLarge(f"{what} holds at most {first['ctx']['max_length']} items")
        if kind == "too_short":
            return InvalidInput(f"{what} is a non-empty JSON array")
        if kind == "list_type":
            return InvalidInput(f"{what} is a JSON array")
        return InvalidInput(f"{what} is a JSON object")
    field = str(loc[-1])
    where = "".join(f"item {part}: " for part in loc if isinstance(part, int))
    if kind == "missing":
        return InvalidInput(f"{where}{what} needs {field}")
    if kind in ("model_type", "dict_type"):
        return InvalidInput(f"{where}each item of {what} is a JSON object")
    rule = _FIELD_RULES.get(field)
    if rule is not None and kind in _STRING_ERRORS:
        try:
            rule(first["input"])
        except InvalidInput as refused:
            return InvalidInput(f"{where}{refused}")
    message = str(first["ctx"]["error"]) if kind == "value_error" else first["msg"]
    return InvalidInput(f"{where}{field}: {message}")


def validate(model: type[M], value: Any, what: str) -> M:
    """`value` as `model`; InvalidInput (or TooLarge, for a list over its cap) naming the field otherwise."""
    try:
        return model.model_validate(value)
    except ValidationError as error:
        raise _invalid(error, what) from None


def query(model: type[M], request: Request) -> M:
    """The request's query string as `model`: each parameter at most once, none it does not know."""
    params = request.query_params
    repeated = sorted(name for name in set(params) if len(params.getlist(name)) > 1)
    if repeated:
        raise InvalidInput(f"query parameters given more than once: {repeated}")
    unknown = sorted(set(params) - set(model.model_fields))
    if unknown:
        raise InvalidInput(f"unknown query parameters: {unknown}; use {', '.join(model.model_fields)}")
    return validate(model, dict(params), "the query")


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _given(model: BaseModel) -> dict[str, Any]:
    """The fields the request set, as they came (not re-serialized: params may nest deeply)."""
    return {name: getattr(model, name) for name in model.model_fields_set}


class BodyTimeout:
    """ASGI middleware: a request body must arrive whole within `timeout_s` of the app's first read.

    A client that sends headers and then stalls would otherwise hold its connection and task
    forever; the endpoint reading the body gets RequestTimeout (408, connection closed) instead.
    Once the body is complete, later reads (waiting for a disconnect) are not timed.
    """

    def __init__(self, app: ASGIApp, timeout_s: float = BODY_TIMEOUT_S) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        complete = False

        async def timed_receive() -> Message:
            nonlocal deadline, complete
            if complete:
                return await receive()
            if deadline is None:
                deadline = loop.time() + self.timeout_s
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise RequestTimeout(f"the request body did not arrive within {self.timeout_s:g} s") from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, timed_receive, send)


def bearer_key(request: Request, who: str = "the tenant's API key") -> str:
    """The key of an `Authorization: Bearer <key>` header; Unauthorized if there is none."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.strip().partition(" ")
    if not header:
        raise Unauthorized(f"send {who} as 'Authorization: Bearer <key>'")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <key>'")
    return key.strip()


def version_json(version: Version) -> dict[str, Any]:
    return {
        "name": version.workflow,
        "version": version.version,
        "source_hash": version.source_hash,
        "created_at": version.created_at,
    }


def instance_json(instance: Instance) -> dict[str, Any]:
    return instance.public()


class Api:
    def __init__(self, service: Service, max_body: int = MAX_BODY, metrics_token: str | None = None) -> None:
        self.service = service
        self.max_body = max_body
        self.metrics_token = metrics_token or None

    # -- plumbing -------------------------------------------------------------

    async def tenant(self, request: Request) -> Tenant:
        return await run_in_threadpool(self.service.authenticate, bearer_key(request))

    async def metrics_reader(self, request: Request) -> None:
        """Let through the metrics token or an operator key: the metrics name every tenant."""
        key = bearer_key(request, "the operator key or the metrics token")
        if self.metrics_token is not None and hmac.compare_digest(key.encode(), self.metrics_token.encode()):
            return
        tenant = await run_in_threadpool(self.service.authenticate, key)
        if not tenant.operator:
            raise Forbidden("/metrics needs the operator key or the metrics token, not a tenant key")

    async def body(self, request: Request, default: Any = None) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > DRAIN_LIMIT:
            raise TooLarge(f"the request body is larger than {self.max_body} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > DRAIN_LIMIT:
                break
            if size <= self.max_body:
                chunks.append(chunk)
        if size > self.max_body:
            raise TooLarge(f"the request body is larger than {self.max_body} bytes")
        raw = b"".join(chunks)
        if not raw.strip(b" \t\n\r"):  # JSON's whitespace only: b"\x0b" is not an empty body
            if default is not None:
                return default
            raise MalformedRequest("the body is empty; send a JSON document")
        return parse_json(raw)

    # -- public endpoints -------------------------------------------------------

    async def health(self, request: Request) -> Response:
        def check() -> None:
            with self.service.store.transaction() as tx:
                tx.execute("SELECT 1")

        try:
            await run_in_threadpool(check)
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
        body = validate(contract.Deploy, await self.body(request), "the body")
        name, source = request.path_params["name"], body.source
        # The check (the tenant's module code) runs on the service's own bounded pool: waiting for
        # it holds no thread of the pool the other requests need.
        checked = await asyncio.wrap_future(self.service.begin_deploy(tenant, name, source))
        version, created = await run_in_threadpool(self.service.finish_deploy, tenant, name, source, checked)
        return JSONBody({**version_json(version), "created": created}, status_code=201 if created else 200)

    async def list_workflows(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        versions = await run_in_threadpool(self.service.workflows, tenant)
        return JSONBody({"workflows": [version_json(v) for v in versions]})

    async def get_workflow(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        name = request.path_params["name"]
        versions = await run_in_threadpool(self.service.versions, tenant, name)
        return JSONBody(
            {
                "name": name,
                "latest": versions[-1].version,
                "versions": [version_json(v) for v in versions],
            }
        )

    # -- instances ---------------------------------------------------------------

    async def create_instance(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        body = validate(contract.CreateInstance, await self.body(request, default={}), "the body")
        created = await run_in_threadpool(
            self.service.create_instances, tenant, request.path_params["name"], [_given(body)]
        )
        return JSONBody(instance_json(created[0]), status_code=201)

    async def create_instances(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        batch = validate(contract.CreateBatch, await self.body(request), "a batch")
        items = [_given(item) for item in batch.root]
        created = await run_in_threadpool(self.service.create_instances, tenant, request.path_params["name"], items)
        return JSONBody({"instances": [instance_json(i) for i in created]}, status_code=201)

    async def list_instances(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        asked = query(contract.InstanceQuery, request)
        page = await run_in_threadpool(
            self.service.instances, tenant, request.path_params["name"], asked.status, asked.limit, asked.after
        )
        next_after = page[-1].instance_id if len(page) == asked.limit else None
        return JSONBody({"instances": [instance_json(i) for i in page], "next_after": next_after})

    async def get_instance(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        found = await run_in_threadpool(
            self.service.instance, tenant, request.path_params["name"], request.path_params["id"]
        )
        return JSONBody(instance_json(found))

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

    async def send_event(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        event = validate(contract.SendEvent, await self.body(request), "the event")
        seq = await run_in_threadpool(
            self.service.send_event,
            tenant,
            request.path_params["name"],
            request.path_params["id"],
            event.type,
            event.payload,
        )
        return JSONBody({"seq": seq, "type": event.type}, status_code=202)

    def control(self, action: contract.Control) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            tenant = await self.tenant(request)
            done = await run_in_threadpool(
                self.service.control, tenant, request.path_params["name"], request.path_params["id"], action
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
) -> Starlette:
    """The API over `service`; the caller starts and stops the service's workers.

    /metrics answers to an operator key, or to `metrics_token` (for a scraper) if one is given."""
    api = Api(service, max_body, metrics_token)
    routes = [Route(op.path, api.endpoint(op.operation_id), methods=[op.method]) for op in OPERATIONS]
    return Starlette(
        routes=[*routes, *dashboard_routes(service)],  # the browser dashboard at /, same Service and keys
        middleware=[Middleware(BodyTimeout, timeout_s=body_timeout_s)],
        exception_handlers={
            TenantflowError: api.on_error,
            HTTPException: api.on_http_error,
            Exception: api.on_crash,
        },
    )
