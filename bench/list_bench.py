"""Instance lists at scale: `python -m bench.list_bench [--instances 1000000] [--db FILE]`.

Fills a SQLite store with one tenant's instances across a few workflows and statuses (inserted straight through
SQL, in creation order, for speed: the rows are what the store writes, with the schema's every index), then
times what the dashboard's instances page asks for, through the store and the service's pages: the first page,
a deep page (from a cursor 90% down), the page before a deep one, a status-filtered page, the capped per-status
counts (tenant-wide, per workflow, with a time range), the exact per-status counts (`GROUP BY`, as
`GET /v1/workflows/{name}` gives), and an id-prefix search. Prints a table and writes
bench/results/lists-<time>.json. Each figure is the median of a few runs, after one warm-up (the page cache is
warm: the database fits in memory here).
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tenantflow.runtime.records import InstanceFilter, ListPosition, Quotas, Tenant
from tenantflow.runtime.service.application import COUNT_CAP
from tenantflow.runtime.store import SQLStore, open_store

RESULTS = Path(__file__).parent / "results"
TENANT = "bench"
WORKFLOWS = ("order", "invoice", "mail", "sync")
# Statuses by share of the instances (most finished, as a busy tenant's are).
STATUS_MIX = (("complete", 70), ("errored", 12), ("terminated", 5), ("waiting", 8), ("queued", 3), ("paused", 2))
T0 = 1_760_000_000.0
PAGE = 50


def fill(path: Path, count: int) -> SQLStore:
    store = open_store(f"sqlite:///{path}")
    store.create_tenant(Tenant(TENANT, TENANT, Quotas(), T0), "hash-bench")
    versions = {w: store.deploy(TENANT, w, f"# {w}\n", f"hash-{w}", T0)[0] for w in WORKFLOWS}
    store.close()
    cycle = [status for status, share in STATUS_MIX for _ in range(share)]
    pick = random.Random(16)
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA synchronous = OFF")
    connection.execute("BEGIN")
    batch: list[tuple[Any, ...]] = []
    for n in range(count):
        workflow = WORKFLOWS[n % len(WORKFLOWS)]
        status = pick.choice(cycle)
        at = T0 + n * 0.01  # 100 a second: a million over ~2.8 hours
        finished = at + 1 if status in ("complete", "errored", "terminated") else None
        batch.append(
            (
                TENANT,
                workflow,
                f"{workflow}-{n:07d}",
                1,
                versions[workflow].source_hash,
                status,
                at,
                at + 1,
                at if status in ("queued", "waiting") else None,
                finished,
            )
        )
        if len(batch) == 10_000:
            _insert(connection, batch)
            batch = []
    _insert(connection, batch)
    connection.execute("COMMIT")
    connection.close()
    return open_store(f"sqlite:///{path}")


def _insert(connection: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    connection.executemany(
        "INSERT INTO instances (tenant_id, workflow, instance_id, version, source_hash, status, created_at, "
        "updated_at, wake_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def timed(fn: Callable[[], Any], runs: int = 5) -> tuple[float, Any]:
    """The median of `runs` timings after a warm-up, in milliseconds, and the last result."""
    result = fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), result


def run(store: SQLStore, count: int) -> list[dict[str, Any]]:
    deep_n = int(count * 0.9)
    deep_workflow = WORKFLOWS[(count - 1 - deep_n) % len(WORKFLOWS)]
    # The place 90% down the tenant-wide list (newest first): the instance created deep_n-th from the newest.
    n = count - 1 - deep_n
    deep = ListPosition(T0 + n * 0.01, WORKFLOWS[n % len(WORKFLOWS)], f"{WORKFLOWS[n % len(WORKFLOWS)]}-{n:07d}")
    everything = InstanceFilter()
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("first page (tenant-wide)", lambda: store.instances(TENANT, everything, PAGE + 1)),
        ("first page (one workflow)", lambda: store.instances(TENANT, InstanceFilter("order"), PAGE + 1)),
        ("deep page, 90% down (tenant-wide)", lambda: store.instances(TENANT, everything, PAGE + 1, deep)),
        ("page before a deep one (newer)", lambda: store.instances(TENANT, everything, PAGE + 1, before=deep)),
        (
            "status page: errored (tenant-wide)",
            lambda: store.instances(TENANT, InstanceFilter(status="errored"), PAGE + 1),
        ),
        (
            "status page: paused, one workflow, deep",
            lambda: store.instances(TENANT, InstanceFilter(deep_workflow, "paused"), PAGE + 1, deep),
        ),
        (
            "status page with a time range",
            lambda: store.instances(
                TENANT, InstanceFilter(status="errored", created_after=T0 + 1000, created_before=T0 + 5000), PAGE + 1
            ),
        ),
        (
            f"counts, capped at {COUNT_CAP:,} (tenant-wide)",
            lambda: store.count_instances(TENANT, everything, COUNT_CAP),
        ),
        (
            f"counts, capped at {COUNT_CAP:,} (one workflow)",
            lambda: store.count_instances(TENANT, InstanceFilter("order"), COUNT_CAP),
        ),
        (
            "counts, capped, last hour of the range",
            lambda: store.count_instances(TENANT, InstanceFilter(created_after=T0 + count * 0.01 - 3600), COUNT_CAP),
        ),
        ("counts, exact GROUP BY (one workflow)", lambda: store.workflow_counts(TENANT, "order")),
        (
            "counts, exact (tenant-wide, uncapped)",
            lambda: store.count_instances(TENANT, everything, count),
        ),
        (
            "id search, prefix 'order-00123'",
            lambda: store.instances(TENANT, InstanceFilter(id_prefix="order-00123"), PAGE + 1),
        ),
        (
            "id search, exact id",
            lambda: store.instances(TENANT, InstanceFilter(id_prefix=f"mail-{count // 2 + 2:07d}"), PAGE + 1),
        ),
        (
            "id search, prefix 'o' (many matches)",
            lambda: store.instances(TENANT, InstanceFilter(id_prefix="o"), PAGE + 1),
        ),
    ]
    figures = []
    for name, fn in cases:
        ms, result = timed(fn, runs=3 if "exact" in name and "counts" in name else 5)
        size = len(result) if isinstance(result, list) else sum(result.values())
        figures.append({"case": name, "ms": round(ms, 3), "rows": size})
        print(f"{name:45s} {ms:10.2f} ms   ({size:,} {'rows' if isinstance(result, list) else 'counted'})", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, help="the SQLite file (default: a temporary one, removed after)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        path = args.db or Path(scratch) / "lists.db"
        if path.exists():
            store = open_store(f"sqlite:///{path}")
            print(f"using {path} as it is", file=sys.stderr)
        else:
            start = time.perf_counter()
            store = fill(path, args.instances)
            print(
                f"filled {args.instances:,} instances in {time.perf_counter() - start:.1f} s "
                f"({path.stat().st_size / 1e6:.0f} MB)",
                file=sys.stderr,
            )
        try:
            figures = run(store, args.instances)
        finally:
            store.close()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"lists-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"instances": args.instances, "page": PAGE, "figures": figures}, indent=2))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
