"""`tenantflow retention WORKFLOW`: show or set how long a workflow's finished instances are kept.

Over HTTP with the tenant's key (`--key`, TENANTFLOW_KEY; `--url`), or, without a key, on the database directly
(`--db`, naming the tenant with `--tenant`). Both ways go through the same checks and print the same JSON.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click
import httpx
from rich.table import Table
from tenantflow.client import DEFAULT_URL, ApiError, Client
from tenantflow.runtime.cli.options import json_option
from tenantflow.runtime.cli.output import fail, out, print_json, safe_text
from tenantflow.runtime.errors import TenantflowError
from tenantflow.runtime.retention import RETAINED, RETENTION_MAX, RETENTION_MIN
from tenantflow.runtime.store import DEFAULT_DB

if TYPE_CHECKING:
    from tenantflow.runtime.records import Tenant
    from tenantflow.runtime.service.retention import Retentions

Retention = dict[str, str | None]


@click.group()
def commands() -> None:
    """(registered into the main group)"""


def show_retention(retention: Retention) -> Table:
    """A retention as the workflow view shows it: each finished status and how long it is kept."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for status in RETAINED:
        table.add_row(status, safe_text(retention.get(status) or "forever"))
    return table


@contextmanager
def _on_database(db: str, tenant: str) -> Iterator[tuple[Retentions, Tenant]]:
    from tenantflow.runtime.engine.clock import SystemClock
    from tenantflow.runtime.service.retention import Retentions
    from tenantflow.runtime.store import open_store

    store = open_store(db)
    try:
        yield Retentions(store, SystemClock()), store.tenant(tenant)
    finally:
        store.close()


def _retention(
    workflow: str, given: Retention | None, *, db: str, tenant: str | None, url: str, key: str | None
) -> Retention:
    """The workflow's retention, after replacing it with `given` if given: over HTTP with `key`, else on `db`."""
    try:
        if key:
            with Client(url, key) as client:
                if given is None:
                    return client.versions(workflow).retention.model_dump()
                return client.set_retention(workflow, **given).model_dump()
        if tenant is None:
            fail("name the tenant with --tenant to work on --db (or give its key with --key)", 2)
        with _on_database(db, tenant) as (retentions, found):
            kept = retentions.get(found, workflow) if given is None else retentions.set(found, workflow, given)
            return kept.public()
    except ApiError as error:
        fail(f"{error.status} {error.problem.get('title', '')}: {error.detail}")
    except httpx.HTTPError as error:
        fail(f"cannot reach {url}: {error}")
    except TenantflowError as error:
        fail(str(error))


_DURATION_HELP = "How long a {} instance is kept after it finished, e.g. '7 days' ({} .. {})."


@commands.command()
@click.argument("workflow")
@click.option("--complete", metavar="DURATION", help=_DURATION_HELP.format("complete", RETENTION_MIN, RETENTION_MAX))
@click.option("--errored", metavar="DURATION", help=_DURATION_HELP.format("errored", RETENTION_MIN, RETENTION_MAX))
@click.option(
    "--terminated", metavar="DURATION", help=_DURATION_HELP.format("terminated", RETENTION_MIN, RETENTION_MAX)
)
@click.option("--forever", is_flag=True, help="Keep every finished instance (remove the retention).")
@click.option(
    "--db", envvar="TENANTFLOW_DB", default=DEFAULT_DB, show_default=True, help="Database URL, without --key."
)
@click.option("--tenant", help="The tenant whose workflow it is, on --db.")
@click.option("--url", envvar="TENANTFLOW_URL", default=DEFAULT_URL, show_default=True, help="Server URL, with --key.")
@click.option("--key", envvar="TENANTFLOW_KEY", help="The tenant's API key: work over HTTP instead of on --db.")
@json_option
def retention(
    workflow: str,
    complete: str | None,
    errored: str | None,
    terminated: str | None,
    forever: bool,
    db: str,
    tenant: str | None,
    url: str,
    key: str | None,
    as_json: bool,
) -> None:
    """Show WORKFLOW's retention, or set it: finished instances older than theirs are deleted in the background.

    Setting replaces the whole retention: a status not given is kept forever."""
    durations = {"complete": complete, "errored": errored, "terminated": terminated}
    given: Retention = {status: value for status, value in durations.items() if value is not None}
    if forever and given:
        fail("--forever removes the retention; give it alone", 2)
    kept = _retention(workflow, given if given or forever else None, db=db, tenant=tenant, url=url, key=key)
    if as_json:
        print_json(kept)
        return
    console = out()
    console.print(safe_text(f"retention of {workflow}:"))
    console.print(show_retention(kept))
