"""Instance lists over HTTP against a real server: newest first, opaque cursors, time filters, the list across a
tenant's workflows (GET /v1/instances), never another tenant's; the Python clients' calls for them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
from helpers_server import ServerProcess, servers
from tenantflow.client import AsyncClient, Client, NotFound
from tenantflow.runtime.contract import InstancePage
from test_api import ECHO, WAITER, assert_problem


@dataclass(frozen=True)
class Made:
    """What the module's tenant made: ids per workflow, in creation order, and times between the batches."""

    server: ServerProcess
    key: str
    order: list[tuple[str, str]]
    """(workflow, id) of every instance, oldest first."""
    between: list[float]
    """between[k]: a time after batch k was created and before batch k + 1."""


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Made]:
    with servers(tmp_path_factory.mktemp("lists")) as group:
        server = group.start("lists")
        key = str(server.create_tenant("lister")["api_key"])
        order: list[tuple[str, str]] = []
        between: list[float] = []
        with server.client(key) as client:
            client.deploy("waits", WAITER)
            client.deploy("echoes", ECHO)
            # Four batches, a few ms apart: two ids per batch of "waits", one of "echoes".
            for k in range(4):
                created = client.start_batch("waits", [{"id": f"w{k}a"}, {"id": f"w{k}b"}])
                order += [("waits", h.id) for h in sorted(created.instances, key=lambda h: h.id)]
                order.append(("echoes", client.start("echoes", f"e{k}").id))
                time.sleep(0.02)
                between.append(time.time())
                time.sleep(0.02)
            for workflow, instance_id in order:
                client.wait(workflow, instance_id, {"waiting", "complete"}, timeout=30)
        yield Made(server, key, order, between)


@pytest.fixture
def http(made: Made) -> Iterator[httpx.Client]:
    with made.server.http(made.key) as client:
        yield client


@pytest.fixture
def api(made: Made) -> Iterator[Client]:
    with made.server.client(made.key) as client:
        yield client


def ids(page: httpx.Response) -> list[str]:
    assert page.status_code == 200, page.text
    return [i["id"] for i in page.json()["instances"]]


def every_page(http: httpx.Client, path: str, **query: str | int) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    after = None
    while True:
        answer = http.get(path, params={**query, **({"after": after} if after else {})})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        found += body["instances"]
        after = body["next_after"]
        if after is None:
            return found


def test_a_workflows_list_is_newest_first_in_pages(made: Made, http: httpx.Client) -> None:
    newest_first = [i for w, i in reversed(made.order) if w == "waits"]
    assert newest_first[:4] == ["w3b", "w3a", "w2b", "w2a"]  # one batch: the same created_at, by id descending
    first = http.get("/v1/workflows/waits/instances", params={"limit": 3})
    assert ids(first) == newest_first[:3]
    cursor = first.json()["next_after"]
    assert cursor not in newest_first  # opaque: not an id
    second = http.get("/v1/workflows/waits/instances", params={"limit": 3, "after": cursor})
    assert ids(second) == newest_first[3:6]
    for limit in (1, 2, 5, 8):
        assert [i["id"] for i in every_page(http, "/v1/workflows/waits/instances", limit=limit)] == newest_first
    # A page that ends the list says so: no cursor to an empty page.
    assert http.get("/v1/workflows/waits/instances", params={"limit": 8}).json()["next_after"] is None


def test_the_tenants_list_spans_its_workflows(made: Made, http: httpx.Client) -> None:
    everything = every_page(http, "/v1/instances", limit=2)
    assert [(i["workflow"], i["id"]) for i in everything] == list(reversed(made.order))
    assert ids(http.get("/v1/instances", params={"workflow": "echoes"})) == ["e3", "e2", "e1", "e0"]
    assert ids(http.get("/v1/instances", params={"status": "complete"})) == ["e3", "e2", "e1", "e0"]
    assert ids(http.get("/v1/instances", params={"status": "waiting", "limit": 3})) == ["w3b", "w3a", "w2b"]
    assert ids(http.get("/v1/instances", params={"workflow": "nothing-here"})) == []  # a filter: no 404
    assert ids(http.get("/v1/instances", params={"workflow": "waits", "status": "complete"})) == []


def test_lists_filter_by_creation_time(made: Made, http: httpx.Client) -> None:
    b = made.between
    # Strictly after and before; epoch seconds or ISO 8601 with a timezone, alike.
    for after, before in ((b[0], b[2]), (_iso(b[0]), _iso(b[2])), (str(b[0]), _iso(b[2]).replace("Z", "+00:00"))):
        query = {"created_after": after, "created_before": before}
        assert ids(http.get("/v1/instances", params=query)) == ["e2", "w2b", "w2a", "e1", "w1b", "w1a"]
        assert ids(http.get("/v1/workflows/echoes/instances", params=query)) == ["e2", "e1"]
    assert ids(http.get("/v1/instances", params={"created_after": b[2], "status": "complete"})) == ["e3"]
    paged = every_page(http, "/v1/instances", limit=1, created_before=_iso(b[1]), workflow="waits")
    assert [i["id"] for i in paged] == ["w1b", "w1a", "w0b", "w0a"]
    assert ids(http.get("/v1/instances", params={"created_after": b[3]})) == []
    # The same instant in another zone.
    plus_one = datetime.fromtimestamp(b[0], UTC).astimezone(timezone(timedelta(hours=1))).isoformat()
    assert plus_one.endswith("+01:00")
    assert ids(http.get("/v1/instances", params={"created_before": plus_one})) == ["e0", "w0b", "w0a"]


@pytest.mark.parametrize(
    ("query", "word"),
    [
        ({"created_after": "yesterday"}, "created_after"),
        ({"created_after": "2026-11-01T00:00:00"}, "timezone"),  # no zone: which instant?
        ({"created_before": "2026-02-29T00:00:00Z"}, "created_before"),  # not a leap year
        ({"created_before": "1e9"}, "epoch"),
        ({"created_before": "nan"}, "created_before"),
        ({"created_after": ""}, "created_after"),
        ({"after": "w3b!"}, "cursor"),
        ({"after": "w3b"}, "cursor"),  # an id is not a cursor
        ({"workflow": "-bad"}, "workflow"),
        ({"wait": "1"}, "unknown"),
    ],
)
def test_bad_list_queries_are_422(http: httpx.Client, query: dict[str, str], word: str) -> None:
    assert_problem(http.get("/v1/instances", params=query), 422, word)
    if "workflow" not in query:
        assert_problem(http.get("/v1/workflows/waits/instances", params=query), 422, word)


def test_another_tenants_instances_are_never_listed(made: Made, http: httpx.Client) -> None:
    other = str(made.server.create_tenant("nosy")["api_key"])
    with made.server.client(other) as nosy, made.server.http(other) as nosy_http:
        assert ids(nosy_http.get("/v1/instances")) == []
        assert ids(nosy_http.get("/v1/instances", params={"workflow": "waits"})) == []
        assert_problem(nosy_http.get("/v1/workflows/waits/instances"), 404)
        # Its own workflow of the same name: only its own instance.
        nosy.deploy("waits", WAITER)
        nosy.start("waits", "mine")
        for query in ({}, {"workflow": "waits"}, {"created_after": made.between[0]}):
            assert ids(nosy_http.get("/v1/instances", params=query)) == ["mine"]
        # A cursor is a place in the order, not a way in: the lister's, older than "mine", finds nothing.
        cursor = http.get("/v1/instances", params={"limit": 1}).json()["next_after"]
        assert ids(nosy_http.get("/v1/instances", params={"after": cursor})) == []
        assert ids(http.get("/v1/instances", params={"limit": 1})) == ["e3"]
        assert "mine" not in [i["id"] for i in every_page(http, "/v1/instances")]


def test_the_clients_list_across_workflows_and_filter_by_time(made: Made, api: Client) -> None:
    b = made.between
    assert [i.id for i in api.instances(limit=2).instances] == ["e3", "w3b"]
    page = api.instances(workflow=None, status="complete", created_before=b[0])
    assert isinstance(page, InstancePage) and [(i.workflow, i.id) for i in page.instances] == [("echoes", "e0")]
    waits = api.workflow("waits")
    aware = datetime.fromtimestamp(b[2], UTC)
    assert [i.id for i in waits.instances(created_after=aware).instances] == ["w3b", "w3a"]
    naive = datetime.fromtimestamp(b[2])  # local time, as datetime.timestamp reads it
    assert [i.id for i in waits.instances(created_after=naive, limit=1).instances] == ["w3b"]
    second = waits.instances(limit=1, after=waits.instances(limit=1).next_after)
    assert [i.id for i in second.instances] == ["w3a"]
    with pytest.raises(NotFound):
        api.instances("nothing-here")

    async def listed() -> tuple[list[str], list[str]]:
        async with AsyncClient(made.server.url, made.key) as client:
            across = await client.instances(created_after=b[2])
            one = await client.workflow("echoes").instances(created_before=b[0], created_after=0)
            return [i.id for i in across.instances], [i.id for i in one.instances]

    assert asyncio.run(listed()) == (["e3", "w3b", "w3a"], ["e0"])
