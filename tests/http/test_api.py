"""The HTTP API end to end: a real `tenantflow serve` subprocess on 127.0.0.1, real HTTP."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers_server import EXAMPLES, ServerProcess, Servers, servers
from tenantflow.client import ApiError, Client
from tenantflow.runtime.contract import Health
from tenantflow.runtime.http.api import MAX_BODY, create_app
from tenantflow.runtime.http.openapi import openapi_document
from tenantflow.runtime.store import open_store

APPROVAL = (EXAMPLES / "approval.py").read_text()
ORDER = (EXAMPLES / "order.py").read_text()
AGENT = (EXAMPLES / "agent_loop.py").read_text()

ECHO = """
def run(event, step):
    return step.do("echo", lambda: {"echo": event.payload, "id": event.instance_id})
"""

WAITER = """
def run(event, step):
    got = step.wait_for_event("go", event_type="go", timeout="1 hour")
    return got["payload"]
"""

# A step body that keeps the isolate busy for `ms` milliseconds (time.sleep is refused in the guest).
BUSY = """
import time

def run(event, step):
    ms = (event.payload or {}).get("ms", 300)
    def spin():
        start = time.time()
        while time.time() - start < ms / 1000:
            pass
        return ms
    return step.do("spin", spin)
"""


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with servers(tmp_path_factory.mktemp("api")) as started:
        yield started


@pytest.fixture(scope="module")
def server(group: Servers) -> ServerProcess:
    return group.start("shared")


@pytest.fixture(scope="module")
def acme(server: ServerProcess) -> str:
    return str(server.create_tenant("acme")["api_key"])


@pytest.fixture(scope="module")
def globex(server: ServerProcess) -> str:
    return str(server.create_tenant("globex")["api_key"])


@pytest.fixture
def api(server: ServerProcess, acme: str) -> Iterator[Client]:
    with server.client(acme) as client:
        yield client


@pytest.fixture
def http(server: ServerProcess, acme: str) -> Iterator[httpx.Client]:
    with server.http(acme) as client:
        yield client


def assert_problem(response: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    """An RFC 9457 problem document with this status, whose detail mentions every word."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == status
    assert isinstance(body["type"], str) and body["type"]
    assert "Traceback" not in response.text
    for word in words:
        assert word.lower() in body["detail"].lower(), body
    return body


def operations() -> list[tuple[str, str]]:
    doc = openapi_document()
    return [(method.upper(), path) for path, item in doc["paths"].items() for method in item]


def concrete(path: str) -> str:
    return path.replace("{name}", "approval").replace("{id}", "one")


# -- public endpoints ----------------------------------------------------------------------


def test_health_metrics_and_openapi(server: ServerProcess, api: Client) -> None:
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    api.deploy("echo", ECHO)
    created = api.start("echo", "m1", {"x": 1})
    api.wait("echo", created.id)

    assert httpx.get(server.url + "/metrics").status_code == 401
    operator = server.create_tenant("ops", "--operator")["api_key"]
    metrics = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {operator}"})
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'tenantflow_instances{status="complete",tenant="acme"}' in metrics.text
    assert "tenantflow_activations_total" in metrics.text
    # Requests by route template (ids are not labels), and how long runnable work waits for a worker.
    route = 'route="/v1/workflows/{name}/instances/{id}"'
    assert f'tenantflow_http_requests_total{{method="GET",{route},status="200"}}' in metrics.text
    assert 'tenantflow_http_requests_total{method="GET",route="/metrics",status="401"} 1.0' in metrics.text
    assert "m1" not in metrics.text.replace("tenantflow", "")
    assert "tenantflow_http_request_seconds_bucket" in metrics.text
    assert "tenantflow_queue_lag_seconds 0.0" in metrics.text

    doc = httpx.get(server.url + "/openapi.json").json()
    assert doc == json.loads(json.dumps(openapi_document()))
    assert doc["openapi"].startswith("3.")


def test_openapi_lists_exactly_the_routes_the_server_has(server: ServerProcess) -> None:
    from starlette.routing import Route
    from tenantflow.runtime.engine.metrics import Metrics

    class NoService:
        metrics = Metrics()

    app = create_app(NoService())  # type: ignore[arg-type]
    routes = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route) and route.include_in_schema
        for method in (route.methods or ())
        if method != "HEAD"
    }
    assert routes == set(operations())
    # What the document leaves out is the dashboard's HTML: nothing under the API's own paths.
    documented = {path for _, path in operations()}
    left_out = [route.path for route in app.routes if isinstance(route, Route) and not route.include_in_schema]
    assert left_out and not any(path in documented or path.startswith("/v1/") for path in left_out)


def test_unknown_route_and_wrong_method_are_problems(server: ServerProcess, http: httpx.Client) -> None:
    assert_problem(http.get("/nope"), 404, "/nope")
    assert_problem(http.get("/v1/workflows/a/b/c/d/e"), 404)
    response = http.patch("/v1/workflows/approval")
    assert_problem(response, 405, "PATCH")
    assert "PUT" in response.headers["allow"]
    assert_problem(http.post("/v1/workflows/approval/instances/x/journal"), 405)


# -- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer tf_not-a-key"},
    ],
    ids=["missing", "empty", "no-key", "basic", "unknown-key"],
)
def test_every_v1_call_needs_a_known_key(server: ServerProcess, acme: str, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=server.url, headers=headers) as client:
        for method, path in operations():
            if not path.startswith("/v1/"):
                continue
            response = client.request(method, concrete(path), json={"source": ECHO, "type": "x"})
            body = assert_problem(response, 401)
            assert response.headers["www-authenticate"].startswith("Bearer"), (method, path)
            assert body["instance"] == concrete(path)


def test_the_bearer_scheme_is_case_insensitive(server: ServerProcess, acme: str) -> None:
    response = httpx.get(server.url + "/v1/workflows", headers={"Authorization": f"bearer {acme}"})
    assert response.status_code == 200


# -- workflows --------------------------------------------------------------------------------


def test_deploy_versions_and_listing(api: Client, http: httpx.Client) -> None:
    first = http.put("/v1/workflows/versioned", json={"source": ECHO})
    assert first.status_code == 201
    v1 = first.json()
    assert v1["name"] == "versioned" and v1["version"] == 1 and v1["created"] is True

    again = http.put("/v1/workflows/versioned", json={"source": ECHO})
    assert again.status_code == 200
    assert again.json()["version"] == 1 and again.json()["created"] is False
    assert again.json()["source_hash"] == v1["source_hash"]

    second = http.put("/v1/workflows/versioned", json={"source": ECHO + "\n# v2\n"})
    assert second.status_code == 201 and second.json()["version"] == 2

    detail = api.versions("versioned")
    assert detail.latest == 2
    assert [v.version for v in detail.versions] == [1, 2]
    listed = {w.name: w for w in api.workflows()}
    assert listed["versioned"].version == 2

    assert_problem(http.get("/v1/workflows/never-deployed"), 404, "never-deployed")


def test_versions_and_workflows_come_a_page_at_a_time(api: Client, http: httpx.Client) -> None:
    for n in range(5):
        api.deploy("paged", ECHO + f"\n# {n}\n")
    newest = http.get("/v1/workflows/paged", params={"limit": 2}).json()
    assert [v["version"] for v in newest["versions"]] == [4, 5]
    assert newest["latest"] == 5 and newest["next_before"] == 4
    older = api.versions("paged", before=4, limit=2)
    assert [v.version for v in older.versions] == [2, 3] and older.latest == 5 and older.next_before == 2
    oldest = api.versions("paged", before=older.next_before, limit=2)
    assert [v.version for v in oldest.versions] == [1] and oldest.next_before is None
    assert [v.version for v in api.versions("paged").versions] == [1, 2, 3, 4, 5]  # 100 by default

    api.deploy("paged-b", ECHO)
    first = http.get("/v1/workflows", params={"limit": 1}).json()
    assert len(first["workflows"]) == 1 and first["next_after"] == first["workflows"][0]["name"]
    names, after = [first["workflows"][0]["name"]], first["next_after"]
    while after is not None:
        page = http.get("/v1/workflows", params={"limit": 1, "after": after}).json()
        names += [w["name"] for w in page["workflows"]]
        after = page["next_after"]
    assert names == sorted(names) and {"paged", "paged-b"} <= set(names)
    assert names == [w.name for w in api.workflows()]
    assert_problem(http.get("/v1/workflows/paged", params={"limit": 0}), 422, "limit")
    assert_problem(http.get("/v1/workflows", params={"limit": 1001}), 422, "limit")
    assert_problem(http.get("/v1/workflows/never-deployed", params={"before": 3}), 404, "never-deployed")


def test_the_key_is_checked_before_the_body_or_the_query(server: ServerProcess, api: Client, acme: str) -> None:
    """A create and an instance's read check the key and do their work in one trip to a worker thread; the
    answers keep their order: 401 before 413, 400 or 422, and 422 before 404."""
    api.deploy("ordered", ECHO)
    path = "/v1/workflows/ordered/instances"
    with server.http("tf_not-a-key") as stranger, server.http(acme) as http:
        assert_problem(stranger.post(path, content=b"{not json"), 401)
        assert_problem(stranger.post(path, json={"id": "bad id!"}), 401)
        assert_problem(stranger.get(f"{path}/nope", params={"wait": "soon"}), 401)
        assert_problem(http.post(path, content=b"{not json"), 400)
        assert_problem(http.post(path, json={"id": "bad id!"}), 422, "id")
        assert_problem(http.get(f"{path}/nope", params={"wait": "soon"}), 422, "wait")
        assert_problem(http.get(f"{path}/nope"), 404, "nope")
        created = http.post(path, json={"id": "fine"})
        assert created.status_code == 201 and created.json()["id"] == "fine"
        assert http.get(f"{path}/fine", params={"wait": 10}).json()["status"] == "complete"


def test_a_tenant_deploys_at_most_its_workflow_quota(server: ServerProcess) -> None:
    key = server.create_tenant("few-workflows", "--max-workflows", "2")["api_key"]
    with server.client(key) as api, server.http(key) as http:
        api.deploy("one", ECHO)
        api.deploy("two", ECHO)
        api.deploy("one", ECHO + "\n# v2\n")  # versions of a deployed workflow do not count
        refused = http.put("/v1/workflows/three", json={"source": ECHO})
        assert_problem(refused, 429, "2 workflows", "max_workflows")
        assert int(refused.headers["retry-after"]) > 0
        assert_problem(http.get("/v1/workflows/three"), 404)
        assert http.delete("/v1/workflows/two").status_code == 200
        assert http.put("/v1/workflows/three", json={"source": ECHO}).status_code == 201


def test_deploys_count_in_the_storage_quota(server: ServerProcess) -> None:
    key = server.create_tenant("small-store", "--max-stored-mb", "1")["api_key"]
    draw = random.Random(7)
    with server.http(key) as http:
        for n in range(2):  # ~700 KB each, stored compressed: the second goes past 1 MB
            noise = "".join(draw.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(900_000))
            assert http.put(f"/v1/workflows/big{n}", json={"source": ECHO + f"# {noise}\n"}).status_code == 201
        time.sleep(2.1)  # the tenant's total is summed at most every 2 s
        assert_problem(http.put("/v1/workflows/more", json={"source": ECHO}), 429, "storage quota")


def test_instances_are_pinned_to_the_version_they_started_with(api: Client) -> None:
    api.deploy("pinned", WAITER)
    api.start("pinned", "old")
    api.deploy("pinned", WAITER.replace('got["payload"]', '{"new": got["payload"]}'))
    api.start("pinned", "new")
    for instance_id in ("old", "new"):
        api.wait("pinned", instance_id, {"waiting"})
        api.send_event("pinned", instance_id, "go", 7)
    assert api.wait("pinned", "old").output == 7
    assert api.wait("pinned", "new").output == {"new": 7}
    assert api.status("pinned", "old").version == 1
    assert api.status("pinned", "new").version == 2


@pytest.mark.parametrize(
    ("source", "line", "words"),
    [
        ("def run(event, step):\n    x = (\n", 2, ["never closed"]),
        ("def run(event, step):\n    return 1\n  oops\n", 3, ["indent"]),
        ("x = 1\n", None, ["run(event, step)"]),
        ("import nosuchmodule_xyz\n\ndef run(event, step):\n    pass\n", 1, ["nosuchmodule_xyz"]),
    ],
    ids=["syntax", "indentation", "no-run", "import"],
)
def test_bad_code_is_422_with_the_line(http: httpx.Client, source: str, line: int | None, words: list[str]) -> None:
    body = assert_problem(http.put("/v1/workflows/broken", json={"source": source}), 422, *words)
    assert body["line"] == line
    assert body["title"] == "Workflow code error"
    assert_problem(http.get("/v1/workflows/broken"), 404)  # nothing was stored


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"source": 42}, 422),
        ({"source": None}, 422),
        ({}, 422),
        ({"source": ECHO, "extra": 1}, 422),
        ([ECHO], 422),
        ("def run(event, step): pass", 422),
    ],
    ids=["int", "null", "missing", "unknown-field", "array", "string"],
)
def test_deploy_rejects_wrong_shapes(http: httpx.Client, body: Any, status: int) -> None:
    assert_problem(http.put("/v1/workflows/shapes", json=body), status)


@pytest.mark.parametrize("name", ["-dash", "a" * 65, "sp ace", "dot.ted", "ünï"])
def test_bad_workflow_names_are_422(http: httpx.Client, name: str) -> None:
    assert_problem(http.put(f"/v1/workflows/{name}", json={"source": ECHO}), 422, "workflow name")
    assert_problem(http.post(f"/v1/workflows/{name}/instances", json={}), 422, "workflow name")
    assert_problem(http.get(f"/v1/workflows/{name}/instances/x"), 422, "workflow name")


# -- instances --------------------------------------------------------------------------------


def test_the_approval_example_end_to_end(api: Client, http: httpx.Client) -> None:
    api.deploy("approval", APPROVAL)
    created = http.post("/v1/workflows/approval/instances", json={"id": "exp-1", "params": {"amount": 120}})
    assert created.status_code == 201
    assert {"id": "exp-1", "status": "queued", "version": 1}.items() <= created.json().items()

    waiting = api.wait("approval", "exp-1", {"waiting"})
    assert waiting.output is None and waiting.error is None

    sent = http.post(
        "/v1/workflows/approval/instances/exp-1/events", json={"type": "approved", "payload": {"by": "ana"}}
    )
    assert sent.status_code == 202 and sent.json() == {"seq": 1, "type": "approved"}

    done = api.wait("approval", "exp-1")
    assert done.status == "complete"
    assert done.output == {"approved": True, "by": "ana", "paid": 120, "to": "someone"}
    assert done.updated_at >= done.created_at

    journal = api.journal("approval", "exp-1")
    assert [(s.name, s.kind, s.state) for s in journal.steps] == [
        ("file request", "do", "done"),
        ("notify approver", "do", "done"),
        ("approval", "wait", "done"),
        ("pay out", "do", "done"),
    ]
    assert journal.steps[2].result["payload"] == {"by": "ana"}
    assert journal.events[0].type == "approved" and journal.events[0].consumed_at == 2

    assert_problem(
        http.post("/v1/workflows/approval/instances/exp-1/events", json={"type": "approved"}), 409, "complete"
    )


def test_events_sent_before_the_wait_are_buffered(api: Client) -> None:
    api.deploy("approval", APPROVAL)
    api.start("approval", "early", {"amount": 5})
    api.send_event("approval", "early", "something-else", 1)
    api.send_event("approval", "early", "approved", {"by": "bo"})
    assert api.wait("approval", "early").output["by"] == "bo"


FIVE_STEPS = """
def run(event, step):
    return [step.do(f"s{i}", lambda i=i: i) for i in range(5)]
"""


def test_the_journal_comes_a_page_at_a_time(api: Client, http: httpx.Client) -> None:
    api.deploy("five", FIVE_STEPS)
    api.start("five", "paged")
    assert api.wait("five", "paged").output == [0, 1, 2, 3, 4]
    seen: list[int] = []
    after = -1
    while after is not None:
        page = api.journal("five", "paged", after=after, limit=2)
        assert len(page.steps) <= 2
        seen += [step.position for step in page.steps]
        after = page.next_after
    assert seen == [0, 1, 2, 3, 4]
    assert api.journal("five", "paged").next_after is None
    for bad in ("after=x", "after=-2", "limit=0", "limit=1001", "limit=1e3", "page=2"):
        assert_problem(http.get(f"/v1/workflows/five/instances/paged/journal?{bad}"), 422)


def test_instance_creation_errors(api: Client, http: httpx.Client) -> None:
    api.deploy("echo", ECHO)
    assert http.post("/v1/workflows/echo/instances", json={"id": "taken"}).status_code == 201
    assert_problem(http.post("/v1/workflows/echo/instances", json={"id": "taken"}), 409, "already exists")
    assert_problem(http.post("/v1/workflows/no-such-flow/instances", json={}), 404, "no-such-flow")
    for bad in ["-x", "a" * 65, "", "a b", 5]:
        assert_problem(http.post("/v1/workflows/echo/instances", json={"id": bad}), 422, "instance id")
    assert_problem(http.post("/v1/workflows/echo/instances", json={"params": 1, "name": "x"}), 422, "unknown")
    assert_problem(http.post("/v1/workflows/echo/instances", json=[{"id": "a"}]), 422)
    assert_problem(http.post("/v1/workflows/echo/instances", json="x"), 422)

    # No body at all: a random id and null params.
    created = http.post("/v1/workflows/echo/instances")
    assert created.status_code == 201
    assert api.wait("echo", created.json()["id"]).output == {"echo": None, "id": created.json()["id"]}


def test_unknown_instances_are_404_everywhere(api: Client, http: httpx.Client) -> None:
    api.deploy("echo", ECHO)
    base = "/v1/workflows/echo/instances/ghost"
    assert_problem(http.get(base), 404, "ghost")
    assert_problem(http.get(base + "/journal"), 404, "ghost")
    assert_problem(http.post(base + "/events", json={"type": "x"}), 404, "ghost")
    for action in ("pause", "resume", "terminate", "restart"):
        assert_problem(http.post(f"{base}/{action}"), 404, "ghost")
    assert_problem(http.get("/v1/workflows/ghost-flow/instances"), 404, "ghost-flow")


def test_batch_create(api: Client, http: httpx.Client) -> None:
    api.deploy("echo", ECHO)
    response = http.post("/v1/workflows/echo/instances/batch", json=[{"id": f"b{i}", "params": i} for i in range(3)])
    assert response.status_code == 201
    assert [i["id"] for i in response.json()["instances"]] == ["b0", "b1", "b2"]
    for i in range(3):
        assert api.wait("echo", f"b{i}").output["echo"] == i

    # Each entry that can be created is; the others are listed with their problem (as Cloudflare's createBatch).
    mixed = http.post(
        "/v1/workflows/echo/instances/batch",
        json=[{"id": "b9"}, {"id": "b1"}, {"id": "b10", "params": "x" * ((1 << 20) + 10)}, {"id": "b9"}, {}],
    )
    assert mixed.status_code == 201, mixed.text
    created = [i["id"] for i in mixed.json()["instances"]]
    assert created[0] == "b9" and len(created) == 2  # b9 and the one with a random id
    errors = {(e["index"], e["id"], e["problem"]["status"]) for e in mixed.json()["errors"]}
    assert errors == {(1, "b1", 409), (2, "b10", 413), (3, "b9", 409)}
    assert api.status("echo", "b1").params == 1  # the taken one is untouched
    assert_problem(http.get("/v1/workflows/echo/instances/b10"), 404)
    # Nothing created: 200, and the errors say why.
    none = http.post("/v1/workflows/echo/instances/batch", json=[{"id": "b0"}, {"id": "b1"}])
    assert none.status_code == 200 and none.json()["instances"] == []
    assert [e["problem"]["type"] for e in none.json()["errors"]] == ["urn:tenantflow:problem:conflict"] * 2
    # {count, params}: that many, with random ids.
    counted = http.post("/v1/workflows/echo/instances/batch", json={"count": 3, "params": {"n": 1}})
    assert counted.status_code == 201 and len({i["id"] for i in counted.json()["instances"]}) == 3
    assert all(i["params"] == {"n": 1} for i in counted.json()["instances"])
    assert_problem(http.post("/v1/workflows/echo/instances/batch", json={"count": 101}), 422)
    assert_problem(http.post("/v1/workflows/echo/instances/batch", json={"count": 0}), 422)
    assert_problem(http.post("/v1/workflows/echo/instances/batch", json={"count": 1, "x": 1}), 422)
    assert_problem(http.post("/v1/workflows/echo/instances/batch", json=[]), 422)
    assert_problem(http.post("/v1/workflows/echo/instances/batch", json={"id": "x"}), 422)  # not the count form
    assert_problem(http.post("/v1/workflows/echo/instances/batch", json=[1]), 422)
    assert_problem(http.post("/v1/workflows/echo/instances/batch", json=[{}] * 101), 413, "100")
    assert_problem(http.post("/v1/workflows/echo/instances/batch"), 400, "empty")


def test_listing_filters_and_pages(api: Client, http: httpx.Client) -> None:
    api.deploy("lister", WAITER)
    api.start_batch("lister", [{"id": f"l{i:02d}"} for i in range(5)])
    for i in range(5):
        api.wait("lister", f"l{i:02d}", {"waiting"})
    api.send_event("lister", "l03", "go", "x")
    api.wait("lister", "l03")

    # Newest first; one batch shares its created_at, so by id, descending.
    first = api.instances("lister", limit=2)
    assert [i.id for i in first.instances] == ["l04", "l03"] and first.next_after is not None
    second = api.instances("lister", limit=2, after=first.next_after)
    assert [i.id for i in second.instances] == ["l02", "l01"]
    last = api.instances("lister", limit=2, after=second.next_after)
    assert [i.id for i in last.instances] == ["l00"] and last.next_after is None

    assert [i.id for i in api.instances("lister", status="complete").instances] == ["l03"]
    assert len(api.instances("lister", status="waiting").instances) == 4

    for query, word in [
        ("status=bogus", "status"),
        ("status=", "status"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("after=-bad", "after"),
        ("after=l01", "cursor"),
        ("created_after=soon", "created_after"),
    ]:
        assert_problem(http.get(f"/v1/workflows/lister/instances?{query}"), 422, word)


# -- controls ---------------------------------------------------------------------------------


def test_controls_follow_the_status(api: Client, http: httpx.Client) -> None:
    api.deploy("waiter", WAITER)
    api.start("waiter", "c1")
    api.wait("waiter", "c1", {"waiting"})
    base = "/v1/workflows/waiter/instances/c1"

    assert_problem(http.post(base + "/resume"), 409, "waiting")
    paused = http.post(base + "/pause")
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    assert_problem(http.post(base + "/pause"), 409, "paused")

    # An event sent while paused is kept, and taken after resume.
    assert http.post(base + "/events", json={"type": "go", "payload": "while paused"}).status_code == 202
    time.sleep(0.3)
    assert api.status("waiter", "c1").status == "paused"
    assert http.post(base + "/resume").status_code == 200
    assert api.wait("waiter", "c1").output == "while paused"

    assert_problem(http.post(base + "/terminate"), 409, "complete")
    assert_problem(http.post(base + "/pause"), 409, "complete")
    assert_problem(http.post(base + "/events", json={"type": "go"}), 409, "complete")

    restarted = http.post(base + "/restart")
    assert restarted.status_code == 200 and restarted.json()["status"] == "queued"
    assert api.wait("waiter", "c1", {"waiting"}).output is None
    assert api.journal("waiter", "c1").events == []

    terminated = http.post(base + "/terminate")
    assert terminated.status_code == 200 and terminated.json()["status"] == "terminated"
    assert_problem(http.post(base + "/terminate"), 409, "terminated")
    assert_problem(http.post(base + "/resume"), 409, "terminated")
    assert_problem(http.post(base + "/events", json={"type": "go"}), 409, "terminated")
    time.sleep(0.2)
    assert api.status("waiter", "c1").status == "terminated"


def test_resume_of_a_running_instance_is_409(api: Client, http: httpx.Client) -> None:
    api.deploy("busy", BUSY)
    api.start("busy", "r1", {"ms": 1500})
    api.wait("busy", "r1", {"running"}, timeout=10)
    assert_problem(http.post("/v1/workflows/busy/instances/r1/resume"), 409, "running")
    assert api.wait("busy", "r1").output == 1500


# -- bad input --------------------------------------------------------------------------------


def test_bad_bodies_are_4xx_and_change_nothing(server: ServerProcess, api: Client, http: httpx.Client) -> None:
    api.deploy("approval", APPROVAL)
    api.start("approval", "keep", {"amount": 1})
    api.wait("approval", "keep", {"waiting"})
    before = api.journal("approval", "keep")
    events = "/v1/workflows/approval/instances/keep/events"
    raw = {"Content-Type": "application/json"}

    cases: list[tuple[str, str, bytes, int, str]] = [
        ("PUT", "/v1/workflows/approval", b"{not json", 400, "not valid JSON"),
        ("PUT", "/v1/workflows/approval", b"", 400, "empty"),
        ("PUT", "/v1/workflows/approval", b'{"source": "x"', 400, "not valid JSON"),
        ("PUT", "/v1/workflows/approval", b'{"source": NaN}', 400, "NaN"),
        ("PUT", "/v1/workflows/approval", b"\xff\xfe\x00", 400, "UTF-8"),
        ("PUT", "/v1/workflows/approval", b'{"source": "\\ud800"}', 400, "surrogate"),
        ("PUT", "/v1/workflows/approval", b"[" * 100_000 + b"]" * 100_000, 400, "nested"),
        ("POST", "/v1/workflows/approval/instances", b'{"params": Infinity}', 400, "Infinity"),
        ("POST", "/v1/workflows/approval/instances", b'{"params": 1' + b"0" * 5000 + b"}", 400, "JSON"),
        ("POST", events, b'{"type": 5}', 422, "type"),
        ("POST", events, b'{"type": ""}', 422, "type"),
        ("POST", events, b'{"type": "' + b"t" * 300 + b'"}', 422, "type"),
        ("POST", events, b'{"payload": 1}', 422, "type"),
        ("POST", events, b'{"type": "approved", "extra": 1}', 422, "unknown"),
        ("POST", events, b'"approved"', 422, "object"),
        ("POST", events, b"null", 422, "object"),
    ]
    for method, path, content, status, word in cases:
        response = http.request(method, path, content=content, headers=raw)
        assert_problem(response, status, word)

    after = api.journal("approval", "keep")
    assert after == before
    assert api.status("approval", "keep").status == "waiting"
    assert api.versions("approval").latest == 1
    api.send_event("approval", "keep", "approved", {"by": "cy"})
    assert api.wait("approval", "keep").output["by"] == "cy"


def test_size_limits(server: ServerProcess, api: Client, http: httpx.Client) -> None:
    api.deploy("approval", APPROVAL)
    api.start("approval", "big", {"amount": 1})

    # Over the raw cap: refused before parsing, with or without a Content-Length.
    oversize = b'{"source": "' + b"#" * (MAX_BODY + 10) + b'"}'
    assert_problem(http.put("/v1/workflows/huge", content=oversize), 413, "body")

    def chunks() -> Iterator[bytes]:
        yield b'{"source": "'
        for _ in range(40):
            yield b"#" * 65536
        yield b'"}'

    assert_problem(http.put("/v1/workflows/huge", content=chunks()), 413, "body")

    # Under the raw cap but over the tenant's quotas (1 MiB of source, params, payload).
    big_source = "def run(event, step):\n    return 1\n" + "#" * (1 << 20)
    assert_problem(http.put("/v1/workflows/huge", json={"source": big_source}), 413, "source")
    blob = "x" * (1 << 20)
    assert_problem(http.post("/v1/workflows/approval/instances", json={"params": blob}), 413, "params")
    assert_problem(
        http.post("/v1/workflows/approval/instances/big/events", json={"type": "approved", "payload": blob}),
        413,
        "payload",
    )
    assert_problem(http.get("/v1/workflows/huge"), 404)
    assert server.proc is not None and server.proc.poll() is None
    assert api.health() == Health(status="ok")


# -- tenants ----------------------------------------------------------------------------------


def test_tenants_with_the_same_names_stay_separate(api: Client, server: ServerProcess, globex: str) -> None:
    with server.client(globex) as other, server.http(globex) as other_http:
        api.deploy("shared-name", ECHO)
        other.deploy("shared-name", ECHO.replace('"echo": event.payload', '"globex": event.payload'))
        api.start("shared-name", "same-id", "from acme")
        other.start("shared-name", "same-id", "from globex")
        assert api.wait("shared-name", "same-id").output["echo"] == "from acme"
        assert other.wait("shared-name", "same-id").output["globex"] == "from globex"
        assert api.versions("shared-name").latest == 1 and other.versions("shared-name").latest == 1

        # acme's private workflow and instance: globex gets 404 everywhere (never 403).
        api.deploy("acme-only", WAITER)
        api.start("acme-only", "private")
        api.wait("acme-only", "private", {"waiting"})
        base = "/v1/workflows/acme-only/instances/private"
        assert_problem(other_http.get("/v1/workflows/acme-only"), 404)
        assert_problem(other_http.get("/v1/workflows/acme-only/instances"), 404)
        assert_problem(other_http.post("/v1/workflows/acme-only/instances", json={}), 404)
        assert_problem(other_http.post("/v1/workflows/acme-only/instances/batch", json=[{}]), 404)
        assert_problem(other_http.get(base), 404)
        assert_problem(other_http.get(base + "/journal"), 404)
        assert_problem(other_http.post(base + "/events", json={"type": "go", "payload": "hijack"}), 404)
        for action in ("pause", "resume", "terminate", "restart"):
            assert_problem(other_http.post(f"{base}/{action}"), 404)
        assert "acme-only" not in {w.name for w in other.workflows()}
        assert [i.id for i in other.instances("shared-name").instances] == ["same-id"]

        # Nothing globex did reached acme's instance.
        assert api.status("acme-only", "private").status == "waiting"
        assert api.journal("acme-only", "private").events == []


def test_creation_rate_quota_is_429_with_retry_after(server: ServerProcess) -> None:
    key = server.create_tenant("limited", "--max-instances", "3")["api_key"]
    with server.client(key) as client, server.http(key) as http:
        client.deploy("echo", ECHO)
        for i in range(3):
            assert http.post("/v1/workflows/echo/instances", json={"id": f"q{i}"}).status_code == 201
        response = http.post("/v1/workflows/echo/instances", json={"id": "q3"})
        body = assert_problem(response, 429, "3 per minute")
        retry_after = int(response.headers["retry-after"])
        assert 1 <= retry_after <= 60
        assert body["retry_after_s"] > 0
        assert_problem(http.post("/v1/workflows/echo/instances/batch", json=[{"id": "q4"}]), 429)
        assert_problem(http.get("/v1/workflows/echo/instances/q3"), 404)
        assert len(client.instances("echo").instances) == 3
    # Other tenants are not limited by it.
    other = server.create_tenant("unlimited")["api_key"]
    with server.client(other) as client:
        client.deploy("echo", ECHO)
        client.start_batch("echo", [{"id": f"u{i}"} for i in range(10)])


def _busy_intervals(client: Client, workflow: str, ids: list[str]) -> list[tuple[float, float]]:
    intervals = []
    for instance_id in ids:
        (attempt,) = client.journal(workflow, instance_id).steps[0].attempt_log
        intervals.append((attempt.finished_at - attempt.duration_ms / 1000, attempt.finished_at))
    return sorted(intervals)


def _max_running(client: Client, workflow: str, ids: list[str]) -> int:
    most = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        page = client.instances(workflow, limit=1000).instances
        most = max(most, sum(1 for i in page if i.status == "running"))
        if all(i.status == "complete" for i in page) and len(page) == len(ids):
            return most
        time.sleep(0.02)
    raise AssertionError("the instances did not complete")


def _overlaps(intervals: list[tuple[float, float]]) -> bool:
    return any(later[0] < earlier[1] for earlier, later in zip(intervals, intervals[1:], strict=False))


def test_max_concurrent_one_never_runs_two_at_once(server: ServerProcess) -> None:
    ids = [f"s{i}" for i in range(4)]
    serial = server.create_tenant("serial", "--max-concurrent", "1")["api_key"]
    parallel = server.create_tenant("parallel", "--max-concurrent", "4")["api_key"]
    with server.client(serial) as one, server.client(parallel) as many:
        one.deploy("busy", BUSY)
        many.deploy("busy", BUSY)
        one.start_batch("busy", [{"id": i, "params": {"ms": 300}} for i in ids])
        assert _max_running(one, "busy", ids) == 1
        serial_intervals = _busy_intervals(one, "busy", ids)
        assert not _overlaps(serial_intervals), serial_intervals
        assert serial_intervals[-1][1] - serial_intervals[0][0] >= 4 * 0.3

        # The same observation does see overlap when the quota allows it (the server has 4 workers).
        many.start_batch("busy", [{"id": i, "params": {"ms": 300}} for i in ids])
        assert _max_running(many, "busy", ids) >= 2
        assert _overlaps(_busy_intervals(many, "busy", ids))


# -- examples over HTTP -------------------------------------------------------------------------


def test_order_example_retries_its_flaky_step(api: Client) -> None:
    api.deploy("order", ORDER)
    api.start("order", "o1", {"order": "A-1", "declines": 2, "courier_after": "50 milliseconds"})
    done = api.wait("order", "o1")
    assert done.status == "complete", done
    assert done.output["status"] == "shipped" and done.output["label"] == "LBL-A-1"
    journal = api.journal("order", "o1")
    charge = next(s for s in journal.steps if s.name == "charge card")
    assert charge.state == "done" and charge.attempts == 3
    assert [a.ok for a in charge.attempt_log] == [False, False, True]
    assert charge.attempt_log[0].error_name == "ConnectionError"
    assert charge.result == {"charged": 9.0, "gateway_calls": 3}

    api.start("order", "o2", {"order": "A-2", "card": "stolen"})
    stolen = api.wait("order", "o2")
    assert stolen.output == {"order": "A-2", "status": "cancelled", "reason": "card reported stolen"}
    charge = next(s for s in api.journal("order", "o2").steps if s.name == "charge card")
    assert charge.state == "failed" and charge.attempts == 1
    assert charge.error_name == "NonRetryableError"


def test_agent_loop_example_runs_many_steps(api: Client) -> None:
    api.deploy("agent", AGENT)
    api.start("agent", "a1", {"secret": 42, "high": 1000})
    done = api.wait("agent", "a1", timeout=60)
    assert done.status == "complete", done
    assert done.output["answer"] == 42 and done.output["found"] is True
    steps = api.journal("agent", "a1").steps
    assert len(steps) == 2 * done.output["turns"] + 1
    assert {s.name for s in steps} == {"think", "act", "answer"}


def test_errors_of_the_workflow_show_in_the_status(api: Client) -> None:
    api.deploy("crash", "def run(event, step):\n    step.do('ok', lambda: 1)\n    raise ValueError('boom')\n")
    api.start("crash", "e1")
    done = api.wait("crash", "e1")
    assert done.status == "errored"
    assert done.error.name == "ValueError" and done.error.message == "boom"
    assert done.error.line == 3


def test_outputs_json_cannot_carry_are_still_valid_json(api: Client, http: httpx.Client) -> None:
    source = (
        "def run(event, step):\n"
        "    step.do('nan', lambda: float('nan'))\n"
        "    return {'nan': float('nan'), 'inf': float('-inf'), 'lone': chr(0xD800)}\n"
    )
    api.deploy("odd", source)
    api.start("odd", "o1")
    api.wait("odd", "o1")
    for path in ("/v1/workflows/odd/instances/o1", "/v1/workflows/odd/instances/o1/journal"):
        response = http.get(path)
        assert response.status_code == 200
        assert "NaN" not in response.text and "Infinity" not in response.text
        json.loads(response.text, parse_constant=lambda name: pytest.fail(f"{name} in the answer"))
    output = api.status("odd", "o1").output
    assert output == {"nan": None, "inf": None, "lone": "\ud800"}


# -- the catch-all (in process: a service that breaks on purpose) -----------------------------


def test_an_unexpected_exception_is_a_500_problem_without_details(tmp_path: Path) -> None:
    from tenantflow.runtime.engine.metrics import Metrics

    class Broken:
        metrics = Metrics()

        def authenticate(self, key: str) -> Any:
            raise RuntimeError("secret internal detail /etc/passwd")

    app = create_app(Broken())  # type: ignore[arg-type]

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/v1/workflows", headers={"Authorization": "Bearer x"})

    response = asyncio.run(call())
    body = assert_problem(response, 500)
    assert "secret" not in response.text and "passwd" not in response.text
    assert body["title"] == "Internal server error"


def test_client_raises_api_errors(api: Client) -> None:
    with pytest.raises(ApiError) as caught:
        api.status("nothing", "here")
    assert caught.value.status == 404 and "nothing" in caught.value.detail


def test_the_server_log_has_no_500(server: ServerProcess) -> None:
    # Runs last in this module: every bad input above was answered without a server error.
    assert " 500 " not in server.log()
    assert "Traceback" not in server.log()


# -- graceful shutdown ----------------------------------------------------------------------------

DURABLE = """
import time

def spin(ms):
    start = time.time()
    while time.time() - start < ms / 1000:
        pass
    return ms

def run(event, step):
    n = event.payload["n"]
    before = step.do("before", lambda: {"n": n, "spun": spin(150)})
    step.sleep("nap", "1 second")
    after = step.do("after", lambda: {"n": n * 10, "spun": spin(150)})
    return {"before": before["n"], "after": after["n"]}
"""


def test_sigterm_loses_nothing_and_a_restart_finishes_everything(tmp_path: Path) -> None:
    ids = [f"d{i:02d}" for i in range(12)]
    with servers(tmp_path) as group:
        first = group.start("durable", workers=3)
        key = first.create_tenant("durable")["api_key"]
        with first.client(key) as client:
            client.deploy("durable", DURABLE)
            client.start_batch("durable", [{"id": i, "params": {"n": n}} for n, i in enumerate(ids)])
            # Stop while activations run step bodies and other instances sleep.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                statuses = [i.status for i in client.instances("durable").instances]
                if "running" in statuses and ("waiting" in statuses or "queued" in statuses):
                    break
                time.sleep(0.01)
            assert "running" in statuses, statuses
        started = time.monotonic()
        assert first.terminate(timeout=30) == 0
        assert time.monotonic() - started < 10
        log = first.log()
        assert "stopping workers" in log and "stopped" in log
        assert "Traceback" not in log

        # Stopped cleanly: no instance is left leased as running, and work remains for the restart.
        store = open_store(first.db)
        try:
            statuses = [status for tenant, status, count in store.status_counts() for _ in range(count)]
        finally:
            store.close()
        assert len(statuses) == len(ids)
        assert "running" not in statuses, statuses
        assert statuses.count("complete") < len(ids), statuses

        second = group.start("durable", workers=3)
        with second.client(key) as client:
            for n, instance_id in enumerate(ids):
                done = client.wait("durable", instance_id, timeout=30)
                assert done.status == "complete", done
                assert done.output == {"before": n, "after": n * 10}
                steps = client.journal("durable", instance_id).steps
                assert [(s.name, s.state) for s in steps] == [
                    ("before", "done"),
                    ("nap", "sleeping"),
                    ("after", "done"),
                ]
                # A graceful stop lets a running step body finish and commit: none ran twice.
                for step in (steps[0], steps[2]):
                    assert step.attempts == 1 and len(step.attempt_log) == 1, step
        assert second.terminate() == 0
