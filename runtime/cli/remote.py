"""Tenant commands over HTTP: deploy, workflows, workflow, start, instances, status, events, journal, controls,
export and fork."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import click
from pydantic import BaseModel
from rich.table import Table
from rich.text import Text
from tenantflow.client import Client, EntryEvent, ResetEvent, StatusEvent, WaitTimeout, WatchBroken, WatchEvent
from tenantflow.runtime.cli.options import api_options
from tenantflow.runtime.cli.output import (
    STATUS_STYLE,
    fail,
    out,
    parse_json,
    plain,
    print_json,
    safe_text,
    show_instance,
    show_journal,
    status_line,
    step_line,
    when,
)
from tenantflow.runtime.cli.retention import show_retention
from tenantflow.runtime.cli.times import When
from tenantflow.runtime.contract import MAX_WAIT_S, Control
from tenantflow.runtime.records import FINISHED, STATUSES

LATEST = "latest"
"""As an instance ID: the workflow's newest instance."""
ID_HELP = "ID is an instance id, or `latest`: the workflow's newest instance."


@click.group()
def commands() -> None:
    """(registered into the main group)"""


# -- tenant commands (over HTTP) --------------------------------------------------


@commands.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="Workflow name (default: the file's name without .py).")
@api_options
def deploy(client: Client, file: Path, name: str | None, as_json: bool) -> None:
    """Deploy FILE as a new version of a workflow (the same source again: the same version)."""
    try:
        source = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        fail(f"cannot read {file}: {error}")
    result = client.deploy(name or file.stem, source)
    if as_json:
        print_json(plain(result))
        return
    what = "deployed" if result.created else "unchanged, still"
    out().print(f"{result.name}: {what} version {result.version} ({result.source_hash[:12]})")


@commands.command()
@api_options
def workflows(client: Client, as_json: bool) -> None:
    """List the tenant's workflows with their latest version."""
    found = client.workflows()
    if as_json:
        print_json([plain(item) for item in found])
        return
    table = Table(title=f"{len(found)} workflow(s)", title_justify="left")
    for column in ("workflow", "version", "source", "deployed"):
        table.add_column(column)
    for item in found:
        table.add_row(item.name, str(item.version), item.source_hash[:12], when(item.created_at))
    out().print(table)


@commands.command()
@click.argument("name")
@click.option("--before", type=click.IntRange(1), default=None, help="Only versions below this one (older).")
@api_options
def workflow(client: Client, name: str, before: int | None, as_json: bool) -> None:
    """Show a workflow: its newest versions (100), its instances by status, and how long its finished ones are
    kept."""
    found = client.versions(name, before=before)
    if as_json:
        print_json(plain(found))
        return
    console = out()
    versions = Table(title=safe_text(f"workflow {found.name}: {len(found.versions)} version(s)"), title_justify="left")
    for column in ("version", "source", "deployed"):
        versions.add_column(column)
    for item in found.versions:
        versions.add_row(str(item.version), item.source_hash[:12], when(item.created_at))
    console.print(versions)
    if found.next_before is not None:
        console.print(Text(f"older versions: tenantflow workflow {name} --before {found.next_before}", style="dim"))
    counts = "  ".join(f"{status} {found.counts.get(status, 0)}" for status in STATUSES)
    console.print(Text("instances: ", style="bold") + Text(counts))
    console.print(Text("retention:", style="bold"))
    console.print(show_retention(found.retention.model_dump()))


@commands.command()
@click.argument("workflow")
@click.option("--id", "instance_id", help="Instance id (default: a random one).")
@click.option("--params", help="The instance's params as JSON (its event.payload).")
@click.option(
    "--params-file",
    type=click.File("r", encoding="utf-8"),
    help="Read the params as JSON from this file (`-`: standard input).",
)
@click.option("--wait", "wait_s", type=float, default=None, help="Wait up to this many seconds for it to finish.")
@api_options
def start(
    client: Client,
    workflow: str,
    instance_id: str | None,
    params: str | None,
    params_file: TextIO | None,
    wait_s: float | None,
    as_json: bool,
) -> None:
    """Start an instance of WORKFLOW's latest version (params from --params or --params-file)."""
    if params is not None and params_file is not None:
        raise click.UsageError("give --params or --params-file, not both")
    if params_file is not None:
        try:
            params = params_file.read()
        except (OSError, UnicodeDecodeError) as error:
            fail(f"cannot read --params-file: {error}")
    handle = client.start(
        workflow, instance_id, parse_json(params, "--params-file" if params_file is not None else "--params")
    )
    created = handle.instance
    if wait_s is not None:
        try:
            created = handle.wait(timeout=wait_s)  # long polls: a few requests, not one per 50 ms
        except WaitTimeout as error:
            fail(str(error))
    assert created is not None
    if as_json:
        print_json(plain(created))
        return
    show_instance(plain(created))


@commands.command()
@click.argument("workflow", required=False)
@click.option("--status", "status_filter", type=click.Choice(STATUSES), help="Only instances with this status.")
@click.option("--since", type=When(), help="Only instances created since: 30m, 1h, 2d, 1w ago, or a time.")
@click.option("--until", type=When(), help="Only instances created before this (as --since).")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--after", help="The cursor a page ended with (its `more: --after`), for the next page.")
@api_options
def instances(
    client: Client,
    workflow: str | None,
    status_filter: str | None,
    since: float | None,
    until: float | None,
    limit: int,
    after: str | None,
    as_json: bool,
) -> None:
    """List WORKFLOW's instances, or without it every workflow's: a page, newest first.

    A time for --since and --until is ISO 8601 (2026-11-01, 2026-11-01T09:30Z; local time without a
    timezone) or epoch seconds."""
    page = client.instances(workflow, status_filter, limit, after, created_after=since, created_before=until)
    if as_json:
        print_json(plain(page))
        return
    title = f"instances of {workflow}" if workflow else "instances of every workflow"
    table = Table(title=safe_text(title), title_justify="left")
    columns = ("id", "version", "status", "created", "updated")
    for column in columns if workflow else ("workflow", *columns):
        table.add_column(column)
    for item in page.instances:
        cells: list[str | Text] = [
            safe_text(item.id),
            str(item.version),
            Text(item.status, STATUS_STYLE.get(item.status, "")),
            when(item.created_at),
            when(item.updated_at),
        ]
        table.add_row(*cells if workflow else [safe_text(item.workflow), *cells])
    console = out()
    console.print(table)
    if page.next_after:
        console.print(f"more: --after {page.next_after}")


def instance_id_of(client: Client, workflow: str, given: str) -> str:
    """The instance an ID argument names: `latest` is the workflow's newest instance."""
    if given != LATEST:
        return given
    newest = client.instances(workflow, limit=1).instances
    if not newest:
        fail(f"workflow {workflow} has no instances, so none is the latest")
    return newest[0].id


@commands.command()
@click.argument("workflow")
@click.argument("instance_id", metavar="ID")
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(0, MAX_WAIT_S),
    default=0.0,
    help="A long poll: answer once the instance has settled (it is not queued or running, nor in --seen), "
    "waiting up to this many seconds.",
)
@click.option(
    "--seen", type=click.Choice(STATUSES), help="With --wait: the status last seen; hold on while it is still in it."
)
@api_options
def status(client: Client, workflow: str, instance_id: str, wait_s: float, seen: str | None, as_json: bool) -> None:
    """Show an instance's status, output and error. ID may be `latest`: the workflow's newest instance."""
    instance_id = instance_id_of(client, workflow, instance_id)
    found = client.status(workflow, instance_id, wait_s=wait_s, seen=seen)
    if as_json:
        print_json(plain(found))
        return
    show_instance(plain(found))


@commands.group()
def events() -> None:
    """Send events to instances."""


@events.command("send")
@click.argument("workflow")
@click.argument("instance_id", metavar="ID")
@click.argument("event_type", metavar="TYPE")
@click.option("--payload", help="The event's payload as JSON.")
@api_options
def events_send(
    client: Client, workflow: str, instance_id: str, event_type: str, payload: str | None, as_json: bool
) -> None:
    """Deliver an event of TYPE to an instance (buffered until it waits for that type). ID may be `latest`."""
    instance_id = instance_id_of(client, workflow, instance_id)
    result = client.send_event(workflow, instance_id, event_type, parse_json(payload, "--payload"))
    if as_json:
        print_json(plain(result))
        return
    out().print(safe_text(f"event {result.type!r} delivered to {workflow}/{instance_id} (#{result.seq})"))


@commands.command()
@click.argument("workflow")
@click.argument("instance_id", metavar="ID")
@api_options
def watch(client: Client, workflow: str, instance_id: str, as_json: bool) -> None:
    """Follow an instance live: each status change and each step as it happens, until it has finished
    (exit 0 however it finished; with --json, one JSON object per line). ID may be `latest`."""
    instance_id = instance_id_of(client, workflow, instance_id)
    console = out()
    shown = None
    for event in _follow(client, workflow, instance_id, None):
        if as_json:
            click.echo(json.dumps(event_json(event)))
        elif isinstance(event, StatusEvent):
            if event.instance.status != shown:  # not each time its wake time or counts move
                console.print(status_line(plain(event.instance)), soft_wrap=True)
                shown = event.instance.status
        elif isinstance(event, EntryEvent):
            console.print(step_line(plain(event.entry)), soft_wrap=True)
        else:
            console.print(safe_text("the journal was cut by a restart; its steps follow again", "yellow"))


def _follow(client: Client, workflow: str, instance_id: str, after: str | None) -> Iterator[WatchEvent]:
    try:
        yield from client.watch(workflow, instance_id, after)
    except WatchBroken as error:
        fail(str(error))


def event_json(event: WatchEvent) -> dict[str, Any]:
    """A watch event as `watch --json` prints it: its kind, its id and its data as the server sent it."""
    if isinstance(event, StatusEvent):
        return {"event": "status", "id": event.id, "data": plain(event.instance)}
    if isinstance(event, EntryEvent):
        return {"event": "entry", "id": event.id, "data": plain(event.entry)}
    return {"event": "reset", "id": event.id, "data": {}}


@commands.command()
@click.argument("workflow")
@click.argument("instance_id", metavar="ID")
@click.option("--after", type=click.IntRange(-1), default=-1, show_default=True, help="Only positions after this.")
@click.option("--limit", type=click.IntRange(1, 1000), default=1000, show_default=True, help="Positions per page.")
@click.option(
    "--follow",
    is_flag=True,
    help="Print each entry as it comes (new, or changed), until the instance has finished (with --json, one "
    "JSON object per line).",
)
@api_options
def journal(
    client: Client, workflow: str, instance_id: str, after: int, limit: int, follow: bool, as_json: bool
) -> None:
    """Show a page of an instance's journal: steps, attempts, waits and events, in order. ID may be `latest`."""
    instance_id = instance_id_of(client, workflow, instance_id)
    if follow:
        _follow_journal(client, workflow, instance_id, after, as_json)
        return
    found = client.journal(workflow, instance_id, after=after, limit=limit)
    if as_json:
        print_json(plain(found))
        return
    current = client.status(workflow, instance_id)
    show_journal(plain(found), finished=current.status in FINISHED and found.next_after is None)
    if found.next_after is not None:
        out().print(safe_text(f"more: tenantflow journal {workflow} {instance_id} --after {found.next_after}"))


def _follow_journal(client: Client, workflow: str, instance_id: str, after: int, as_json: bool) -> None:
    console = out()
    for event in _follow(client, workflow, instance_id, str(after) if after >= 0 else None):
        if isinstance(event, EntryEvent):
            if as_json:
                click.echo(json.dumps(plain(event.entry)))
            else:
                console.print(step_line(plain(event.entry)), soft_wrap=True)
        elif isinstance(event, ResetEvent) and not as_json:
            console.print(safe_text("the journal was cut by a restart; its steps follow again", "yellow"))
        elif isinstance(event, StatusEvent) and event.instance.status in FINISHED and not as_json:
            console.print(status_line(plain(event.instance)), soft_wrap=True)


def selection_options(fn: Any) -> Any:
    """The options that pick many instances of a workflow for a control: one or more IDs, or a filter."""
    for option in reversed(
        [
            click.option(
                "--status", "status_filter", type=click.Choice(STATUSES), help="All instances in this status."
            ),
            click.option("--since", type=When(), help="All instances created since: 30m, 1h, 2d, 1w ago, or a time."),
            click.option("--until", type=When(), help="All instances created before this (as --since)."),
            click.option("--id-prefix", help="All instances whose id starts with this."),
            click.option("--all", "everything", is_flag=True, help="All the workflow's instances (no other filter)."),
            click.option("--yes", is_flag=True, help="Do not ask for confirmation of a filter's action."),
        ]
    ):
        fn = option(fn)
    return fn


def _control(
    client: Client,
    action: Control,
    workflow: str,
    ids: tuple[str, ...],
    selection: dict[str, Any],
    as_json: bool,
    single: Callable[[str], BaseModel],
) -> None:
    """One ID: the single control (`single`), as ever. Several IDs, or a filter: the bulk action."""
    filters = {k: selection[k] for k in ("status_filter", "since", "until", "id_prefix") if selection[k] is not None}
    everything = bool(selection["everything"])
    if ids and (filters or everything):
        raise click.UsageError("give IDs, or a filter (--status, --since, --until, --id-prefix, --all), not both")
    if len(ids) == 1:
        result = single(instance_id_of(client, workflow, ids[0]))
        if as_json:
            print_json(plain(result))
            return
        show_instance(plain(result))
        return
    if not ids and not filters and not everything:
        raise click.UsageError(
            f"give an ID (or several), or pick the instances to {action} with --status, --since, --until, "
            "--id-prefix or --all"
        )
    bulk_control(client, action, workflow, list(ids) if ids else None, filters, bool(selection["yes"]), as_json)


def bulk_control(
    client: Client,
    action: Control,
    workflow: str,
    ids: list[str] | None,
    filters: dict[str, Any],
    yes: bool,
    as_json: bool,
) -> None:
    status = filters.get("status_filter")
    kwargs: dict[str, Any] = {
        "status": status,
        "created_after": filters.get("since"),
        "created_before": filters.get("until"),
        "id_prefix": filters.get("id_prefix"),
    }
    if ids is None and not yes:
        counted = client.count_instances(
            workflow,
            created_after=kwargs["created_after"],
            created_before=kwargs["created_before"],
            id_prefix=kwargs["id_prefix"],
        )
        statuses = [status] if status else list(counted.counts)
        total = sum(counted.counts[s] for s in statuses)
        more = "+" if any(s in counted.capped for s in statuses) else ""
        if total == 0:
            fail(f"no {status + ' ' if status else ''}instances of {workflow} match", 1)
        what = f"{total:,}{more} {status + ' ' if status else ''}instance{'' if total == 1 and not more else 's'}"
        click.confirm(f"{action.capitalize()} {what} of '{workflow}'?", abort=True, err=True)
    done = skipped = 0
    results: list[dict[str, Any]] = []
    console = out()
    for answer in client.bulk(action, workflow, ids, **kwargs):
        done += answer.done
        skipped += answer.skipped
        results += [plain(r) for r in answer.results]
        if not as_json and answer.next_after is not None:
            console.print(f"... {done:,} done, {skipped:,} skipped", soft_wrap=True)
    if as_json:
        print_json({"action": action, "workflow": workflow, "done": done, "skipped": skipped, "results": results})
        return
    console.print(safe_text(f"{action}: {done:,} done, {skipped:,} skipped ({workflow})"))
    reasons: dict[str, int] = {}
    for r in results:
        if r["outcome"] == "skipped":
            reasons[str(r.get("reason"))] = reasons.get(str(r.get("reason")), 0) + 1
    for reason, times in sorted(reasons.items(), key=lambda item: -item[1]):
        console.print(safe_text(f"  skipped {times:,}: {reason}", "yellow"))


def _control_command(action: Control, help_text: str) -> None:
    @commands.command(name=action, help=help_text)
    @click.argument("workflow")
    @click.argument("instance_ids", metavar="[ID]...", nargs=-1)
    @selection_options
    @api_options
    def command(client: Client, workflow: str, instance_ids: tuple[str, ...], as_json: bool, **selection: Any) -> None:
        _control(
            client,
            action,
            workflow,
            instance_ids,
            selection,
            as_json,
            lambda instance_id: client.control(workflow, instance_id, action),
        )


@commands.command()
@click.argument("workflow")
@click.argument("instance_id", metavar="ID", required=False)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@api_options
def delete(client: Client, workflow: str, instance_id: str | None, yes: bool, as_json: bool) -> None:
    """Delete a finished instance (WORKFLOW ID, ID may be `latest`), or a workflow with its versions and
    instances (WORKFLOW)."""
    if instance_id is not None:
        instance_id = instance_id_of(client, workflow, instance_id)
    what = f"instance {instance_id} of {workflow}" if instance_id else f"workflow {workflow} and all its instances"
    if not yes:
        click.confirm(f"Delete {what}?", abort=True, err=True)
    if instance_id is not None:
        result: Any = client.delete_instance(workflow, instance_id)
        message = f"deleted instance {instance_id} of {workflow}"
    else:
        result = client.delete_workflow(workflow)
        message = f"deleted workflow {workflow} with {result.instances} instance(s)"
    if as_json:
        print_json(plain(result))
        return
    out().print(safe_text(message))


@commands.command()
@click.argument("workflow")
@click.argument("instance_ids", metavar="[ID]...", nargs=-1)
@click.option("--from", "from_step", metavar="STEP", help="Re-run from this step (the journal before it is kept).")
@click.option("--count", type=click.IntRange(1), default=1, show_default=True, help="Which call of STEP.")
@selection_options
@api_options
def restart(
    client: Client,
    workflow: str,
    instance_ids: tuple[str, ...],
    from_step: str | None,
    count: int,
    as_json: bool,
    **selection: Any,
) -> None:
    """Restart an instance with the same params: from scratch, or from a step of its journal. ID may be
    `latest`. Several IDs, or a filter (--status, --since, --until, --id-prefix, --all), restart many from
    scratch (a filter asks first, unless --yes)."""
    if from_step is not None and len(instance_ids) != 1:
        raise click.UsageError("--from restarts one instance: give its ID")
    _control(
        client,
        "restart",
        workflow,
        instance_ids,
        selection,
        as_json,
        lambda instance_id: client.restart(workflow, instance_id, from_step, count),
    )


@commands.command()
@click.argument("workflow")
@click.argument("instance_id", metavar="ID")
@api_options
def export(client: Client, workflow: str, instance_id: str, as_json: bool) -> None:
    """Print an instance as one self-contained JSON document (tenantflow.bundle/1): the instance, its pinned
    source, params, seed, whole journal with attempts, events and log. ID may be `latest`.

        tenantflow export WORKFLOW ID > bundle.json"""
    bundle = client.export(workflow, instance_id_of(client, workflow, instance_id))
    click.echo(json.dumps(bundle))


@commands.command()
@click.argument("workflow")
@click.argument("instance_id", metavar="ID")
@click.option(
    "--from", "from_step", metavar="STEP", required=True, help="Fork before this step (the journal before it is kept)."
)
@click.option("--count", type=click.IntRange(1), default=1, show_default=True, help="Which call of STEP.")
@click.option("--version", type=click.IntRange(1), help="The version the fork runs (default: the latest).")
@click.option("--id", "fork_id", help="The fork's id (default: a random one).")
@api_options
def fork(
    client: Client,
    workflow: str,
    instance_id: str,
    from_step: str,
    count: int,
    version: int | None,
    fork_id: str | None,
    as_json: bool,
) -> None:
    """Start a new instance from an instance's journal before a step: the steps before it are copied (replayed,
    not run again) and it runs on from there with the given version; the original is not changed. ID may be
    `latest`."""
    handle = client.fork(workflow, instance_id_of(client, workflow, instance_id), from_step, count, version, fork_id)
    assert handle.instance is not None
    if as_json:
        print_json(plain(handle.instance))
        return
    show_instance(plain(handle.instance))


@commands.command()
@click.argument("workflow")
@click.argument("instance_ids", metavar="[ID]...", nargs=-1)
@click.option("--rollback", is_flag=True, help="Run the rollbacks of its completed steps first (last started first).")
@selection_options
@api_options
def terminate(
    client: Client, workflow: str, instance_ids: tuple[str, ...], rollback: bool, as_json: bool, **selection: Any
) -> None:
    """Terminate an instance that has not finished. ID may be `latest`: the workflow's newest instance.
    Several IDs, or a filter (--status, --since, --until, --id-prefix, --all), terminate many (a filter asks
    first, naming the count, unless --yes): tenantflow terminate order --status waiting --since 1h --yes"""
    if rollback and len(instance_ids) != 1:
        raise click.UsageError("--rollback terminates one instance: give its ID")
    _control(
        client,
        "terminate",
        workflow,
        instance_ids,
        selection,
        as_json,
        lambda instance_id: client.terminate(workflow, instance_id, rollback=rollback),
    )


@commands.command()
@click.argument("workflow")
@click.argument("instance_id", metavar="ID")
@click.option("--version", type=click.IntRange(1), required=True, help="The version to move the instance to.")
@api_options
def upgrade(client: Client, workflow: str, instance_id: str, version: int, as_json: bool) -> None:
    """Move a waiting or paused instance to another version, if its journal replays cleanly under it (the
    server replays it in the sandbox; exit 1 naming where it diverges otherwise). ID may be `latest`."""
    result = client.upgrade(workflow, instance_id_of(client, workflow, instance_id), version)
    if as_json:
        print_json(plain(result))
        return
    show_instance(plain(result))


MANY_HELP = (
    "Several IDs, or a filter (--status, --since, --until, --id-prefix, --all), act on many (a filter asks first, "
    "naming the count, unless --yes)."
)
CONTROL_HELP: dict[Control, str] = {
    "pause": f"Pause an instance (a running one stops once its step is journaled). {ID_HELP} {MANY_HELP}",
    "resume": f"Resume a paused instance. {ID_HELP} {MANY_HELP}",
}
for _action, _help in CONTROL_HELP.items():
    _control_command(_action, _help)
