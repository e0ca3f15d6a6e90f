"""The wasmtime engine configuration and the epoch ticker that enforces wall-clock deadlines."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import wasmtime
from tenantflow.host._wasmtime import configure_pooling, hold_gil_in_short_calls
from tenantflow.wasm_build import ENGINE_SETTINGS, compiler_config, load_component, load_component_file
from wasmtime.component import Component

__all__ = [
    "CHECK_S",
    "ENGINE_SETTINGS",
    "ISOLATE_SLOTS",
    "MAX_MEMORY_BYTES",
    "POOLING",
    "TICK_S",
    "EpochTicker",
    "load_guest",
    "load_guest_file",
    "make_engine",
]

TICK_S = 0.005
# How often a running guest asks the host whether its (activation or step) deadline has passed.
CHECK_S = 0.05
# The pooling allocator reuses instance slots instead of mapping and unmapping memory for every
# activation. With the default allocator, concurrent activations on several threads contend on the
# process's memory map (mmap/munmap per instance) and two threads ran slower than one; pooled, with
# recently used pages kept resident, they scale (see bench/sandbox_bench.py threads_2_vs_1).
# `pagemap_scan`: a used slot's reset skips the pages its guest only read, where Linux has PAGEMAP_SCAN (6.7 and
# later), instead of copying the image back over the whole resident 16 MiB (README, "Resetting a used slot").
POOLING: dict[str, int] = {
    "instances": 128,
    "core_instances_per_component": 64,
    "max_memory_bytes": 1 << 30,
    "keep_resident_bytes": 16 << 20,
    "warm_slots": 8,
    "pagemap_scan": 1,
}
MAX_MEMORY_BYTES = POOLING["max_memory_bytes"]
# Isolates that can be alive at once in one process (each activation or deploy check holds one).
ISOLATE_SLOTS = POOLING["instances"]


def make_engine(
    settings: Mapping[str, object] | None = None, pooling: dict[str, int] | None = None
) -> tuple[wasmtime.Engine, dict[str, object]]:
    """A fresh engine and the compile settings it was made with (the artifact's cache key).

    The pooling allocator is not part of them: it decides how instances are allocated, not how the
    guest is compiled (an artifact compiled without it loads into an engine with it).
    """
    hold_gil_in_short_calls()
    chosen = dict(ENGINE_SETTINGS if settings is None else settings)
    config = compiler_config(chosen)
    pool = POOLING if pooling is None else pooling
    if pool:
        configure_pooling(config, pool)
    return wasmtime.Engine(config), chosen


def load_guest(engine: wasmtime.Engine, settings: Mapping[str, object]) -> Component:
    """The guest component for `engine` (made with `settings`), from the prebuilt artifact.

    The artifact is built on first use (or by `python -m tenantflow.wasm_build`) and cached.
    """
    return load_component(engine, settings)


def load_guest_file(engine: wasmtime.Engine, settings: Mapping[str, object]) -> tuple[Component, Path]:
    """`load_guest`, and the artifact's path (the image its isolates' memory is mapped from: host/slots.py)."""
    return load_component_file(engine, settings)


class EpochTicker:
    """Advances the engine's epoch every TICK_S so that deadlines (in ticks) interrupt guest code.

    It ticks only while some guest may run (between `hold` and `release`): an idle server, or one whose
    instances all wait parked, does not wake 200 times a second for nothing.
    """

    def __init__(self, engine: wasmtime.Engine, tick_s: float = TICK_S) -> None:
        self._engine = engine
        self._tick_s = tick_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._holders = 0
        self._busy = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tenantflow-epoch", daemon=True)
        self._thread.start()

    def ticks(self, seconds: float) -> int:
        return max(1, int(seconds / self._tick_s) + 1)

    def hold(self) -> None:
        """A guest may run from now until the matching `release`."""
        with self._lock:
            self._holders += 1
            self._busy.set()

    def release(self) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0:
                self._busy.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._busy.wait()
            if self._stop.wait(self._tick_s):
                return
            self._engine.increment_epoch()

    def close(self) -> None:
        self._stop.set()
        self._busy.set()
        self._thread.join()
