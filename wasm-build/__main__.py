"""`python -m tenantflow.wasm_build`: build (or verify) the cached guest artifact."""

from tenantflow.host.engine import make_engine
from tenantflow.wasm_build.build import build_component

if __name__ == "__main__":
    engine, settings = make_engine()
    print(build_component(engine, settings))
