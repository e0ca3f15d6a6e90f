"""Sleepers: N instances created at once that each sleep until one shared wake time, then finish.

`python -m bench.sleepers --db URL --instances N` runs a Service (4 worker threads) in this process
and prints one JSON object: the creation rate, how long parking them all took, the RSS while all
of them wait (every instance `waiting`, none `running`, no activation held by the pool, so no
isolate), the process's peak RSS (VmHWM), and the time from the wake time until the last one
finished. Run it in a process of its own so that the RSS is the service's alone.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from typing import Any

from tenantflow.runtime.contract import MAX_BATCH
from tenantflow.runtime.records import Quotas
from tenantflow.runtime.service import Service

from bench.scenarios import Reader

SLEEPER = """
def run(event, step):
    step.sleep_until("nap", event.payload["wake"])
    return "up"
"""


def proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def counts(reader: Reader) -> dict[str, int]:
    """On a connection of its own: `Store.status_counts` would take the store's write lock (SQLite) for
    the whole scan of 50,000 rows, which slows the workers down."""
    return {str(status): int(n) for status, n in reader.rows("SELECT status, COUNT(*) FROM instances GROUP BY status")}


def run(url: str, instances: int, workers: int, park_rate: float, margin_s: float = 10.0) -> dict[str, Any]:
    """All wake at `margin_s` + `instances` / `park_rate` seconds after the first is created: `park_rate` is a
    pessimistic guess of how many are created and parked per second, so that all are parked before then."""
    service = Service.open(url, workers=workers).start()
    reader = Reader(url)
    peak = [proc_status_kb("VmRSS")]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            peak[0] = max(peak[0], proc_status_kb("VmRSS"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        tenant = service.create_tenant("bench", Quotas(max_instances_per_minute=10**9))[0]
        service.deploy(tenant, "sleeper", SLEEPER)
        rss_before_kb = proc_status_kb("VmRSS")
        started = time.time()
        wake = started + margin_s + instances / park_rate
        for first in range(0, instances, MAX_BATCH):
            batch = [{"id": f"s{n}", "params": {"wake": wake}} for n in range(first, min(first + MAX_BATCH, instances))]
            service.create_instances(tenant, "sleeper", batch)
        created = time.time()
        while counts(reader).get("waiting", 0) < instances and time.time() < wake:
            time.sleep(0.25)
        parked = time.time()
        at_park = counts(reader)
        parked_before_wake = at_park.get("waiting", 0) == instances and parked < wake
        busy_while_parked = service.pool.busy
        rss_parked_kb = proc_status_kb("VmRSS")
        # Anonymous memory (the heap, the isolates' slots kept resident) apart from file pages (the guest's image,
        # mapped into each allocator slot read in: shared page cache, counted once per slot in VmRSS).
        anon_parked_kb, file_parked_kb = proc_status_kb("RssAnon"), proc_status_kb("RssFile")
        while True:
            status = counts(reader)
            if status.get("complete", 0) + status.get("errored", 0) >= instances:
                break
            if time.time() > wake + 600:
                raise TimeoutError(f"sleepers did not finish: {status}")
            time.sleep(0.25)
        with service.store.transaction() as tx:
            last = float(tx.execute("SELECT MAX(updated_at) FROM instances")[0][0])
        errored = status.get("errored", 0)
    finally:
        stop.set()
        reader.close()
        service.close()
    return {
        "instances": instances,
        "workers": workers,
        "creation_per_s": instances / (created - started),
        "create_s": created - started,
        "park_s": parked - started,
        "parked_before_wake": parked_before_wake,
        "waiting_at_park": at_park.get("waiting", 0),
        "running_at_park": at_park.get("running", 0),
        "activations_held_while_parked": busy_while_parked,
        "rss_before_mb": rss_before_kb / 1024,
        "rss_parked_mb": rss_parked_kb / 1024,
        "rss_anon_parked_mb": anon_parked_kb / 1024,
        "rss_file_parked_mb": file_parked_kb / 1024,
        "peak_rss_mb": max(peak[0], proc_status_kb("VmHWM")) / 1024,
        "wake_to_all_done_s": last - wake,
        "woken_per_s": instances / max(last - wake, 1e-9),
        "errored": errored,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sleepers")
    parser.add_argument("--db", required=True)
    parser.add_argument("--instances", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--park-rate", type=float, default=100.0)
    parser.add_argument("--margin", type=float, default=10.0)
    args = parser.parse_args()
    print(json.dumps(run(args.db, args.instances, args.workers, args.park_rate, args.margin)), flush=True)


if __name__ == "__main__":
    main()
