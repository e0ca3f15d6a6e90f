"""Retention over real HTTP and the CLI: set, read back and checked; a finished instance past it disappears
in the background, while one within it, an unfinished one and another tenant's stay."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator

import pytest
from helpers_server import ServerProcess, Servers, cli, servers
from tenantflow.client import Client, InvalidInput, NotFound

DOUBLE = """
def run(event, step):
    return step.do("double", lambda: event.payload * 2)
"""
WAITER = """
def run(event, step):
    return step.wait_for_event("w", event_type="go", timeout="1 hour")["payload"]
"""
# The purger's idle pause (engine.retention.IDLE_S) and some slack.
PURGED_WITHIN_S = 20.0


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with servers(tmp_path_factory.mktemp("retention")) as started:
        yield started


@pytest.fixture(scope="module")
def server(group: Servers) -> ServerProcess:
    return group.start("retention")


@pytest.fixture(scope="module")
def keys(server: ServerProcess) -> dict[str, str]:
    return {name: str(server.create_tenant(name)["api_key"]) for name in ("acme", "zeta")}


def _finished_long_ago(server: ServerProcess, tenant: str, workflow: str, instance_id: str, days: float) -> None:
    """Move when the instance finished `days` into the past (in the server's database, as time would)."""
    with sqlite3.connect(server.db_path, timeout=30) as db:
        done = db.execute(
            "UPDATE instances SET finished_at = finished_at - ? WHERE tenant_id = ? AND workflow = ? "
            "AND instance_id = ? AND finished_at IS NOT NULL",
            (days * 86_400, tenant, workflow, instance_id),
        )
        assert done.rowcount == 1, (tenant, workflow, instance_id)


def _exists(client: Client, workflow: str, instance_id: str) -> bool:
    try:
        client.status(workflow, instance_id)
    except NotFound:
        return False
    return True


def test_a_retention_is_set_read_back_and_checked(server: ServerProcess, keys: dict[str, str]) -> None:
    with Client(server.url, keys["acme"]) as client:
        flow = client.workflow("checked")
        flow.deploy(DOUBLE)
        assert flow.retention().model_dump() == {"complete": None, "errored": None, "terminated": None}
        set_ = flow.set_retention(complete="7 days", errored="720 hours", terminated="1 minute")
        assert set_.model_dump() == {"complete": "7 days", "errored": "30 days", "terminated": "1 minute"}
        assert flow.versions().retention == set_
        assert flow.set_retention(terminated="10 years").model_dump() == {
            "complete": None,
            "errored": None,
            "terminated": "3650 days",
        }
        with pytest.raises(InvalidInput, match="1 minute to 10 years"):
            flow.set_retention(complete="59 seconds")
        with pytest.raises(NotFound):
            client.set_retention("nope", complete="1 day")
    with Client(server.url, keys["zeta"]) as theirs, pytest.raises(NotFound):  # another tenant's is not found
        theirs.set_retention("checked", complete="1 day")
    with server.http(keys["acme"]) as http:
        for body in (
            {"complete": "11 years"},
            {"complete": "soon"},
            {"complete": "7 DAYS"},
            {"complete": 604_800_000},
            {"paused": "1 day"},
            {"complete": "9" * 60 + " days"},
        ):
            answer = http.put("/v1/workflows/checked/retention", json=body)
            assert answer.status_code == 422, (body, answer.text)
            assert answer.json()["type"] == "urn:tenantflow:problem:invalid-input"
        assert http.get("/v1/workflows/checked").json()["retention"]["terminated"] == "3650 days"  # unchanged


def test_a_finished_instance_past_its_retention_disappears(server: ServerProcess, keys: dict[str, str]) -> None:
    with Client(server.url, keys["acme"]) as acme, Client(server.url, keys["zeta"]) as zeta:
        for client in (acme, zeta):
            client.deploy("kept", DOUBLE)
            client.deploy("waits", WAITER)
            for instance_id in ("old", "recent"):
                assert client.start("kept", instance_id, 1).result(timeout=30) == 2
        acme.workflow("kept").set_retention(complete="1 hour")
        acme.workflow("waits").set_retention(complete="1 hour", terminated="1 hour")
        waiting = acme.start("waits", "waiting")
        waiting.wait({"waiting"}, timeout=30)
        _finished_long_ago(server, "acme", "kept", "old", days=1)
        _finished_long_ago(server, "zeta", "kept", "old", days=1)  # zeta keeps everything forever

        deadline = time.monotonic() + PURGED_WITHIN_S
        while _exists(acme, "kept", "old") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _exists(acme, "kept", "old"), server.log()[-2000:]
        assert acme.versions("kept").counts["complete"] == 1
        assert _exists(acme, "kept", "recent")
        assert waiting.status().status == "waiting"
        assert _exists(zeta, "kept", "old") and _exists(zeta, "kept", "recent")
    with sqlite3.connect(server.db_path, timeout=30) as db:
        left = db.execute("SELECT COUNT(*) FROM journal WHERE tenant_id = 'acme' AND instance_id = 'old'").fetchone()
    assert left == (0,)


def test_the_cli_sets_and_shows_a_retention(server: ServerProcess, keys: dict[str, str]) -> None:
    with Client(server.url, keys["acme"]) as client:
        client.deploy("cli", DOUBLE)
    remote = ("--url", server.url, "--key", keys["acme"])
    done = cli("retention", "cli", "--complete", "2 days", "--errored", "12 hours", *remote, "--json")
    assert json.loads(done.stdout) == {"complete": "2 days", "errored": "12 hours", "terminated": None}
    shown = cli("retention", "cli", "--db", server.db, "--tenant", "acme", "--json")
    assert json.loads(shown.stdout) == {"complete": "2 days", "errored": "12 hours", "terminated": None}
    cli("retention", "cli", "--db", server.db, "--tenant", "acme", "--terminated", "3 hours")
    view = cli("workflow", "cli", *remote).stdout
    assert "retention" in view and "3 hours" in view and "forever" in view
    refused = cli("retention", "cli", "--complete", "1 second", *remote, check=False)
    assert refused.returncode == 1 and "1 minute to 10 years" in refused.stderr
    cli("retention", "cli", "--forever", "--db", server.db, "--tenant", "acme")
    assert json.loads(cli("workflow", "cli", *remote, "--json").stdout)["retention"] == {
        "complete": None,
        "errored": None,
        "terminated": None,
    }
