"""The `tenantflow` command line: operator commands on the database, tenant commands over HTTP, local runs."""

from tenantflow.runtime.cli.main import main
from tenantflow.runtime.cli.output import terminal_safe

__all__ = ["main", "terminal_safe"]
