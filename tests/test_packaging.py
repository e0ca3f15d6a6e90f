"""The package as a user gets it: a wheel built from this tree, installed into a fresh virtualenv.

The virtualenv has only the wheel's own dependencies (no editable install, no test tools); the CLI and
a workflow run from there, in a directory outside the tree, so nothing is imported from the checkout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from helpers_server import EXAMPLES, ROOT


def _run(*command: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _tracked_copy(target: Path) -> Path:
    """The checkout's tracked files, copied: setuptools builds in the source tree's build/, where files of an
    earlier build (a module deleted since) would end up in the wheel; and the checkout stays as it was."""
    listed = _run("git", "ls-files", "-z", cwd=ROOT)
    assert listed.returncode == 0, listed.stderr
    for name in filter(None, listed.stdout.split("\0")):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    return target


def test_the_wheel_installs_into_a_fresh_virtualenv_and_runs_a_workflow(tmp_path: Path) -> None:
    source = _tracked_copy(tmp_path / "source")
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", tmp_path / "dist", source, cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    assert "would be ignored" not in built.stdout + built.stderr  # setuptools' warnings of packages left out
    [wheel] = (tmp_path / "dist").glob("tenantflow-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "tenantflow/runtime/store/postgres.py",
        "tenantflow/runtime/engine/parking.py",
        "tenantflow/runtime/http/templates/base.html",
        "tenantflow/guest/app.py",
        "tenantflow/py.typed",
    ):
        assert needed in names, f"{needed} is not in {wheel.name}"

    venv = tmp_path / "venv"
    made = _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    installed = _run(venv / "bin" / "pip", "install", "-q", wheel, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    listed = _run(venv / "bin" / "pip", "list", "--format", "json", cwd=tmp_path)
    packages = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "tenantflow" in packages and not packages & {"pytest", "playwright", "schemathesis", "psycopg"}

    helped = _run(venv / "bin" / "tenantflow", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "serve" in helped.stdout, helped.stderr
    ran = _run(
        venv / "bin" / "tenantflow",
        "run",
        EXAMPLES / "approval.py",
        "--params",
        '{"amount": 120}',
        "--event",
        'approved={"by": "ana"}',
        "--json",
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["status"] == "complete", ran.stdout
    where = _run(
        venv / "bin" / "python", "-c", "import tenantflow.runtime; print(tenantflow.runtime.__file__)", cwd=tmp_path
    )
    assert str(venv) in where.stdout and str(ROOT) not in where.stdout
