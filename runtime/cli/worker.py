"""`tenantflow worker`: workers only, for scale-out on a shared database.

The one worker process for operators, tests and benchmarks. It stops on SIGTERM or SIGINT:
the workers stop claiming, running activations reach their next step or are cancelled after a
grace period and handed back, and the process exits 0. With `--ready-json` it prints one JSON line,
{"ready": true, "owner": ..., "pid": ...}, once the pool runs, so a parent knows it can count on it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading

from tenantflow.runtime.bounds import allow_deep_json
from tenantflow.runtime.engine.parking import DEFAULT_MAX_PARK_S, DEFAULT_PARK_MEMORY_MB
from tenantflow.runtime.engine.worker import new_owner
from tenantflow.runtime.service import Service

log = logging.getLogger("tenantflow.worker")


def run_workers(
    db: str,
    threads: int,
    lease_s: float,
    *,
    host_alias: str | None = None,
    ready_json: bool = False,
    park_memory_mb: int = DEFAULT_PARK_MEMORY_MB,
    max_park_s: float = DEFAULT_MAX_PARK_S,
    tenant_cap: int | None = None,
) -> None:
    """Run a worker pool on `db` until SIGTERM or SIGINT."""
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _sig, _frame: done.set())
    allow_deep_json()  # as `serve` does: params the API accepted (~1000 deep) must load here too
    # With a host alias the worker looks like one on another machine: its instances come back by
    # lease expiry only, never by the dead-local-process check.
    owner = new_owner(host_alias) if host_alias else None
    service = Service.open(
        db,
        workers=threads,
        lease_s=lease_s,
        owner=owner,
        park_memory_mb=park_memory_mb,
        max_park_s=max_park_s,
        tenant_cap=tenant_cap,
    )
    try:
        service.start()
        log.info("tenantflow worker running on %s with %d workers", db, threads)
        if ready_json:
            print(json.dumps({"ready": True, "owner": service.pool.owner, "pid": os.getpid()}), flush=True)
        while not done.wait(1.0):
            pass
    finally:
        log.info("stopping workers")
        service.close()
        log.info("stopped")
