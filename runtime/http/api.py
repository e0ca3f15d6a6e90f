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
import math
import re
from collections.abc import Awaitable, Callable, Collection
from http import HTTPStatus
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tenantflow.runtime.engine.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from tenantflow.runtime.errors import (
    InvalidInput,
    QuotaExceeded,
    TenantflowError,
    TooLarge,
    Unauthorized,
    Unavailable,
    WorkflowCodeError,
)
from tenantflow.runtime.http.dashboard import dashboard_routes
from tenantflow.runtime.http.openapi import openapi_document
from tenantflow.runtime.records import Instance, Tenant, Version, check_id
from tenantflow.runtime.service import Service

log = logging.getLogger("tenantflow.api")

MAX_BODY = 2 << 20
"""Raw request bodies larger than this are refused (413) before they are parsed."""

DRAIN_LIMIT = 16 << 20
"""An oversize body is read and dropped up to this size so the client gets its 413 cleanly."""

BODY_TIMEOUT_S = 10.0
"""A request body must arrive whole within this many seconds of the first read (else 408)."""

PROBLEM_TYPE = "urn:tenantflow:problem:"
PROBLEM_CONTENT_TYPE = "application/problem+json"
JSON_CONTENT_TYPE = "application/json"

CONTROLS = ("pause", "resume", "terminate", "restart")


class MalformedRequest(TenantflowError):
    """A body that is not JSON (or not UTF-8, or empty where JSON is needed)."""

    status = 400
    title = "Malformed request"


class Forbidden(TenantflowError):
    """A known key that may not do this (a tenant key on /metrics)."""

    status = 403
    title = "Forbidden"


class RequestTimeout(TenantflowError):
    """The request body did not arrive within BODY_TIMEOUT_S."""

    status = 408
    title = "Request timeout"


class InternalError(TenantflowError):
    status = 500
    title = "Internal server error"


def _slug(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def _finite(value: Any) -> Any:
    """The value with NaN and infinities (which JSON cannot carry) turned into null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def dumps(value: Any) -> bytes:
    """Strict JSON (ASCII, so lone surrogates survive as escapes; no NaN)."""
    try:
        return json.dumps(value, allow_nan=False).encode()
    except ValueError:
        return json.dumps(_finite(value), allow_nan=False).encode()


class JSONBody(Response):
    media_type = JSON_CONTENT_TYPE

    def render(self, content: Any) -> bytes:
        return dumps(content)


def problem(
    status: int,
    title: str,
    detail: str,
    kind: str,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body: dict[str, Any] = {"type": PROBLEM_TYPE + kind, "title": title, "status": status, "detail": detail}
    if instance is not None:
        body["instance"] = instance
    body.update(extra)
    return Response(dumps(body), status_code=status, headers=headers, media_type=PROBLEM_CONTENT_TYPE)


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


def _object(value: Any, what: str, allowed: Collection[str], required: Collection[str] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} is a JSON object")
    unknown = set(value) - set(allowed)
    if unknown:
        raise InvalidInput(f"unknown fields in {what}: {sorted(unknown)}")
    missing = set(required) - set(value)
    if missing:
        raise InvalidInput(f"{what} needs {', '.join(sorted(missing))}")
    return value


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


def _whole_query(text: str, name: str, minimum: int) -> int:
    """A whole-number query parameter of at most 9 digits."""
    digits = text[1:] if text.startswith("-") else text
    if not digits.isdigit() or len(digits) > 9 or int(text) < minimum:
        raise InvalidInput(f"{name} is a whole number, at least {minimum}")
    return int(text)


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

    async def healthz(self, request: Request) -> Response:
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

    async def deploy(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        body = _object(await self.body(request), "the body", {"source"}, {"source"})
        name, source = request.path_params["name"], body["source"]
        # The check (the tenant's module code) runs on the service's own bounded pool: waiting for
        # it holds no thread of the pool the other requests need.
        checked = await asyncio.wrap_future(self.service.begin_deploy(tenant, name, source))
        version, created = await run_in_threadpool(self.service.finish_deploy, tenant, name, source, checked)
        return JSONBody({**version_json(version), "created": created}, status_code=201 if created else 200)

    async def workflows(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        versions = await run_in_threadpool(self.service.workflows, tenant)
        return JSONBody({"workflows": [version_json(v) for v in versions]})

    async def workflow(self, request: Request) -> Response:
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

    async def create(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        body = await self.body(request, default={})
        if not isinstance(body, dict):
            raise InvalidInput("the body is a JSON object {id?, params?}")
        created = await run_in_threadpool(self.service.create_instances, tenant, request.path_params["name"], [body])
        return JSONBody(instance_json(created[0]), status_code=201)

    async def create_batch(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        body = await self.body(request)
        created = await run_in_threadpool(self.service.create_instances, tenant, request.path_params["name"], body)
        return JSONBody({"instances": [instance_json(i) for i in created]}, status_code=201)

    async def instances(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        query = request.query_params
        unknown = sorted(set(query) - {"status", "limit", "after"})
        if unknown:
            raise InvalidInput(f"unknown query parameters: {unknown}; use status, limit and after")
        repeated = sorted(name for name in set(query) if len(query.getlist(name)) > 1)
        if repeated:
            raise InvalidInput(f"query parameters given more than once: {repeated}")
        status = query.get("status")
        after = query.get("after")
        if after is not None:
            check_id(after, "after")
        limit_text = query.get("limit", "100")
        if not limit_text.isdigit() or len(limit_text) > 6:
            raise InvalidInput("limit is a whole number between 1 and 1000")
        limit = int(limit_text)
        page = await run_in_threadpool(
            self.service.instances, tenant, request.path_params["name"], status, limit, after
        )
        next_after = page[-1].instance_id if len(page) == limit else None
        return JSONBody({"instances": [instance_json(i) for i in page], "next_after": next_after})

    async def instance(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        found = await run_in_threadpool(
            self.service.instance, tenant, request.path_params["name"], request.path_params["id"]
        )
        return JSONBody(instance_json(found))

    async def journal(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        query = request.query_params
        unknown = sorted(set(query) - {"after", "limit"})
        if unknown:
            raise InvalidInput(f"unknown query parameters: {unknown}; use after and limit")
        after = _whole_query(query.get("after", "-1"), "after", minimum=-1)
        limit = _whole_query(query.get("limit", "1000"), "limit", minimum=1)
        journal = await run_in_threadpool(
            self.service.journal, tenant, request.path_params["name"], request.path_params["id"], after, limit
        )
        return JSONBody(journal)

    async def send_event(self, request: Request) -> Response:
        tenant = await self.tenant(request)
        body = _object(await self.body(request), "the event", {"type", "payload"}, {"type"})
        seq = await run_in_threadpool(
            self.service.send_event,
            tenant,
            request.path_params["name"],
            request.path_params["id"],
            body["type"],
            body.get("payload"),
        )
        return JSONBody({"seq": seq, "type": body["type"]}, status_code=202)

    def control(self, action: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            tenant = await self.tenant(request)
            done = await run_in_threadpool(
                self.service.control, tenant, request.path_params["name"], request.path_params["id"], action
            )
            return JSONBody(instance_json(done))

        return endpoint

    # -- errors ------------------------------------------------------------------

    async def on_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, TenantflowError)
        extra: dict[str, Any] = {}
        headers: dict[str, str] = {}
        if isinstance(exc, WorkflowCodeError):
            extra["line"] = exc.line
        if isinstance(exc, QuotaExceeded | Unavailable):
            retry_after = max(1, math.ceil(exc.retry_after_s))
            headers["Retry-After"] = str(retry_after)
            extra["retry_after_s"] = exc.retry_after_s
        if isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = 'Bearer realm="tenantflow"'
        if isinstance(exc, RequestTimeout):
            headers["Connection"] = "close"  # the rest of the body may still come: do not read it
        return problem(
            exc.status,
            exc.title,
            str(exc),
            _slug(type(exc).__name__),
            instance=request.url.path,
            headers=headers,
            **extra,
        )

    async def on_http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        phrase = HTTPStatus(exc.status_code).phrase
        detail = exc.detail if exc.detail and exc.detail != phrase else None
        if detail is None:
            detail = {
                404: f"there is no resource at {request.url.path}",
                405: f"{request.method} is not allowed on {request.url.path}",
            }.get(exc.status_code, phrase)
        return problem(
            exc.status_code,
            phrase,
            detail,
            _slug(phrase.replace(" ", "")),
            instance=request.url.path,
            headers=dict(exc.headers or {}),
        )

    async def on_crash(self, request: Request, exc: Exception) -> Response:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem(
            500,
            InternalError.title,
            "an unexpected error happened; it has been logged and nothing was changed by this request",
            "internal-error",
            instance=request.url.path,
        )


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
    instance = "/v1/workflows/{name}/instances/{id}"
    routes = [
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route("/openapi.json", api.openapi, methods=["GET"]),
        Route("/v1/workflows", api.workflows, methods=["GET"]),
        Route("/v1/workflows/{name}", api.deploy, methods=["PUT"]),
        Route("/v1/workflows/{name}", api.workflow, methods=["GET"]),
        Route("/v1/workflows/{name}/instances", api.create, methods=["POST"]),
        Route("/v1/workflows/{name}/instances", api.instances, methods=["GET"]),
        Route("/v1/workflows/{name}/instances/batch", api.create_batch, methods=["POST"]),
        Route(instance, api.instance, methods=["GET"]),
        Route(instance + "/journal", api.journal, methods=["GET"]),
        Route(instance + "/events", api.send_event, methods=["POST"]),
    ]
    routes += [Route(f"{instance}/{action}", api.control(action), methods=["POST"]) for action in CONTROLS]
    return Starlette(
        routes=[*routes, *dashboard_routes(service)],  # the browser dashboard at /, same Service and keys
        middleware=[Middleware(BodyTimeout, timeout_s=body_timeout_s)],
        exception_handlers={
            TenantflowError: api.on_error,
            HTTPException: api.on_http_error,
            Exception: api.on_crash,
        },
    )
