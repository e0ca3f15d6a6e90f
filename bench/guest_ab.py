"""Two or more builds of the guest, timed by this checkout's host in one process: `python -m bench.guest_ab
--artifact A.cwasm --artifact B.cwasm`.

Not a test. `bench.guest_fuel` counts what a change to the guest saves in fuel (deterministic); this says what that
is in time, where the machine's speed swings: each artifact (a precompiled guest from a build's cache, e.g. a
worktree's `~/.cache/tenantflow/guest-*.cwasm`) gets its own engine and sandbox, and they take turns, ROUNDS times:

- `step`: one activation of STEPS `step.do` calls, timed inside the guest (a step's time, the host's share included);
- `fan_out`: `bench.runtime_bench.fan_out` (INSTANCES ten-step instances, 4 workers, a fresh SQLite file in WAL
  with synchronous=FULL each round): instances/s and the process's CPU per instance.

Prints one JSON line per artifact and figure: min, median and max over the rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from tenantflow.host import Sandbox
from tenantflow.host.engine import make_engine
from wasmtime.component import Component

from bench.runtime_bench import fan_out
from bench.sandbox_bench import run_ok

WORKERS = 4

STEPS = """
import time

def run(event, step):
    started = time.perf_counter_ns()
    for i in range({steps}):
        step.do("s", lambda: {{"i": i, "name": "x"}})
    return (time.perf_counter_ns() - started) / {steps} / 1000
"""


def spread(values: list[float], digits: int = 2) -> list[float]:
    return [round(f(values), digits) for f in (min, statistics.median, max)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", action="append", required=True, help="a precompiled guest (twice or more)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--figures", default="step,fan_out", help="comma-separated: step, fan_out")
    args = parser.parse_args()
    figures = set(args.figures.split(","))
    boxes: dict[str, Sandbox] = {}
    for path in args.artifact:
        engine, _ = make_engine()
        boxes[Path(path).name] = Sandbox(Component.deserialize_file(engine, path), engine)
    step_us: dict[str, list[float]] = {name: [] for name in boxes}
    rates: dict[str, list[float]] = {name: [] for name in boxes}
    cpu_ms: dict[str, list[float]] = {name: [] for name in boxes}
    source = STEPS.format(steps=args.steps)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for box in boxes.values():  # warm each: the first round of either would pay for it
                run_ok(box, source)
                if "fan_out" in figures:
                    fan_out(Path(tmp), box, "full", 100, WORKERS)
            for _ in range(args.rounds):
                for name, box in boxes.items():
                    if "step" in figures:
                        step_us[name].append(run_ok(box, source))
                    if "fan_out" in figures:
                        started = time.process_time()
                        rates[name].append(fan_out(Path(tmp), box, "full", args.instances, WORKERS))
                        cpu_ms[name].append((time.process_time() - started) / args.instances * 1000)
        for name in boxes:
            if "step" in figures:
                line = {"figure": "step", "guest": name, "steps": args.steps, "us_per_step": spread(step_us[name], 1)}
                print(json.dumps(line), flush=True)
            if "fan_out" in figures:
                line = {
                    "figure": "fan_out",
                    "guest": name,
                    "instances": args.instances,
                    "per_s": spread(rates[name], 1),
                    "cpu_ms_per_instance": spread(cpu_ms[name]),
                }
                print(json.dumps(line), flush=True)
    finally:
        for box in boxes.values():
            box.close()


if __name__ == "__main__":
    main()
