"""The API's route table: each operation's method, path, models and answers, listed once.

`api.create_app` builds its routes from this table and `openapi.openapi_document` describes
the same table, so the document cannot list a route the server does not have, or miss one.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel
from tenantflow.runtime import contract as c

__all__ = ["INSTANCE", "OPERATIONS", "PROBLEMS", "TENANT", "Answer", "Header", "Operation"]

INSTANCE = "/v1/workflows/{name}/instances/{id}"
TENANT = "/v1/admin/tenants/{tenant}"

PROBLEMS: dict[int, str] = {
    400: "Malformed request: the body is not JSON, not UTF-8, or empty",
    401: "Missing or unknown API key",
    403: "A known key that may not do this (a tenant key on the admin API or /metrics)",
    404: "No such workflow, instance or tenant (another tenant's resources are not found either)",
    408: "The request body did not arrive within 10 s; the connection is closed",
    409: "Conflict: the id or name is taken, or the control does not apply in the instance's status",
    413: "Too large: the request body (over 2 MiB), the source, the params or the payload",
    422: "Invalid input: wrong types, unknown fields, bad ids, or workflow code that does not compile "
    "or whose module code hits a limit (DeadlineExceeded, FuelExhausted, MemoryLimitExceeded)",
    429: "A quota is exceeded (instance creation rate, deploy checks, long polls or watches in progress); "
    "see the Retry-After header",
    503: "The store is busy or the server is saturated (e.g. deploy checks); see the Retry-After header",
}


@dataclass(frozen=True)
class Answer:
    """A success response: its body's model (None: not JSON, see `media_type`) and description."""

    model: type[BaseModel] | None
    description: str
    media_type: str = "application/json"
    events: tuple[tuple[str, type[BaseModel] | None], ...] = ()
    """For text/event-stream: each event's name and its data's model (None: an empty object)."""


@dataclass(frozen=True)
class Header:
    """An optional request header an operation reads."""

    name: str
    description: str
    pattern: str
    max_length: int


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    """Also the name of the `Api` method that serves it."""
    summary: str
    answers: dict[int, Answer]
    problems: tuple[int, ...] = ()
    body: type[BaseModel] | None = None
    body_required: bool = True
    query: type[BaseModel] | None = None
    secured: bool = True
    path_params: tuple[str, ...] = ()
    headers: tuple[Header, ...] = ()
    tag: str = "tenant"


_CONTROL_SUMMARIES: dict[c.Control, str] = {
    "pause": "Pause a queued, running or waiting instance (a running one is `waiting_for_pause` until its step ends)",
    "resume": "Resume a paused instance",
    "terminate": 'Terminate an instance that has not finished (with `{"rollback": true}`, after running the '
    "rollbacks of its completed steps)",
    "restart": "Restart an instance with the same params and version: from scratch, or from a step of its "
    "journal (the steps before it are kept)",
}
_INPUT = (400, 401, 404, 409, 413, 422, 429)


_CONTROL_BODIES: dict[c.Control, type[BaseModel]] = {"restart": c.Restart, "terminate": c.Terminate}


def _control(action: c.Control) -> Operation:
    body = _CONTROL_BODIES.get(action)
    return Operation(
        "POST",
        f"{INSTANCE}/{action}",
        f"{action}Instance",
        _CONTROL_SUMMARIES[action],
        {200: Answer(c.Instance, "The instance after the control")},
        (400, 401, 404, 409, 413, 422) if body is not None else (401, 404, 409, 422),
        body=body,
        body_required=False,
        path_params=("name", "id"),
    )


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/healthz",
        "health",
        "Liveness and database check",
        {200: Answer(c.Health, "Healthy")},
        (503,),
        secured=False,
    ),
    Operation(
        "GET",
        "/metrics",
        "metrics",
        "Prometheus metrics (every tenant's counts): the operator key or the server's metrics token",
        {200: Answer(None, "Prometheus text exposition format", "text/plain")},
        (401, 403),
    ),
    Operation(
        "GET", "/openapi.json", "openapi", "This document", {200: Answer(None, "The OpenAPI document")}, secured=False
    ),
    Operation(
        "GET",
        "/v1/workflows",
        "listWorkflows",
        "The latest version of each of the tenant's workflows, by name, a page at a time",
        {200: Answer(c.WorkflowList, "The workflows")},
        (401, 422),
        query=c.WorkflowsQuery,
    ),
    Operation(
        "PUT",
        "/v1/workflows/{name}",
        "deployWorkflow",
        "Deploy a version (the source is compiled and checked in the sandbox)",
        {
            201: Answer(c.Deployed, "A new version"),
            200: Answer(c.Deployed, "The same source as the latest version: that version"),
        },
        (400, 401, 413, 422, 429),
        body=c.Deploy,
        path_params=("name",),
    ),
    Operation(
        "GET",
        "/v1/workflows/{name}",
        "getWorkflow",
        "A workflow's versions, the newest page first (`before` for older ones)",
        {200: Answer(c.Workflow, "The versions, oldest first")},
        (401, 404, 422),
        path_params=("name",),
        query=c.VersionsQuery,
    ),
    Operation(
        "DELETE",
        "/v1/workflows/{name}",
        "deleteWorkflow",
        "Delete a workflow with its versions and instances (409 while one of them has not finished)",
        {200: Answer(c.WorkflowDeleted, "Deleted")},
        (401, 404, 409, 422),
        path_params=("name",),
    ),
    Operation(
        "PUT",
        "/v1/workflows/{name}/retention",
        "setRetention",
        "Set how long the workflow's finished instances are kept, per status (replaces the previous retention; "
        "a status left out is kept forever); those older are deleted in the background",
        {200: Answer(c.Retention, "The retention now in force")},
        (400, 401, 404, 413, 422),
        body=c.SetRetention,
        path_params=("name",),
    ),
    Operation(
        "POST",
        "/v1/workflows/{name}/instances",
        "createInstance",
        "Start an instance of the latest version",
        {201: Answer(c.Instance, "Created and queued")},
        _INPUT,
        body=c.CreateInstance,
        body_required=False,
        path_params=("name",),
    ),
    Operation(
        "GET",
        "/v1/workflows/{name}/instances",
        "listInstances",
        "A page of the workflow's instances, newest first (by created_at, then id)",
        {200: Answer(c.InstancePage, "A page")},
        (401, 404, 422),
        query=c.InstanceQuery,
        path_params=("name",),
    ),
    Operation(
        "GET",
        "/v1/instances",
        "listTenantInstances",
        "A page of the tenant's instances across its workflows, newest first (by created_at, workflow, then id)",
        {200: Answer(c.InstancePage, "A page (each instance names its workflow)")},
        (401, 422),
        query=c.InstancesQuery,
    ),
    Operation(
        "GET",
        "/v1/instances/counts",
        "countInstances",
        "How many of the tenant's instances a list's filters match, in each status (each counted up to `cap`: "
        "a status in `capped` has more)",
        {200: Answer(c.InstanceCounts, "The counts")},
        (401, 422),
        query=c.CountsQuery,
    ),
    Operation(
        "POST",
        "/v1/workflows/{name}/instances/batch",
        "createInstances",
        f"Start up to {c.MAX_BATCH} instances at once: a list of {{id?, params?}}, or {{count, params}}; "
        "each entry that can be created is, the others are listed with their problem",
        {
            201: Answer(c.BatchCreated, "Some created and queued (and the errors of the others)"),
            200: Answer(c.BatchCreated, "None created: the errors say why"),
        },
        _INPUT,
        body=c.BatchBody,
        path_params=("name",),
    ),
    Operation(
        "GET",
        INSTANCE,
        "getInstance",
        "An instance's status, output and error; with `wait`, a long poll that answers when the status changes",
        {200: Answer(c.Instance, "The instance")},
        (401, 404, 422, 429),
        query=c.InstanceWait,
        path_params=("name", "id"),
    ),
    Operation(
        "DELETE",
        INSTANCE,
        "deleteInstance",
        "Delete a finished instance with its journal and events (409 while it has not finished)",
        {200: Answer(c.InstanceDeleted, "Deleted")},
        (401, 404, 409, 422),
        path_params=("name", "id"),
    ),
    Operation(
        "GET",
        INSTANCE + "/journal",
        "getJournal",
        "A page of the instance's steps, attempts, waits and events, in order",
        {200: Answer(c.Journal, "The journal")},
        (401, 404, 422),
        query=c.JournalQuery,
        path_params=("name", "id"),
    ),
    Operation(
        "GET",
        INSTANCE + "/watch",
        "watchInstance",
        "Follow an instance as server-sent events: its status, then its journal entries, then each change "
        "(`event: status` as getInstance, `event: entry` as a journal step, `event: reset` after a restart cut "
        "the journal); ends once it has finished. Resume with `Last-Event-ID` or `after`",
        {
            200: Answer(
                None,
                "A text/event-stream of status, entry and reset events",
                "text/event-stream",
                events=(("status", c.Instance), ("entry", c.WatchEntry), ("reset", None)),
            )
        },
        (401, 404, 422, 429),
        query=c.WatchQuery,
        path_params=("name", "id"),
        headers=(
            Header(
                "Last-Event-ID",
                "The id of the last event received: resume after it (wins over `after`)",
                c.WATCH_CURSOR,
                32,
            ),
        ),
    ),
    Operation(
        "POST",
        INSTANCE + "/events",
        "sendEvent",
        "Deliver an event (buffered until a wait_for_event of its type takes it; at most 100 and 4 MiB)",
        {202: Answer(c.EventAccepted, "Stored")},
        _INPUT,
        body=c.SendEvent,
        path_params=("name", "id"),
    ),
    *(_control(action) for action in c.CONTROLS),
    Operation(
        "POST",
        INSTANCE + "/upgrade",
        "upgradeInstance",
        "Move a waiting or paused instance to another version of its workflow, only if its journal replays "
        "cleanly under that version's code (409 naming where it diverges otherwise)",
        {200: Answer(c.Instance, "The instance, pinned to the version")},
        (400, 401, 404, 409, 413, 422, 429, 503),
        body=c.Upgrade,
        path_params=("name", "id"),
    ),
    Operation(
        "GET",
        INSTANCE + "/export",
        "exportInstance",
        "The instance as one self-contained document (format tenantflow.bundle/1): the instance, its pinned "
        "source, params, seed, every journal entry with its attempts, every event and its log (413 if it stores "
        "more than 64 MiB)",
        {200: Answer(c.Bundle, "The bundle")},
        (401, 404, 409, 413, 422),
        path_params=("name", "id"),
    ),
    Operation(
        "POST",
        INSTANCE + "/fork",
        "forkInstance",
        "Create a new instance from this one's journal before a step: the steps before it are copied (replayed, "
        "not run again), with the params and the seed, and it runs from that step on with the given version "
        "(default: the latest); the original is not changed",
        {201: Answer(c.Instance, "The fork, queued")},
        _INPUT,
        body=c.Fork,
        path_params=("name", "id"),
    ),
    # Last of the tenant's operations: a fuzzed bulk restart leaves the instances the others use unfinished.
    Operation(
        "POST",
        "/v1/instances/bulk",
        "bulkInstances",
        f"Pause, resume, terminate or restart many of the tenant's instances: those named (up to {c.MAX_BULK}), or "
        f"a page of up to {c.MAX_BULK} of those a filter matches, newest first (`next_after` goes on); each is done "
        "or skipped with the reason",
        {200: Answer(c.BulkResult, "What was done to each")},
        (400, 401, 413, 422),
        body=c.TenantBulk,
    ),
    Operation(
        "POST",
        "/v1/workflows/{name}/instances/bulk",
        "bulkWorkflowInstances",
        f"As bulkInstances, within one workflow: its instances named by id (up to {c.MAX_BULK}), or a page of "
        "those a filter matches",
        {200: Answer(c.BulkResult, "What was done to each")},
        (400, 401, 404, 413, 422),
        body=c.WorkflowBulk,
        path_params=("name",),
    ),
    Operation(
        "GET",
        "/v1/usage",
        "getUsage",
        "The tenant's usage (activations, steps, attempts, fuel and CPU, wall time, journal bytes, instances) per "
        "workflow or per UTC day, over at most 366 days",
        {200: Answer(c.UsageReport, "The total over the days, and a row per workflow or per day")},
        (401, 422),
        query=c.UsageQuery,
    ),
    Operation(
        "GET",
        "/v1/admin/usage",
        "getAdminUsage",
        "Usage across tenants (or one tenant's) per tenant, workflow or UTC day, over at most 366 days",
        {200: Answer(c.UsageReport, "The total over the days, and a row per tenant, workflow or day")},
        (401, 403, 404, 422),
        query=c.AdminUsageQuery,
        tag="admin",
    ),
    Operation(
        "GET",
        "/v1/admin/tenants",
        "listTenants",
        "Every tenant with its quotas (never a key)",
        {200: Answer(c.TenantList, "The tenants, oldest first")},
        (401, 403),
        tag="admin",
    ),
    Operation(
        "POST",
        "/v1/admin/tenants",
        "createTenant",
        "Create a tenant; its API key is in the answer, this once",
        {201: Answer(c.TenantKey, "Created")},
        (400, 401, 403, 409, 413, 422),
        body=c.CreateTenant,
        tag="admin",
    ),
    Operation(
        "GET",
        TENANT,
        "getTenant",
        "A tenant and its quotas",
        {200: Answer(c.TenantInfo, "The tenant")},
        (401, 403, 404, 422),
        path_params=("tenant",),
        tag="admin",
    ),
    Operation(
        "PATCH",
        TENANT,
        "updateTenant",
        "Change some of a tenant's quotas (running activations keep theirs until they end)",
        {200: Answer(c.TenantInfo, "The tenant after the change")},
        (400, 401, 403, 404, 413, 422),
        body=c.UpdateTenant,
        path_params=("tenant",),
        tag="admin",
    ),
    Operation(
        "POST",
        TENANT + "/rotate-key",
        "rotateTenantKey",
        "Give a tenant a new key; the old one stops working at once",
        {200: Answer(c.TenantKey, "The tenant with its new key, shown this once")},
        (401, 403, 404, 422),
        path_params=("tenant",),
        tag="admin",
    ),
    Operation(
        "DELETE",
        TENANT,
        "deleteTenant",
        "Delete a tenant with all its workflows, instances, journals and events",
        {200: Answer(c.TenantDeleted, "Deleted")},
        (401, 403, 404, 409, 422),
        path_params=("tenant",),
        tag="admin",
    ),
)
