"""What a request sends: its body, read within limits and parsed as strict JSON, and its body or
query checked against the contract's models, with errors that name the field.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tenantflow.runtime.errors import InvalidInput, TenantflowError, TooLarge
from tenantflow.runtime.http.problems import MalformedRequest, RequestTimeout
from tenantflow.runtime.records import check_event_type, check_id
from tenantflow.runtime.service.pages import NOT_A_CURSOR

__all__ = [
    "BODY_TIMEOUT_S",
    "DRAIN_LIMIT",
    "MAX_BODY",
    "BodyTimeout",
    "parse_json",
    "query",
    "read_body",
    "validate",
]

M = TypeVar("M", bound=BaseModel)

MAX_BODY = 2 << 20
"""Raw request bodies larger than this are refused (413) before they are parsed."""

DRAIN_LIMIT = 16 << 20
"""An oversize body is read and dropped up to this size so the client gets its 413 cleanly."""

BODY_TIMEOUT_S = 10.0
"""A request body must arrive whole within this many seconds of the first read (else 408)."""


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


def _not_a_cursor(value: Any) -> Any:
    raise InvalidInput(NOT_A_CURSOR)


_FIELD_RULES: dict[str, Callable[[Any], Any]] = {
    "id": lambda value: check_id(value, "instance id"),
    "workflow": lambda value: check_id(value, "workflow name"),
    "after": _not_a_cursor,
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
    known = [field.alias or name for name, field in model.model_fields.items()]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise InvalidInput(f"unknown query parameters: {unknown}; use {', '.join(known)}")
    return validate(model, dict(params), "the query")


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


async def read_body(request: Request, max_body: int = MAX_BODY, default: Any = None) -> Any:
    """The request's JSON body: TooLarge over `max_body` bytes; if absent, `default` (where the body may be
    left out) or MalformedRequest; blank (whitespace only) is MalformedRequest."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > DRAIN_LIMIT:
        raise TooLarge(f"the request body is larger than {max_body} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > DRAIN_LIMIT:
            break
        if size <= max_body:
            chunks.append(chunk)
    if size > max_body:
        raise TooLarge(f"the request body is larger than {max_body} bytes")
    raw = b"".join(chunks)
    if not raw and default is not None:  # a body that may be left out, and was
        return default
    if not raw.strip(b" \t\n\r"):  # JSON's whitespace only: b"\x0b" is not an empty body
        raise MalformedRequest("the body is empty; send a JSON document")
    return parse_json(raw)
