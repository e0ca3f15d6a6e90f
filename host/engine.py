"""The wasmtime engine configuration and the epoch ticker that enforces wall-clock deadlines."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi

TICK_S = 0.005
# How often a running guest asks the host whether its (activation or step) deadline has passed.
CHECK_S = 0.05
ENGINE_SETTINGS: dict[str, object] = {
    "consume_fuel": True,
    "epoch_interruption": True,
    "cranelift_opt_level": "speed",
    "max_wasm_stack": 1 << 20,
}
# The pooling allocator reuses instance slots instead of mapping and unmapping memory for every
# activation. With the default allocator, concurrent activations on several threads contend on the
# process's memory map (mmap/munmap per instance) and two threads ran slower than one; pooled, with
# recently used pages kept resident, they scale (see bench/sandbox_bench.py threads_2_vs_1).
POOLING: dict[str, int] = {
    "instances": 128,
    "core_instances_per_component": 64,
    "max_memory_bytes": 1 << 30,
    "keep_resident_bytes": 16 << 20,
    "warm_slots": 8,
}
MAX_MEMORY_BYTES = POOLING["max_memory_bytes"]
# Isolates that can be alive at once in one process (each activation or deploy check holds one).
ISOLATE_SLOTS = POOLING["instances"]


def _pooling(config: wasmtime.Config, pooling: dict[str, int]) -> None:
    # wasmtime-py 50 has no Python API for the pooling allocator; its C API is in the bindings.
    instances = pooling["instances"]
    per_component = pooling["core_instances_per_component"]
    cfg = ffi.wasmtime_pooling_allocation_config_new()
    try:
        ffi.wasmtime_pooling_allocation_config_total_component_instances_set(cfg, instances)
        ffi.wasmtime_pooling_allocation_config_max_core_instances_per_component_set(cfg, per_component)
        ffi.wasmtime_pooling_allocation_config_total_core_instances_set(cfg, instances * per_component)
        ffi.wasmtime_pooling_allocation_config_max_memories_per_component_set(cfg, 8)
        ffi.wasmtime_pooling_allocation_config_total_memories_set(cfg, instances * 2)
        ffi.wasmtime_pooling_allocation_config_max_tables_per_component_set(cfg, per_component)
        ffi.wasmtime_pooling_allocation_config_total_tables_set(cfg, instances * per_component)
        ffi.wasmtime_pooling_allocation_config_total_stacks_set(cfg, instances)
        ffi.wasmtime_pooling_allocation_config_max_memory_size_set(cfg, pooling["max_memory_bytes"])
        ffi.wasmtime_pooling_allocation_config_linear_memory_keep_resident_set(cfg, pooling["keep_resident_bytes"])
        ffi.wasmtime_pooling_allocation_config_table_keep_resident_set(cfg, pooling["keep_resident_bytes"])
        ffi.wasmtime_pooling_allocation_config_max_unused_warm_slots_set(cfg, pooling["warm_slots"])
        ffi.wasmtime_pooling_allocation_strategy_set(config.ptr(), cfg)
    finally:
        ffi.wasmtime_pooling_allocation_config_delete(cfg)


def make_engine(
    settings: dict[str, object] | None = None, pooling: dict[str, int] | None = None
) -> tuple[wasmtime.Engine, dict[str, object]]:
    """A fresh engine and the settings it was made with (part of the artifact cache key)."""
    chosen = dict(ENGINE_SETTINGS if settings is None else settings)
    config = wasmtime.Config()
    for name, value in chosen.items():
        setattr(config, name, value)
    pool = POOLING if pooling is None else pooling
    if pool:
        _pooling(config, pool)
        chosen.update({f"pooling.{name}": value for name, value in pool.items()})
    return wasmtime.Engine(config), chosen


class EpochTicker:
    """Advances the engine's epoch every TICK_S so that deadlines (in ticks) interrupt guest code."""

    def __init__(self, engine: wasmtime.Engine, tick_s: float = TICK_S) -> None:
        self._engine = engine
        self._tick_s = tick_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tenantflow-epoch", daemon=True)
        self._thread.start()

    def ticks(self, seconds: float) -> int:
        return max(1, int(seconds / self._tick_s) + 1)

    def _run(self) -> None:
        while not self._stop.wait(self._tick_s):
            self._engine.increment_epoch()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_size_t,
    ctypes.POINTER(ffi.wasmtime_context_t),
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_uint64),
    ctypes.POINTER(ffi.wasmtime_update_deadline_kind_t),
)
_NO_FINALIZER = ctypes.cast(0, ctypes.CFUNCTYPE(None, ctypes.c_void_p))
_CONTINUE = 0


class EpochCallback:
    """Re-arms a store's epoch deadline: `ticks_left()` > 0 lets the guest run that many more ticks, 0 traps.

    Compiled wasm caches the deadline it saw on entry to a function and rereads it only once the
    cached value has passed, so lowering a store's deadline from a host call (e.g. when a step body
    with a short `timeout` starts) is not seen by a loop already running. Re-arming in short slices
    through this callback bounds that staleness to one slice. One instance serves many stores; keep
    it alive as long as they live.
    """

    def __init__(self, ticks_left: Callable[[], int]) -> None:
        self._ticks_left = ticks_left
        self._fn = _CALLBACK(self._on_deadline)

    def install(self, store: wasmtime.Store) -> None:
        ffi.wasmtime_store_epoch_deadline_callback(store.ptr(), self._fn, None, _NO_FINALIZER)

    def _on_deadline(self, context: Any, env: Any, delta: Any, kind: Any) -> int:
        try:
            ticks = self._ticks_left()
        except BaseException:
            ticks = 0
        if ticks <= 0:
            error = ffi.wasmtime_error_new(b"tenantflow: deadline reached (interrupt)")
            return ctypes.cast(error, ctypes.c_void_p).value or 0
        delta[0] = ticks
        kind[0] = _CONTINUE
        return 0
