"""The runtime's named errors; the HTTP layer maps each to a status code."""


class TenantflowError(Exception):
    """Base of every error the runtime raises on purpose."""

    status = 400
    title = "Bad request"


class InvalidInput(TenantflowError):
    status = 422
    title = "Invalid input"


class Unauthorized(TenantflowError):
    status = 401
    title = "Unauthorized"


class NotFound(TenantflowError):
    status = 404
    title = "Not found"


class Conflict(TenantflowError):
    status = 409
    title = "Conflict"


class InvalidState(TenantflowError):
    """A control that does not apply in the instance's current status."""

    status = 409
    title = "Invalid state"


class TooLarge(TenantflowError):
    status = 413
    title = "Payload too large"


class QuotaExceeded(TenantflowError):
    status = 429
    title = "Quota exceeded"

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class WorkflowCodeError(TenantflowError):
    """Deployed source that does not compile or defines no workflow."""

    status = 422
    title = "Workflow code error"

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


class Unavailable(TenantflowError):
    """The store is busy (e.g. SQLite locked past its busy timeout) or the service is saturated; retry later."""

    status = 503
    title = "Service unavailable"

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
