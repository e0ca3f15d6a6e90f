"""guest/ → guest component (componentize-py) → precompiled artifact, cached on disk.

The cache key covers the guest's files, the wasmtime and componentize-py
versions and the engine settings, so a change to any of them builds anew. Each
artifact has a SHA-256 sidecar; an entry whose bytes do not match it, or that
wasmtime refuses to load, is rebuilt and never trusted.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import wasmtime
from wasmtime.component import Component

GUEST_DIR = Path(__file__).resolve().parent.parent / "guest"
WORLD = "workflow"
APP_MODULE = "app"


class BuildError(Exception):
    """The guest component could not be built."""


def cache_dir() -> Path:
    root = os.environ.get("TENANTFLOW_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tenantflow"
    )
    return Path(root)


def _guest_files() -> list[Path]:
    files = [p for p in GUEST_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    if not any(p.suffix == ".wit" for p in files):
        raise BuildError(f"no WIT world under {GUEST_DIR}")
    return sorted(files)


def cache_key(settings: Mapping[str, object]) -> str:
    digest = hashlib.sha256()
    for path in _guest_files():
        digest.update(path.relative_to(GUEST_DIR).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    digest.update(f"wasmtime={version('wasmtime')}\0".encode())
    digest.update(f"componentize-py={version('componentize-py')}\0".encode())
    for name in sorted(settings):
        digest.update(f"{name}={settings[name]}\0".encode())
    return digest.hexdigest()[:32]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _valid(artifact: Path, sidecar: Path) -> bool:
    if not artifact.exists() or not sidecar.exists():
        return False
    return sidecar.read_text().strip() == _sha256_file(artifact)


def _componentize(out: Path) -> None:
    command = [
        sys.executable,
        "-c",
        "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())",
        "-d",
        str(GUEST_DIR / "wit"),
        "-w",
        WORLD,
        "componentize",
        APP_MODULE,
        "-p",
        str(GUEST_DIR),
        "-o",
        str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=out.parent)
    if done.returncode != 0 or not out.exists():
        raise BuildError(f"componentize-py failed:\n{done.stdout}\n{done.stderr[-4000:]}")


@contextmanager
def _step(what: str) -> Iterator[None]:
    """A long step of the one-time build, said on stderr (with a spinner on a terminal) and timed."""
    from rich.console import Console  # here: loading the guest, every process's start, needs no rich

    console = Console(stderr=True, highlight=False)
    started = time.monotonic()
    console.print(f"tenantflow: {what} (once per guest version; cached in {cache_dir()})")
    with console.status(what) if console.is_terminal else contextlib.nullcontext():
        yield
    console.print(f"tenantflow: done in {time.monotonic() - started:.1f} s")


def _atomic_write(path: Path, data: bytes | bytearray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def build_component(engine: wasmtime.Engine, settings: Mapping[str, object]) -> Path:
    """The path of a verified precompiled artifact for `engine`, building it if needed."""
    directory = cache_dir()
    key = cache_key(settings)
    artifact = directory / f"guest-{key}.cwasm"
    sidecar = directory / f"guest-{key}.sha256"
    with _locked(directory / f"guest-{key}.lock"):
        if _valid(artifact, sidecar):
            return artifact
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            wasm = Path(tmp) / "guest.wasm"
            with _step("building the guest component: CPython for WASI and the author SDK (componentize-py)"):
                _componentize(wasm)
            with _step("compiling the guest component to machine code (wasmtime, Cranelift)"):
                try:
                    compiled = Component(engine, wasm.read_bytes()).serialize()
                except wasmtime.WasmtimeError as error:
                    raise BuildError(f"wasmtime could not compile the guest: {error}") from error
        _atomic_write(artifact, compiled)
        _atomic_write(sidecar, hashlib.sha256(compiled).hexdigest().encode())
    return artifact


def load_component(engine: wasmtime.Engine, settings: Mapping[str, object]) -> Component:
    """Deserialize the cached artifact (mmap); a corrupt entry is rebuilt once."""
    return load_component_file(engine, settings)[0]


def load_component_file(engine: wasmtime.Engine, settings: Mapping[str, object]) -> tuple[Component, Path]:
    """`load_component`, and the path of the artifact it maps (its file stays mapped while the component lives)."""
    path = build_component(engine, settings)
    try:
        return Component.deserialize_file(engine, str(path)), path
    except wasmtime.WasmtimeError:
        path.unlink(missing_ok=True)
        path = build_component(engine, settings)
        return Component.deserialize_file(engine, str(path)), path
