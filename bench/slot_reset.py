"""An isolate slot's reset three ways: `python -m bench.slot_reset [--modes read_in,pagemap,copy_all]`.

Not a test. When an activation ends, its isolate's slot in wasmtime's pooling allocator is reset for the next
one: without `pagemap_scan` (`copy_all`) the whole `keep_resident` region (16 MiB) is copied back from the guest's
image or zeroed; with it (`pagemap`; host/engine.py POOLING) the pages the guest only read are skipped (Linux's
PAGEMAP_SCAN ioctl tells them apart; README, "Resetting a used slot"), but wasmtime 50.0.1 copies the pages
nobody touched too; `read_in` (the default Sandbox) also reads each slot in before its first reset
(host/slots.py), so that a reset copies what the guest wrote only. One sandbox per mode, each with its own engine
and its own copy of the artifact (a slot is found by the file it maps), take turns running an in-process fan-out
(`bench.runtime_bench.fan_out`: INSTANCES ten-step instances, 4 workers, a fresh SQLite file in WAL with
synchronous=FULL each round), ROUNDS times. Prints one JSON line per mode: instances/s, the process's CPU per
instance (min, median, max over the rounds), and the anonymous (written or copied) pages of its slots at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from tenantflow.host import Sandbox
from tenantflow.host.engine import POOLING, load_guest_file, make_engine
from wasmtime.component import Component

from bench.guest_ab import spread
from bench.runtime_bench import fan_out

WORKERS = 4


MODES = ("read_in", "pagemap", "copy_all")


def sandbox(mode: str, tmp: Path) -> Sandbox:
    engine, settings = make_engine(pooling={**POOLING, "pagemap_scan": int(mode != "copy_all")})
    artifact = tmp / f"guest-{mode}.cwasm"
    shutil.copyfile(load_guest_file(engine, settings)[1], artifact)
    component = Component.deserialize_file(engine, str(artifact))
    return Sandbox(component, engine, artifact=artifact if mode == "read_in" else None)


def slot_anonymous_pages(artifact: Path) -> list[int]:
    """For each slot mapping `artifact`'s image in this process, its pages that are anonymous memory: written by a
    guest or copied over by a reset (tests/host/test_slots.py counts with it too)."""
    slots: list[int] = []
    with open("/proc/self/smaps") as smaps:
        inside = False
        for line in smaps:
            if "-" in line.split(" ", 1)[0]:
                inside = line.rstrip().endswith(str(artifact)) and " rw-p " in line
            elif inside and line.startswith("Anonymous:"):
                slots.append(int(line.split()[1]) // 4)
    return slots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    args = parser.parse_args()
    modes = args.modes.split(",")
    if not set(modes) <= set(MODES):
        parser.error(f"--modes: one or more of {', '.join(MODES)}")
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    cpu_ms: dict[str, list[float]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory() as tmp:
        boxes = {mode: sandbox(mode, Path(tmp)) for mode in modes}
        try:
            for box in boxes.values():
                fan_out(Path(tmp), box, "full", 100, WORKERS)
            for round_ in range(args.rounds):
                for mode in modes if round_ % 2 == 0 else modes[::-1]:
                    started = time.process_time()
                    rates[mode].append(fan_out(Path(tmp), boxes[mode], "full", args.instances, WORKERS))
                    cpu_ms[mode].append((time.process_time() - started) / args.instances * 1000)
            for mode in modes:
                print(
                    json.dumps(
                        {
                            "mode": mode,
                            "instances": args.instances,
                            "rounds": args.rounds,
                            "per_s": spread(rates[mode], 1),
                            "cpu_ms_per_instance": spread(cpu_ms[mode]),
                            "anonymous_pages_in_slots": sum(slot_anonymous_pages(Path(tmp) / f"guest-{mode}.cwasm")),
                        }
                    ),
                    flush=True,
                )
        finally:
            for box in boxes.values():
                box.close()


if __name__ == "__main__":
    main()
