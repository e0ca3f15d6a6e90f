"""Deleting an instance or a workflow over real HTTP: only what has finished, and then all of it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers_server import ServerProcess, Servers, servers
from tenantflow.client import Client, InvalidState, NotFound
from tenantflow.runtime.store import open_store

WAITER = """
def run(event, step):
    step.do("a", lambda: 1)
    return step.wait_for_event("w", event_type="go", timeout="1 hour")["payload"]
"""


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with servers(tmp_path_factory.mktemp("delete")) as started:
        yield started


@pytest.fixture(scope="module")
def server(group: Servers) -> ServerProcess:
    return group.start("delete")


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[Client]:
    with Client(server.url, server.create_tenant("acme")["api_key"]) as api:
        yield api


def _rows(db: str, workflow: str) -> dict[str, int]:
    store = open_store(db)
    try:
        with store.transaction() as tx:
            return {
                table: int(tx.scalar(f"SELECT COUNT(*) AS n FROM {table} WHERE workflow = ?", (workflow,)))
                for table in ("journal", "attempts", "events", "instances", "versions")
            }
    finally:
        store.close()


def test_a_finished_instance_can_be_deleted_and_only_then(server: ServerProcess, client: Client) -> None:
    client.deploy("one", WAITER)
    handle = client.workflow("one").start(id="d1")
    handle.wait({"waiting"}, timeout=30)
    with pytest.raises(InvalidState, match="waiting"):
        handle.delete()
    handle.send_event("go", 1)
    assert handle.result(timeout=30) == 1
    assert handle.delete().id == "d1"
    with pytest.raises(NotFound):
        handle.status()
    assert _rows(server.db, "one") == {"journal": 0, "attempts": 0, "events": 0, "instances": 0, "versions": 1}


def test_a_workflow_goes_with_its_versions_and_instances(server: ServerProcess, client: Client) -> None:
    client.deploy("many", WAITER)
    client.deploy("many", WAITER + "\n# v2\n")
    started = client.workflow("many").start_batch(3).instances
    for handle in started:
        handle.wait({"waiting"}, timeout=30)
    with pytest.raises(InvalidState, match="3 unfinished"):
        client.delete_workflow("many")
    counts = client.versions("many").counts
    assert counts["waiting"] == 3 and counts["complete"] == 0 and set(counts) >= {"queued", "terminated"}
    for handle in started:
        handle.terminate()
    assert client.versions("many").counts["terminated"] == 3
    deleted = client.workflow("many").delete()
    assert deleted.instances == 3
    assert _rows(server.db, "many") == dict.fromkeys(("journal", "attempts", "events", "instances", "versions"), 0)
    with pytest.raises(NotFound):
        client.versions("many")
    with pytest.raises(NotFound):
        client.workflow("many").start()
    with pytest.raises(NotFound):
        client.delete_workflow("many")
    assert client.deploy("many", WAITER).version == 1  # a new workflow of that name starts afresh
