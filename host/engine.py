"""The wasmtime engine configuration and the epoch ticker that enforces wall-clock deadlines."""

from __future__ import annotations

import threading

import wasmtime

TICK_S = 0.005
ENGINE_SETTINGS: dict[str, object] = {
    "consume_fuel": True,
    "epoch_interruption": True,
    "cranelift_opt_level": "speed",
    "max_wasm_stack": 1 << 20,
}


def make_engine() -> tuple[wasmtime.Engine, dict[str, object]]:
    """A fresh engine and the settings it was made with (part of the artifact cache key)."""
    config = wasmtime.Config()
    config.consume_fuel = True
    config.epoch_interruption = True
    config.cranelift_opt_level = "speed"
    config.max_wasm_stack = 1 << 20
    return wasmtime.Engine(config), dict(ENGINE_SETTINGS)


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
