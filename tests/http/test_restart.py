"""Restart from a step over real HTTP: the journal before it is kept (not re-run), the rest re-runs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from helpers_server import ServerProcess, Servers, servers
from tenantflow.client import Client, InvalidInput

FLOW = """
def run(event, step):
    first = step.do("a", lambda: "a-result")
    got = step.wait_for_event("w", event_type="go", timeout="1 hour")
    second = step.do("b", lambda ctx: {"v": got["payload"], "attempt": ctx.attempt})
    return {"first": first, "second": second}
"""


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with servers(tmp_path_factory.mktemp("restart")) as started:
        yield started


@pytest.fixture(scope="module")
def client(group: Servers) -> Iterator[Client]:
    server: ServerProcess = group.start("restart")
    key = server.create_tenant("acme")["api_key"]
    with Client(server.url, key) as api:
        api.deploy("flow", FLOW)
        yield api


def _steps(client: Client, instance_id: str) -> dict[str, Any]:
    return {s.name: s for s in client.instance("flow", instance_id).journal().steps}


def test_restart_from_a_step_keeps_what_came_before(client: Client) -> None:
    handle = client.workflow("flow").start(id="r1")
    handle.wait({"waiting"}, timeout=30)
    handle.send_event("go", 7)
    assert handle.result(timeout=30) == {"first": "a-result", "second": {"v": 7, "attempt": 1}}
    before = _steps(client, "r1")

    restarted = handle.restart(from_step="w")
    assert restarted.status == "queued" and restarted.output is None
    # The event the wait took is buffered again: the re-run takes it, with no new event.
    assert handle.result(timeout=30) == {"first": "a-result", "second": {"v": 7, "attempt": 1}}
    after = _steps(client, "r1")
    assert after["a"].updated_at == before["a"].updated_at  # kept, not run again
    assert after["a"].attempt_log == before["a"].attempt_log
    assert after["b"].updated_at > before["b"].updated_at  # run again
    assert len(after["b"].attempt_log) == 1

    # From the step after the wait, by its name and call count.
    handle.restart(from_step="b", count=1)
    assert handle.result(timeout=30)["second"]["v"] == 7
    assert _steps(client, "r1")["w"].updated_at == after["w"].updated_at


def test_restart_without_a_body_is_from_scratch(client: Client) -> None:
    handle = client.workflow("flow").start(id="r2")
    handle.wait({"waiting"}, timeout=30)
    first_a = _steps(client, "r2")["a"].updated_at
    handle.restart()
    handle.wait({"waiting"}, timeout=30)  # the event buffer went too: it waits again
    assert _steps(client, "r2")["a"].updated_at > first_a


def test_restart_from_a_step_that_is_not_in_the_journal_is_422(client: Client) -> None:
    handle = client.workflow("flow").start(id="r3")
    handle.wait({"waiting"}, timeout=30)
    for step, count in (("nope", 1), ("a", 2), ("b", 1)):
        with pytest.raises(InvalidInput, match="no call"):
            handle.restart(from_step=step, count=count)
    path = "/v1/workflows/flow/instances/r3/restart"
    for body in ({"from": {"name": "a", "count": 0}}, {"from": {"name": ""}}, {"from": "a"}, {"since": 1}):
        answer = client._http.post(path, json=body)  # noqa: SLF001 - a raw request, to send bad bodies
        assert answer.status_code == 422, body
    assert handle.status().status == "waiting"  # nothing changed
