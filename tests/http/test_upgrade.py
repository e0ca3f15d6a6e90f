"""Upgrade in flight over real HTTP: a waiting instance moves to a version whose code replays its journal
cleanly; otherwise 409 naming the divergence, and nothing changes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers_server import ServerProcess, Servers, servers
from tenantflow.client import Client, Conflict, InvalidState, NotFound
from tenantflow.runtime.cli import main

V1 = """
import random

def run(event, step):
    order = step.do(f"reserve {random.randint(1, 9)}", lambda: {"seat": 4})
    approval = step.wait_for_event("approval", "approved", timeout="1 day")
    return {"v": 1, "order": order, "by": approval["payload"]}
"""
# The same calls up to the wait (the random name too: the instance's seed); what comes after it is new.
V2 = V1.replace(
    'return {"v": 1,', 'receipt = step.do("receipt", lambda: "r-1")\n    return {"v": 2, "receipt": receipt,'
)
# A different first step: the journal's cannot be replayed.
V3 = V1.replace('f"reserve {random.randint(1, 9)}"', '"book"')


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    group: Servers
    with servers(tmp_path_factory.mktemp("upgrade")) as group:
        yield group.start("upgrade")


@pytest.fixture(scope="module")
def key(server: ServerProcess) -> str:
    return str(server.create_tenant("acme")["api_key"])


@pytest.fixture(scope="module")
def client(server: ServerProcess, key: str) -> Iterator[Client]:
    with Client(server.url, key) as api:
        yield api


def test_a_waiting_instance_moves_only_to_a_version_that_replays_its_journal(client: Client) -> None:
    client.deploy("order", V1)
    handle = client.workflow("order").start(id="u1")
    handle.wait({"waiting"}, timeout=30)
    client.deploy("order", V2)
    client.deploy("order", V3)

    with pytest.raises(Conflict) as diverged:
        handle.upgrade(3)
    assert "at position 0 the journal holds do 'reserve" in str(diverged.value) and "do 'book'" in str(diverged.value)
    assert handle.status().version == 1  # nothing changed

    moved = handle.upgrade(2)
    assert (moved.version, moved.status) == (2, "waiting")
    handle.send_event("approved", "ada")
    assert handle.result(timeout=30) == {"v": 2, "receipt": "r-1", "order": {"seat": 4}, "by": "ada"}


def test_only_a_waiting_or_paused_instance_and_a_known_version(client: Client) -> None:
    client.deploy("simple", "def run(event, step):\n    return step.do('a', lambda: 1)\n")
    handle = client.workflow("simple").start(id="s1")
    assert handle.result(timeout=30) == 1
    with pytest.raises(InvalidState):
        handle.upgrade(1)
    client.deploy("held", V1)
    held = client.workflow("held").start(id="h1")
    held.wait({"waiting"}, timeout=30)
    with pytest.raises(NotFound):
        held.upgrade(7)
    assert held.upgrade(1).version == 1  # its own version: nothing to do


def test_the_cli_upgrade(server: ServerProcess, key: str, client: Client) -> None:
    client.deploy("cli", V1)
    client.workflow("cli").start(id="c1").wait({"waiting"}, timeout=30)
    client.deploy("cli", V3)
    env = {"TENANTFLOW_URL": server.url, "TENANTFLOW_KEY": key, "COLUMNS": "200"}
    refused = CliRunner().invoke(main, ["upgrade", "cli", "latest", "--version", "2"], env=env)
    assert refused.exit_code == 1 and "409" in refused.output
    assert "the journal holds" in refused.output


def test_export_then_replay_on_this_machine(server: ServerProcess, key: str, client: Client, tmp_path: Path) -> None:
    client.deploy("trip", V1)
    handle = client.workflow("trip").start(id="x1")
    handle.wait({"waiting"}, timeout=30)
    handle.send_event("approved", "grace")
    assert handle.result(timeout=30)["by"] == "grace"
    env = {"TENANTFLOW_URL": server.url, "TENANTFLOW_KEY": key, "COLUMNS": "200"}
    exported = CliRunner().invoke(main, ["export", "trip", "x1"], env=env)
    assert exported.exit_code == 0, exported.output
    bundle = tmp_path / "x1.json"
    bundle.write_text(exported.output)
    clean = CliRunner().invoke(main, ["replay", str(bundle), "--json"])
    assert clean.exit_code == 0, clean.output
    verdict = json.loads(clean.output)
    assert verdict["clean"] and verdict["output"] == {"v": 1, "order": {"seat": 4}, "by": "grace"}
    other = tmp_path / "v3.py"
    other.write_text(V3)
    diverged = CliRunner().invoke(main, ["replay", str(bundle), "--source", str(other)], env={"COLUMNS": "200"})
    assert diverged.exit_code == 1 and "diverges: at position 0" in diverged.output
