"""The SDK is a typed package on the host, and the guest is built from the same files."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import tenantflow
import tenantflow.testing

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / "guest" / "tenantflow"
BIN = Path(sys.executable).parent
PUBLIC = {"WorkflowEntrypoint", "NonRetryableError", "Step", "Event", "StepError", "WaitTimeoutError", "fetch"}


def sdk_files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_the_sdk_imports_on_the_host_from_guest_tenantflow() -> None:
    assert Path(tenantflow.__file__).resolve() == SDK / "__init__.py"
    assert set(tenantflow.__all__) >= PUBLIC
    assert all(hasattr(tenantflow, name) for name in tenantflow.__all__)
    assert all(hasattr(tenantflow.testing, name) for name in tenantflow.testing.__all__)
    assert (SDK / "py.typed").exists()
    # Importing the SDK does not pull in the WIT bindings (they exist only in the guest).
    assert "tenantflow._wit" not in sys.modules


def test_only_the_transport_module_touches_the_wit_bindings() -> None:
    touching = sorted(p.relative_to(SDK).as_posix() for p in SDK.rglob("*.py") if "wit_world" in p.read_text())
    assert touching == ["_wit.py"]


def test_the_guest_component_is_built_from_the_sdk_files() -> None:
    from tenantflow.wasm_build import build

    built = {p.resolve() for p in build._guest_files()}
    assert {p.resolve() for p in SDK.rglob("*.py") if "__pycache__" not in p.parts} <= built


def test_typecheck_links_every_sdk_module() -> None:
    """mypy and import-linter read the package through .typecheck/tenantflow: no SDK module may be missing."""
    links = ROOT / ".typecheck" / "tenantflow"
    for path in SDK.iterdir():
        if path.name != "__pycache__":
            assert (links / path.name).resolve() == path.resolve(), path.name


def mypy(target: Path, cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [str(BIN / "mypy"), "--strict", "--no-incremental", "--no-error-summary", *extra, str(target)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_a_typed_workflow_passes_mypy_strict_and_a_wrong_one_does_not(tmp_path: Path) -> None:
    done = mypy(Path(__file__).parent / "typed_workflow.py", ROOT, "--config-file", str(ROOT / "pyproject.toml"))
    assert done.returncode == 0, done.stdout + done.stderr
    wrong = tmp_path / "wrong.py"
    wrong.write_text(
        "from tenantflow import Event, Step\n\n"
        "def run(event: Event, step: Step) -> str:\n"
        "    step.sleep('nap', ['1 day'])\n"
        "    return step.do('n', lambda: 1)\n"
    )
    done = mypy(wrong, ROOT, "--config-file", str(ROOT / "pyproject.toml"))
    assert done.returncode == 1
    assert 'Argument 2 to "sleep" of "Step" has incompatible type' in done.stdout
    assert 'Incompatible return value type (got "int", expected "str")' in done.stdout


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """The project built as a wheel and installed into a throwaway venv (dependencies from this one)."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [str(BIN / "pip"), "wheel", "-q", "--no-deps", str(ROOT), "-w", str(tmp)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp.glob("tenantflow-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # A path line, not this venv's .pth files: the editable install's finder stays out.
    Path(purelib, "deps.pth").write_text(next(p for p in sys.path if p.endswith("site-packages")) + "\n")
    subprocess.run(
        [str(BIN / "pip"), "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    yield wheel, venv


def test_the_wheel_holds_the_sdk_and_the_guest_copy_of_it(wheel_venv: tuple[Path, Path]) -> None:
    wheel, _ = wheel_venv
    names = set(zipfile.ZipFile(wheel).namelist())
    for rel in sdk_files(SDK):
        assert f"tenantflow/{rel}" in names
        assert f"tenantflow/guest/tenantflow/{rel}" in names
    for name in ("host/__init__.py", "runtime/cli/__init__.py", "wasm_build/build.py", "guest/app.py"):
        assert f"tenantflow/{name}" in names
    assert "tenantflow/guest/wit/world.wit" in names


def test_the_installed_wheel_imports_runs_and_typechecks(wheel_venv: tuple[Path, Path], tmp_path: Path) -> None:
    _, venv = wheel_venv
    python = str(venv / "bin" / "python")
    script = (
        "import pathlib, sys, tenantflow, tenantflow.host, tenantflow.runtime.cli, tenantflow.testing\n"
        "from tenantflow import WorkflowEntrypoint, NonRetryableError, Step, Event, StepError, WaitTimeoutError\n"
        "from tenantflow import fetch\n"
        "from tenantflow.wasm_build import build\n"
        "assert tenantflow.__file__.startswith(sys.prefix), tenantflow.__file__\n"
        "env = tenantflow.testing.WorkflowTestEnvironment()\n"
        "assert env.run(lambda e, s: s.do('x', lambda: e.payload), 3) == 3\n"
        "print(build.cache_key({}))\n"
    )
    done = subprocess.run([python, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    from tenantflow.wasm_build import build

    # The wheel's guest files are the source tree's: it builds the same component (same cache entry).
    assert done.stdout.strip() == build.cache_key({})
    cli = subprocess.run([str(venv / "bin" / "tenantflow"), "--help"], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0 and "Usage: tenantflow" in cli.stdout
    typed = tmp_path / "typed_workflow.py"
    typed.write_text((Path(__file__).parent / "typed_workflow.py").read_text())
    env = dict(os.environ, MYPYPATH="")
    done = subprocess.run(
        [str(BIN / "mypy"), "--strict", "--no-incremental", "--python-executable", python, str(typed)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
