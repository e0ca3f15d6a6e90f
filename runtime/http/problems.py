"""Errors as HTTP: each domain error's status code and its RFC 9457 problem document, in one place.

A problem is `application/problem+json` with type, title, status, detail and instance (the
path); quota and busy errors add `retry_after_s` and a Retry-After header, code errors add
`line`. The errors only HTTP has (403, 408, 400 for an unreadable body) are defined here.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from starlette.responses import Response
from tenantflow.runtime.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    InvalidState,
    NotFound,
    QuotaExceeded,
    TenantflowError,
    TooLarge,
    Unauthorized,
    Unavailable,
    WorkflowCodeError,
)

__all__ = [
    "PROBLEM_CONTENT_TYPE",
    "PROBLEM_TYPE",
    "Forbidden",
    "InternalError",
    "MalformedRequest",
    "RequestTimeout",
    "dumps",
    "problem",
    "problem_document",
    "problem_for",
    "status_problem",
    "status_of",
]

PROBLEM_TYPE = "urn:tenantflow:problem:"
PROBLEM_CONTENT_TYPE = "application/problem+json"


class MalformedRequest(TenantflowError):
    """A body that is not JSON (or not UTF-8, or empty where JSON is needed)."""


class RequestTimeout(TenantflowError):
    """The request body did not arrive in time."""


class InternalError(TenantflowError):
    """Never raised: the catch-all's title."""


@dataclass(frozen=True)
class Kind:
    status: int
    title: str


# Most specific first: the first class an error is an instance of decides.
KINDS: tuple[tuple[type[TenantflowError], Kind], ...] = (
    (MalformedRequest, Kind(400, "Malformed request")),
    (Unauthorized, Kind(401, "Unauthorized")),
    (Forbidden, Kind(403, "Forbidden")),
    (NotFound, Kind(404, "Not found")),
    (RequestTimeout, Kind(408, "Request timeout")),
    (InvalidState, Kind(409, "Invalid state")),
    (Conflict, Kind(409, "Conflict")),
    (TooLarge, Kind(413, "Payload too large")),
    (WorkflowCodeError, Kind(422, "Workflow code error")),
    (InvalidInput, Kind(422, "Invalid input")),
    (QuotaExceeded, Kind(429, "Quota exceeded")),
    (InternalError, Kind(500, "Internal server error")),
    (Unavailable, Kind(503, "Service unavailable")),
)
OTHER = Kind(400, "Bad request")


def kind_of(error: TenantflowError) -> Kind:
    return next((kind for cls, kind in KINDS if isinstance(error, cls)), OTHER)


def status_of(error: TenantflowError) -> int:
    return kind_of(error).status


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


def problem_document(error: TenantflowError, instance: str | None = None) -> dict[str, Any]:
    """The problem document of `error` (as `problem_for` sends it), e.g. for an entry of a batch."""
    kind = kind_of(error)
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + _slug(type(error).__name__),
        "title": kind.title,
        "status": kind.status,
        "detail": str(error),
    }
    if instance is not None:
        body["instance"] = instance
    if isinstance(error, WorkflowCodeError):
        body["line"] = error.line
    if isinstance(error, QuotaExceeded | Unavailable):
        body["retry_after_s"] = error.retry_after_s
    return body


def problem_for(error: TenantflowError, instance: str | None = None) -> Response:
    """The problem document (and headers) that answers `error`."""
    kind = kind_of(error)
    extra: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if isinstance(error, WorkflowCodeError):
        extra["line"] = error.line
    if isinstance(error, QuotaExceeded | Unavailable):
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
        extra["retry_after_s"] = error.retry_after_s
    if isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="tenantflow"'
    if isinstance(error, RequestTimeout):
        headers["Connection"] = "close"  # the rest of the body may still come: do not read it
    return problem(
        kind.status, kind.title, str(error), _slug(type(error).__name__), instance=instance, headers=headers, **extra
    )


def status_problem(status: int, detail: str, instance: str, headers: dict[str, str] | None = None) -> Response:
    """A problem for an HTTP-level refusal (no such route, method not allowed) titled by its status."""
    phrase = HTTPStatus(status).phrase
    return problem(status, phrase, detail, _slug(phrase.replace(" ", "")), instance=instance, headers=headers)
