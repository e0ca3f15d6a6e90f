"""The `tenantflow` command line: operator commands on the database, tenant commands over HTTP, local runs."""

from typing import Any

from tenantflow.runtime.cli.main import main

__all__ = ["main", "terminal_safe"]


def __getattr__(name: str) -> Any:
    # `terminal_safe` lives with the printing (rich), which `tenantflow worker` does not load: imported when asked for.
    if name == "terminal_safe":
        from tenantflow.runtime.cli.output import terminal_safe

        return terminal_safe
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
