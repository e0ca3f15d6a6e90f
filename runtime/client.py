"""A small HTTP client for the tenantflow API (used by the CLI and the tests).

Answers are the contract's models (`tenantflow.runtime.contract`): `client.status(...)` is an
`Instance`, `client.journal(...)` a `Journal`. Errors are `ApiError` with the problem document.
A 429 or 503 is retried (a few times, waiting as Retry-After says, within a bounded total).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel
from tenantflow.runtime.contract import (
    BatchCreated,
    Control,
    Deployed,
    EventAccepted,
    Health,
    Instance,
    InstancePage,
    Journal,
    Version,
    Workflow,
    WorkflowList,
)
from tenantflow.runtime.records import FINISHED

__all__ = ["DEFAULT_URL", "ApiError", "Client", "Retry", "allow_deep_json"]

M = TypeVar("M", bound=BaseModel)

DEFAULT_URL = "http://127.0.0.1:8787"

DEEP_JSON_RECURSION_LIMIT = 4000
"""Stored JSON may nest ~1000 deep (as deep as the guest's own json goes); the json module counts
each level against the recursion limit, on top of the frames of the server's request thread or
the CLI (~30), so the default limit of 1000 cannot read such a value back. 4000 levels of json's C
code fit easily in a thread's stack."""


def allow_deep_json() -> None:
    """Raise this process's recursion limit to DEEP_JSON_RECURSION_LIMIT (never lower it)."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), DEEP_JSON_RECURSION_LIMIT))


class ApiError(Exception):
    """A non-2xx answer; `problem` is the RFC 9457 body (or a stand-in for a non-JSON one)."""

    def __init__(self, status: int, problem: dict[str, Any], headers: httpx.Headers | None = None) -> None:
        self.status = status
        self.problem = problem
        self.headers = headers if headers is not None else httpx.Headers()
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', '')}")

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail", ""))


@dataclass(frozen=True)
class Retry:
    """How the client retries an answer of 429 (quota) or 503 (busy): the server's Retry-After,
    capped at `max_wait_s` each time, at most `attempts` tries and `budget_s` of waiting in all."""

    attempts: int = 4
    max_wait_s: float = 5.0
    budget_s: float = 15.0
    statuses: frozenset[int] = frozenset({429, 503})

    def delay(self, response: httpx.Response, attempt: int) -> float:
        """Seconds to wait before the next try (Retry-After if it is a number, else a doubling backoff)."""
        header = response.headers.get("retry-after", "")
        try:
            wanted = float(header)
        except ValueError:
            wanted = 0.25 * 2**attempt
        return min(max(wanted, 0.0), self.max_wait_s)


NO_RETRY = Retry(attempts=1)


def _seg(value: str) -> str:
    return quote(value, safe="")


class Client:
    def __init__(
        self,
        url: str = DEFAULT_URL,
        key: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        retry: Retry | None = None,
    ) -> None:
        headers = {"Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.url = url.rstrip("/")
        self.retry = retry if retry is not None else Retry()
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The decoded answer (JSON or text); ApiError for a 4xx or 5xx once retries are spent."""
        waited = 0.0
        attempt = 0
        while True:
            response = self._http.request(method, path, **kwargs)
            attempt += 1
            if response.status_code not in self.retry.statuses or attempt >= self.retry.attempts:
                break
            delay = self.retry.delay(response, attempt - 1)
            if waited + delay > self.retry.budget_s:
                break
            time.sleep(delay)
            waited += delay
        if response.status_code >= 400:
            try:
                problem = response.json()
                if not isinstance(problem, dict):
                    raise ValueError
            except ValueError:
                problem = {"title": response.reason_phrase, "status": response.status_code, "detail": response.text}
            raise ApiError(response.status_code, problem, response.headers)
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    def _get(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        return model.model_validate(self.request(method, path, **kwargs))

    @staticmethod
    def _instance_path(workflow: str, instance_id: str) -> str:
        return f"/v1/workflows/{_seg(workflow)}/instances/{_seg(instance_id)}"

    # -- public -----------------------------------------------------------------

    def health(self) -> Health:
        return self._get(Health, "GET", "/healthz")

    def metrics(self) -> str:
        return str(self.request("GET", "/metrics"))

    def openapi(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/openapi.json")
        return result

    # -- workflows --------------------------------------------------------------

    def deploy(self, name: str, source: str) -> Deployed:
        return self._get(Deployed, "PUT", f"/v1/workflows/{_seg(name)}", json={"source": source})

    def workflows(self) -> list[Version]:
        return self._get(WorkflowList, "GET", "/v1/workflows").workflows

    def workflow(self, name: str) -> Workflow:
        return self._get(Workflow, "GET", f"/v1/workflows/{_seg(name)}")

    # -- instances --------------------------------------------------------------

    def start(self, workflow: str, instance_id: str | None = None, params: Any = None) -> Instance:
        body: dict[str, Any] = {"params": params}
        if instance_id is not None:
            body["id"] = instance_id
        return self._get(Instance, "POST", f"/v1/workflows/{_seg(workflow)}/instances", json=body)

    def start_batch(self, workflow: str, items: Iterable[dict[str, Any]]) -> list[Instance]:
        path = f"/v1/workflows/{_seg(workflow)}/instances/batch"
        return self._get(BatchCreated, "POST", path, json=list(items)).instances

    def instances(
        self, workflow: str, status: str | None = None, limit: int | None = None, after: str | None = None
    ) -> InstancePage:
        params: dict[str, Any] = {}
        if status is not None:
            params["status"] = status
        if limit is not None:
            params["limit"] = limit
        if after is not None:
            params["after"] = after
        return self._get(InstancePage, "GET", f"/v1/workflows/{_seg(workflow)}/instances", params=params)

    def status(self, workflow: str, instance_id: str) -> Instance:
        return self._get(Instance, "GET", self._instance_path(workflow, instance_id))

    def journal(self, workflow: str, instance_id: str, after: int = -1, limit: int = 1000) -> Journal:
        """One page of the journal; pass `next_after` back as `after` for the next (None: the last page)."""
        params = {"after": after, "limit": limit}
        return self._get(Journal, "GET", self._instance_path(workflow, instance_id) + "/journal", params=params)

    def send_event(self, workflow: str, instance_id: str, event_type: str, payload: Any = None) -> EventAccepted:
        path = self._instance_path(workflow, instance_id) + "/events"
        return self._get(EventAccepted, "POST", path, json={"type": event_type, "payload": payload})

    def control(self, workflow: str, instance_id: str, action: Control | str) -> Instance:
        return self._get(Instance, "POST", self._instance_path(workflow, instance_id) + f"/{_seg(action)}")

    def pause(self, workflow: str, instance_id: str) -> Instance:
        return self.control(workflow, instance_id, "pause")

    def resume(self, workflow: str, instance_id: str) -> Instance:
        return self.control(workflow, instance_id, "resume")

    def terminate(self, workflow: str, instance_id: str) -> Instance:
        return self.control(workflow, instance_id, "terminate")

    def restart(self, workflow: str, instance_id: str) -> Instance:
        return self.control(workflow, instance_id, "restart")

    def wait(
        self,
        workflow: str,
        instance_id: str,
        statuses: Iterable[str] = FINISHED,
        timeout: float = 30.0,
        interval: float = 0.05,
        max_interval: float = 1.0,
    ) -> Instance:
        """Poll until the instance's status is one of `statuses`; TimeoutError with the last status.

        The first poll comes after `interval`; each wait after that is half again as long, up to
        `max_interval` (and never past the deadline)."""
        wanted = set(statuses)
        deadline = time.monotonic() + timeout
        delay = interval
        while True:
            current = self.status(workflow, instance_id)
            if current.status in wanted:
                return current
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"instance {instance_id} is still {current.status} after {timeout} s")
            time.sleep(min(delay, left))
            delay = min(delay * 1.5, max(max_interval, interval))
