"""What the client raises: one hierarchy, rooted at `ClientError`.

ClientError
├── ApiError                 the server answered with a problem (RFC 9457); .status, .problem, .detail
│   ├── BadRequest           400: the body is not JSON
│   ├── Unauthorized         401: no key, or an unknown one (a rotated or deleted tenant's key)
│   ├── Forbidden            403: a tenant key on the admin API
│   ├── NotFound             404: no such workflow, instance or tenant (or another tenant's)
│   ├── Conflict             409: the id or name is taken
│   │   └── InvalidState     409: the control does not apply in the instance's status
│   ├── TooLarge             413: body, source, params or payload over its limit
│   ├── InvalidInput         422: wrong types, bad ids, quotas out of range
│   │   └── WorkflowCodeError    422: deployed code that does not compile or load (.line)
│   ├── QuotaExceeded        429: after the client's retries (.retry_after_s)
│   ├── Unavailable          503: after the client's retries (.retry_after_s)
│   └── ServerError          any other 5xx
├── InstanceFailed           `result()` of an instance that errored or was terminated (.instance)
├── WaitTimeout              a wait ran out of time (.instance: as last seen); also a TimeoutError
└── WatchBroken              a watch lost its stream and could not get it back
"""

from __future__ import annotations

from typing import Any

import httpx
from tenantflow.runtime.contract import Instance

__all__ = [
    "ApiError",
    "BadRequest",
    "ClientError",
    "Conflict",
    "Forbidden",
    "InstanceFailed",
    "InvalidInput",
    "InvalidState",
    "NotFound",
    "QuotaExceeded",
    "ServerError",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "WaitTimeout",
    "WatchBroken",
    "WorkflowCodeError",
    "error_for",
]

PROBLEM_TYPE = "urn:tenantflow:problem:"


class ClientError(Exception):
    """Base of everything the client raises on purpose."""


class ApiError(ClientError):
    """A 4xx or 5xx answer; `problem` is its RFC 9457 body (or a stand-in for a body that is not one)."""

    def __init__(self, status: int, problem: dict[str, Any], headers: httpx.Headers | None = None) -> None:
        self.status = status
        self.problem = problem
        self.headers = headers if headers is not None else httpx.Headers()
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', '')}")

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail", ""))

    @property
    def kind(self) -> str:
        """The problem's type without its prefix: `not-found`, `invalid-state`, `quota-exceeded`, ..."""
        return str(self.problem.get("type", "")).removeprefix(PROBLEM_TYPE)

    @property
    def retry_after_s(self) -> float | None:
        value = self.problem.get("retry_after_s")
        return float(value) if isinstance(value, int | float) else None


class BadRequest(ApiError):
    pass


class Unauthorized(ApiError):
    pass


class Forbidden(ApiError):
    pass


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


class InvalidState(Conflict):
    pass


class TooLarge(ApiError):
    pass


class InvalidInput(ApiError):
    pass


class WorkflowCodeError(InvalidInput):
    @property
    def line(self) -> int | None:
        value = self.problem.get("line")
        return value if isinstance(value, int) else None


class QuotaExceeded(ApiError):
    pass


class Unavailable(ApiError):
    pass


class ServerError(ApiError):
    pass


class InstanceFailed(ClientError):
    """The instance errored or was terminated; `instance.error` says why."""

    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        error = instance.error
        reason = f": {error.name}: {error.message}" if error is not None else ""
        super().__init__(f"instance {instance.id} of {instance.workflow} {instance.status}{reason}")


class WaitTimeout(ClientError, TimeoutError):
    def __init__(self, instance: Instance, timeout: float) -> None:
        self.instance = instance
        super().__init__(f"instance {instance.id} is still {instance.status} after {timeout:g} s")


class WatchBroken(ClientError):
    """A watch's stream ended before the instance finished, and reconnecting failed as often as allowed."""


_BY_KIND: dict[str, type[ApiError]] = {
    "invalid-state": InvalidState,
    "workflow-code-error": WorkflowCodeError,
}
_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    422: InvalidInput,
    429: QuotaExceeded,
    503: Unavailable,
}


def error_for(response: httpx.Response) -> ApiError:
    """The typed error for a 4xx or 5xx answer."""
    try:
        problem = response.json()
        if not isinstance(problem, dict):
            raise ValueError
    except ValueError:
        problem = {"title": response.reason_phrase, "status": response.status_code, "detail": response.text[:2000]}
    kind = str(problem.get("type", "")).removeprefix(PROBLEM_TYPE)
    status = response.status_code
    cls = _BY_KIND.get(kind) or _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return cls(status, problem, response.headers)
