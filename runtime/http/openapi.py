"""The OpenAPI 3.0 document of the HTTP API, served at /openapi.json.

Written by hand to say exactly what `tenantflow.runtime.http.api` does; the
schemathesis test checks the server against it (statuses, media types, bodies).
"""

from __future__ import annotations

import copy
from typing import Any

from tenantflow.runtime.records import EVENT_TYPE_PATTERN, MAX_EVENT_TYPE, MAX_ID, STATUSES

ID_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_ID,
    "pattern": "^[a-zA-Z0-9_][a-zA-Z0-9_-]*$",
}

ANY: dict[str, Any] = {"nullable": True, "description": "any JSON value"}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


PROBLEMS: dict[int, str] = {
    400: "Malformed request: the body is not JSON, not UTF-8, or empty",
    401: "Missing or unknown API key",
    403: "A known key that may not do this (a tenant key on /metrics)",
    404: "No such workflow or instance (another tenant's resources are not found either)",
    409: "Conflict: the id is taken, or the control does not apply in the instance's status",
    408: "The request body did not arrive within 10 s; the connection is closed",
    413: "Too large: the request body (over 2 MiB), the source, the params or the payload",
    422: "Invalid input: wrong types, unknown fields, bad ids, or workflow code that does not compile "
    "or whose module code hits a limit (DeadlineExceeded, FuelExhausted, MemoryLimitExceeded)",
    429: "A quota is exceeded (instance creation rate, deploy checks in progress); see the Retry-After header",
    503: "The store is busy or the server is saturated (e.g. deploy checks); see the Retry-After header",
}


def _problems(*statuses: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status in statuses:
        response: dict[str, Any] = {
            "description": PROBLEMS[status],
            "content": {"application/problem+json": {"schema": _ref("Problem")}},
        }
        if status in (429, 503):
            response["headers"] = {
                "Retry-After": {"description": "Seconds to wait before trying again", "schema": {"type": "integer"}}
            }
        if status == 401:
            response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        out[str(status)] = response
    return out


def _params(*names: str) -> list[dict[str, Any]]:
    described = {
        "name": "The workflow's name",
        "id": "The instance's id",
    }
    return [
        {"name": name, "in": "path", "required": True, "description": described[name], "schema": dict(ID_SCHEMA)}
        for name in names
    ]


def _op(
    operation_id: str,
    summary: str,
    responses: dict[str, Any],
    *,
    params: tuple[str, ...] = (),
    body: dict[str, Any] | None = None,
    body_required: bool = True,
    query: list[dict[str, Any]] | None = None,
    secured: bool = True,
) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": operation_id, "summary": summary, "responses": responses}
    parameters = _params(*params) + (query or [])
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {"required": body_required, "content": {"application/json": {"schema": body}}}
        responses.update({k: v for k, v in _problems(408).items() if k not in responses})
    if secured:
        responses.update({k: v for k, v in _problems(503).items() if k not in responses})
    op["security"] = [{"bearerAuth": []}] if secured else []
    if secured:
        op["tags"] = ["tenant"]
    return op


SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "description": "An RFC 9457 problem document",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
            "line": {"type": "integer", "nullable": True, "description": "For workflow code errors: the line"},
            "retry_after_s": {"type": "number", "description": "For quota errors: seconds to wait"},
        },
    },
    "DeployRequest": {
        "type": "object",
        "required": ["source"],
        "additionalProperties": False,
        "properties": {"source": {"type": "string", "description": "Python source defining run(event, step)"}},
    },
    "Version": {
        "type": "object",
        "required": ["name", "version", "source_hash", "created_at"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "integer", "minimum": 1},
            "source_hash": {"type": "string"},
            "created_at": {"type": "number"},
        },
    },
    "Deployed": {
        "allOf": [
            _ref("Version"),
            {
                "type": "object",
                "required": ["created"],
                "properties": {"created": {"type": "boolean", "description": "False when the source was the same"}},
            },
        ]
    },
    "WorkflowList": {
        "type": "object",
        "required": ["workflows"],
        "properties": {"workflows": {"type": "array", "items": _ref("Version")}},
    },
    "Workflow": {
        "type": "object",
        "required": ["name", "latest", "versions"],
        "properties": {
            "name": {"type": "string"},
            "latest": {"type": "integer"},
            "versions": {"type": "array", "items": _ref("Version")},
        },
    },
    "CreateInstance": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "id": {**ID_SCHEMA, "nullable": True, "description": "Absent or null: a random id"},
            "params": {**ANY, "description": "The instance's event.payload (at most 1 MiB of JSON)"},
        },
    },
    "CreateBatch": {"type": "array", "minItems": 1, "maxItems": 100, "items": _ref("CreateInstance")},
    "Error": {
        "type": "object",
        "nullable": True,
        "required": ["name", "message"],
        "properties": {
            "name": {"type": "string"},
            "message": {"type": "string"},
            "traceback": {"type": "string", "nullable": True},
            "line": {"type": "integer", "nullable": True},
        },
    },
    "Instance": {
        "type": "object",
        "required": [
            "id",
            "workflow",
            "version",
            "status",
            "params",
            "output",
            "error",
            "created_at",
            "updated_at",
            "wake_at",
        ],
        "properties": {
            "id": {"type": "string"},
            "workflow": {"type": "string"},
            "version": {"type": "integer"},
            "status": {"type": "string", "enum": list(STATUSES)},
            "params": ANY,
            "output": ANY,
            "error": _ref("Error"),
            "created_at": {"type": "number"},
            "updated_at": {"type": "number"},
            "wake_at": {"type": "number", "nullable": True},
        },
    },
    "InstancePage": {
        "type": "object",
        "required": ["instances", "next_after"],
        "properties": {
            "instances": {"type": "array", "items": _ref("Instance")},
            "next_after": {
                "type": "string",
                "nullable": True,
                "description": "Pass as ?after= for the next page; null on the last page",
            },
        },
    },
    "BatchCreated": {
        "type": "object",
        "required": ["instances"],
        "properties": {"instances": {"type": "array", "items": _ref("Instance")}},
    },
    "Attempt": {
        "type": "object",
        "required": ["position", "attempt", "ok", "error_name", "error_message", "fuel", "duration_ms", "finished_at"],
        "properties": {
            "position": {"type": "integer"},
            "attempt": {"type": "integer"},
            "ok": {"type": "boolean"},
            "error_name": {"type": "string", "nullable": True},
            "error_message": {"type": "string", "nullable": True},
            "fuel": {"type": "integer"},
            "duration_ms": {"type": "number"},
            "finished_at": {"type": "number"},
        },
    },
    "Step": {
        "type": "object",
        "required": ["position", "name", "kind", "state", "attempts", "result", "attempt_log"],
        "properties": {
            "position": {"type": "integer"},
            "name": {"type": "string"},
            "kind": {"type": "string", "enum": ["do", "sleep", "wait"]},
            "state": {"type": "string"},
            "attempts": {"type": "integer"},
            "result": ANY,
            "error_name": {"type": "string", "nullable": True},
            "error_message": {"type": "string", "nullable": True},
            "wake_at": {"type": "number", "nullable": True},
            "event_type": {"type": "string", "nullable": True},
            "created_at": {"type": "number"},
            "updated_at": {"type": "number"},
            "fuel": {"type": "integer"},
            "duration_ms": {"type": "number"},
            "attempt_log": {"type": "array", "items": _ref("Attempt")},
        },
    },
    "EventRecord": {
        "type": "object",
        "required": ["seq", "type", "payload", "created_at", "consumed_at"],
        "properties": {
            "seq": {"type": "integer"},
            "type": {"type": "string"},
            "payload": ANY,
            "created_at": {"type": "number"},
            "consumed_at": {
                "type": "integer",
                "nullable": True,
                "description": "The journal position of the wait that took it",
            },
        },
    },
    "Journal": {
        "type": "object",
        "required": ["id", "workflow", "steps", "events", "log", "next_after"],
        "properties": {
            "id": {"type": "string"},
            "workflow": {"type": "string"},
            "steps": {"type": "array", "items": _ref("Step")},
            "events": {"type": "array", "items": _ref("EventRecord")},
            "log": {"type": "string", "description": "What the workflow printed (bounded)"},
            "next_after": {
                "type": "integer",
                "nullable": True,
                "description": "Pass as `after` for the next page; null on the last page",
            },
        },
    },
    "SendEvent": {
        "type": "object",
        "required": ["type"],
        "additionalProperties": False,
        "properties": {
            "type": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_EVENT_TYPE,
                "pattern": EVENT_TYPE_PATTERN.pattern,
            },
            "payload": {**ANY, "description": "At most 1 MiB of JSON"},
        },
    },
    "EventAccepted": {
        "type": "object",
        "required": ["seq", "type"],
        "properties": {"seq": {"type": "integer"}, "type": {"type": "string"}},
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["ok"]}},
    },
}

_CONTROL_SUMMARIES = {
    "pause": ("Pause a queued, running or waiting instance (it stops at its next step)", (200, 401, 404, 409, 422)),
    "resume": ("Resume a paused instance", (200, 401, 404, 409, 422)),
    "terminate": ("Terminate an instance that has not finished", (200, 401, 404, 409, 422)),
    "restart": ("Restart an instance from scratch with the same params and version", (200, 401, 404, 422)),
}


def _control(action: str) -> dict[str, Any]:
    summary, statuses = _CONTROL_SUMMARIES[action]
    responses = {"200": _json(_ref("Instance"), "The instance after the control")}
    responses.update(_problems(*(s for s in statuses if s != 200)))
    return {"post": _op(f"{action}Instance", summary, responses, params=("name", "id"))}


def _build() -> dict[str, Any]:
    instance = "/v1/workflows/{name}/instances/{id}"
    paths: dict[str, Any] = {
        "/healthz": {
            "get": _op(
                "health",
                "Liveness and database check",
                {
                    "200": _json(_ref("Health"), "Healthy"),
                    "503": {
                        "description": "The database does not answer",
                        "content": {"application/problem+json": {"schema": _ref("Problem")}},
                    },
                },
                secured=False,
            )
        },
        "/metrics": {
            "get": _op(
                "metrics",
                "Prometheus metrics (every tenant's counts): the operator key or the server's metrics token",
                {
                    "200": {
                        "description": "Prometheus text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_problems(401, 403),
                },
            )
        },
        "/openapi.json": {
            "get": _op(
                "openapi",
                "This document",
                {"200": _json({"type": "object"}, "The OpenAPI document")},
                secured=False,
            )
        },
        "/v1/workflows": {
            "get": _op(
                "listWorkflows",
                "The latest version of each of the tenant's workflows",
                {"200": _json(_ref("WorkflowList"), "The workflows"), **_problems(401)},
            )
        },
        "/v1/workflows/{name}": {
            "put": _op(
                "deployWorkflow",
                "Deploy a version (the source is compiled and checked in the sandbox)",
                {
                    "201": _json(_ref("Deployed"), "A new version"),
                    "200": _json(_ref("Deployed"), "The same source as the latest version: that version"),
                    **_problems(400, 401, 413, 422, 429),
                },
                params=("name",),
                body=_ref("DeployRequest"),
            ),
            "get": _op(
                "getWorkflow",
                "A workflow's versions",
                {"200": _json(_ref("Workflow"), "The versions, oldest first"), **_problems(401, 404, 422)},
                params=("name",),
            ),
        },
        "/v1/workflows/{name}/instances": {
            "post": _op(
                "createInstance",
                "Start an instance of the latest version",
                {"201": _json(_ref("Instance"), "Created and queued"), **_problems(400, 401, 404, 409, 413, 422, 429)},
                params=("name",),
                body=_ref("CreateInstance"),
                body_required=False,
            ),
            "get": _op(
                "listInstances",
                "A page of instances, ordered by id",
                {"200": _json(_ref("InstancePage"), "A page"), **_problems(401, 404, 422)},
                params=("name",),
                query=[
                    {"name": "status", "in": "query", "schema": {"type": "string", "enum": list(STATUSES)}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                    {
                        "name": "after",
                        "in": "query",
                        "description": "Only ids after this one (next_after of the previous page)",
                        "schema": dict(ID_SCHEMA),
                    },
                ],
            ),
        },
        "/v1/workflows/{name}/instances/batch": {
            "post": _op(
                "createInstances",
                "Start up to 100 instances at once (all or none)",
                {
                    "201": _json(_ref("BatchCreated"), "Created and queued"),
                    **_problems(400, 401, 404, 409, 413, 422, 429),
                },
                params=("name",),
                body=_ref("CreateBatch"),
            )
        },
        instance: {
            "get": _op(
                "getInstance",
                "An instance's status, output and error",
                {"200": _json(_ref("Instance"), "The instance"), **_problems(401, 404, 422)},
                params=("name", "id"),
            )
        },
        instance + "/journal": {
            "get": _op(
                "getJournal",
                "A page of the instance's steps, attempts, waits and events, in order",
                {"200": _json(_ref("Journal"), "The journal"), **_problems(401, 404, 422)},
                params=("name", "id"),
                query=[
                    {
                        "name": "after",
                        "in": "query",
                        "description": "Only positions after this one (next_after of the previous page)",
                        "schema": {"type": "integer", "minimum": -1, "maximum": 999_999_999},
                    },
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                ],
            )
        },
        instance + "/events": {
            "post": _op(
                "sendEvent",
                "Deliver an event (buffered until a wait_for_event of its type takes it; at most 100 and 4 MiB)",
                {
                    "202": _json(_ref("EventAccepted"), "Stored"),
                    **_problems(400, 401, 404, 409, 413, 422, 429),
                },
                params=("name", "id"),
                body=_ref("SendEvent"),
            )
        },
    }
    for action in ("pause", "resume", "terminate", "restart"):
        paths[f"{instance}/{action}"] = _control(action)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "tenantflow",
            "version": "0.1.0",
            "description": (
                "Durable execution of tenant-supplied Python workflows in a WASI sandbox. "
                "Errors are RFC 9457 problem documents (application/problem+json)."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The tenant's key (for /metrics: the operator key or the metrics token)",
                }
            },
        },
    }


_DOCUMENT = _build()


def openapi_document() -> dict[str, Any]:
    """A copy of the document (callers may change theirs)."""
    return copy.deepcopy(_DOCUMENT)
