"""How the CLI prints: tenant text made safe for a terminal, JSON, times, instances and timelines."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any, NoReturn

import click
from rich.console import Console
from rich.highlighter import JSONHighlighter
from rich.table import Table
from rich.text import Text
from tenantflow.runtime.cli.options import JSON_GIVEN

if TYPE_CHECKING:
    from pydantic import BaseModel

STATUS_STYLE = {
    "complete": "green",
    "errored": "red",
    "terminated": "red",
    "paused": "yellow",
    "waiting_for_pause": "yellow",
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


def safe_text(text: Any, style: str = "") -> Text:
    """Tenant text for rich: escaped for the terminal, never read as markup."""
    return Text(terminal_safe(str(text)), style=style)


def json_text(value: Any, indent: int | None = 2) -> Text:
    try:
        text = json.dumps(value, indent=indent, ensure_ascii=False)
    except RecursionError:
        text = json.dumps(value, ensure_ascii=False)
    return JSONHighlighter()(safe_text(text))


def out() -> Console:
    return Console(soft_wrap=False, highlight=False)


def err() -> Console:
    return Console(stderr=True, highlight=False)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False))


def plain(answer: BaseModel) -> dict[str, Any]:
    """An answer of the API as the JSON it came as (the fields the server sent, in its order)."""
    return answer.model_dump(exclude_unset=True)


def parse_json(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as error:
        raise click.BadParameter(f"{what} is not valid JSON: {error}") from None


def json_wanted() -> bool:
    """Whether this invocation prints JSON: --json was given, to the command or anywhere in the arguments (an error,
    a usage error too, then prints a JSON problem)."""
    ctx = click.get_current_context(silent=True)
    given = ctx is not None and bool(ctx.meta.get(JSON_GIVEN))
    while ctx is not None:
        if ctx.params.get("as_json"):
            return True
        ctx = ctx.parent
    return given


def problem_json(title: str, detail: str, code: int, kind: str = "error") -> None:
    """An error as a JSON problem object (as the API's: type, title, detail; and the exit code) on one line of
    standard error."""
    problem = {"type": f"urn:tenantflow:cli:{kind}", "title": title, "detail": detail, "exit_code": code}
    click.echo(json.dumps(problem), err=True)


def fail(message: str, code: int = 1) -> NoReturn:
    if json_wanted():
        problem_json("Usage error" if code == 2 else "Command failed", message, code, "usage" if code == 2 else "error")
    else:
        err().print(Text("error: ", style="bold red") + safe_text(message), soft_wrap=True)
    sys.exit(code)


def age(seconds: float) -> str:
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


def when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))
    except (OverflowError, OSError, ValueError):
        return f"{epoch:.6g} s since 1970"  # beyond what the platform's time functions hold


def excerpt(value: Any, width: int = 60) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except RecursionError:
        text = "(nested too deeply to show; see --json)"
    text = terminal_safe(text)
    return text if len(text) <= width else text[: width - 1] + "…"


# -- rendering ------------------------------------------------------------------


def show_instance(instance: dict[str, Any]) -> None:
    console = out()
    status = instance["status"]
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("instance", safe_text(instance["id"]))
    table.add_row("workflow", safe_text(f"{instance['workflow']} (version {instance['version']})"))
    table.add_row("status", safe_text(status, STATUS_STYLE.get(status, "")))
    table.add_row("created", when(instance.get("created_at")))
    table.add_row("updated", when(instance.get("updated_at")))
    if instance.get("wake_at") is not None and status == "waiting":
        table.add_row("wakes", when(instance["wake_at"]))
    if instance.get("params") is not None:
        table.add_row("params", Text(excerpt(instance["params"], 200)))
    if instance.get("output") is not None:
        table.add_row("output", json_text(instance["output"]))
    error = instance.get("error")
    if error:
        where = f" (line {error['line']})" if error.get("line") else ""
        table.add_row("error", safe_text(f"{error.get('name')}: {error.get('message')}{where}", "red"))
    console.print(table)


def _step_duration(step: dict[str, Any]) -> str:
    if step["kind"] in ("do", "rollback"):
        return age(step.get("duration_ms", 0.0) / 1000)
    start = step.get("created_at") or 0.0
    if step["kind"] == "sleep" and step.get("wake_at") is not None:
        return age(step["wake_at"] - start)
    return age((step.get("updated_at") or start) - start)


def _step_result(step: dict[str, Any], width: int = 60) -> str:
    if step.get("error_name"):
        text = terminal_safe(f"{step['error_name']}: {step.get('error_message') or ''}")
        return text if len(text) <= width else text[: width - 1] + "…"
    if step["kind"] == "sleep":
        return f"until {when(step.get('wake_at'))}"
    if step["kind"] == "wait" and step["state"] == "waiting":
        return terminal_safe(f"for {step.get('event_type')!r}")
    return excerpt(step.get("result"), width)


def timeline(journal: dict[str, Any], title: str | None = None, finished: bool = False, width: int = 80) -> Table:
    """The step timeline: position, name, kind, state, attempts, duration, result excerpt."""
    table = Table(title=None if title is None else safe_text(title), title_justify="left")
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
            safe_text(step["name"]),
            safe_text(step["kind"]),
            safe_text(state, style),
            str(step["attempts"]) if step["kind"] == "do" else "",
            _step_duration(step),
            Text(_step_result(step, result_width)),
        )
    return table


def show_journal(journal: dict[str, Any], finished: bool = False) -> None:
    console = out()
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
                safe_text(event["type"]),
                Text(excerpt(event.get("payload"))),
                when(event.get("created_at")),
                "-" if event.get("consumed_at") is None else f"#{event['consumed_at']}",
            )
        console.print(table)
    if journal.get("log"):
        console.print(Text("output printed by the workflow:", style="bold"))
        console.print(safe_text(journal["log"].rstrip("\n")))


def clock(epoch: float | None) -> str:
    if epoch is None:
        return "--:--:--"
    try:
        return time.strftime("%H:%M:%S", time.localtime(epoch))
    except (OverflowError, OSError, ValueError):
        return "--:--:--"


def status_line(instance: dict[str, Any]) -> Text:
    """One line for a status change: time, status, and the output or error once it has finished."""
    status = instance["status"]
    line = safe_text(f"{clock(instance.get('updated_at'))}  ") + safe_text(status, STATUS_STYLE.get(status, "bold"))
    error = instance.get("error")
    if error:
        line += safe_text(f"  {error.get('name')}: {error.get('message')}", "red")
    elif status == "complete":
        line += Text("  output " + excerpt(instance.get("output"), 100))
    return line


def step_line(step: dict[str, Any]) -> Text:
    """One line for a journal entry: time, position, name, kind, state, attempts, duration, result excerpt."""
    state = step["state"]
    style = {"done": "green", "failed": "red", "timed_out": "yellow", "retrying": "yellow"}.get(state, "")
    attempts = f"  attempt {step['attempts']}" if step["kind"] == "do" and step["attempts"] else ""
    result = "(result left out: see tenantflow journal)" if step.get("result_omitted") else _step_result(step, 80)
    return (
        safe_text(f"{clock(step.get('updated_at'))}  #{step['position']} ")
        + safe_text(step["name"], "bold")
        + safe_text(f"  {step['kind']}  ")
        + safe_text(state, style)
        + Text(f"{attempts}  {_step_duration(step)}  ")
        + Text(result)
    )
