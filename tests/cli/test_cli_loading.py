"""The command line loads each command's module when it runs: a worker starts without the client or the server."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import click
import tenantflow.runtime.cli as cli_package
from tenantflow.runtime.cli.main import COMMANDS, main

# What only the HTTP API, its contract, the client and the command line's printing need.
NOT_IN_A_WORKER = (
    "rich",
    "pydantic",
    "httpx",
    "starlette",
    "uvicorn",
    "jinja2",
    "tenantflow.client",
    "tenantflow.runtime.contract",
)


def test_the_command_table_names_every_command_of_every_module() -> None:
    found: dict[str, str] = {}
    for module in pkgutil.iter_modules(cli_package.__path__):
        if module.name.startswith("__"):
            continue  # __main__ runs the command line
        loaded = importlib.import_module(f"{cli_package.__name__}.{module.name}")
        group = getattr(loaded, "commands", None)
        if isinstance(group, click.Group) and module.name != "main":
            found.update(dict.fromkeys(group.commands, module.name))
    assert found == COMMANDS
    ctx = click.Context(main)
    assert main.list_commands(ctx) == sorted(COMMANDS)
    for name in COMMANDS:
        command = main.get_command(ctx, name)
        assert command is not None and command.name == name
    assert main.get_command(ctx, "no-such-command") is None


def test_a_worker_runs_without_the_http_layers_modules(tmp_path: Path) -> None:
    script = f"""
import json, os, signal, sys
from click.testing import CliRunner
from tenantflow.runtime.cli import main
import tenantflow.runtime.cli.worker as worker

seen = {{}}
start = worker.Service.start
def started(self):
    # The workers run: what has the process loaded? Then stop it as an operator would.
    service = start(self)
    seen["modules"] = sorted(m for m in {NOT_IN_A_WORKER!r} if m in sys.modules)
    os.kill(os.getpid(), signal.SIGTERM)
    return service
worker.Service.start = started
result = CliRunner().invoke(main, ["worker", "--db", "sqlite:///{tmp_path / "w.db"}", "--log-level", "warning"])
print(json.dumps({{"exit": result.exit_code, "modules": seen.get("modules"), "output": result.output}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["exit"] == 0, answer
    assert answer["modules"] == [], answer
