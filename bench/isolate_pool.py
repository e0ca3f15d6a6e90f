"""Isolate start with and without the pool of ready isolates: `python -m bench.isolate_pool`.

Not a test. Two sandboxes, each with its own engine: one makes and drops every isolate on the activation's
thread (`pool=0`, as before host/pool.py), the other takes ready ones and hands used ones back (`pool=2`,
the default). They alternate in blocks of BLOCK activations, ROUNDS times, so that the load of this shared
machine hits both alike. Prints one JSON line per figure and mode: min, median and p99 in ms.

- `first_instruction`: `Sandbox.run` called to the tenant's first `print` reaching the host (the figure of
  bench/sandbox_bench.py: store, instantiate, compile the source in the guest, run it), and
  `first_instruction_compiled` the same with the version's code compiled ahead (as the runtime runs it).
- `activation`: the whole `Sandbox.run` of that one-print workflow (returned to the caller).
- spaced: a pause of GAP_S between activations (a server taking one instance at a time: the pool has
  refilled); back to back: none (the pool's thread must keep up). `cpu_ms` is the process's CPU per
  activation, the pool's thread included: what the pool costs in total.
- `throughput`: THREADS threads running such activations back to back for a while, activations/s.

`--keep-resident-mb 16,1` runs each mode with each size of the pooling allocator's `keep_resident` (what a
dropped isolate's slot keeps mapped and zeroes for its next user; 16 MiB in production).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from typing import Any

from tenantflow.host.engine import POOLING, load_guest, make_engine

from bench.sandbox_bench import FIRST_PRINT, FastJournal, FirstLogSandbox, first_instruction, quantile

EVENT = {"payload": None}
BLOCK = 10
GAP_S = 0.005
THREADS = 4


def summary(samples_s: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_s]
    return {
        "min_ms": round(min(ms), 3),
        "p50_ms": round(statistics.median(ms), 3),
        "p99_ms": round(quantile(ms, 0.99), 3),
        "n": len(ms),
    }


def throughput(box: FirstLogSandbox, code: bytes, seconds: float) -> float:
    done = [0] * THREADS
    stop = time.perf_counter() + seconds

    def worker(slot: int) -> None:
        while time.perf_counter() < stop:
            box.run(FIRST_PRINT, EVENT, FastJournal(), code=code)
            done[slot] += 1

    threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(THREADS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--throughput-rounds", type=int, default=5)
    parser.add_argument("--pool", type=int, default=2)
    parser.add_argument(
        "--keep-resident-mb",
        default=str(POOLING["keep_resident_bytes"] >> 20),
        help="comma-separated: the pooling allocator's keep_resident (host/engine.py POOLING) of each pair of modes",
    )
    args = parser.parse_args()
    boxes: dict[str, FirstLogSandbox] = {}
    for keep_mb in [int(text) for text in args.keep_resident_mb.split(",")]:
        for size in (0, args.pool):
            engine, settings = make_engine(pooling={**POOLING, "keep_resident_bytes": keep_mb << 20})
            mode = f"pool {size}, keep {keep_mb} MiB" if size else f"no pool, keep {keep_mb} MiB"
            boxes[mode] = FirstLogSandbox(load_guest(engine, settings), engine, pool=size)
    try:
        codes = {}
        for mode, box in boxes.items():
            compiled = box.compile(FIRST_PRINT)
            assert isinstance(compiled, bytes), compiled
            codes[mode] = compiled
            for _ in range(20):
                first_instruction(box, compiled)
        figures: dict[tuple[str, str, str], list[float]] = {}
        cpu: dict[tuple[str, str], list[float]] = {}
        hits: dict[tuple[str, str], int] = {}
        for _ in range(args.rounds):
            for spacing, gap in (("spaced", GAP_S), ("back to back", 0.0)):
                for mode, box in boxes.items():
                    box.isolates.settle(timeout=5)
                    hits_before = box.isolates.hits
                    cpu_started = time.process_time()
                    for i in range(BLOCK):
                        code = codes[mode] if i % 2 else None
                        first, total = first_instruction(box, code)
                        kind = "first_instruction_compiled" if code else "first_instruction"
                        figures.setdefault((spacing, mode, kind), []).append(first)
                        figures.setdefault((spacing, mode, "activation"), []).append(total)
                        if gap:
                            time.sleep(gap)
                    cpu.setdefault((spacing, mode), []).append((time.process_time() - cpu_started) / BLOCK)
                    hits[(spacing, mode)] = hits.get((spacing, mode), 0) + box.isolates.hits - hits_before
        for (spacing, mode, kind), samples in sorted(figures.items()):
            fields: dict[str, Any] = {"figure": kind, "spacing": spacing, "mode": mode, **summary(samples)}
            if kind == "activation":
                fields["cpu_ms_median"] = round(statistics.median(cpu[(spacing, mode)]) * 1000, 3)
                fields["from_the_pool"] = hits[(spacing, mode)]
            print(json.dumps(fields), flush=True)
        rates: dict[str, list[float]] = {mode: [] for mode in boxes}
        for _ in range(args.throughput_rounds):
            for mode, box in boxes.items():
                box.isolates.settle(timeout=5)
                rates[mode].append(throughput(box, codes[mode], 2.0))
        for mode, values in rates.items():
            print(
                json.dumps(
                    {
                        "figure": "throughput",
                        "threads": THREADS,
                        "mode": mode,
                        "per_s_min": round(min(values), 1),
                        "per_s_median": round(statistics.median(values), 1),
                        "per_s_max": round(max(values), 1),
                    }
                ),
                flush=True,
            )
        for mode, box in boxes.items():
            pool = box.isolates
            print(json.dumps({"figure": "pool", "mode": mode, "hits": pool.hits, "misses": pool.misses}), flush=True)
    finally:
        for box in boxes.values():
            box.close()


if __name__ == "__main__":
    main()
