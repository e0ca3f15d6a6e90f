"""The exceptions a workflow raises and catches."""

from __future__ import annotations


class NonRetryableError(Exception):
    """Raise from a step body to fail the step at once, without retries."""


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
