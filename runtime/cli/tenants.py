"""Operator commands: `tenants create|list|show|update|rotate-key|delete|usage` and `admin create-key`.

The tenant commands work over HTTP with an operator key (`--key`, TENANTFLOW_OPERATOR_KEY; `--url`) or,
without a key, on the database directly (`--db`). Both ways go through the same admin operations
(`tenantflow.runtime.service.Admin`) and print the same JSON. `admin create-key` makes the first
operator key, on the database (there is no key yet to call the API with).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date
from typing import Any, Protocol, TypeVar

import click
import httpx
from rich.table import Table
from tenantflow.client import DEFAULT_URL, ApiError, Client
from tenantflow.runtime.cli.options import json_option
from tenantflow.runtime.cli.output import fail, out, print_json, when
from tenantflow.runtime.cli.usage import FROM_HELP, TO_HELP, show_usage
from tenantflow.runtime.contract import parse_day
from tenantflow.runtime.errors import InvalidInput, TenantflowError
from tenantflow.runtime.records import QUOTA_BOUNDS, Quotas, Tenant
from tenantflow.runtime.store import DEFAULT_DB
from tenantflow.runtime.usage import USAGE_GROUPS, check_group

F = TypeVar("F", bound=Callable[..., Any])

# The database's own operator: whoever can open the database may administer it.
DATABASE_ACTOR = Tenant("(database)", "(database)", Quotas(), 0.0, operator=True)


class Backend(Protocol):
    """The admin operations, answering JSON as the admin API does."""

    def create(self, name: str, quotas: Mapping[str, Any], operator: bool) -> dict[str, Any]: ...
    def list(self) -> list[dict[str, Any]]: ...
    def show(self, name: str) -> dict[str, Any]: ...
    def update(self, name: str, quotas: Mapping[str, Any]) -> dict[str, Any]: ...
    def rotate_key(self, name: str) -> dict[str, Any]: ...
    def delete(self, name: str) -> dict[str, Any]: ...
    def usage(self, first: str | None, last: str | None, group_by: str, tenant: str | None) -> dict[str, Any]: ...


class HttpBackend:
    def __init__(self, client: Client) -> None:
        self.client = client

    def create(self, name: str, quotas: Mapping[str, Any], operator: bool) -> dict[str, Any]:
        return self.client.create_tenant(name, quotas, operator=operator).model_dump()

    def list(self) -> list[dict[str, Any]]:
        return [t.model_dump() for t in self.client.tenants()]

    def show(self, name: str) -> dict[str, Any]:
        return self.client.tenant(name).model_dump()

    def update(self, name: str, quotas: Mapping[str, Any]) -> dict[str, Any]:
        return self.client.update_tenant(name, quotas).model_dump()

    def rotate_key(self, name: str) -> dict[str, Any]:
        return self.client.rotate_key(name).model_dump()

    def delete(self, name: str) -> dict[str, Any]:
        return self.client.delete_tenant(name).model_dump()

    def usage(self, first: str | None, last: str | None, group_by: str, tenant: str | None) -> dict[str, Any]:
        report = self.client.admin_usage(first, last, group_by, tenant)  # type: ignore[arg-type]  # a click.Choice
        return report.model_dump(by_alias=True)


class DatabaseBackend:
    def __init__(self, db: str) -> None:
        from tenantflow.runtime.engine.clock import SystemClock
        from tenantflow.runtime.service import Admin, Tenants
        from tenantflow.runtime.service.usage import UsageReports
        from tenantflow.runtime.store import open_store

        self.store = open_store(db)
        clock = SystemClock()
        self.admin = Admin(self.store, Tenants(self.store, clock), clock)
        self.usage_reports = UsageReports(self.store, clock)

    def create(self, name: str, quotas: Mapping[str, Any], operator: bool) -> dict[str, Any]:
        tenant, key = self.admin.create_tenant(DATABASE_ACTOR, name, dict(quotas), operator)
        return {**tenant.public(), "api_key": key}

    def list(self) -> list[dict[str, Any]]:
        return [t.public() for t in self.admin.tenants(DATABASE_ACTOR)]

    def show(self, name: str) -> dict[str, Any]:
        return self.admin.tenant(DATABASE_ACTOR, name).public()

    def update(self, name: str, quotas: Mapping[str, Any]) -> dict[str, Any]:
        return self.admin.update_quotas(DATABASE_ACTOR, name, dict(quotas)).public()

    def rotate_key(self, name: str) -> dict[str, Any]:
        tenant, key = self.admin.rotate_key(DATABASE_ACTOR, name)
        return {**tenant.public(), "api_key": key}

    def delete(self, name: str) -> dict[str, Any]:
        deleted = self.admin.delete_tenant(DATABASE_ACTOR, name)
        return {"name": deleted.name, "workflows": deleted.workflows, "instances": deleted.instances}

    def usage(self, first: str | None, last: str | None, group_by: str, tenant: str | None) -> dict[str, Any]:
        group = check_group(group_by, USAGE_GROUPS)
        start, end = _day(first, "--from"), _day(last, "--to")
        return self.usage_reports.admin(DATABASE_ACTOR, start, end, group, tenant).public()


def _day(text: str | None, option: str) -> date | None:
    if text is None:
        return None
    try:
        return parse_day(text)
    except ValueError as error:
        raise InvalidInput(f"{option}: {error}") from None


@contextmanager
def _backend(db: str, url: str, key: str | None) -> Iterator[Backend]:
    """Over HTTP with `key`, else on the database; errors of either end as one line and exit code 1."""
    try:
        if key:
            with Client(url, key) as client:
                yield HttpBackend(client)
        else:
            backend = DatabaseBackend(db)
            try:
                yield backend
            finally:
                backend.store.close()
    except ApiError as error:
        fail(f"{error.status} {error.problem.get('title', '')}: {error.detail}")
    except httpx.HTTPError as error:
        fail(f"cannot reach {url}: {error}")
    except TenantflowError as error:
        fail(str(error))


def admin_options(fn: F) -> F:
    """--db, or --url and --key (an operator key); the command gets a `backend`."""

    @click.option(
        "--db",
        envvar="TENANTFLOW_DB",
        default=DEFAULT_DB,
        show_default=True,
        help="Database URL, used when no --key is given (env TENANTFLOW_DB).",
    )
    @click.option("--url", envvar="TENANTFLOW_URL", help=f"Server URL, with --key (default {DEFAULT_URL}).")
    @click.option(
        "--key",
        envvar="TENANTFLOW_OPERATOR_KEY",
        help="An operator key: work over HTTP instead of on --db (env TENANTFLOW_OPERATOR_KEY).",
    )
    @json_option
    @functools.wraps(fn)
    def wrapper(db: str, url: str | None, key: str | None, **kwargs: Any) -> Any:
        if (
            url is not None
            and not key
            and click.get_current_context().get_parameter_source("url") is not (click.core.ParameterSource.ENVIRONMENT)
        ):
            fail("--url needs an operator key (--key or TENANTFLOW_OPERATOR_KEY); without one, use --db", 2)
        with _backend(db, url or DEFAULT_URL, key) as backend:
            return fn(backend=backend, **kwargs)

    return wrapper  # type: ignore[return-value]


_QUOTA_HELP = {
    "max_concurrent": "Activations running at once.",
    "max_instances_per_minute": "Instances created per minute.",
    "max_steps": "step.do calls per instance.",
    "memory_mb": "Memory per isolate, MiB.",
    "fuel": "Fuel (wasm instructions, roughly) for the code between two durable calls.",
    "max_step_cpu_ms": "CPU a step attempt may use at most, ms.",
    "max_source_bytes": "A workflow's source, bytes.",
    "max_payload_bytes": "Params and event payloads, bytes.",
    "max_stored_mb": "Storage for all the tenant's instances, MB.",
    "max_workflows": "Workflows (deployed names).",
}
# Older spellings of the options, kept working.
_ALIASES = {"max_instances_per_minute": ["--max-instances"]}


def quota_options(fn: F) -> F:
    """One option per quota (`--max-concurrent`, ..., `--egress HOST`); the command gets `quotas`, the ones given."""
    for name in reversed(QUOTA_BOUNDS):
        low, high = QUOTA_BOUNDS[name]
        flag = "--" + name.replace("_", "-")
        fn = click.option(flag, *_ALIASES.get(name, []), name, type=click.IntRange(low, high), help=_QUOTA_HELP[name])(
            fn
        )
    fn = click.option(
        "--egress", multiple=True, metavar="HOST", help="A host `fetch` may reach (repeat, or comma-separate)."
    )(fn)

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> Any:
        quotas = {name: kwargs.pop(name) for name in QUOTA_BOUNDS if kwargs.get(name) is not None}
        for name in QUOTA_BOUNDS:
            kwargs.pop(name, None)
        egress = kwargs.pop("egress")
        if egress:
            quotas["egress"] = [h.strip() for item in egress for h in item.split(",") if h.strip()]
        return fn(quotas=quotas, **kwargs)

    return wrapper  # type: ignore[return-value]


KEY_ONLY = click.option("--key-only", is_flag=True, help="Print the API key alone (for KEY=$(...) in a shell).")


def _print_key(result: dict[str, Any], key_only: bool, as_json: bool) -> None:
    if key_only:
        click.echo(result["api_key"])
    else:
        click.echo(json.dumps(result) if as_json else json.dumps(result, indent=2))


@click.group()
def commands() -> None:
    """(registered into the main group)"""


@commands.group()
def tenants() -> None:
    """Create, list, change and delete tenants: over HTTP with an operator key (--key), or on --db."""


@tenants.command("create")
@click.argument("name")
@quota_options
@click.option("--operator", is_flag=True, help="An operator key: the admin API and every tenant's dashboard.")
@KEY_ONLY
@admin_options
def tenants_create(
    backend: Backend, name: str, quotas: dict[str, Any], operator: bool, key_only: bool, as_json: bool
) -> None:
    """Create tenant NAME and print JSON with its API key (shown once; only its hash is stored)."""
    _print_key(backend.create(name, quotas, operator), key_only, as_json)


@tenants.command("list")
@admin_options
def tenants_list(backend: Backend, as_json: bool) -> None:
    """List tenants and their quotas (never their keys)."""
    rows = backend.list()
    if as_json:
        print_json(rows)
        return
    table = Table(title=f"{len(rows)} tenant(s)", title_justify="left")
    for column in ("tenant", "created", "concurrent", "instances/min", "memory", "fuel", "egress"):
        table.add_column(column)
    for row in rows:
        q = row["quotas"]
        table.add_row(
            row["name"] + (" (operator)" if row["operator"] else ""),
            when(row["created_at"]),
            str(q["max_concurrent"]),
            str(q["max_instances_per_minute"]),
            f"{q['memory_mb']} MiB",
            f"{q['fuel']:,}",
            ", ".join(q["egress"]) or "-",
        )
    out().print(table)


@tenants.command("show")
@click.argument("name")
@admin_options
def tenants_show(backend: Backend, name: str, as_json: bool) -> None:
    """Show a tenant and its quotas."""
    result = backend.show(name)
    click.echo(json.dumps(result) if as_json else json.dumps(result, indent=2))


@tenants.command("update")
@click.argument("name")
@quota_options
@admin_options
def tenants_update(backend: Backend, name: str, quotas: dict[str, Any], as_json: bool) -> None:
    """Change some of a tenant's quotas (the others keep their values)."""
    if not quotas:
        fail("name a quota to change, e.g. --max-concurrent 4", 2)
    result = backend.update(name, quotas)
    click.echo(json.dumps(result) if as_json else json.dumps(result, indent=2))


@tenants.command("rotate-key")
@click.argument("name")
@KEY_ONLY
@admin_options
def tenants_rotate_key(backend: Backend, name: str, key_only: bool, as_json: bool) -> None:
    """Give a tenant a new API key and print it (the old key stops working at once)."""
    _print_key(backend.rotate_key(name), key_only, as_json)


@tenants.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@admin_options
def tenants_delete(backend: Backend, name: str, yes: bool, as_json: bool) -> None:
    """Delete a tenant with all its workflows, instances, journals and events."""
    if not yes:
        click.confirm(f"Delete tenant {name!r} and everything it stores?", abort=True, err=True)
    result = backend.delete(name)
    if as_json:
        print_json(result)
        return
    out().print(f"deleted {result['name']}: {result['workflows']} workflow(s), {result['instances']} instance(s)")


@tenants.command("usage")
@click.option("--from", "first", metavar="DAY", help=FROM_HELP)
@click.option("--to", "last", metavar="DAY", help=TO_HELP)
@click.option("--by", "group_by", type=click.Choice(USAGE_GROUPS), default="tenant", show_default=True)
@click.option("--tenant", help="Only this tenant's usage.")
@admin_options
def tenants_usage(
    backend: Backend, first: str | None, last: str | None, group_by: str, tenant: str | None, as_json: bool
) -> None:
    """Usage across tenants (or one tenant's), per tenant, workflow or UTC day."""
    report = backend.usage(first, last, group_by, tenant)
    if as_json:
        print_json(report)
        return
    show_usage(report)


@commands.group()
def admin() -> None:
    """Operator keys."""


@admin.command("create-key")
@click.argument("name")
@click.option(
    "--db",
    envvar="TENANTFLOW_DB",
    default=DEFAULT_DB,
    show_default=True,
    help="Database URL (env TENANTFLOW_DB).",
)
@KEY_ONLY
@json_option
def admin_create_key(name: str, db: str, key_only: bool, as_json: bool) -> None:
    """Create an operator key named NAME on the database and print it (shown once). The key may use the admin
    API (/v1/admin: tenants, quotas, keys), /metrics and every tenant's dashboard."""
    with _backend(db, DEFAULT_URL, None) as backend:
        result = backend.create(name, {}, operator=True)
    _print_key(result, key_only, as_json)
