"""Builds the guest component with componentize-py and precompiles it for one engine."""

from tenantflow.wasm_build.build import BuildError, build_component, cache_dir, cache_key

__all__ = ["BuildError", "build_component", "cache_dir", "cache_key"]
