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


class WaitTimeoutError(Exception):
    """`step.wait_for_event` timed out before a matching event arrived."""


class CapabilityError(Exception):
    """The host refused or failed a capability call (e.g. a host not on the egress allowlist)."""
