"""Terminate with a rollback and pause of a running step, over real HTTP and the CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from click.testing import CliRunner, Result
from helpers_server import ServerProcess, Servers, servers
from tenantflow.client import Client
from tenantflow.runtime.cli import main

SAGA = """
def run(event, step):
    step.do("book", lambda: "room 12", rollback=lambda out: print("cancelled", out))
    step.do("pay", lambda: 30, rollback=lambda out, ctx: print("refunded", out, type(ctx.error).__name__))
    step.wait_for_event("approval", "approved", timeout="1 day")
    return "done"
"""

SLOW = """
def run(event, step):
    def busy():
        n = 0
        for i in range(10_000_000):  # a few seconds in the sandbox: the pause arrives while it runs
            n += i
        return n
    step.do("busy", busy)
    step.do("next", lambda: 1)
    return "done"
"""


def remote(server: ServerProcess, key: str, *args: str) -> Result:
    env = {"COLUMNS": "200", "TENANTFLOW_URL": server.url, "TENANTFLOW_KEY": key}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    group: Servers
    with servers(tmp_path_factory.mktemp("rollback")) as group:
        yield group.start("rollback")


@pytest.fixture(scope="module")
def key(server: ServerProcess) -> str:
    return str(server.create_tenant("acme")["api_key"])


@pytest.fixture(scope="module")
def client(server: ServerProcess, key: str) -> Iterator[Client]:
    with Client(server.url, key) as api:
        api.deploy("saga", SAGA)
        api.deploy("slow", SLOW)
        yield api


def test_terminate_with_rollback_runs_the_rollbacks_then_terminates(client: Client) -> None:
    handle = client.workflow("saga").start(id="t1")
    handle.wait({"waiting"}, timeout=30)
    asked = handle.terminate(rollback=True)
    assert asked.status in ("queued", "running") and asked.rollback == "terminate"
    done = handle.wait(timeout=30)
    assert (done.status, done.rollback, done.error) == ("terminated", "terminate", None)
    steps = [(s.kind, s.name, s.state) for s in handle.journal().steps]
    assert steps[-2:] == [("rollback", "pay", "done"), ("rollback", "book", "done")]


def test_a_terminate_body_is_checked(server: ServerProcess, key: str, client: Client) -> None:
    client.workflow("saga").start(id="t2").wait({"waiting"}, timeout=30)
    url = f"{server.url}/v1/workflows/saga/instances/t2/terminate"
    headers = {"Authorization": f"Bearer {key}"}
    for body in ('{"rollback": "yes"}', '{"rollback": true, "extra": 1}', "[]"):
        answer = httpx.post(url, content=body, headers={**headers, "Content-Type": "application/json"})
        assert answer.status_code == 422, (body, answer.text)
    assert client.instance("saga", "t2").status().status == "waiting"  # nothing happened
    plain = httpx.post(url, headers=headers)  # no body: a plain terminate, as before
    assert plain.status_code == 200 and plain.json()["status"] == "terminated"
    assert plain.json()["rollback"] is None


def test_cli_terminate_rollback(server: ServerProcess, key: str, client: Client) -> None:
    client.workflow("saga").start(id="t3").wait({"waiting"}, timeout=30)
    done = remote(server, key, "terminate", "saga", "t3", "--rollback", "--json")
    assert done.exit_code == 0 and json.loads(done.stdout)["rollback"] == "terminate"
    assert client.instance("saga", "t3").wait(timeout=30).status == "terminated"
    again = remote(server, key, "terminate", "saga", "t3", "--rollback")
    assert again.exit_code == 1 and "409" in again.stderr


def test_a_pause_waits_for_the_running_step(client: Client) -> None:
    handle = client.workflow("slow").start(id="p1")
    deadline = time.monotonic() + 30
    while handle.status().status == "queued":
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert handle.pause().status == "waiting_for_pause"
    paused = handle.wait({"paused"}, timeout=30)
    assert paused.status == "paused"
    assert [s.name for s in handle.journal().steps] == ["busy"]  # the step ended, the next did not start
    handle.resume()
    assert handle.result(timeout=30) == "done"
