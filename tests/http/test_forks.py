"""Export and fork over real HTTP: an export is the whole instance in one document (bounded), a fork is a new
instance whose journal is a copy of another's before a step (not run again), which runs on from there."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from helpers_server import ServerProcess, cli, servers
from tenantflow.client import AsyncClient, Bundle, Client, Conflict, InvalidInput, NotFound, TooLarge

# Outside step bodies: a step named by a random draw and one by the clock (the fork replays both as they were),
# a step that fails once, a wait, and a last step whose code a new version changes.
FLOW = """
import random, time

def run(event, step):
    first = step.do(f"pick-{random.random()!r}", lambda: "first")
    step.do(f"at-{time.time()!r}", lambda: "clock")

    def flaky(ctx):
        if ctx.attempt < 2:
            raise ValueError("not yet")
        return ctx.attempt

    second = step.do("flaky", flaky, retries={"limit": 2, "delay": "1 second", "backoff": "constant"})
    got = step.wait_for_event("w", event_type="go", timeout="1 hour")
    print("got", got["payload"])
    third = step.do("after", lambda: {"v": got["payload"], "code": CODE})
    return {"first": first, "second": second, "third": third, "event": event.payload}
"""

# Only random draws outside bodies: a replay that draws anew names its first step otherwise and fails.
DICE = """
import random

def run(event, step):
    name = f"roll-{random.random()!r}"
    step.do(name, lambda: 1)
    step.do("inside", lambda: random.random())
    later = f"later-{random.random()!r}"
    step.do(later, lambda: 2)
    return [name, later]
"""

SIMPLE = """
def run(event, step):
    a = step.do("a", lambda: 1)
    b = step.do("b", lambda: a + 1)
    return b
"""


def flow(code: int) -> str:
    return FLOW.replace("CODE", str(code))


@dataclass(frozen=True)
class Live:
    server: ServerProcess
    key: str
    other_key: str


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with servers(tmp_path_factory.mktemp("forks")) as group:
        server: ServerProcess = group.start("forks", workers=2)
        key = str(server.create_tenant("acme")["api_key"])
        other = str(server.create_tenant("zeta")["api_key"])
        yield Live(server, key, other)
        assert " 500 " not in server.log()


@pytest.fixture(scope="module")
def client(live: Live) -> Iterator[Client]:
    with live.server.client(live.key) as api:
        api.deploy("flow", flow(1))
        yield api


@pytest.fixture(scope="module")
def original(client: Client) -> str:
    """A complete instance of flow: its wait took event `go`; an `extra` event stays buffered."""
    handle = client.workflow("flow").start({"p": 1}, id="orig")
    handle.wait({"waiting"}, timeout=30)
    # `extra` first: once `go` is in, the instance may complete before another event reaches it.
    handle.send_event("extra", {"left": "behind"})
    handle.send_event("go", 7)
    assert handle.result(timeout=30)["third"] == {"v": 7, "code": 1}
    return "orig"


def raw(live: Live, path: str) -> Any:
    with live.server.http(live.key) as http:
        answer = http.get(path)
        assert answer.status_code == 200, answer.text
        return answer.json()


def steps(client: Client, workflow: str, instance_id: str) -> list[Any]:
    return client.instance(workflow, instance_id).journal().steps


def test_an_export_is_the_whole_instance(live: Live, client: Client, original: str) -> None:
    bundle = client.instance("flow", original).export()
    Bundle.model_validate(bundle)
    base = f"/v1/workflows/flow/instances/{original}"
    instance, journal = raw(live, base), raw(live, base + "/journal")
    assert bundle["format"] == "tenantflow.bundle/1" and bundle["workflow"] == "flow"
    assert list(bundle) == [
        "format",
        "exported_at",
        "workflow",
        "instance",
        "created_at",
        "seed",
        "version",
        "params",
        "journal",
        "events",
        "log",
    ]
    assert bundle["instance"] == instance
    assert bundle["created_at"] == instance["created_at"] and bundle["params"] == {"p": 1}
    assert bundle["version"] == {
        "version": 1,
        "source_hash": hashlib.sha256(flow(1).encode()).hexdigest(),
        "source": flow(1),
    }
    assert bundle["journal"] == journal["steps"]  # every entry, each as the journal endpoint has it
    names = [s["name"] for s in bundle["journal"]]
    assert names[0].startswith("pick-") and names[1].startswith("at-") and names[2:] == ["flaky", "w", "after"]
    assert [a["ok"] for a in bundle["journal"][2]["attempt_log"]] == [False, True]
    wait_at = bundle["journal"][3]["position"]
    assert [(e["seq"], e["type"], e["payload"], e["consumed_at"]) for e in bundle["events"]] == [
        (1, "extra", {"left": "behind"}, None),
        (2, "go", 7, wait_at),
    ]
    assert "got 7" in bundle["log"]
    assert len(bundle["seed"]) == 64 and int(bundle["seed"], 16) >= 0
    again = client.export("flow", original)
    assert {**again, "exported_at": 0} == {**bundle, "exported_at": 0}  # the same seed each time

    # The CLI prints it (and takes `latest`); another tenant does not find it.
    printed = cli("export", "flow", original, TENANTFLOW_URL=live.server.url, TENANTFLOW_KEY=live.key)
    assert {**json.loads(printed.stdout), "exported_at": 0} == {**bundle, "exported_at": 0}
    with live.server.client(live.other_key) as other, pytest.raises(NotFound):
        other.export("flow", original)
    with pytest.raises(NotFound):
        client.export("flow", "nope")


def test_an_export_is_refused_past_its_limit(live: Live, client: Client) -> None:
    handle = client.workflow("flow").start(id="big")
    handle.wait({"waiting"}, timeout=30)
    # As if it stored 65 MiB: the export refuses before it reads the journal.
    with sqlite3.connect(live.server.db_path) as db:
        db.execute("UPDATE instances SET stored_bytes = ? WHERE instance_id = 'big'", (65 << 20,))
    with pytest.raises(TooLarge, match="64 MiB"):
        handle.export()
    with live.server.http(live.key) as http:
        answer = http.get("/v1/workflows/flow/instances/big/export")
    assert answer.status_code == 413 and answer.headers["content-type"] == "application/problem+json"
    assert "export takes at most" in answer.json()["detail"]
    handle.terminate()


def test_a_fork_copies_the_steps_before_and_runs_the_rest(live: Live, client: Client, original: str) -> None:
    before = steps(client, "flow", original)
    status_before = client.status("flow", original)
    handle = client.instance("flow", original).fork("w", id="f1")
    assert handle.id == "f1" and handle.instance is not None
    assert (handle.instance.status, handle.instance.version, handle.instance.params) == ("queued", 1, {"p": 1})
    handle.wait({"waiting"}, timeout=30)  # the wait is not copied: the event it took is not either
    handle.send_event("go", 8)
    done = handle.result(timeout=30)
    assert done == {"first": "first", "second": 2, "third": {"v": 8, "code": 1}, "event": {"p": 1}}

    forked = steps(client, "flow", "f1")
    assert [s.name for s in forked] == [s.name for s in before]  # the draws and the clock replayed as they were
    for old, new in zip(before[:3], forked[:3], strict=True):
        assert new == old  # copied, not run again: the same times and attempts
    for old, new in zip(before[3:], forked[3:], strict=True):
        assert new.updated_at > old.updated_at  # run in the fork
    assert len(forked[2].attempt_log) == 2 and forked[-1].result == {"v": 8, "code": 1}

    # The original is as it was; the fork has its seed and clock origin, and its own creation time.
    assert steps(client, "flow", original) == before
    assert client.status("flow", original) == status_before
    mine, theirs = client.export("flow", "f1"), client.export("flow", original)
    assert (mine["seed"], mine["created_at"]) == (theirs["seed"], theirs["created_at"])
    assert mine["instance"]["created_at"] > theirs["instance"]["created_at"]
    assert [e["type"] for e in mine["events"]] == ["go"] and mine["events"][0]["payload"] == 8


def test_a_fork_replays_random_draws_outside_steps(client: Client) -> None:
    client.deploy("dice", DICE)
    first = client.workflow("dice").start(id="d1")
    names = first.result(timeout=30)
    fork = first.fork("inside")
    assert fork.result(timeout=30) == names  # not a NonDeterminismError: the copy draws as the original did
    inside = [s for s in fork.client.instance("dice", fork.id).journal().steps if s.name == "inside"]
    original_inside = [s for s in first.journal().steps if s.name == "inside"]
    assert inside[0].result != original_inside[0].result  # run again in the fork, with real randomness


def test_a_fork_runs_a_new_version_from_its_step(client: Client) -> None:
    client.deploy("upgrade", flow(1))
    handle = client.workflow("upgrade").start(id="u1")
    handle.wait({"waiting"}, timeout=30)
    handle.send_event("go", 5)
    assert handle.result(timeout=30)["third"] == {"v": 5, "code": 1}
    assert client.deploy("upgrade", flow(2)).version == 2

    pinned = handle.fork("after", version=1)
    assert pinned.result(timeout=30)["third"] == {"v": 5, "code": 1}
    upgraded = handle.fork("after", id="u2")  # the latest by default
    assert upgraded.instance is not None and upgraded.instance.version == 2
    assert upgraded.result(timeout=30)["third"] == {"v": 5, "code": 2}  # the copied wait's event, the new code
    assert [s.updated_at for s in upgraded.journal().steps[:4]] == [s.updated_at for s in handle.journal().steps[:4]]
    assert handle.status().version == 1


def test_what_a_fork_refuses(live: Live, client: Client, original: str) -> None:
    handle = client.instance("flow", original)
    with pytest.raises(InvalidInput, match="no call 2 of step 'w'"):
        handle.fork("w", count=2)
    with pytest.raises(InvalidInput, match="no call 1 of step 'nope'"):
        handle.fork("nope")
    with pytest.raises(NotFound, match="no version 9"):
        handle.fork("w", version=9)
    with pytest.raises(NotFound):
        client.instance("flow", "nope").fork("w")
    with pytest.raises(Conflict, match="already exists"):
        handle.fork("w", id=original)
    with live.server.client(live.other_key) as other:
        other.deploy("flow", flow(1))
        with pytest.raises(NotFound):
            other.instance("flow", original).fork("w")
    path = f"/v1/workflows/flow/instances/{original}/fork"
    bad = (
        {},
        {"from": None},
        {"from": "w"},
        {"from": {"name": "w", "count": 0}},
        {"from": {"name": ""}},
        {"from": {"name": "w"}, "version": 0},
        {"from": {"name": "w"}, "id": "-bad"},
        {"from": {"name": "w"}, "since": 1},
    )
    with live.server.http(live.key) as http:
        for body in bad:
            answer = http.post(path, json=body)
            assert answer.status_code == 422, (body, answer.text)
        assert http.post(path, content=b"not json").status_code == 400


def test_a_fork_takes_from_the_creation_rate(live: Live) -> None:
    key = str(live.server.create_tenant("slow", "--max-instances-per-minute", "2")["api_key"])
    with live.server.client(key) as slow:
        slow.deploy("simple", SIMPLE)
        slow.workflow("simple").start(id="s1").result(timeout=30)
        slow.instance("simple", "s1").fork("b")
    with live.server.http(key) as http:
        answer = http.post("/v1/workflows/simple/instances/s1/fork", json={"from": {"name": "b"}})
    assert answer.status_code == 429 and "per minute" in answer.json()["detail"]
    assert int(answer.headers["retry-after"]) >= 1


def test_the_cli_forks_and_the_async_client_too(live: Live, client: Client) -> None:
    client.deploy("simple", SIMPLE)
    client.workflow("simple").start(id="c1").result(timeout=30)
    env = {"TENANTFLOW_URL": live.server.url, "TENANTFLOW_KEY": live.key}
    printed = cli("fork", "simple", "latest", "--from", "b", "--id", "c2", "--json", **env)
    assert json.loads(printed.stdout)["id"] == "c2" and json.loads(printed.stdout)["status"] == "queued"
    assert client.instance("simple", "c2").result(timeout=30) == 2
    shown = cli("fork", "simple", "c1", "--from", "a", "--version", "1", **env)
    assert "queued" in shown.stdout
    refused = cli("fork", "simple", "c1", "--from", "nope", check=False, **env)
    assert refused.returncode != 0 and "no call 1 of step 'nope'" in refused.stderr
    assert cli("fork", "simple", "c1", check=False, **env).returncode == 2  # --from is required

    async def forked() -> tuple[Any, dict[str, Any]]:
        async with AsyncClient(live.server.url, live.key) as api:
            handle = await api.instance("simple", "c1").fork("b", count=1, id="c3")
            return await handle.wait(timeout=30), await handle.export()

    done, bundle = asyncio.run(forked())
    assert done.status == "complete" and done.output == 2
    assert [s["name"] for s in bundle["journal"]] == ["a", "b"] and bundle["instance"]["id"] == "c3"


def test_the_routes_need_a_key(live: Live, original: str) -> None:
    base = f"{live.server.url}/v1/workflows/flow/instances/{original}"
    assert httpx.get(base + "/export").status_code == 401
    assert httpx.post(base + "/fork", json={"from": {"name": "w"}}).status_code == 401
