"""An isolate slot's reset with and without PAGEMAP_SCAN: `python -m bench.slot_reset`.

Not a test. When an activation ends, its isolate's slot in wasmtime's pooling allocator is reset for the next
one: without `pagemap_scan` the whole `keep_resident` region (16 MiB) is copied back from the guest's image or
zeroed; with it (host/engine.py POOLING, on by default) the pages the guest only read are skipped (Linux's
PAGEMAP_SCAN ioctl tells them apart; README, "Resetting a used slot"). Two sandboxes, one engine each, the same
but for that option, take turns running an in-process fan-out (`bench.runtime_bench.fan_out`: INSTANCES ten-step
instances, 4 workers, a fresh SQLite file in WAL with synchronous=FULL each round), ROUNDS times. Prints one
JSON line per mode: instances/s and the process's CPU per instance (min, median, max over the rounds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from tenantflow.host import Sandbox
from tenantflow.host.engine import POOLING, load_guest, make_engine

from bench.runtime_bench import fan_out

WORKERS = 4


def sandbox(pagemap_scan: bool) -> Sandbox:
    engine, settings = make_engine(pooling={**POOLING, "pagemap_scan": int(pagemap_scan)})
    return Sandbox(load_guest(engine, settings), engine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--instances", type=int, default=500)
    args = parser.parse_args()
    boxes = {"pagemap_scan on": sandbox(True), "pagemap_scan off": sandbox(False)}
    rates: dict[str, list[float]] = {mode: [] for mode in boxes}
    cpu_ms: dict[str, list[float]] = {mode: [] for mode in boxes}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for box in boxes.values():
                fan_out(Path(tmp), box, "full", 100, WORKERS)
            for _ in range(args.rounds):
                for mode, box in boxes.items():
                    started = time.process_time()
                    rates[mode].append(fan_out(Path(tmp), box, "full", args.instances, WORKERS))
                    cpu_ms[mode].append((time.process_time() - started) / args.instances * 1000)
        for mode in boxes:
            print(
                json.dumps(
                    {
                        "mode": mode,
                        "instances": args.instances,
                        "rounds": args.rounds,
                        "per_s": [round(f(rates[mode]), 1) for f in (min, statistics.median, max)],
                        "cpu_ms_per_instance": [round(f(cpu_ms[mode]), 2) for f in (min, statistics.median, max)],
                    }
                ),
                flush=True,
            )
    finally:
        for box in boxes.values():
            box.close()


if __name__ == "__main__":
    main()
