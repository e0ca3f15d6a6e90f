"""The Python client in process, over httpx's MockTransport: typed answers and errors, retries, long polls.

(tests/http/test_platform.py drives it against a real server.)"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from tenantflow.client import (
    ApiError,
    AsyncClient,
    Client,
    Conflict,
    InstanceFailed,
    InvalidState,
    NotFound,
    QuotaExceeded,
    Retry,
    Unavailable,
    WaitTimeout,
    WorkflowCodeError,
)
from tenantflow.client import _sync as client_module
from tenantflow.runtime.contract import Instance, Journal

INSTANCE: dict[str, Any] = {
    "id": "i1",
    "workflow": "wf",
    "version": 1,
    "status": "running",
    "params": {"deep": [[[1]]]},
    "output": None,
    "error": None,
    "created_at": 1.0,
    "updated_at": 2.0,
    "wake_at": None,
}


class Clock:
    """time.sleep and time.monotonic for the client module, with no real waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(client_module.time, "sleep", fake.sleep)
    monkeypatch.setattr(client_module.time, "monotonic", fake.monotonic)
    return fake


def _client(handler: Any, **kwargs: Any) -> Client:
    return Client("http://test", "key", transport=httpx.MockTransport(handler), **kwargs)


def _problem(status: int, retry_after: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    body = {"type": "urn:tenantflow:problem:x", "title": "t", "status": status, "detail": "busy"}
    return httpx.Response(status, json=body, headers=headers)


def test_answers_are_the_contract_models() -> None:
    journal = {"id": "i1", "workflow": "wf", "steps": [], "events": [], "log": "", "next_after": None}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=journal if request.url.path.endswith("/journal") else INSTANCE)

    with _client(handler) as api:
        found = api.status("wf", "i1")
        assert isinstance(found, Instance)
        assert found.status == "running" and found.params == {"deep": [[[1]]]}
        assert found.model_dump(exclude_unset=True) == INSTANCE  # what --json prints: the answer as sent
        assert list(found.model_dump(exclude_unset=True)) == list(INSTANCE)
        page = api.journal("wf", "i1")
        assert isinstance(page, Journal) and page.next_after is None


def test_429_and_503_are_retried_as_retry_after_says(clock: Clock) -> None:
    answers = [_problem(429, "2"), _problem(503, "1"), httpx.Response(200, json=INSTANCE)]

    with _client(lambda request: answers.pop(0)) as api:
        assert api.status("wf", "i1").id == "i1"
    assert clock.sleeps == [2.0, 1.0]


def test_retries_are_bounded(clock: Clock) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return _problem(503, "3600")

    bounded = Retry(attempts=3, max_wait_s=5.0, budget_s=60.0)
    with _client(handler, retry=bounded) as api, pytest.raises(Unavailable) as caught:
        api.status("wf", "i1")
    assert caught.value.status == 503
    assert len(calls) == 3
    assert clock.sleeps == [5.0, 5.0]  # an hour's Retry-After is capped

    calls.clear()
    clock.sleeps.clear()
    with _client(handler, retry=Retry(attempts=10, max_wait_s=5.0, budget_s=12.0)) as api, pytest.raises(ApiError):
        api.status("wf", "i1")
    assert sum(clock.sleeps) <= 12.0 and len(calls) == 3


def test_other_errors_are_not_retried(clock: Clock) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return _problem(409)

    with _client(handler) as api, pytest.raises(ApiError) as caught:
        api.instance("wf", "i1").pause()
    assert caught.value.status == 409 and len(calls) == 1 and clock.sleeps == []


def _typed(status: int, kind: str, **extra: Any) -> httpx.Response:
    body = {"type": f"urn:tenantflow:problem:{kind}", "title": "t", "status": status, "detail": "d", **extra}
    return httpx.Response(status, json=body)


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (_typed(404, "not-found"), NotFound),
        (_typed(409, "conflict"), Conflict),
        (_typed(409, "invalid-state"), InvalidState),
        (_typed(422, "workflow-code-error", line=3), WorkflowCodeError),
        (_typed(429, "quota-exceeded", retry_after_s=2.5), QuotaExceeded),
        (httpx.Response(502, text="<html>bad gateway</html>"), ApiError),
    ],
)
def test_problems_are_typed_exceptions(answer: httpx.Response, error: type[ApiError]) -> None:
    with _client(lambda request: answer, retry=Retry(attempts=1)) as api, pytest.raises(error) as caught:
        api.status("wf", "i1")
    assert caught.value.status == answer.status_code
    if isinstance(caught.value, WorkflowCodeError):
        assert caught.value.line == 3
    if isinstance(caught.value, QuotaExceeded):
        assert caught.value.retry_after_s == 2.5
    if answer.status_code == 502:
        assert "bad gateway" in caught.value.detail


def test_wait_is_a_long_poll(clock: Clock) -> None:
    """Each request asks the server to hold it until the status differs from the one last seen; the client
    never sleeps between them."""
    seen: list[dict[str, str]] = []
    statuses = ["queued", "running", "waiting", "waiting", "complete"]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.url.params))
        clock.now += 5.0  # the server held it
        return httpx.Response(200, json={**INSTANCE, "status": statuses.pop(0), "output": 42})

    with _client(handler) as api:
        handle = api.instance("wf", "i1")
        assert handle.result(timeout=60) == 42
    assert seen[0] == {}
    assert seen[1] == {"wait": "30.0", "status": "queued"}
    assert seen[2]["status"] == "running" and seen[3]["status"] == "waiting" and seen[4]["status"] == "waiting"
    assert clock.sleeps == []
    assert handle.instance is not None and handle.instance.status == "complete"


def test_result_raises_for_failures_and_timeouts(clock: Clock) -> None:
    errored = {**INSTANCE, "status": "errored", "error": {"name": "ValueError", "message": "bad"}}
    with _client(lambda request: httpx.Response(200, json=errored)) as api, pytest.raises(InstanceFailed) as failed:
        api.instance("wf", "i1").result()
    assert failed.value.instance.error is not None and failed.value.instance.error.name == "ValueError"

    def slow(request: httpx.Request) -> httpx.Response:
        clock.now += float(request.url.params.get("wait", 0))
        return httpx.Response(200, json={**INSTANCE, "status": "waiting"})

    with _client(slow) as api, pytest.raises(WaitTimeout, match="still waiting after 75 s") as timed_out:
        api.instance("wf", "i1").result(timeout=75)
    assert isinstance(timed_out.value, TimeoutError)


def test_async_client_is_the_same_api() -> None:
    requests: list[httpx.Request] = []
    statuses = ["queued", "complete"]

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if request.method == "POST":
            return httpx.Response(201, json={**INSTANCE, "status": "queued"})
        if request.url.path.endswith("/events"):
            return httpx.Response(202, json={"seq": 1, "type": "go"})
        return httpx.Response(200, json={**INSTANCE, "status": statuses.pop(0), "output": "done"})

    async def main() -> Any:
        transport = httpx.MockTransport(handler)
        async with AsyncClient("http://test", "key", transport=transport) as api:
            handle = await api.workflow("wf").start({"a": 1}, id="i1")
            assert handle.instance is not None and handle.instance.status == "queued"
            return await handle.result(timeout=10)

    assert asyncio.run(main()) == "done"
    assert requests[0].url.path == "/v1/workflows/wf/instances"
    assert requests[0].headers["authorization"] == "Bearer key"


def test_waiting_for_a_passing_status_polls_with_backoff(clock: Clock) -> None:
    """A long poll does not stop at queued or running, so waiting for one of those polls: 50 ms at first,
    then less often, up to 1 s."""
    seen: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.url.params))
        return httpx.Response(200, json={**INSTANCE, "status": "queued"})

    with _client(handler) as api, pytest.raises(WaitTimeout, match="still queued"):
        api.wait("wf", "i1", {"running"}, timeout=10.0)
    assert clock.sleeps[0] == 0.05 and max(clock.sleeps) == 1.0
    assert sum(clock.sleeps) == pytest.approx(10.0)
    assert len(seen) < 30 and all("wait" not in params for params in seen)


def test_wait_returns_a_finished_instance_it_was_not_waiting_for(clock: Clock) -> None:
    """A finished instance will not reach the status waited for: returned at once, not asked again and again."""
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, json={**INSTANCE, "status": "errored"})

    with _client(handler) as api:
        assert api.wait("wf", "i1", {"waiting"}, timeout=30).status == "errored"
    assert len(calls) == 1 and clock.sleeps == []


def test_a_batch_reports_what_it_did_not_create() -> None:
    sent: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        problem = {"type": "urn:tenantflow:problem:conflict", "title": "Conflict", "status": 409, "detail": "taken"}
        return httpx.Response(
            201, json={"instances": [INSTANCE], "errors": [{"index": 1, "id": "i0", "problem": problem}]}
        )

    with _client(handler) as api:
        batch = api.workflow("wf").start_batch([{"id": "i1"}, {"id": "i0"}])
        assert [h.id for h in batch.instances] == ["i1"]
        assert [(e.index, e.id, e.problem.status) for e in batch.errors] == [(1, "i0", 409)]
        api.workflow("wf").start_batch(3, {"n": 1})
    assert sent == [[{"id": "i1"}, {"id": "i0"}], {"count": 3, "params": {"n": 1}}]
