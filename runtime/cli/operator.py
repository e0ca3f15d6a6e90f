"""Operator commands on the database: `serve`, `worker`, `tenants create|list`."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table
from tenantflow.runtime import logs
from tenantflow.runtime.cli.options import db_option, json_option, log_options, park_options, workers_option
from tenantflow.runtime.cli.output import (
    fail,
    out,
    print_json,
    when,
)
from tenantflow.runtime.errors import TenantflowError
from tenantflow.runtime.logs import LogFormat
from tenantflow.runtime.records import Quotas


@click.group()
def commands() -> None:
    """(registered into the main group)"""


@commands.command()
@click.option("--host", envvar="TENANTFLOW_HOST", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    envvar="TENANTFLOW_PORT",
    default=8787,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port (0: any free).",
)
@db_option
@workers_option
@log_options
@click.option(
    "--metrics-token",
    envvar="TENANTFLOW_METRICS_TOKEN",
    help="A token a scraper may send as 'Authorization: Bearer TOKEN' for /metrics "
    "(env TENANTFLOW_METRICS_TOKEN); an operator key always may.",
)
@park_options
def serve(
    host: str,
    port: int,
    db: str,
    workers: int,
    log_level: str,
    log_format: LogFormat,
    metrics_token: str | None,
    park_memory_mb: int,
    max_park_s: float,
) -> None:
    """Run the HTTP API and the workers in one process (graceful stop on SIGTERM).

    Every option can come from the environment too: TENANTFLOW_HOST, TENANTFLOW_PORT, TENANTFLOW_DB,
    TENANTFLOW_WORKERS, TENANTFLOW_LOG_LEVEL, TENANTFLOW_LOG_FORMAT, TENANTFLOW_METRICS_TOKEN,
    TENANTFLOW_PARK_MEMORY_MB, TENANTFLOW_MAX_PARK_S."""
    from tenantflow.runtime.http.server import serve as run_server

    logs.configure(log_level, log_format)
    try:
        run_server(
            db,
            host,
            port,
            workers,
            log_level,
            metrics_token=metrics_token,
            park_memory_mb=park_memory_mb,
            max_park_s=max_park_s,
        )
    except OSError as error:
        fail(f"cannot listen on {host}:{port}: {error}")
    except TenantflowError as error:
        fail(str(error))


@commands.command()
@db_option
@workers_option
@click.option("--lease", default=30.0, show_default=True, type=click.FloatRange(min=0.1), help="Lease, seconds.")
@log_options
@click.option("--ready-json", is_flag=True, help="Print a JSON line once the workers run (for a parent process).")
@click.option("--host-alias", hidden=True, help="Tests: a lease owner that looks like another machine's.")
@park_options
def worker(
    db: str,
    workers: int,
    lease: float,
    log_level: str,
    log_format: LogFormat,
    ready_json: bool,
    host_alias: str | None,
    park_memory_mb: int,
    max_park_s: float,
) -> None:
    """Run workers only, for scale-out on a shared database (graceful stop on SIGTERM)."""
    from tenantflow.runtime.cli.worker import run_workers

    logs.configure(log_level, log_format)
    try:
        run_workers(
            db,
            workers,
            lease,
            host_alias=host_alias,
            ready_json=ready_json,
            park_memory_mb=park_memory_mb,
            max_park_s=max_park_s,
        )
    except TenantflowError as error:
        fail(str(error))


# -- tenants (operator, on the database) --------------------------------------------


@commands.group()
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
@click.option(
    "--max-step-cpu-ms", type=click.IntRange(1, 300_000), help="CPU a step attempt may use at most, ms (5 min)."
)
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
    max_step_cpu_ms: int | None,
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
        max_step_cpu_ms=max_step_cpu_ms or defaults.max_step_cpu_ms,
        egress=tuple(h.strip() for item in egress for h in item.split(",") if h.strip()),
    )
    try:
        store = open_store(db)
    except TenantflowError as error:
        fail(str(error))
    try:
        tenant, api_key = Tenants(store, SystemClock()).create(name, quotas, operator=operator)
    except TenantflowError as error:
        fail(str(error))
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
        "max_step_cpu_ms": quotas.max_step_cpu_ms,
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
        fail(str(error))
    try:
        found = store.tenants()
    finally:
        store.close()
    rows: list[dict[str, Any]] = [
        {"tenant": t.name, "created_at": t.created_at, "operator": t.operator, "quotas": _quotas_json(t.quotas)}
        for t in found
    ]
    if as_json:
        print_json(rows)
        return
    table = Table(title=f"{len(rows)} tenant(s)", title_justify="left")
    for column in ("tenant", "created", "concurrent", "instances/min", "memory", "fuel", "egress"):
        table.add_column(column)
    for row in rows:
        q = row["quotas"]
        table.add_row(
            row["tenant"],
            when(row["created_at"]),
            str(q["max_concurrent"]),
            str(q["max_instances_per_minute"]),
            f"{q['memory_mb']} MiB",
            f"{q['fuel']:,}",
            ", ".join(q["egress"]) or "-",
        )
    out().print(table)
