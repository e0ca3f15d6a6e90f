"""The exceptions a workflow raises and catches."""

from __future__ import annotations


class NonRetryableError(Exception):
    """Raise from a step body to fail the step at once, without retries.

    `NonRetryableError("card declined", "PaymentError")`: `name`, when given, is the error's name in the
    journal and the instance's status (and the `name` of the StepError the workflow sees), as Cloudflare's
    `new NonRetryableError(message, name)`."""

    def __init__(self, message: str = "", name: str | None = None) -> None:
        super().__init__(message)
        self.message = str(message)
        self.name = name if isinstance(name, str) and name else "NonRetryableError"


class StepError(Exception):
    """A step that failed for good (retries used up); `name` is the original error's class."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


class RollbackError(Exception):
    """A rollback failed for good: the instance is errored with this, naming both errors: the rollback's
    (`error_name`, `error_message`) and the one that caused the rollback (`cause_name`, `cause_message`)."""

    def __init__(self, step: str, error_name: str, error_message: str, cause_name: str, cause_message: str) -> None:
        super().__init__(
            f"the rollback of step {step!r} failed with {error_name}: {error_message} "
            f"(rolling back after {cause_name}: {cause_message})"
        )
        self.step = step
        self.error_name = error_name
        self.error_message = error_message
        self.cause_name = cause_name
        self.cause_message = cause_message


class Unwind(BaseException):
    """The instance is terminated with a rollback: raised out of the durable call the host stopped, so that
    the workflow unwinds (a BaseException: `except Exception` in workflow code lets it through) and the
    harness runs the rollbacks. Not exported: workflow code has no business catching it."""


class WaitTimeoutError(Exception):
    """`step.wait_for_event` timed out before a matching event arrived."""


class CapabilityError(Exception):
    """The host refused or failed a capability call (e.g. a host not on the egress allowlist)."""
