"""A small HTTP client for the tenantflow API (used by the CLI and the tests)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import httpx
from tenantflow.runtime.records import FINISHED

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
    ) -> None:
        headers = {"Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
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

    @staticmethod
    def _instance_path(workflow: str, instance_id: str) -> str:
        return f"/v1/workflows/{_seg(workflow)}/instances/{_seg(instance_id)}"

    # -- public -----------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/healthz")
        return result

    def metrics(self) -> str:
        return str(self.request("GET", "/metrics"))

    def openapi(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/openapi.json")
        return result

    # -- workflows --------------------------------------------------------------

    def deploy(self, name: str, source: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("PUT", f"/v1/workflows/{_seg(name)}", json={"source": source})
        return result

    def workflows(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/v1/workflows")["workflows"]
        return result

    def workflow(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/v1/workflows/{_seg(name)}")
        return result

    # -- instances --------------------------------------------------------------

    def start(self, workflow: str, instance_id: str | None = None, params: Any = None) -> dict[str, Any]:
        body: dict[str, Any] = {"params": params}
        if instance_id is not None:
            body["id"] = instance_id
        result: dict[str, Any] = self.request("POST", f"/v1/workflows/{_seg(workflow)}/instances", json=body)
        return result

    def start_batch(self, workflow: str, items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request(
            "POST", f"/v1/workflows/{_seg(workflow)}/instances/batch", json=list(items)
        )["instances"]
        return result

    def instances(
        self, workflow: str, status: str | None = None, limit: int | None = None, after: str | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if status is not None:
            params["status"] = status
        if limit is not None:
            params["limit"] = limit
        if after is not None:
            params["after"] = after
        result: dict[str, Any] = self.request("GET", f"/v1/workflows/{_seg(workflow)}/instances", params=params)
        return result

    def status(self, workflow: str, instance_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", self._instance_path(workflow, instance_id))
        return result

    def journal(self, workflow: str, instance_id: str, after: int = -1, limit: int = 1000) -> dict[str, Any]:
        """One page of the journal; pass `next_after` back as `after` for the next (None: the last page)."""
        params = {"after": after, "limit": limit}
        path = self._instance_path(workflow, instance_id) + "/journal"
        result: dict[str, Any] = self.request("GET", path, params=params)
        return result

    def send_event(self, workflow: str, instance_id: str, event_type: str, payload: Any = None) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST",
            self._instance_path(workflow, instance_id) + "/events",
            json={"type": event_type, "payload": payload},
        )
        return result

    def control(self, workflow: str, instance_id: str, action: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", self._instance_path(workflow, instance_id) + f"/{_seg(action)}")
        return result

    def pause(self, workflow: str, instance_id: str) -> dict[str, Any]:
        return self.control(workflow, instance_id, "pause")

    def resume(self, workflow: str, instance_id: str) -> dict[str, Any]:
        return self.control(workflow, instance_id, "resume")

    def terminate(self, workflow: str, instance_id: str) -> dict[str, Any]:
        return self.control(workflow, instance_id, "terminate")

    def restart(self, workflow: str, instance_id: str) -> dict[str, Any]:
        return self.control(workflow, instance_id, "restart")

    def wait(
        self,
        workflow: str,
        instance_id: str,
        statuses: Iterable[str] = FINISHED,
        timeout: float = 30.0,
        interval: float = 0.05,
    ) -> dict[str, Any]:
        """Poll until the instance's status is one of `statuses`; TimeoutError with the last status."""
        wanted = set(statuses)
        deadline = time.monotonic() + timeout
        while True:
            current = self.status(workflow, instance_id)
            if current["status"] in wanted:
                return current
            if time.monotonic() > deadline:
                raise TimeoutError(f"instance {instance_id} is still {current['status']} after {timeout} s")
            time.sleep(interval)
