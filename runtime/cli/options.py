"""Options shared by the commands: the database, the server and key, JSON output."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from tenantflow.runtime.engine.parking import DEFAULT_MAX_PARK_S, DEFAULT_PARK_MEMORY_MB
from tenantflow.runtime.logs import FORMATS
from tenantflow.runtime.store import DEFAULT_DB

F = TypeVar("F", bound=Callable[..., Any])


def db_option(fn: F) -> F:
    return click.option(
        "--db",
        envvar="TENANTFLOW_DB",
        default=DEFAULT_DB,
        show_default=True,
        help="Database URL: sqlite:///FILE or postgresql://... (env TENANTFLOW_DB).",
    )(fn)


def workers_option(fn: F) -> F:
    return click.option(
        "--workers",
        envvar="TENANTFLOW_WORKERS",
        default=4,
        show_default=True,
        type=click.IntRange(1),
        help="Activation threads (at most 116 with the default isolate pool; see TENANTFLOW_ISOLATE_POOL).",
    )(fn)


def log_options(fn: F) -> F:
    """--log-level and --log-format (one line per deploy, instance start, completion, failure, limit hit)."""
    fn = click.option(
        "--log-format",
        envvar="TENANTFLOW_LOG_FORMAT",
        default="text",
        show_default=True,
        type=click.Choice(FORMATS),
        help="text, or json: one JSON object per line.",
    )(fn)
    return click.option(
        "--log-level",
        envvar="TENANTFLOW_LOG_LEVEL",
        default="info",
        show_default=True,
        type=click.Choice(["debug", "info", "warning"]),
    )(fn)


def park_options(fn: F) -> F:
    """--park-memory-mb and --max-park-s (hot resume), passed on as `park_memory_mb` and `max_park_s`."""
    fn = click.option(
        "--max-park-s",
        envvar="TENANTFLOW_MAX_PARK_S",
        default=DEFAULT_MAX_PARK_S,
        show_default=True,
        type=click.FloatRange(min=0),
        help="Hot resume: the longest a waiting instance's isolate stays parked, seconds.",
    )(fn)
    return click.option(
        "--park-memory-mb",
        envvar="TENANTFLOW_PARK_MEMORY_MB",
        default=DEFAULT_PARK_MEMORY_MB,
        show_default=True,
        type=click.IntRange(min=0),
        help="Hot resume: memory for parked isolates (each counts as its memory cap), MiB; 0 turns it off.",
    )(fn)


JSON_GIVEN = "tenantflow.json_given"
"""The key, in click's context meta (one dict for all of an invocation's contexts), that says --json is among the
invocation's arguments: the main group sets it before its command parses them, so that an error in that parsing (a
usage error) is a JSON problem too."""


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)


def api_options(fn: F) -> F:
    """--url, --key and --json; the command gets a `client` instead of url and key."""
    # Imported here: `serve` and `worker` take their options from this module too and need no client.
    import httpx
    from tenantflow.client import DEFAULT_URL, ApiError, Client
    from tenantflow.runtime.cli.output import fail

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
            fail("give the tenant's API key with --key or TENANTFLOW_KEY", 2)
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
                    click.echo(json.dumps(problem), err=True)  # the API's problem, as it came
                    sys.exit(1)
                fail(message)
            except httpx.HTTPError as error:
                fail(f"cannot reach {url}: {error}")

    return wrapper  # type: ignore[return-value]
