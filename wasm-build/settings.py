"""How the guest is compiled: the engine settings the precompiled artifact depends on.

These are compile-time settings (fuel and epoch instrumentation, optimisation level, stack size);
an artifact loads only into an engine made with the same ones. The host makes its engine from
them and adds run-time settings (the pooling allocator) that do not change compiled code.
"""

from __future__ import annotations

from collections.abc import Mapping

import wasmtime

ENGINE_SETTINGS: Mapping[str, object] = {
    "consume_fuel": True,
    "epoch_interruption": True,
    "cranelift_opt_level": "speed",
    "max_wasm_stack": 1 << 20,
}


def compiler_config(settings: Mapping[str, object] = ENGINE_SETTINGS) -> wasmtime.Config:
    """A wasmtime config with these settings (attribute name -> value)."""
    config = wasmtime.Config()
    for name, value in settings.items():
        setattr(config, name, value)
    return config
