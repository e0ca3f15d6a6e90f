"""The API's calls as data, shared by `Client` and `AsyncClient`: each says its method, path, query,
body and how to read the answer; the two clients only send them (sans-I/O, as httpx's own core is).
Also the retry policy for 429 and 503 answers, and the steps of a wait (long polls)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel
from tenantflow.client._errors import error_for
from tenantflow.runtime import contract as c

__all__ = ["DEFAULT_URL", "LONG_POLL_S", "PASSING", "Batch", "Call", "Poll", "Retry", "Day", "Time", "calls"]

T = TypeVar("T")
H = TypeVar("H")
M = TypeVar("M", bound=BaseModel)

Time = float | datetime
"""A time a list filters on: epoch seconds, or a datetime (naive: local time)."""

Day = date | float | datetime | str
"""A day a usage report starts or ends on: a date (UTC), a time whose UTC day is meant (epoch seconds, a datetime),
or text as the API takes it (2026-01-31)."""

DEFAULT_URL = "http://127.0.0.1:8787"
LONG_POLL_S = 30.0
"""The longest one long poll of a wait asks the server to hold (a wait longer than this makes several)."""

PASSING = frozenset({"queued", "running", "waiting_for_pause"})
"""Statuses an instance passes through: a long poll does not stop at them."""

_NO_BODY = object()


class Poll:
    """The pauses between polls: 50 ms, then half again as long each time, up to 1 s, never past the end."""

    def __init__(self, first: float = 0.05, most: float = 1.0) -> None:
        self.pause = first
        self.most = most

    def next(self, left: float) -> float:
        pause = min(self.pause, left)
        self.pause = min(self.pause * 1.5, self.most)
        return pause


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    read: Callable[[Any], T]
    body: Any = _NO_BODY
    params: Mapping[str, Any] = field(default_factory=dict)
    hold_s: float = 0.0
    """How long the server may hold the request (a long poll): added to the read timeout."""

    def request(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        kwargs: dict[str, Any] = {"params": dict(self.params)}
        t = http.timeout
        if self.hold_s and t.read is not None:
            kwargs["timeout"] = httpx.Timeout(t.connect, read=t.read + self.hold_s, write=t.write, pool=t.pool)
        if self.body is not _NO_BODY:
            kwargs["json"] = self.body
        return http.build_request(self.method, self.path, **kwargs)

    def answer(self, response: httpx.Response) -> T:
        """The answer read into its model; the typed ApiError for a 4xx or 5xx."""
        if response.status_code >= 400:
            raise error_for(response)
        if response.headers.get("content-type", "").startswith("application/json"):
            return self.read(response.json())
        return self.read(response.text)


@dataclass(frozen=True)
class Retry:
    """How the client retries an answer of 429 (quota) or 503 (busy): the server's Retry-After,
    capped at `max_wait_s` each time, at most `attempts` tries and `budget_s` of waiting in all."""

    attempts: int = 4
    max_wait_s: float = 5.0
    budget_s: float = 15.0
    statuses: frozenset[int] = frozenset({429, 503})

    def delay(self, response: httpx.Response, attempt: int, waited: float) -> float | None:
        """Seconds to wait before try `attempt + 1` (Retry-After if it is a number, else a doubling backoff);
        None: give up and raise."""
        if response.status_code not in self.statuses or attempt >= self.attempts:
            return None
        try:
            wanted = float(response.headers.get("retry-after", ""))
        except ValueError:
            wanted = 0.25 * 2 ** (attempt - 1)
        delay = min(max(wanted, 0.0), self.max_wait_s)
        return None if waited + delay > self.budget_s else delay


NO_RETRY = Retry(attempts=1)


def _seg(value: str) -> str:
    return quote(value, safe="")


def _model(model: type[M]) -> Callable[[Any], M]:
    return model.model_validate


def _instance(workflow: str, instance_id: str) -> str:
    return f"/v1/workflows/{_seg(workflow)}/instances/{_seg(instance_id)}"


def _tenant(name: str) -> str:
    return f"/v1/admin/tenants/{_seg(name)}"


def _day(value: Day) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.isoformat()
    return c.time_text(value)


def _usage_params(first: Day | None, last: Day | None, **given: str | None) -> dict[str, str]:
    days = {"from": None if first is None else _day(first), "to": None if last is None else _day(last)}
    return {k: v for k, v in {**days, **given}.items() if v is not None}


def _present(**given: Any) -> dict[str, Any]:
    """The query parameters that are given (not None)."""
    return {k: v for k, v in given.items() if v is not None}


def _quotas(quotas: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: list(v) if k == "egress" else v for k, v in (quotas or {}).items()}


class calls:  # noqa: N801 - a namespace of call builders, read as `calls.deploy(...)`
    @staticmethod
    def health() -> Call[c.Health]:
        return Call("GET", "/healthz", _model(c.Health))

    @staticmethod
    def metrics() -> Call[str]:
        return Call("GET", "/metrics", str)

    @staticmethod
    def openapi() -> Call[dict[str, Any]]:
        return Call("GET", "/openapi.json", dict)

    @staticmethod
    def deploy(name: str, source: str) -> Call[c.Deployed]:
        return Call("PUT", f"/v1/workflows/{_seg(name)}", _model(c.Deployed), {"source": source})

    @staticmethod
    def workflows(after: str | None = None) -> Call[c.WorkflowList]:
        return Call("GET", "/v1/workflows", _model(c.WorkflowList), params=_present(after=after))

    @staticmethod
    def versions(name: str, before: int | None = None, limit: int | None = None) -> Call[c.Workflow]:
        params = _present(before=before, limit=limit)
        return Call("GET", f"/v1/workflows/{_seg(name)}", _model(c.Workflow), params=params)

    @staticmethod
    def set_retention(name: str, retention: Mapping[str, str | None]) -> Call[c.Retention]:
        return Call("PUT", f"/v1/workflows/{_seg(name)}/retention", _model(c.Retention), dict(retention))

    @staticmethod
    def start(workflow: str, instance_id: str | None, params: Any) -> Call[c.Instance]:
        body: dict[str, Any] = {"params": params}
        if instance_id is not None:
            body["id"] = instance_id
        return Call("POST", f"/v1/workflows/{_seg(workflow)}/instances", _model(c.Instance), body)

    @staticmethod
    def start_batch(workflow: str, items: Iterable[Mapping[str, Any]] | int, params: Any) -> Call[c.BatchCreated]:
        body: Any = {"count": items, "params": params} if isinstance(items, int) else [dict(i) for i in items]
        return Call("POST", f"/v1/workflows/{_seg(workflow)}/instances/batch", _model(c.BatchCreated), body)

    @staticmethod
    def instances(
        workflow: str | None,
        status: str | None = None,
        limit: int | None = None,
        after: str | None = None,
        created_after: Time | None = None,
        created_before: Time | None = None,
        before: str | None = None,
        id_prefix: str | None = None,
    ) -> Call[c.InstancePage]:
        """A page of one workflow's instances, or (`workflow` None) of all the tenant's; newest first."""
        given: dict[str, Any] = {
            "status": status,
            "limit": limit,
            "after": after,
            "before": before,
            "id_prefix": id_prefix,
        }
        for name, at in (("created_after", created_after), ("created_before", created_before)):
            given[name] = None if at is None else c.time_text(at)
        params = _present(**given)
        path = "/v1/instances" if workflow is None else f"/v1/workflows/{_seg(workflow)}/instances"
        return Call("GET", path, _model(c.InstancePage), params=params)

    @staticmethod
    def counts(
        workflow: str | None,
        created_after: Time | None = None,
        created_before: Time | None = None,
        id_prefix: str | None = None,
    ) -> Call[c.InstanceCounts]:
        given: dict[str, Any] = {"workflow": workflow, "id_prefix": id_prefix}
        for name, at in (("created_after", created_after), ("created_before", created_before)):
            given[name] = None if at is None else c.time_text(at)
        params = {k: v for k, v in given.items() if v is not None}
        return Call("GET", "/v1/instances/counts", _model(c.InstanceCounts), params=params)

    @staticmethod
    def bulk(
        action: str,
        workflow: str | None,
        ids: Iterable[str] | None = None,
        instances: Iterable[tuple[str, str]] | None = None,
        status: str | None = None,
        created_after: Time | None = None,
        created_before: Time | None = None,
        id_prefix: str | None = None,
        after: str | None = None,
        limit: int | None = None,
    ) -> Call[c.BulkResult]:
        """One request of a bulk action: the named instances (`ids` of `workflow`, or (workflow, id) pairs), or
        a page of those the filter matches (`after`: where the previous answer said to go on)."""
        body: dict[str, Any] = {"action": action}
        if ids is not None:
            if workflow is None:
                raise ValueError("ids are a workflow's: give the workflow, or (workflow, id) pairs as instances")
            body["ids"] = list(ids)
        elif instances is not None:
            body["instances"] = [{"workflow": w, "id": i} for w, i in instances]
        else:
            given: dict[str, Any] = {"status": status, "id_prefix": id_prefix}
            for name, at in (("created_after", created_after), ("created_before", created_before)):
                given[name] = None if at is None else (at.timestamp() if isinstance(at, datetime) else float(at))
            body["filter"] = {k: v for k, v in given.items() if v is not None}
        if after is not None:
            body["after"] = after
        if limit is not None:
            body["limit"] = limit
        if workflow is not None and "instances" not in body:
            return Call("POST", f"/v1/workflows/{_seg(workflow)}/instances/bulk", _model(c.BulkResult), body)
        return Call("POST", "/v1/instances/bulk", _model(c.BulkResult), body)

    @staticmethod
    def status(workflow: str, instance_id: str, wait_s: float = 0.0, seen: str | None = None) -> Call[c.Instance]:
        params: dict[str, Any] = {}
        if wait_s > 0:
            params["wait"] = round(min(wait_s, c.MAX_WAIT_S), 3)
            if seen is not None:
                params["status"] = seen
        return Call("GET", _instance(workflow, instance_id), _model(c.Instance), params=params, hold_s=wait_s)

    @staticmethod
    def journal(workflow: str, instance_id: str, after: int, limit: int) -> Call[c.Journal]:
        params = {"after": after, "limit": limit}
        return Call("GET", _instance(workflow, instance_id) + "/journal", _model(c.Journal), params=params)

    @staticmethod
    def send_event(workflow: str, instance_id: str, event_type: str, payload: Any) -> Call[c.EventAccepted]:
        body = {"type": event_type, "payload": payload}
        return Call("POST", _instance(workflow, instance_id) + "/events", _model(c.EventAccepted), body)

    @staticmethod
    def control(workflow: str, instance_id: str, action: str) -> Call[c.Instance]:
        return Call("POST", _instance(workflow, instance_id) + f"/{_seg(action)}", _model(c.Instance))

    @staticmethod
    def upgrade(workflow: str, instance_id: str, version: int) -> Call[c.Instance]:
        body = {"version": version}
        return Call("POST", _instance(workflow, instance_id) + "/upgrade", _model(c.Instance), body)

    @staticmethod
    def terminate(workflow: str, instance_id: str, rollback: bool) -> Call[c.Instance]:
        body = {"rollback": True} if rollback else None
        return Call("POST", _instance(workflow, instance_id) + "/terminate", _model(c.Instance), body)

    @staticmethod
    def restart(workflow: str, instance_id: str, from_step: str | None, count: int) -> Call[c.Instance]:
        body = {} if from_step is None else {"from": {"name": from_step, "count": count}}
        return Call("POST", _instance(workflow, instance_id) + "/restart", _model(c.Instance), body)

    @staticmethod
    def export(workflow: str, instance_id: str) -> Call[dict[str, Any]]:
        """The bundle as the server sent it (a dict: a replay reads it as is; c.Bundle describes it)."""
        return Call("GET", _instance(workflow, instance_id) + "/export", dict)

    @staticmethod
    def fork(
        workflow: str, instance_id: str, from_step: str, count: int, version: int | None, fork_id: str | None
    ) -> Call[c.Instance]:
        body: dict[str, Any] = {"from": {"name": from_step, "count": count}}
        if version is not None:
            body["version"] = version
        if fork_id is not None:
            body["id"] = fork_id
        return Call("POST", _instance(workflow, instance_id) + "/fork", _model(c.Instance), body)

    @staticmethod
    def delete_instance(workflow: str, instance_id: str) -> Call[c.InstanceDeleted]:
        return Call("DELETE", _instance(workflow, instance_id), _model(c.InstanceDeleted))

    @staticmethod
    def delete_workflow(name: str) -> Call[c.WorkflowDeleted]:
        return Call("DELETE", f"/v1/workflows/{_seg(name)}", _model(c.WorkflowDeleted))

    # -- admin (operator keys) --

    @staticmethod
    def usage(first: Day | None, last: Day | None, group_by: str) -> Call[c.UsageReport]:
        params = _usage_params(first, last, group_by=group_by)
        return Call("GET", "/v1/usage", _model(c.UsageReport), params=params)

    @staticmethod
    def admin_usage(first: Day | None, last: Day | None, group_by: str, tenant: str | None) -> Call[c.UsageReport]:
        params = _usage_params(first, last, group_by=group_by, tenant=tenant)
        return Call("GET", "/v1/admin/usage", _model(c.UsageReport), params=params)

    @staticmethod
    def create_tenant(name: str, quotas: Mapping[str, Any] | None, operator: bool) -> Call[c.TenantKey]:
        body = {"name": name, "quotas": _quotas(quotas), "operator": operator}
        return Call("POST", "/v1/admin/tenants", _model(c.TenantKey), body)

    @staticmethod
    def tenants() -> Call[list[c.TenantInfo]]:
        return Call("GET", "/v1/admin/tenants", lambda body: c.TenantList.model_validate(body).tenants)

    @staticmethod
    def tenant(name: str) -> Call[c.TenantInfo]:
        return Call("GET", _tenant(name), _model(c.TenantInfo))

    @staticmethod
    def update_tenant(name: str, quotas: Mapping[str, Any]) -> Call[c.TenantInfo]:
        return Call("PATCH", _tenant(name), _model(c.TenantInfo), {"quotas": _quotas(quotas)})

    @staticmethod
    def rotate_key(name: str) -> Call[c.TenantKey]:
        return Call("POST", _tenant(name) + "/rotate-key", _model(c.TenantKey))

    @staticmethod
    def delete_tenant(name: str) -> Call[c.TenantDeleted]:
        return Call("DELETE", _tenant(name), _model(c.TenantDeleted))


@dataclass(frozen=True)
class Batch(Generic[H]):
    """What a batch started: handles on the instances created, and the entries that were not, with why (a
    batch reports those, it does not raise for them)."""

    instances: list[H]
    errors: list[c.BatchError]


def merge_journal(pages: list[c.Journal]) -> c.Journal:
    """One journal from its pages (steps in order; events and log from the last page)."""
    last = pages[-1]
    return last.model_copy(update={"steps": [step for page in pages for step in page.steps], "next_after": None})
