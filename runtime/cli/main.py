"""The `tenantflow` command line.

`serve` and `worker` run on the database (`--db URL`, or TENANTFLOW_DB). Operator commands
(`tenants create|list|show|update|rotate-key|delete|usage`) go over HTTP with an operator key (`--key`,
TENANTFLOW_OPERATOR_KEY) or on the database; `admin create-key` makes the first operator key.
Tenant commands talk to a server over
HTTP (`--url`, TENANTFLOW_URL; `--key`, TENANTFLOW_KEY): `deploy`, `workflows`, `workflow`,
`start`, `instances`, `status`, `events send`, `journal`, `pause`, `resume`,
`terminate`, `restart`, `export`, `fork`, `usage`; `retention` also works on --db (with `--tenant`). `run` runs
one workflow locally, with no server.
Every command prints for people by default and JSON with `--json`.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click
from tenantflow.runtime.bounds import allow_deep_json
from tenantflow.runtime.cli.options import JSON_GIVEN
from tenantflow.runtime.errors import TenantflowError

COMMANDS = {
    "serve": "operator",
    "worker": "operator",
    "tenants": "tenants",
    "admin": "tenants",
    **dict.fromkeys(
        (
            "deploy",
            "workflows",
            "workflow",
            "start",
            "instances",
            "status",
            "events",
            "watch",
            "journal",
            "delete",
            "restart",
            "export",
            "fork",
            "terminate",
            "upgrade",
            "pause",
            "resume",
        ),
        "remote",
    ),
    "retention": "retention",
    "run": "local",
    "replay": "replaying",
    "usage": "usage",
}
"""Each command's module (`tenantflow.runtime.cli.<module>.commands` holds it), imported only when the command
runs or help lists them: `tenantflow worker` then starts without the client, the HTTP contract and the server's
imports (a worker that replaces a killed one is ready sooner)."""


class _Main(click.Group):
    """Commands loaded lazily (`COMMANDS`, click's documented pattern); a named error (a database that cannot be
    reached, a bad URL) is one line and exit code 1."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        if module is None:
            return super().get_command(ctx, cmd_name)
        group: click.Group = importlib.import_module(f"tenantflow.runtime.cli.{module}").commands
        return group.commands.get(cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        # Read before the group hands them to the command (click then empties them). Note: `_protected_args` is
        # click 8's private name for the command's name and what precedes `args` (`protected_args` is deprecated).
        ctx.meta[JSON_GIVEN] = "--json" in [*getattr(ctx, "_protected_args", []), *ctx.args]
        try:
            return super().invoke(ctx)
        except TenantflowError as error:
            from tenantflow.runtime.cli.output import fail  # loaded (with rich) when something is printed

            fail(str(error))
        except click.ClickException as error:
            from tenantflow.runtime.cli import output

            if not output.json_wanted():
                raise
            # With --json, a usage error (a missing argument, a bad option value) is a JSON problem too.
            usage = isinstance(error, click.UsageError)
            output.problem_json(
                "Usage error" if usage else "Command failed",
                error.format_message(),
                error.exit_code,
                "usage" if usage else "error",
            )
            sys.exit(error.exit_code)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="tenantflow")
def main() -> None:
    """tenantflow: durable workflows from tenant-supplied Python, in a WASI sandbox."""
    allow_deep_json()  # results nested ~1000 deep must print
