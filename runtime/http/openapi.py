"""The OpenAPI 3.1 document of the HTTP API, served at /openapi.json.

Generated: the paths from the route table (`operations.OPERATIONS`), the schemas from the
contract's models (pydantic's JSON Schema, which OpenAPI 3.1 uses as is: a nullable value
is `anyOf [..., {"type": "null"}]`). The schemathesis test checks the server against it.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema
from tenantflow.runtime import contract
from tenantflow.runtime.http.operations import OPERATIONS, PROBLEMS, Operation

__all__ = ["openapi_document"]

REF = "#/components/schemas/{model}"
PATH_PARAMS = {"name": "The workflow's name", "id": "The instance's id", "tenant": "The tenant's name"}


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": REF.format(model=model.__name__)}


def _models() -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = [contract.Problem]
    for op in OPERATIONS:
        for answer in op.answers.values():
            found += [m for m in (answer.model, *(model for _, model in answer.events)) if m is not None]
        if op.body is not None:
            found.append(op.body)
    return list(dict.fromkeys(found))


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema: absent is how a query says null."""
    options = [s for s in schema.get("anyOf", ()) if s != {"type": "null"}]
    if len(options) == 1:
        rest = {k: v for k, v in schema.items() if k != "anyOf" and not (k == "default" and v is None)}
        return {**rest, **options[0]}
    return schema


def _parameters(op: Operation) -> list[dict[str, Any]]:
    id_schema = TypeAdapter(contract.Id).json_schema()
    params = [
        {"name": name, "in": "path", "required": True, "description": PATH_PARAMS[name], "schema": dict(id_schema)}
        for name in op.path_params
    ]
    for header in op.headers:
        schema = {"type": "string", "pattern": header.pattern, "maxLength": header.max_length}
        params.append(
            {
                "name": header.name,
                "in": "header",
                "required": False,
                "description": header.description,
                "schema": schema,
            }
        )
    if op.query is not None:
        for name, schema in op.query.model_json_schema()["properties"].items():
            schema = _without_null(schema)
            param: dict[str, Any] = {"name": name, "in": "query", "required": False}
            if "description" in schema:
                param["description"] = schema.pop("description")
            params.append({**param, "schema": schema})
    return params


def _event(name: str, model: type[BaseModel] | None) -> dict[str, Any]:
    """One kind of server-sent event, as a parsed event (event, data, id) whose data is JSON of `model`."""
    content = _ref(model) if model is not None else {"type": "object", "maxProperties": 0}
    data = {"type": "string", "contentMediaType": "application/json", "contentSchema": content}
    return {
        "type": "object",
        "required": ["event", "data", "id"],
        "properties": {
            "event": {"const": name},
            "data": data,
            "id": {"type": "string", "pattern": contract.WATCH_CURSOR},
        },
    }


def _problem(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": PROBLEMS[status],
        "content": {"application/problem+json": {"schema": _ref(contract.Problem)}},
    }
    if status in (429, 503):
        response["headers"] = {
            "Retry-After": {"description": "Seconds to wait before trying again", "schema": {"type": "integer"}}
        }
    if status == 401:
        response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    return response


def _operation(op: Operation) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, answer in op.answers.items():
        schema = _ref(answer.model) if answer.model is not None else {"type": "object"}
        if answer.events:
            schema = {"anyOf": [_event(name, model) for name, model in answer.events]}
        elif answer.media_type != "application/json":
            schema = {"type": "string"}
        responses[str(status)] = {"description": answer.description, "content": {answer.media_type: {"schema": schema}}}
    problems = list(op.problems)
    if op.body is not None:
        problems.append(408)
    if op.secured:
        problems.append(503)
    for status in problems:
        responses.setdefault(str(status), _problem(status))
    out: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary, "responses": responses}
    parameters = _parameters(op)
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        out["requestBody"] = {"required": op.body_required, "content": {"application/json": {"schema": _ref(op.body)}}}
    out["security"] = [{"bearerAuth": []}] if op.secured else []
    if op.secured:
        out["tags"] = [op.tag]
    return out


@cache
def _build() -> dict[str, Any]:
    _, schemas = models_json_schema([(model, "validation") for model in _models()], ref_template=REF)
    paths: dict[str, Any] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
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
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The tenant's key; an operator key for /v1/admin and /metrics "
                    "(which also takes the server's metrics token)",
                }
            },
        },
    }


def openapi_document() -> dict[str, Any]:
    """A copy of the document (callers may change theirs)."""
    return copy.deepcopy(_build())
