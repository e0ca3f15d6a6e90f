"""Guest Python speed against native, per engine setting: `python -m bench.guest_speed`.

Not a test. The same CPU-bound Python runs natively in this CPython and in the guest (CPython on wasm) under
several engines, interleaved round by round (the order rotating) so that the load of this shared machine
hits all alike. Each guest run is a fresh isolate calling the guest's `run` export directly (no activation:
no host calls happen during the loop). Two clocks: wall, timed inside the guest with `time.perf_counter`
around the loop (native: the same here); and this thread's CPU time around the call (native: around the
loop), which a busy machine disturbs less (the guest's compile of the few lines of source is in it, ~1 ms).
Prints one JSON line per workload and engine: min and median ms, the guest/native ratio of the minimums and
the median of the per-round ratios, for each clock.

Engines (compile settings; a variant's artifact is compiled once and cached like the production one):
- `fuel + epoch (production)`: wasm-build/settings.py's ENGINE_SETTINGS (Cranelift opt_level "speed").
- `epoch only`: no fuel metering (`consume_fuel` off): what counting instructions costs. Budgets and billing
  are fuel; without it they would have to come from CPU clocks.
- `fuel only`: no epoch interruption: what the wall-clock deadline checks cost.
- `fuel + epoch, speed_and_size`: Cranelift's other optimising level.
- `fuel + epoch, no table Spectre mitigation`: Cranelift's `enable_table_access_spectre_mitigation` off
  (a conditional move on every indirect call's table bounds check; the interpreter calls through tables a
  lot). Measured only: a multi-tenant sandbox keeps Spectre mitigations.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import wasmtime
from tenantflow.host import Sandbox
from tenantflow.host._wasmtime import configure_pooling
from tenantflow.host.engine import POOLING
from tenantflow.wasm_build import ENGINE_SETTINGS, compiler_config, load_component

from bench import sandbox_bench

WORKLOADS = {
    # bench/sandbox_bench.py's loop: integer arithmetic and branches.
    "arith": (sandbox_bench.WORK, 300_000),
    # Objects: calls, dicts, strings, lists, a class with attributes.
    "objects": (
        """
class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y

    def norm(self):
        return abs(self.x) + abs(self.y)


def work(n):
    counts = {}
    points = []
    for i in range(n):
        key = "k" + str(i % 97)
        counts[key] = counts.get(key, 0) + 1
        points.append(Point(i, -i).norm())
        if len(points) > 64:
            points.sort()
            del points[:32]
    return sum(counts.values()) + len(points)
""",
        60_000,
    ),
}


@dataclass(frozen=True)
class Variant:
    name: str
    settings: Mapping[str, object]
    flags: Mapping[str, str] = field(default_factory=dict)


VARIANTS = [
    Variant("fuel + epoch (production)", ENGINE_SETTINGS),
    Variant("epoch only", {**ENGINE_SETTINGS, "consume_fuel": False}),
    Variant("fuel only", {**ENGINE_SETTINGS, "epoch_interruption": False}),
    Variant("fuel + epoch, speed_and_size", {**ENGINE_SETTINGS, "cranelift_opt_level": "speed_and_size"}),
    Variant(
        "fuel + epoch, no table Spectre mitigation",
        ENGINE_SETTINGS,
        {"enable_table_access_spectre_mitigation": "false"},
    ),
]


class Guest:
    """One engine with the guest compiled for it, and a Sandbox's linker (WASI answers without an activation)."""

    def __init__(self, variant: Variant) -> None:
        self.variant = variant
        config = compiler_config(variant.settings)
        for name, value in variant.flags.items():
            config.cranelift_flag_set(name, value)
        configure_pooling(config, POOLING)
        self.engine = wasmtime.Engine(config)
        # The flags are part of the cached artifact's key (compiler_config does not know them).
        key = {**variant.settings, **{f"cranelift_flag:{name}": value for name, value in variant.flags.items()}}
        self.box = Sandbox(load_component(self.engine, key), self.engine, pool=0)
        index = self.box.component.get_export_index("run")
        assert index is not None
        self.run_index = index
        self.fuel = bool(variant.settings.get("consume_fuel"))
        self.epoch = bool(variant.settings.get("epoch_interruption"))

    def run(self, source: str) -> tuple[float, float, Any]:
        """A fresh isolate runs `source`'s `run`: (seconds its `work` took, timed in the guest; this thread's CPU
        seconds for the call, the guest's compile of the source included; its result)."""
        store = wasmtime.Store(self.engine)
        if self.fuel:
            store.set_fuel(1 << 60)
        if self.epoch:
            store.set_epoch_deadline(1 << 60)
        instance = self.box.linker.instantiate(store, self.box.component)
        func = instance.get_func(store, self.run_index)
        assert func is not None
        cpu_started = time.thread_time()
        output = func(store, source, json.dumps({"payload": None}))
        cpu = time.thread_time() - cpu_started
        func.post_return(store)
        store.close()
        if not isinstance(output, str):
            raise RuntimeError(f"{self.variant.name}: the guest failed: {getattr(output, 'message', output)}")
        elapsed, result = json.loads(output)
        return float(elapsed), cpu, result

    def close(self) -> None:
        self.box.close()


def guest_source(work: str, n: int) -> str:
    return (
        work
        + f"""
import time

def run(event, step):
    started = time.perf_counter()
    result = work({n})
    return [time.perf_counter() - started, result]
"""
    )


def native(work: str, n: int) -> tuple[float, float, Any]:
    namespace: dict[str, Any] = {}
    exec(work, namespace)
    cpu_started = time.thread_time()
    started = time.perf_counter()
    result = namespace["work"](n)
    elapsed = time.perf_counter() - started
    return elapsed, time.thread_time() - cpu_started, result


def measure(rounds: int, variants: list[str] | None = None) -> list[dict[str, Any]]:
    """Per workload and engine (native first): the figures `main` prints; `variants` by name (None: all)."""
    chosen = [v for v in VARIANTS if not variants or v.name in variants]
    guests = [Guest(variant) for variant in chosen]
    figures: list[dict[str, Any]] = []
    try:
        names = ["native"] + [guest.variant.name for guest in guests]
        for workload, (work, n) in WORKLOADS.items():
            source = guest_source(work, n)
            expected = native(work, n)[2]
            for guest in guests:  # warm: page in the artifact, fill the allocator's warm slots
                guest.run(source)
            times: dict[str, list[float]] = {name: [] for name in names}
            cpus: dict[str, list[float]] = {name: [] for name in names}
            for round_no in range(rounds):
                order = names[round_no % len(names) :] + names[: round_no % len(names)]
                for name in order:
                    if name == "native":
                        elapsed, cpu, result = native(work, n)
                    else:
                        elapsed, cpu, result = next(g for g in guests if g.variant.name == name).run(source)
                    assert result == expected, (name, result, expected)
                    times[name].append(elapsed)
                    cpus[name].append(cpu)
            for name in names:
                ratios = [g / b for g, b in zip(times[name], times["native"], strict=True)]
                cpu_ratios = [g / b for g, b in zip(cpus[name], cpus["native"], strict=True)]
                figures.append(
                    {
                        "workload": workload,
                        "engine": name,
                        "wall_min_ms": round(min(times[name]) * 1000, 2),
                        "wall_median_ms": round(statistics.median(times[name]) * 1000, 2),
                        "wall_ratio_of_mins": round(min(times[name]) / min(times["native"]), 3),
                        "wall_median_ratio": round(statistics.median(ratios), 3),
                        "cpu_min_ms": round(min(cpus[name]) * 1000, 2),
                        "cpu_median_ms": round(statistics.median(cpus[name]) * 1000, 2),
                        "cpu_ratio_of_mins": round(min(cpus[name]) / min(cpus["native"]), 3),
                        "cpu_median_ratio": round(statistics.median(cpu_ratios), 3),
                        "rounds": rounds,
                    }
                )
    finally:
        for guest in guests:
            guest.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--variants", default="", help="comma-separated names (default: all)")
    args = parser.parse_args()
    for figure in measure(args.rounds, args.variants.split(",") if args.variants else None):
        print(json.dumps(figure), flush=True)


if __name__ == "__main__":
    main()
