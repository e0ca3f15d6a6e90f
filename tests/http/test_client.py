"""The Python client in process, over httpx's MockTransport: typed answers, retries, backoff."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from tenantflow.runtime import client as client_module
from tenantflow.runtime.client import ApiError, Client, Retry
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
    with _client(handler, retry=bounded) as api, pytest.raises(ApiError) as caught:
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
        api.pause("wf", "i1")
    assert caught.value.status == 409 and len(calls) == 1 and clock.sleeps == []


def test_wait_backs_off(clock: Clock) -> None:
    polls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal polls
        polls += 1
        return httpx.Response(200, json={**INSTANCE, "status": "waiting"})

    with _client(handler) as api, pytest.raises(TimeoutError, match="still waiting"):
        api.wait("wf", "i1", timeout=10.0, interval=0.05, max_interval=1.0)
    assert clock.sleeps[0] == 0.05
    growing = clock.sleeps[:-1]  # the last wait is cut short by the deadline
    assert all(later >= earlier for earlier, later in zip(growing, growing[1:], strict=False))
    assert sum(clock.sleeps) == pytest.approx(10.0)
    assert max(clock.sleeps) == 1.0
    assert polls < 30  # every 50 ms for 10 s would be 200 polls
