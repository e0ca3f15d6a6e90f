"""Running the service: `serve` (API and workers) and `worker` (workers only)."""

from __future__ import annotations

from typing import NoReturn

import click
from tenantflow.runtime import logs
from tenantflow.runtime.cli.options import db_option, log_options, park_options, workers_option
from tenantflow.runtime.errors import TenantflowError
from tenantflow.runtime.logs import LogFormat


def _fail(message: str) -> NoReturn:
    """`output.fail`, imported when called: it prints with rich, which running the service never needs."""
    from tenantflow.runtime.cli.output import fail

    fail(message)


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
@click.option(
    "--processes",
    envvar="TENANTFLOW_PROCESSES",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Processes running activations (each with --workers threads): the server's and N-1 worker processes.",
)
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
    processes: int,
) -> None:
    """Run the HTTP API and the workers in one process (graceful stop on SIGTERM); with --processes N, N-1
    worker processes beside it on the same database.

    Every option can come from the environment too: TENANTFLOW_HOST, TENANTFLOW_PORT, TENANTFLOW_DB,
    TENANTFLOW_WORKERS, TENANTFLOW_LOG_LEVEL, TENANTFLOW_LOG_FORMAT, TENANTFLOW_METRICS_TOKEN,
    TENANTFLOW_PARK_MEMORY_MB, TENANTFLOW_MAX_PARK_S, TENANTFLOW_PROCESSES."""
    from tenantflow.runtime.cli.processes import ProcessError, WorkerCommand, WorkerProcesses
    from tenantflow.runtime.http.server import serve as run_server
    from tenantflow.runtime.store import open_store

    logs.configure(log_level, log_format)
    extra: WorkerProcesses | None = None
    try:
        if processes > 1:
            open_store(db).close()  # the schema is made (or migrated) once, before the workers open it
            command = WorkerCommand(db, workers, log_level, log_format, park_memory_mb, max_park_s, workers * processes)
            extra = WorkerProcesses(processes - 1, command).start()
        run_server(
            db,
            host,
            port,
            workers,
            log_level,
            metrics_token=metrics_token,
            park_memory_mb=park_memory_mb,
            max_park_s=max_park_s,
            tenant_cap=workers * processes,
        )
    except OSError as error:
        _fail(f"cannot listen on {host}:{port}: {error}")
    except (TenantflowError, ProcessError) as error:
        _fail(str(error))
    finally:
        if extra is not None:
            extra.stop()


@commands.command()
@db_option
@workers_option
@click.option("--lease", default=30.0, show_default=True, type=click.FloatRange(min=0.1), help="Lease, seconds.")
@log_options
@click.option("--ready-json", is_flag=True, help="Print a JSON line once the workers run (for a parent process).")
@click.option("--host-alias", hidden=True, help="Tests: a lease owner that looks like another machine's.")
@park_options
@click.option(
    "--tenant-cap",
    type=click.IntRange(1),
    help="The most activations one tenant runs at once across every process on the database (with its quota); "
    "default: --workers.",
)
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
    tenant_cap: int | None,
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
            tenant_cap=tenant_cap,
        )
    except TenantflowError as error:
        _fail(str(error))
