"""The runtime's named errors: what went wrong, in the domain's terms.

Every error the runtime raises on purpose is a `TenantflowError`; the message is for the
person who sent the request. The classes say nothing of HTTP: `tenantflow.runtime.http.problems`
maps each to a status code and an RFC 9457 problem document, in one place.

    TenantflowError
    ├── InvalidInput          input of the wrong shape or out of range
    ├── WorkflowCodeError     deployed source that does not compile or defines no workflow (.line)
    ├── Unauthorized          no key, or an unknown one
    ├── Forbidden             a known key that may not do this (a tenant key on the admin API)
    ├── NotFound              no such tenant, workflow or instance (another tenant's included)
    ├── Conflict              the id is taken
    ├── InvalidState          a control or event that does not apply in the instance's status
    ├── TooLarge              a body, source, params or payload over its limit
    ├── QuotaExceeded         a tenant's quota; retry after .retry_after_s
    └── Unavailable           the store or the server is busy; retry after .retry_after_s

The classes are siblings on purpose: an `except InvalidInput` never catches a code error or a
conflict by accident.
"""

from __future__ import annotations

__all__ = [
    "Conflict",
    "Forbidden",
    "InvalidInput",
    "InvalidState",
    "NotFound",
    "QuotaExceeded",
    "TenantflowError",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "WorkflowCodeError",
]


class TenantflowError(Exception):
    """Base of every error the runtime raises on purpose."""


class InvalidInput(TenantflowError):
    """Input of the wrong shape, or out of range."""


class WorkflowCodeError(TenantflowError):
    """Deployed source that does not compile or defines no workflow."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


class Unauthorized(TenantflowError):
    """No credentials, or unknown ones."""


class Forbidden(TenantflowError):
    """A known key that may not do this: a tenant key on the admin API or /metrics."""


class NotFound(TenantflowError):
    """No such resource (for a tenant, another tenant's resources do not exist either)."""


class Conflict(TenantflowError):
    """The resource already exists."""


class InvalidState(TenantflowError):
    """A control that does not apply in the instance's current status."""


class TooLarge(TenantflowError):
    """Something over its size limit."""


class _RetryLater(TenantflowError):
    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QuotaExceeded(_RetryLater):
    """A tenant's quota is used up for now; `retry_after_s` says when to try again."""


class Unavailable(_RetryLater):
    """The store is busy (e.g. SQLite locked past its busy timeout) or the service is saturated; retry later."""
