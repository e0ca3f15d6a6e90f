"""`tenantflow run FILE.py`: one workflow, locally, to completion, with simulated time."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.text import Text
from tenantflow.runtime.cli.options import json_option
from tenantflow.runtime.cli.output import (
    STATUS_STYLE,
    fail,
    json_text,
    out,
    parse_json,
    print_json,
    safe_text,
    timeline,
)
from tenantflow.runtime.errors import TenantflowError
from tenantflow.runtime.records import FINISHED


@click.group()
def commands() -> None:
    """(registered into the main group)"""


# -- local run --------------------------------------------------------------------


def _parse_event(text: str) -> tuple[str, Any]:
    event_type, _, payload = text.partition("=")
    if not event_type:
        raise click.BadParameter(f"{text!r} is not TYPE=JSON (or TYPE alone for no payload)")
    return event_type, parse_json(payload, f"the payload of event {event_type!r}") if payload else None


@commands.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--params", help="The instance's params as JSON (its event.payload).")
@click.option("--event", "event_args", multiple=True, metavar="TYPE=JSON", help="An event to deliver (repeatable).")
@json_option
def run(file: Path, params: str | None, event_args: tuple[str, ...], as_json: bool) -> None:
    """Run FILE locally to completion and print its output and step timeline.

    Time is simulated: sleeps, retry back-offs and event timeouts take no time;
    the --event events are delivered up front and taken when the workflow waits.
    """
    from tenantflow.runtime.service.local import run_local

    try:
        source = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        fail(f"cannot read {file}: {error}")
    parsed_params = parse_json(params, "--params")
    events_list = [_parse_event(e) for e in event_args]
    try:
        result = run_local(source, parsed_params, events_list)
    except TenantflowError as error:
        problem = f"{type(error).__name__}: {error}"
        line = getattr(error, "line", None)
        fail(problem + (f" (line {line})" if line else ""))
    instance = result.instance.public()
    if as_json:
        print_json(
            {
                "status": instance["status"],
                "output": instance["output"],
                "error": instance["error"],
                "activations": result.activations,
                "stuck": result.stuck,
                "steps": result.journal["steps"],
                "events": result.journal["events"],
                "log": result.journal["log"],
            }
        )
    else:
        console = out()
        title = f"{file.name}: {len(result.journal['steps'])} step(s)"
        finished = instance["status"] in FINISHED
        console.print(timeline(result.journal, title=title, finished=finished, width=console.width))
        if result.journal.get("log"):
            console.print(Text("printed:", style="bold"))
            console.print(safe_text(result.journal["log"].rstrip("\n")))
        status_text = instance["status"]
        console.print(
            Text("status: ", style="bold")
            + Text(status_text, style=STATUS_STYLE.get(status_text, ""))
            + Text(f" after {result.activations} activation(s)")
        )
        if instance["error"]:
            failure = instance["error"]
            where = f" (line {failure['line']})" if failure.get("line") else ""
            console.print(safe_text(f"error: {failure['name']}: {failure['message']}{where}", "red"))
            if failure.get("traceback"):
                console.print(safe_text(failure["traceback"].rstrip("\n"), "dim"))
        elif result.stuck:
            console.print(
                Text("stuck: waiting for an event that was not given (use --event TYPE=JSON)", style="yellow")
            )
        else:
            console.print(Text("output:", style="bold"))
            console.print(json_text(instance["output"]))
    if instance["status"] != "complete":
        sys.exit(1)
