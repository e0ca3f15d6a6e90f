"""`python -m tenantflow.wasm_build`: build (or verify) the cached guest artifact."""

import wasmtime
from tenantflow.wasm_build.build import build_component
from tenantflow.wasm_build.settings import ENGINE_SETTINGS, compiler_config

if __name__ == "__main__":
    print(build_component(wasmtime.Engine(compiler_config(ENGINE_SETTINGS)), ENGINE_SETTINGS))
