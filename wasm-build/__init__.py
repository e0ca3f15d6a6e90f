"""Builds the guest component with componentize-py and precompiles it for one engine.

It knows nothing of the host: the caller passes the engine and the settings it was made with.
"""

from tenantflow.wasm_build.build import (
    BuildError,
    build_component,
    cache_dir,
    cache_key,
    load_component,
    load_component_file,
)
from tenantflow.wasm_build.settings import ENGINE_SETTINGS, compiler_config

__all__ = [
    "ENGINE_SETTINGS",
    "BuildError",
    "build_component",
    "cache_dir",
    "cache_key",
    "compiler_config",
    "load_component",
    "load_component_file",
]
