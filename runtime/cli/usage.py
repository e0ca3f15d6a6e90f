"""`tenantflow usage`: the tenant's usage over HTTP (its key), per UTC day or per workflow; and the table that
`tenants usage` (the operator's, across tenants) prints too."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table
from tenantflow.client import Client
from tenantflow.runtime.cli.options import api_options
from tenantflow.runtime.cli.output import out, print_json

FROM_HELP = "First day: a date (2026-01-31), epoch seconds or an ISO time (its UTC day); default: 30 days back."
TO_HELP = "Last day, included (as --from); default: today (UTC)."
COLUMNS = (
    ("activations", "activations"),
    ("isolate_starts", "isolates"),
    ("replayed_steps", "replayed"),
    ("steps", "steps"),
    ("attempts", "attempts"),
    ("cpu_s", "CPU s"),
    ("workflow_cpu_s", "workflow CPU s"),
    ("duration_ms", "step wall s"),
    ("journal_bytes", "journal bytes"),
    ("instances", "instances"),
)


@click.group()
def commands() -> None:
    """(registered into the main group)"""


def _cell(name: str, value: Any) -> str:
    if name in ("cpu_s", "workflow_cpu_s"):
        return f"{value:,.3f}"
    if name == "duration_ms":
        return f"{value / 1000:,.3f}"
    return f"{value:,}"


def show_usage(report: dict[str, Any]) -> None:
    """A report (the API's JSON) as a table: a row per key, then the total."""
    who = report.get("tenant") or "every tenant"
    title = f"Usage of {who}, {report['from']} to {report['to']} (UTC), by {report['group_by']}"
    table = Table(title=title, title_justify="left")
    table.add_column(report["group_by"])
    for _, header in COLUMNS:
        table.add_column(header, justify="right")
    for row in report["rows"]:
        table.add_row(row["key"], *(_cell(name, row[name]) for name, _ in COLUMNS))
    table.add_section()
    table.add_row("total", *(_cell(name, report["total"][name]) for name, _ in COLUMNS), style="bold")
    out().print(table)


@commands.command("usage")
@click.option("--from", "first", metavar="DAY", help=FROM_HELP)
@click.option("--to", "last", metavar="DAY", help=TO_HELP)
@click.option("--by", "group_by", type=click.Choice(["day", "workflow"]), default="day", show_default=True)
@api_options
def usage(client: Client, first: str | None, last: str | None, group_by: str, as_json: bool) -> None:
    """The tenant's usage: activations, steps, attempts, fuel and CPU, wall time, journal bytes, instances."""
    report = client.usage(first, last, group_by)  # type: ignore[arg-type]  # click.Choice checked it
    answer = report.model_dump(by_alias=True)
    if as_json:
        print_json(answer)
        return
    show_usage(answer)
