"""Named failures a host function raises to end the activation (the tenant sees the name and message)."""

from __future__ import annotations

from tenantflow.host.failures import FailureName


class HostRefusal(Exception):
    """A host function ended the activation with a named error (a limit hit, a bad call, a cancel)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


def invalid_call(call: str, what: str) -> HostRefusal:
    """The guest handed host function `call` something it refuses: InvalidHostCall."""
    return HostRefusal(FailureName.INVALID_HOST_CALL, f"{call}: {what}")
