"""The `tenantflow` command line.

Operator commands work on the database directly (`--db URL`, or TENANTFLOW_DB):
`serve`, `worker`, `tenants create|list`. Tenant commands talk to a server over
HTTP (`--url`, TENANTFLOW_URL; `--key`, TENANTFLOW_KEY): `deploy`, `workflows`,
`start`, `instances`, `status`, `events send`, `journal`, `pause`, `resume`,
`terminate`, `restart`. `run` runs one workflow locally, with no server.
Every command prints for people by default and JSON with `--json`.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import httpx
from pydantic import BaseModel
from rich.console import Console
from rich.highlighter import JSONHighlighter
from rich.table import Table
from rich.text import Text
from tenantflow.runtime.client import DEFAULT_URL, ApiError, Client, allow_deep_json
from tenantflow.runtime.contract import CONTROLS, Control
from tenantflow.runtime.errors import TenantflowError
from tenantflow.runtime.records import FINISHED, STATUSES, Quotas
from tenantflow.runtime.store import DEFAULT_DB

F = TypeVar("F", bound=Callable[..., Any])

STATUS_STYLE = {
    "complete": "green",
    "errored": "red",
    "terminated": "red",
    "paused": "yellow",
    "waiting": "cyan",
    "running": "blue",
    "queued": "white",
}


def _escapes() -> dict[int, str]:
    table = {code: f"\\x{code:02x}" for code in [*range(0x20), *range(0x7F, 0xA0)] if chr(code) not in "\t\n"}
    # Bidirectional overrides reorder what the reader sees; lone surrogates cannot be encoded.
    for code in [*range(0x202A, 0x202F), *range(0x2066, 0x206A), *range(0xD800, 0xE000)]:
        table[code] = f"\\u{code:04x}"
    return table


ESCAPES = _escapes()


def terminal_safe(text: str) -> str:
    """`text` with what a terminal would act on shown as escapes instead: control characters but
    tab and newline (ESC as "\\x1b", so no OSC or CSI sequence passes), bidi overrides and lone
    surrogates. Print the result as `Text` (never as a markup string), so "[bold]" stays text."""
    return text.translate(ESCAPES)


def _t(text: Any, style: str = "") -> Text:
    """Tenant text for rich: escaped for the terminal, never read as markup."""
    return Text(terminal_safe(str(text)), style=style)


def _json_text(value: Any, indent: int | None = 2) -> Text:
    try:
        text = json.dumps(value, indent=indent, ensure_ascii=False)
    except RecursionError:
        text = json.dumps(value, ensure_ascii=False)
    return JSONHighlighter()(_t(text))


def _out() -> Console:
    return Console(soft_wrap=False, highlight=False)


def _err() -> Console:
    return Console(stderr=True, highlight=False)


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False))


def _plain(answer: BaseModel) -> dict[str, Any]:
    """An answer of the API as the JSON it came as (the fields the server sent, in its order)."""
    return answer.model_dump(exclude_unset=True)


def _parse_json(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as error:
        raise click.BadParameter(f"{what} is not valid JSON: {error}") from None


def _fail(message: str, code: int = 1) -> NoReturn:
    _err().print(Text("error: ", style="bold red") + _t(message))
    sys.exit(code)


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))
    except (OverflowError, OSError, ValueError):
        return f"{epoch:.6g} s since 1970"  # beyond what the platform's time functions hold


def _excerpt(value: Any, width: int = 60) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except RecursionError:
        text = "(nested too deeply to show; see --json)"
    text = terminal_safe(text)
    return text if len(text) <= width else text[: width - 1] + "…"


# -- shared options -------------------------------------------------------------


def db_option(fn: F) -> F:
    return click.option(
        "--db",
        envvar="TENANTFLOW_DB",
        default=DEFAULT_DB,
        show_default=True,
        help="Database URL: sqlite:///FILE or postgresql://... (env TENANTFLOW_DB).",
    )(fn)


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)


def api_options(fn: F) -> F:
    """--url, --key and --json; the command gets a `client` instead of url and key."""

    @click.option(
        "--url",
        envvar="TENANTFLOW_URL",
        default=DEFAULT_URL,
        show_default=True,
        help="Server URL (env TENANTFLOW_URL).",
    )
    @click.option("--key", envvar="TENANTFLOW_KEY", help="The tenant's API key (env TENANTFLOW_KEY).")
    @json_option
    @functools.wraps(fn)
    def wrapper(url: str, key: str | None, **kwargs: Any) -> Any:
        if not key:
            _fail("give the tenant's API key with --key or TENANTFLOW_KEY", 2)
        with Client(url, key) as client:
            try:
                return fn(client=client, **kwargs)
            except ApiError as error:
                problem = error.problem
                message = f"{error.status} {problem.get('title', '')}: {problem.get('detail', '')}"
                if problem.get("line") is not None:
                    message += f" (line {problem['line']})"
                if error.headers.get("retry-after"):
                    message += f"; retry after {error.headers['retry-after']} s"
                if kwargs.get("as_json"):
                    click.echo(json.dumps(problem), err=True)
                _fail(message)
            except httpx.HTTPError as error:
                _fail(f"cannot reach {url}: {error}")

    return wrapper  # type: ignore[return-value]


# -- rendering ------------------------------------------------------------------


def _show_instance(instance: dict[str, Any]) -> None:
    console = _out()
    status = instance["status"]
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("instance", _t(instance["id"]))
    table.add_row("workflow", _t(f"{instance['workflow']} (version {instance['version']})"))
    table.add_row("status", _t(status, STATUS_STYLE.get(status, "")))
    table.add_row("created", _when(instance.get("created_at")))
    table.add_row("updated", _when(instance.get("updated_at")))
    if instance.get("wake_at") is not None and status == "waiting":
        table.add_row("wakes", _when(instance["wake_at"]))
    if instance.get("params") is not None:
        table.add_row("params", Text(_excerpt(instance["params"], 200)))
    if instance.get("output") is not None:
        table.add_row("output", _json_text(instance["output"]))
    error = instance.get("error")
    if error:
        where = f" (line {error['line']})" if error.get("line") else ""
        table.add_row("error", _t(f"{error.get('name')}: {error.get('message')}{where}", "red"))
    console.print(table)


def _step_duration(step: dict[str, Any]) -> str:
    if step["kind"] == "do":
        return _age(step.get("duration_ms", 0.0) / 1000)
    start = step.get("created_at") or 0.0
    if step["kind"] == "sleep" and step.get("wake_at") is not None:
        return _age(step["wake_at"] - start)
    return _age((step.get("updated_at") or start) - start)


def _step_result(step: dict[str, Any], width: int = 60) -> str:
    if step.get("error_name"):
        text = terminal_safe(f"{step['error_name']}: {step.get('error_message') or ''}")
        return text if len(text) <= width else text[: width - 1] + "…"
    if step["kind"] == "sleep":
        return f"until {_when(step.get('wake_at'))}"
    if step["kind"] == "wait" and step["state"] == "waiting":
        return terminal_safe(f"for {step.get('event_type')!r}")
    return _excerpt(step.get("result"), width)


def timeline(journal: dict[str, Any], title: str | None = None, finished: bool = False, width: int = 80) -> Table:
    """The step timeline: position, name, kind, state, attempts, duration, result excerpt."""
    table = Table(title=None if title is None else _t(title), title_justify="left")
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("step", overflow="fold")
    table.add_column("kind", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("attempts", justify="right", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("result", overflow="fold")
    steps = journal.get("steps", [])
    name_width = max((len(step["name"]) for step in steps), default=4)
    result_width = max(16, width - 52 - min(name_width, 24))
    for index, step in enumerate(steps):
        state = step["state"]
        if state == "sleeping" and (finished or index < len(steps) - 1):
            state = "done"  # a sleep is journaled once; a later step (or the end) means it passed
        style = {"done": "green", "failed": "red", "timed_out": "yellow", "retrying": "yellow"}.get(state, "")
        table.add_row(
            str(step["position"]),
            _t(step["name"]),
            _t(step["kind"]),
            _t(state, style),
            str(step["attempts"]) if step["kind"] == "do" else "",
            _step_duration(step),
            Text(_step_result(step, result_width)),
        )
    return table


def _show_journal(journal: dict[str, Any], finished: bool = False) -> None:
    console = _out()
    title = f"journal of {journal['workflow']}/{journal['id']}"
    console.print(timeline(journal, title=title, finished=finished, width=console.width))
    events = journal.get("events") or []
    if events:
        table = Table(title="events", title_justify="left")
        for column in ("seq", "type", "payload", "received", "taken by step"):
            table.add_column(column)
        for event in events:
            table.add_row(
                str(event["seq"]),
                _t(event["type"]),
                Text(_excerpt(event.get("payload"))),
                _when(event.get("created_at")),
                "-" if event.get("consumed_at") is None else f"#{event['consumed_at']}",
            )
        console.print(table)
    if journal.get("log"):
        console.print(Text("output printed by the workflow:", style="bold"))
        console.print(_t(journal["log"].rstrip("\n")))


# -- the command group ------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="tenantflow")
def main() -> None:
    """tenantflow: durable workflows from tenant-supplied Python, in a WASI sandbox."""
    allow_deep_json()  # results nested ~1000 deep must print


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8787, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free).")
@db_option
@click.option("--workers", default=4, show_default=True, type=click.IntRange(1), help="Activation threads.")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning"]))
@click.option(
    "--metrics-token",
    envvar="TENANTFLOW_METRICS_TOKEN",
    help="A token a scraper may send as 'Authorization: Bearer TOKEN' for /metrics "
    "(env TENANTFLOW_METRICS_TOKEN); an operator key always may.",
)
def serve(host: str, port: int, db: str, workers: int, log_level: str, metrics_token: str | None) -> None:
    """Run the HTTP API and the workers in one process (graceful stop on SIGTERM)."""
    from tenantflow.runtime.http.server import configure_logging
    from tenantflow.runtime.http.server import serve as run_server

    configure_logging(log_level)
    try:
        run_server(db, host, port, workers, log_level, metrics_token=metrics_token)
    except OSError as error:
        _fail(f"cannot listen on {host}:{port}: {error}")
    except TenantflowError as error:
        _fail(str(error))


@main.command()
@db_option
@click.option("--workers", default=4, show_default=True, type=click.IntRange(1), help="Activation threads.")
@click.option("--lease", default=30.0, show_default=True, type=click.FloatRange(min=0.1), help="Lease, seconds.")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning"]))
@click.option("--ready-json", is_flag=True, help="Print a JSON line once the workers run (for a parent process).")
@click.option("--host-alias", hidden=True, help="Tests: a lease owner that looks like another machine's.")
def worker(db: str, workers: int, lease: float, log_level: str, ready_json: bool, host_alias: str | None) -> None:
    """Run workers only, for scale-out on a shared database (graceful stop on SIGTERM)."""
    from tenantflow.runtime.cli.worker import run_workers
    from tenantflow.runtime.http.server import configure_logging

    configure_logging(log_level)
    try:
        run_workers(db, workers, lease, host_alias=host_alias, ready_json=ready_json)
    except TenantflowError as error:
        _fail(str(error))


# -- tenants (operator, on the database) --------------------------------------------


@main.group()
def tenants() -> None:
    """Create and list tenants (operator commands, on --db)."""


@tenants.command("create")
@click.argument("name")
@db_option
@click.option("--max-concurrent", type=click.IntRange(1), help="Activations running at once.")
@click.option("--max-instances", type=click.IntRange(1), help="Instances created per minute.")
@click.option("--memory-mb", type=click.IntRange(1), help="Memory per activation, MiB.")
@click.option("--fuel", type=click.IntRange(1), help="Fuel (wasm instructions, roughly) per activation.")
@click.option("--max-stored-mb", type=click.IntRange(1), help="Storage for all the tenant's instances, MB.")
@click.option("--egress", multiple=True, metavar="HOST", help="A host `fetch` may reach (repeat, or comma-separate).")
@click.option("--operator", is_flag=True, help="An operator key: reads every tenant in the dashboard.")
@json_option
def tenants_create(
    name: str,
    db: str,
    max_concurrent: int | None,
    max_instances: int | None,
    memory_mb: int | None,
    fuel: int | None,
    max_stored_mb: int | None,
    egress: tuple[str, ...],
    operator: bool,
    as_json: bool,
) -> None:
    """Create tenant NAME and print JSON with its API key (shown once; only its hash is stored)."""
    from tenantflow.runtime.engine.clock import SystemClock
    from tenantflow.runtime.service import Tenants
    from tenantflow.runtime.store import open_store

    defaults = Quotas()
    quotas = Quotas(
        max_concurrent=max_concurrent or defaults.max_concurrent,
        max_instances_per_minute=max_instances or defaults.max_instances_per_minute,
        memory_mb=memory_mb or defaults.memory_mb,
        fuel=fuel or defaults.fuel,
        max_stored_mb=max_stored_mb or defaults.max_stored_mb,
        egress=tuple(h.strip() for item in egress for h in item.split(",") if h.strip()),
    )
    try:
        store = open_store(db)
    except TenantflowError as error:
        _fail(str(error))
    try:
        tenant, api_key = Tenants(store, SystemClock()).create(name, quotas, operator=operator)
    except TenantflowError as error:
        _fail(str(error))
    finally:
        store.close()
    result = {
        "tenant": tenant.name,
        "api_key": api_key,
        "operator": tenant.operator,
        "quotas": _quotas_json(tenant.quotas),
    }
    click.echo(json.dumps(result) if as_json else json.dumps(result, indent=2))


def _quotas_json(quotas: Quotas) -> dict[str, Any]:
    return {
        "max_concurrent": quotas.max_concurrent,
        "max_instances_per_minute": quotas.max_instances_per_minute,
        "max_steps": quotas.max_steps,
        "memory_mb": quotas.memory_mb,
        "fuel": quotas.fuel,
        "max_source_bytes": quotas.max_source_bytes,
        "max_payload_bytes": quotas.max_payload_bytes,
        "max_stored_mb": quotas.max_stored_mb,
        "egress": list(quotas.egress),
    }


@tenants.command("list")
@db_option
@json_option
def tenants_list(db: str, as_json: bool) -> None:
    """List tenants and their quotas (never their keys)."""
    from tenantflow.runtime.store import open_store

    try:
        store = open_store(db)
    except TenantflowError as error:
        _fail(str(error))
    try:
        found = store.tenants()
    finally:
        store.close()
    rows: list[dict[str, Any]] = [
        {"tenant": t.name, "created_at": t.created_at, "operator": t.operator, "quotas": _quotas_json(t.quotas)}
        for t in found
    ]
    if as_json:
        _print_json(rows)
        return
    table = Table(title=f"{len(rows)} tenant(s)", title_justify="left")
    for column in ("tenant", "created", "concurrent", "instances/min", "memory", "fuel", "egress"):
        table.add_column(column)
    for row in rows:
        q = row["quotas"]
        table.add_row(
            row["tenant"],
            _when(row["created_at"]),
            str(q["max_concurrent"]),
            str(q["max_instances_per_minute"]),
            f"{q['memory_mb']} MiB",
            f"{q['fuel']:,}",
            ", ".join(q["egress"]) or "-",
        )
    _out().print(table)


# -- tenant commands (over HTTP) --------------------------------------------------


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="Workflow name (default: the file's name without .py).")
@api_options
def deploy(client: Client, file: Path, name: str | None, as_json: bool) -> None:
    """Deploy FILE as a new version of a workflow (the same source again: the same version)."""
    try:
        source = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        _fail(f"cannot read {file}: {error}")
    result = client.deploy(name or file.stem, source)
    if as_json:
        _print_json(_plain(result))
        return
    what = "deployed" if result.created else "unchanged, still"
    _out().print(f"{result.name}: {what} version {result.version} ({result.source_hash[:12]})")


@main.command()
@api_options
def workflows(client: Client, as_json: bool) -> None:
    """List the tenant's workflows with their latest version."""
    found = client.workflows()
    if as_json:
        _print_json([_plain(item) for item in found])
        return
    table = Table(title=f"{len(found)} workflow(s)", title_justify="left")
    for column in ("workflow", "version", "source", "deployed"):
        table.add_column(column)
    for item in found:
        table.add_row(item.name, str(item.version), item.source_hash[:12], _when(item.created_at))
    _out().print(table)


@main.command()
@click.argument("workflow")
@click.option("--id", "instance_id", help="Instance id (default: a random one).")
@click.option("--params", help="The instance's params as JSON (its event.payload).")
@click.option("--wait", "wait_s", type=float, default=None, help="Wait up to this many seconds for it to finish.")
@api_options
def start(
    client: Client, workflow: str, instance_id: str | None, params: str | None, wait_s: float | None, as_json: bool
) -> None:
    """Start an instance of WORKFLOW's latest version."""
    created = client.start(workflow, instance_id, _parse_json(params, "--params"))
    if wait_s is not None:
        try:
            created = client.wait(workflow, created.id, timeout=wait_s)
        except TimeoutError as error:
            _fail(str(error))
    if as_json:
        _print_json(_plain(created))
        return
    _show_instance(_plain(created))


@main.command()
@click.argument("workflow")
@click.option("--status", "status_filter", type=click.Choice(STATUSES), help="Only instances with this status.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--after", help="Only ids after this one (for the next page).")
@api_options
def instances(
    client: Client, workflow: str, status_filter: str | None, limit: int, after: str | None, as_json: bool
) -> None:
    """List WORKFLOW's instances (a page, ordered by id)."""
    page = client.instances(workflow, status_filter, limit, after)
    if as_json:
        _print_json(_plain(page))
        return
    table = Table(title=f"instances of {workflow}", title_justify="left")
    for column in ("id", "version", "status", "updated"):
        table.add_column(column)
    for item in page.instances:
        table.add_row(
            item.id, str(item.version), Text(item.status, STATUS_STYLE.get(item.status, "")), _when(item.updated_at)
        )
    console = _out()
    console.print(table)
    if page.next_after:
        console.print(f"more: --after {page.next_after}")


@main.command()
@click.argument("workflow")
@click.argument("instance_id", metavar="ID")
@api_options
def status(client: Client, workflow: str, instance_id: str, as_json: bool) -> None:
    """Show an instance's status, output and error."""
    found = client.status(workflow, instance_id)
    if as_json:
        _print_json(_plain(found))
        return
    _show_instance(_plain(found))


@main.group()
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
    """Deliver an event of TYPE to an instance (buffered until it waits for that type)."""
    result = client.send_event(workflow, instance_id, event_type, _parse_json(payload, "--payload"))
    if as_json:
        _print_json(_plain(result))
        return
    _out().print(_t(f"event {result.type!r} delivered to {workflow}/{instance_id} (#{result.seq})"))


@main.command()
@click.argument("workflow")
@click.argument("instance_id", metavar="ID")
@click.option("--after", type=click.IntRange(-1), default=-1, show_default=True, help="Only positions after this.")
@click.option("--limit", type=click.IntRange(1, 1000), default=1000, show_default=True, help="Positions per page.")
@api_options
def journal(client: Client, workflow: str, instance_id: str, after: int, limit: int, as_json: bool) -> None:
    """Show a page of an instance's journal: steps, attempts, waits and events, in order."""
    found = client.journal(workflow, instance_id, after=after, limit=limit)
    if as_json:
        _print_json(_plain(found))
        return
    current = client.status(workflow, instance_id)
    _show_journal(_plain(found), finished=current.status in FINISHED and found.next_after is None)
    if found.next_after is not None:
        _out().print(_t(f"more: tenantflow journal {workflow} {instance_id} --after {found.next_after}"))


def _control_command(action: Control, help_text: str) -> None:
    @main.command(name=action, help=help_text)
    @click.argument("workflow")
    @click.argument("instance_id", metavar="ID")
    @api_options
    def command(client: Client, workflow: str, instance_id: str, as_json: bool) -> None:
        result = client.control(workflow, instance_id, action)
        if as_json:
            _print_json(_plain(result))
            return
        _show_instance(_plain(result))


CONTROL_HELP: dict[Control, str] = {
    "pause": "Pause an instance (it stops at its next step).",
    "resume": "Resume a paused instance.",
    "terminate": "Terminate an instance that has not finished.",
    "restart": "Restart an instance from scratch with the same params.",
}
for _action in CONTROLS:
    _control_command(_action, CONTROL_HELP[_action])


# -- local run --------------------------------------------------------------------


def _parse_event(text: str) -> tuple[str, Any]:
    event_type, _, payload = text.partition("=")
    if not event_type:
        raise click.BadParameter(f"{text!r} is not TYPE=JSON (or TYPE alone for no payload)")
    return event_type, _parse_json(payload, f"the payload of event {event_type!r}") if payload else None


@main.command()
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
        _fail(f"cannot read {file}: {error}")
    parsed_params = _parse_json(params, "--params")
    events_list = [_parse_event(e) for e in event_args]
    try:
        result = run_local(source, parsed_params, events_list)
    except TenantflowError as error:
        problem = f"{type(error).__name__}: {error}"
        line = getattr(error, "line", None)
        _fail(problem + (f" (line {line})" if line else ""))
    instance = result.instance.public()
    if as_json:
        _print_json(
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
        console = _out()
        title = f"{file.name}: {len(result.journal['steps'])} step(s)"
        finished = instance["status"] in FINISHED
        console.print(timeline(result.journal, title=title, finished=finished, width=console.width))
        if result.journal.get("log"):
            console.print(Text("printed:", style="bold"))
            console.print(_t(result.journal["log"].rstrip("\n")))
        status_text = instance["status"]
        console.print(
            Text("status: ", style="bold")
            + Text(status_text, style=STATUS_STYLE.get(status_text, ""))
            + Text(f" after {result.activations} activation(s)")
        )
        if instance["error"]:
            failure = instance["error"]
            where = f" (line {failure['line']})" if failure.get("line") else ""
            console.print(_t(f"error: {failure['name']}: {failure['message']}{where}", "red"))
            if failure.get("traceback"):
                console.print(_t(failure["traceback"].rstrip("\n"), "dim"))
        elif result.stuck:
            console.print(
                Text("stuck: waiting for an event that was not given (use --event TYPE=JSON)", style="yellow")
            )
        else:
            console.print(Text("output:", style="bold"))
            console.print(_json_text(instance["output"]))
    if instance["status"] != "complete":
        sys.exit(1)
