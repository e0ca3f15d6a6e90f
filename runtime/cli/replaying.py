"""`tenantflow replay BUNDLE.json`: an exported instance replayed in the real sandbox on this machine.

No server and no side effects: every durable call is answered from the bundle's journal and no step body
runs. Prints the timeline up to where the replay stopped and what the workflow printed; with `--source`,
whether that code makes the journal's calls in the journal's order (exit 0) or where it diverges (exit 1):
a check a platform can run before deploying new code over running instances.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from rich.text import Text
from tenantflow.runtime.cli.options import json_option
from tenantflow.runtime.cli.output import fail, out, print_json, safe_text, timeline
from tenantflow.runtime.contract import BUNDLE_FORMAT
from tenantflow.runtime.records import FINISHED, Entry

__all__ = ["commands"]


@click.group()
def commands() -> None:
    """(registered into the main group)"""


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        fail(f"cannot read {what} {path}: {error}")


def _bundle(path: Path) -> dict[str, Any]:
    try:
        bundle = json.loads(_read(path, "the bundle"))
    except json.JSONDecodeError as error:
        fail(f"{path} is not JSON: {error}")
    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        fail(f"{path} is not a tenantflow export (format {BUNDLE_FORMAT}; see `tenantflow export`)")
    return bundle


def _entry(step: dict[str, Any]) -> Entry:
    """A journal entry as the journal endpoint shows it (its result parsed) back as the store holds it."""
    return Entry(
        position=int(step["position"]),
        name=str(step["name"]),
        kind=str(step["kind"]),
        state=str(step["state"]),
        attempts=int(step.get("attempts") or 0),
        result=None if step.get("result") is None and step["state"] != "done" else json.dumps(step.get("result")),
        error_name=step.get("error_name"),
        error_message=step.get("error_message"),
        wake_at=step.get("wake_at"),
        event_type=step.get("event_type"),
        created_at=float(step.get("created_at") or 0.0),
        updated_at=float(step.get("updated_at") or 0.0),
        parent=step.get("parent"),
        occurrence=step.get("occurrence"),
        attempt_limit=step.get("attempt_limit"),
    )


def _until(text: str | None) -> tuple[str, int] | None:
    if text is None:
        return None
    name, colon, count = text.rpartition(":")
    if colon and count.isdigit() and name:
        return name, int(count)
    return text, 1


@commands.command()
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--until", metavar="STEP[:N]", help="Stop before the N-th call (default 1st) of this step.")
@click.option("--source", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Replay this code.")
@json_option
def replay(bundle_path: Path, until: str | None, source: Path | None, as_json: bool) -> None:
    """Replay an exported instance (`tenantflow export`) in the sandbox, with no server and no side effects."""
    from tenantflow.host import Completed, Failed, Sandbox
    from tenantflow.runtime.engine.replay import replay as run_replay

    bundle = _bundle(bundle_path)
    try:
        code = _read(source, "the source") if source is not None else str(bundle["version"]["source"])
        steps = list(bundle["journal"])
        entries = [_entry(step) for step in steps]
        status = str(bundle["instance"]["status"])
        replayed = run_replay(
            Sandbox(pool=0),  # one activation: no isolates made ahead of it
            code,
            entries,
            params=bundle.get("params"),
            instance_id=str(bundle["instance"]["id"]),
            created_at=float(bundle["created_at"]),
            seed=bytes.fromhex(str(bundle["seed"])),
            finished=status in FINISHED,
            until=_until(until),
        )
    except (KeyError, TypeError, ValueError) as error:
        fail(f"{bundle_path} is not a complete export: {type(error).__name__}: {error}")
    shown = [step for step in steps if int(step["position"]) in set(replayed.answered)]
    outcome = replayed.outcome
    log = outcome.stats.log
    divergence = replayed.divergence
    if as_json:
        print_json(
            {
                "clean": divergence is None,
                "divergence": None if divergence is None else asdict(divergence),
                "stopped": replayed.stop,
                "answered": replayed.answered,
                "output": json.loads(outcome.output) if isinstance(outcome, Completed) else None,
                "error": asdict(outcome.error) if isinstance(outcome, Failed) and divergence is None else None,
                "log": log,
            }
        )
    else:
        console = out()
        title = f"{bundle['workflow']}/{bundle['instance']['id']}: {len(shown)} of {len(steps)} journal entries"
        console.print(timeline({"steps": shown}, title=title, finished=True, width=console.width))
        if log:
            console.print(Text("printed:", style="bold"))
            console.print(safe_text(log.rstrip("\n")))
        if divergence is not None:
            console.print(safe_text(f"diverges: {divergence.describe()}", "red"))
        else:
            where = replayed.stop or ("returned" if isinstance(outcome, Completed) else "ended")
            code_name = source.name if source is not None else "the pinned version"
            console.print(Text(f"replays cleanly with {code_name} ({where})", style="green"))
    if divergence is not None:
        sys.exit(1)
