"""Bulk actions, per-status counts, id search and pages before over HTTP against a real server: a bounded page per
request with a cursor to go on, a result per instance (done, or skipped with the reason), only the tenant's own
instances; the Python clients' calls for them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from helpers_server import ServerProcess, servers
from tenantflow.client import AsyncClient, Client
from tenantflow.runtime.contract import BulkResult, InstanceCounts
from test_api import ECHO, WAITER, assert_problem


@dataclass(frozen=True)
class Setup:
    server: ServerProcess
    key: str
    other: str


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    with servers(tmp_path_factory.mktemp("bulk")) as group:
        server = group.start("bulk")
        key = str(server.create_tenant("bulker")["api_key"])
        other = str(server.create_tenant("other")["api_key"])
        with server.client(other) as client:
            client.deploy("order", WAITER)
            client.start_batch("order", [{"id": f"order-{n}"} for n in range(3)])
        yield Setup(server, key, other)


def _wait_all(client: Client, workflow: str, ids: list[str], statuses: set[str]) -> None:
    for instance_id in ids:
        client.wait(workflow, instance_id, statuses, timeout=30)


def test_bulk_by_ids_and_by_filter_in_bounded_pages(setup: Setup) -> None:
    with setup.server.client(setup.key) as client, setup.server.http(setup.key) as http:
        client.deploy("order", WAITER)
        client.deploy("mail", ECHO)
        ids = [f"order-{n:02d}" for n in range(12)]
        client.start_batch("order", [{"id": i} for i in ids])
        client.start_batch("mail", [{"id": f"mail-{n}"} for n in range(3)])
        _wait_all(client, "order", ids, {"waiting"})
        _wait_all(client, "mail", [f"mail-{n}" for n in range(3)], {"complete"})

        # By ids: each done, or skipped with why (an unknown id, one already finished).
        answer = http.post(
            "/v1/workflows/order/instances/bulk", json={"action": "pause", "ids": ["order-00", "order-01", "nope"]}
        )
        assert answer.status_code == 200, answer.text
        body = BulkResult.model_validate(answer.json())
        assert (body.done, body.skipped, body.next_after) == (2, 1, None)
        assert [(r.id, r.outcome) for r in body.results] == [
            ("order-00", "done"),
            ("order-01", "done"),
            ("nope", "skipped"),
        ]
        assert "no instance 'nope'" in (body.results[2].reason or "")
        again = client.bulk("pause", "order", ["order-00"])
        [page] = list(again)
        assert page.results[0].outcome == "skipped" and "paused" in (page.results[0].reason or "")

        # Counts across the tenant, and per workflow, by status.
        counts = client.count_instances()
        assert counts.counts["paused"] == 2 and counts.counts["waiting"] == 10 and counts.counts["complete"] == 3
        assert counts.capped == [] and counts.cap == 10_000
        assert client.count_instances("mail").counts == {**dict.fromkeys(counts.counts, 0), "complete": 3}

        # By filter: waiting instances of order, 4 per request; each answer says where to go on.
        first = http.post(
            "/v1/workflows/order/instances/bulk",
            json={"action": "terminate", "filter": {"status": "waiting"}, "limit": 4},
        ).json()
        assert first["done"] == 4 and first["next_after"]
        # Newest first: the batch shares its creation time, so by id descending.
        assert [r["id"] for r in first["results"]] == ["order-11", "order-10", "order-09", "order-08"]
        pages = list(client.bulk("terminate", "order", status="waiting", limit=4))
        assert [p.done for p in pages] == [4, 2] and pages[-1].next_after is None
        assert client.count_instances("order").counts["terminated"] == 10

        # A filter that matches finished instances skips them with the reason.
        mail = list(client.bulk("terminate", "mail"))
        assert [(r.outcome, r.reason) for r in mail[0].results] == [
            ("skipped", "cannot terminate an instance that is complete")
        ] * 3

        # Across workflows, by (workflow, id), and by a tenant-wide filter.
        named = http.post(
            "/v1/instances/bulk",
            json={
                "action": "resume",
                "instances": [{"workflow": "order", "id": "order-00"}, {"workflow": "mail", "id": "x"}],
            },
        ).json()
        assert [(r["workflow"], r["id"], r["outcome"]) for r in named["results"]] == [
            ("order", "order-00", "done"),
            ("mail", "x", "skipped"),
        ]
        restarted = list(client.bulk("restart", status="terminated", created_after=time.time() - 3600))
        assert sum(p.done for p in restarted) == 10
        _wait_all(client, "order", [i for i in ids if i != "order-01"], {"waiting"})  # order-01 is still paused
        assert client.count_instances().counts["waiting"] == 11


def test_bulk_stays_in_the_tenant_and_refuses_bad_requests(setup: Setup) -> None:
    with setup.server.http(setup.key) as http, setup.server.client(setup.other) as theirs:
        # Another tenant's instances are not found: the workflow, and by name through the tenant route.
        assert_problem(
            http.post("/v1/workflows/nothere/instances/bulk", json={"action": "terminate", "filter": {}}), 404
        )
        answer = http.post(
            "/v1/instances/bulk", json={"action": "terminate", "instances": [{"workflow": "order", "id": "order-1"}]}
        ).json()
        # "order" is deployed by both tenants; this tenant has no order-1.
        assert answer["results"][0]["outcome"] == "skipped" and answer["done"] == 0
        assert {i.status for i in theirs.instances("order").instances} != {"terminated"}
        assert theirs.count_instances().counts["terminated"] == 0
        for bad in (
            {"action": "explode", "filter": {}},
            {"action": "pause"},
            {"action": "pause", "ids": ["a"], "filter": {}},
            {"action": "pause", "ids": []},
            {"action": "pause", "ids": ["x"] * 1001},
            {"action": "pause", "filter": {"status": "sleepy"}},
            {"action": "pause", "filter": {}, "limit": 1001},
            {"action": "pause", "filter": {}, "after": "not a cursor!"},
            {"action": "pause", "filter": {}, "after": "abc"},
            {"action": "pause", "ids": ["a"], "limit": 5},
            {"action": "pause", "filter": {"created_after": "yesterday"}},
        ):
            assert_problem(http.post("/v1/workflows/order/instances/bulk", json=bad), 422)
        assert_problem(http.post("/v1/instances/bulk", json={"action": "pause", "ids": ["a"]}), 422)
        assert_problem(httpx.post(setup.server.url + "/v1/instances/bulk", json={"action": "pause"}), 401)


def test_id_search_and_pages_before(setup: Setup) -> None:
    with setup.server.client(setup.key) as client, setup.server.http(setup.key) as http:
        client.deploy("search", ECHO)
        client.start_batch("search", [{"id": i} for i in ("abc", "abc-1", "abd", "ab_2", "zz")])
        found = client.instances(id_prefix="ab").instances
        assert [(i.workflow, i.id) for i in found] == [
            ("search", "ab_2"),
            ("search", "abc"),
            ("search", "abc-1"),
            ("search", "abd"),
        ]
        assert [i.id for i in client.instances("search", id_prefix="abc").instances] == ["abc", "abc-1"]
        page = client.instances(id_prefix="ab", limit=2)
        assert [i.id for i in page.instances] == ["ab_2", "abc"] and page.next_after
        rest = client.instances(id_prefix="ab", limit=2, after=page.next_after)
        assert [i.id for i in rest.instances] == ["abc-1", "abd"] and rest.prev_before
        back = client.instances(id_prefix="ab", limit=2, before=rest.prev_before)
        assert [i.id for i in back.instances] == ["ab_2", "abc"] and back.prev_before is None
        counted = client.count_instances(id_prefix="abc")
        assert sum(counted.counts.values()) == 2

        # Pages newest first, older with after and newer with before, meeting exactly.
        everything = [i.id for i in client.instances("search", limit=100).instances]
        one = client.instances("search", limit=2)
        assert one.prev_before is None
        two = client.instances("search", limit=2, after=one.next_after)
        assert [i.id for i in two.instances] == everything[2:4]
        newer = client.instances("search", limit=2, before=two.prev_before)
        assert [i.id for i in newer.instances] == everything[:2] and newer.prev_before is None
        assert newer.next_after == one.next_after
        both = http.get("/v1/instances", params={"after": one.next_after, "before": two.prev_before, "limit": 2})
        assert [i["id"] for i in both.json()["instances"]] == everything[2:4]  # after wins
        assert_problem(http.get("/v1/instances", params={"id_prefix": "-ab"}), 422)
        assert_problem(http.get("/v1/instances/counts", params={"status": "queued"}), 422)


def test_the_async_client_counts_and_bulks(setup: Setup) -> None:
    async def go() -> tuple[InstanceCounts, list[BulkResult]]:
        async with AsyncClient(setup.server.url, setup.key) as client:
            counts = await client.count_instances("search")
            pages = [page async for page in client.bulk("pause", "search", ["abc", "zz"])]
            return counts, pages

    counts, pages = asyncio.run(go())
    assert sum(counts.counts.values()) == 5
    assert [r.outcome for r in pages[0].results] == ["skipped", "skipped"]  # complete already
