"""The HTTP API's contract: every request and response body, and the query parameters, as models.

Written once: the server validates requests with them (`tenantflow.runtime.http.api`), the
OpenAPI document is generated from them (`tenantflow.runtime.http.openapi`) and the Python
client returns them (`tenantflow.client`). This module needs pydantic and the
records' rules only, so the client and the CLI import it without the server.

Request models refuse unknown fields and values of the wrong JSON type (strict); response
models ignore fields they do not know, so an older client reads a newer server.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, RootModel, WithJsonSchema
from tenantflow.runtime.bounds import (
    BUNDLE_FORMAT,
    CONTROLS,
    DEEP_JSON_RECURSION_LIMIT,
    MAX_BATCH,
    MAX_BULK,
    MAX_PAGE,
    MAX_WAIT_S,
    WATCH_CURSOR,
    Control,
    allow_deep_json,
)
from tenantflow.runtime.records import (
    EGRESS_PATTERN,
    EVENT_TYPE_PATTERN,
    ID_PATTERN,
    MAX_EGRESS_ENTRIES,
    MAX_EVENT_TYPE,
    MAX_ID,
    QUOTA_BOUNDS,
    Rollback,
    Status,
)
from tenantflow.runtime.retention import DURATION_PATTERN, MAX_DURATION_CHARS, RETENTION_MAX, RETENTION_MIN

__all__ = [
    "BUNDLE_FORMAT",
    "CONTROLS",
    "DEEP_JSON_RECURSION_LIMIT",
    "MAX_BATCH",
    "MAX_CURSOR",
    "MAX_BULK",
    "MAX_PAGE",
    "TIME_PATTERN",
    "Attempt",
    "BatchBody",
    "BatchCreated",
    "BatchError",
    "BulkByFilter",
    "BulkFilter",
    "BulkIds",
    "BulkInstances",
    "BulkItem",
    "BulkResult",
    "CountsQuery",
    "InstanceCounts",
    "InstanceRef",
    "TenantBulk",
    "TenantBulkByFilter",
    "TenantBulkFilter",
    "WorkflowBulk",
    "Bundle",
    "BundleVersion",
    "Control",
    "CreateBatch",
    "CreateCount",
    "CreateInstance",
    "CreateTenant",
    "Deploy",
    "Deployed",
    "ErrorInfo",
    "EventAccepted",
    "EventRecord",
    "Fork",
    "Health",
    "Id",
    "Instance",
    "InstanceDeleted",
    "InstancePage",
    "InstanceQuery",
    "InstanceWait",
    "InstancesQuery",
    "Journal",
    "JournalQuery",
    "MAX_WAIT_S",
    "Problem",
    "QuotaChanges",
    "Quotas",
    "Restart",
    "Retention",
    "Terminate",
    "Upgrade",
    "SendEvent",
    "SetRetention",
    "Step",
    "StepRef",
    "TenantDeleted",
    "TenantInfo",
    "TenantKey",
    "TenantList",
    "UpdateTenant",
    "AdminUsageQuery",
    "DAY_PATTERN",
    "UsageCounts",
    "UsageQuery",
    "UsageReport",
    "UsageRow",
    "parse_day",
    "Version",
    "WATCH_CURSOR",
    "WatchEntry",
    "WatchQuery",
    "Workflow",
    "WorkflowDeleted",
    "WorkflowList",
    "allow_deep_json",
    "parse_time",
    "time_text",
]

MAX_QUERY_INT = 999_999_999

Id = Annotated[str, Field(min_length=1, max_length=MAX_ID, pattern=ID_PATTERN.pattern)]
"""A workflow name, instance id or tenant name (records.ID_PATTERN, at most records.MAX_ID)."""

EventType = Annotated[str, Field(min_length=1, max_length=MAX_EVENT_TYPE, pattern=EVENT_TYPE_PATTERN.pattern)]


def _whole_number(value: Any) -> Any:
    """A query string's whole number: an optional '-' and 1-9 digits ('1e3', '+1', '1_0' are not)."""
    if isinstance(value, str):
        digits = value[1:] if value.startswith("-") else value
        if not (digits.isascii() and digits.isdigit()) or len(digits) > 9:
            raise ValueError("is a whole number")
        return int(value)
    return value


QueryInt = Annotated[int, BeforeValidator(_whole_number)]

MAX_CURSOR = 256
"""A list's cursor (`next_after`, passed back as `after`) is at most this long."""
Cursor = Annotated[str, Field(min_length=1, max_length=MAX_CURSOR, pattern=r"^[A-Za-z0-9_-]+$")]

# A time in a query: epoch seconds (as the API's answers give times), or an ISO 8601 date and time with its
# timezone (RFC 3339: `Z` or an offset; hours and minutes, seconds and their fraction optional). The pattern
# is the whole rule, calendar included (a 29th of February only in a leap year), so every text it matches is
# a time and the OpenAPI document says exactly what is taken. [0-9], not \d: Python's \d takes any script's digits.
_YEAR = r"(?:000[1-9]|00[1-9][0-9]|0[1-9][0-9][0-9]|[1-9][0-9]{3})"
_LEAP_YEAR = r"(?:[0-9][0-9](?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_DATE = (
    rf"(?:{_YEAR}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    rf"|02-(?:0[1-9]|1[0-9]|2[0-8]))|{_LEAP_YEAR}-02-29)"
)
_CLOCK = r"(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,9})?)?"
_ZONE = r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
TIME_PATTERN = re.compile(rf"^(?:-?[0-9]{{1,11}}(?:\.[0-9]{{1,9}})?|{_DATE}T{_CLOCK}{_ZONE})$")
_TIME_RULE = "a time is epoch seconds (1767225600.5) or ISO 8601 with a timezone (2026-01-01T00:00:00Z)"


def parse_time(value: Any) -> float:
    """A query's time (TIME_PATTERN) as epoch seconds; ValueError for anything else."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(_TIME_RULE)
    text = value if isinstance(value, str) else time_text(value)
    if not TIME_PATTERN.fullmatch(text):
        raise ValueError(_TIME_RULE)
    if "T" in text:
        return datetime.fromisoformat(text).timestamp()
    return float(text)


def time_text(value: float | datetime) -> str:
    """A time as a query sends it: epoch seconds (a naive datetime is local time, as `datetime.timestamp`)."""
    seconds = value.timestamp() if isinstance(value, datetime) else float(value)
    text = repr(seconds)
    if "e" in text or "n" in text:  # exponents, inf and nan: the server refuses what has no plain decimals
        text = f"{seconds:.9f}"
    return text.removesuffix(".0")


# A day in a usage query: a date (UTC), or a time (TIME_PATTERN) whose UTC day is meant.
DAY_PATTERN = re.compile(rf"^(?:{_DATE}|{TIME_PATTERN.pattern[1:-1]})$")
_DAY_RULE = "a day is a date (2026-01-31), epoch seconds or ISO 8601 with a timezone; its UTC day is meant"


def parse_day(value: Any) -> date:
    """A usage query's day (DAY_PATTERN) as a UTC date; ValueError for anything else."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and DAY_PATTERN.fullmatch(value) and "-" in value[1:] and "T" not in value:
        return date.fromisoformat(value)
    try:
        return datetime.fromtimestamp(parse_time(value), UTC).date()
    except (ValueError, OverflowError, OSError):
        raise ValueError(_DAY_RULE) from None


QueryTime = Annotated[
    float,
    BeforeValidator(parse_time),
    WithJsonSchema({"type": "string", "pattern": TIME_PATTERN.pattern, "maxLength": 40}),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Query(BaseModel):
    # Query strings carry only text: numbers are parsed (by _whole_number), not strictly typed.
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


# -- requests ----------------------------------------------------------------------------------


class Deploy(_Request):
    """`PUT /v1/workflows/{name}`."""

    source: str = Field(description="Python source defining run(event, step)")


DurationText = Annotated[
    str,
    Field(
        max_length=MAX_DURATION_CHARS,
        pattern=DURATION_PATTERN,
        description=f"A duration as a step's, e.g. '7 days' or '12 hours', from {RETENTION_MIN} to {RETENTION_MAX}",
    ),
]


def _kept(status: str) -> Any:
    return Field(default=None, description=f"How long a {status} instance is kept after it finished; null: forever")


class SetRetention(_Request):
    """`PUT /v1/workflows/{name}/retention`: replaces the workflow's retention (a status left out or null is kept
    forever)."""

    complete: DurationText | None = _kept("complete")
    errored: DurationText | None = _kept("errored")
    terminated: DurationText | None = _kept("terminated")


class CreateInstance(_Request):
    """`POST /v1/workflows/{name}/instances` (the body may be left out), and each item of a batch."""

    id: Id | None = Field(default=None, description="Absent or null: a random id")
    params: Any = Field(default=None, description="The instance's event.payload (at most 1 MiB of JSON)")


class CreateBatch(RootModel[list[CreateInstance]]):
    """`POST /v1/workflows/{name}/instances/batch` as a list: each entry that can be created is."""

    root: list[CreateInstance] = Field(min_length=1, max_length=MAX_BATCH)


class CreateCount(_Request):
    """`POST /v1/workflows/{name}/instances/batch` as `{count, params}`: that many instances with random ids."""

    count: int = Field(ge=1, le=MAX_BATCH)
    params: Any = Field(default=None, description="Every instance's event.payload (at most 1 MiB of JSON)")


class BatchBody(RootModel[Annotated[list[CreateInstance], Field(min_length=1, max_length=MAX_BATCH)] | CreateCount]):
    """The batch body's two forms, for the OpenAPI document (the server reads each by its own model)."""


class SendEvent(_Request):
    """`POST .../instances/{id}/events` (as records.check_event_type)."""

    type: EventType
    payload: Any = Field(default=None, description="At most 1 MiB of JSON")


def _integral(value: Any) -> Any:
    """JSON Schema's integer includes 1.0: take a float with no fraction as the whole number it is."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _quota(name: str, description: str) -> Any:
    low, high = QUOTA_BOUNDS[name]
    return Field(default=None, ge=low, le=high, description=description)


QuotaInt = Annotated[int | None, BeforeValidator(_integral)]
WholeInt = Annotated[int, BeforeValidator(_integral)]


class Upgrade(_Request):
    """`POST .../instances/{id}/upgrade`."""

    version: WholeInt = Field(ge=1, le=MAX_QUERY_INT, description="The version of the workflow to move the instance to")


EgressEntry = Annotated[str, Field(pattern=EGRESS_PATTERN.pattern, max_length=262)]


class QuotaChanges(_Request):
    """Quotas to set (records.QUOTA_BOUNDS); a quota left out keeps its value (the default, for a new tenant)."""

    max_concurrent: QuotaInt = _quota("max_concurrent", "Activations running at once, across processes")
    max_instances_per_minute: QuotaInt = _quota("max_instances_per_minute", "Instances created per minute")
    max_steps: QuotaInt = _quota("max_steps", "step.do calls per instance")
    memory_mb: QuotaInt = _quota("memory_mb", "Memory per isolate, MiB")
    fuel: QuotaInt = _quota("fuel", "Fuel for the code outside step bodies between two durable calls")
    max_step_cpu_ms: QuotaInt = _quota("max_step_cpu_ms", "The most CPU one step attempt may have, ms")
    max_source_bytes: QuotaInt = _quota("max_source_bytes", "A workflow's source, bytes")
    max_payload_bytes: QuotaInt = _quota("max_payload_bytes", "Params and event payloads, bytes of JSON")
    max_stored_mb: QuotaInt = _quota("max_stored_mb", "Everything the tenant's instances store, MB")
    max_workflows: QuotaInt = _quota("max_workflows", "Workflows (deployed names)")
    egress: list[EgressEntry] | None = Field(
        default=None,
        max_length=MAX_EGRESS_ENTRIES,
        description="Hosts `fetch` may reach: host, *.domain, IPv4 or [IPv6], each with an optional :port",
    )


class CreateTenant(_Request):
    """`POST /v1/admin/tenants`."""

    name: Id
    quotas: QuotaChanges | None = None
    operator: bool = Field(default=False, description="An operator key: the admin API and every tenant's view")


class UpdateTenant(_Request):
    """`PATCH /v1/admin/tenants/{tenant}`."""

    quotas: QuotaChanges


class StepRef(_Request):
    """A call of a step in an instance's journal: the count-th call of that name (1 for the first)."""

    name: str = Field(min_length=1, max_length=256)
    count: int = Field(default=1, ge=1, le=MAX_QUERY_INT)


class Restart(_Request):
    """`POST .../instances/{id}/restart` (the body may be left out: from scratch)."""

    from_: StepRef | None = Field(
        default=None,
        alias="from",
        description="Keep the journal before this step and re-run from it (its earlier steps are not run again)",
    )


class Fork(_Request):
    """`POST .../instances/{id}/fork`: a new instance from the journal before a step of this one."""

    from_: StepRef = Field(
        alias="from",
        description="Copy the journal before this call (its steps are replayed, not run again) and run from it",
    )
    version: int | None = Field(
        default=None, ge=1, le=MAX_QUERY_INT, description="The version the fork runs; absent or null: the latest"
    )
    id: Id | None = Field(default=None, description="The fork's id; absent or null: a random id")


Epoch = Annotated[float, Field(allow_inf_nan=False, ge=-1e11, le=1e11)]


class BulkFilter(_Request):
    """Every instance a list with these filters shows (newest first), a page of them per request."""

    status: Status | None = None
    created_after: Epoch | None = Field(default=None, description="Only instances created after this (epoch seconds)")
    created_before: Epoch | None = Field(default=None, description="Only instances created before this (epoch seconds)")
    id_prefix: Id | None = Field(default=None, description="Only instances whose id starts with this")


class TenantBulkFilter(BulkFilter):
    workflow: Id | None = Field(default=None, description="Only this workflow's instances")


class InstanceRef(_Request):
    workflow: Id
    id: Id


class _Bulk(_Request):
    action: Control


def _whole_float(value: Any) -> Any:
    """JSON's 5.0 is the integer 5 (as JSON Schema reads it)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


JSONInt = Annotated[int, BeforeValidator(_whole_float)]


class _BulkPage(_Bulk):
    after: Cursor | None = Field(default=None, description="The next_after of the previous answer: go on from there")
    limit: JSONInt = Field(default=MAX_BULK, ge=1, le=MAX_BULK, description="At most this many instances this time")


class BulkIds(_Bulk):
    """Named instances of the workflow."""

    ids: list[Id] = Field(min_length=1, max_length=MAX_BULK)


class BulkByFilter(_BulkPage):
    """A page of the workflow's instances the filter matches, newest first."""

    filter: BulkFilter


class BulkInstances(_Bulk):
    """Named instances of any of the tenant's workflows."""

    instances: list[InstanceRef] = Field(min_length=1, max_length=MAX_BULK)


class TenantBulkByFilter(_BulkPage):
    """A page of the tenant's instances the filter matches, newest first."""

    filter: TenantBulkFilter


class WorkflowBulk(RootModel[BulkIds | BulkByFilter]):
    """`POST /v1/workflows/{name}/instances/bulk`: named instances of the workflow (`ids`), or those a filter
    matches (`filter`, a page per request)."""


class TenantBulk(RootModel[BulkInstances | TenantBulkByFilter]):
    """`POST /v1/instances/bulk`: named instances of any of the tenant's workflows (`instances`), or those a
    filter matches (`filter`, a page per request)."""


class Terminate(_Request):
    """`POST .../instances/{id}/terminate` (the body may be left out: no rollback)."""

    rollback: bool = Field(
        default=False,
        description="Run the rollbacks of the completed steps (last started first) before the instance is "
        "terminated; it stays unfinished, rolling back, until they have run",
    )


class InstanceWait(_Query):
    """The query of `GET /v1/workflows/{name}/instances/{id}`: a long poll."""

    wait: float = Field(
        default=0.0,
        ge=0.0,
        le=MAX_WAIT_S,
        allow_inf_nan=False,
        description="Hold the request up to this many seconds, until the instance has settled: it is not "
        "queued or running (and, with `status`, not in that status either); a finished instance is answered "
        "at once",
    )
    status: Status | None = Field(
        default=None, description="The status last seen: hold on while the instance is still in it"
    )


class WatchQuery(_Query):
    """The query of `GET .../instances/{id}/watch` (a `Last-Event-ID` header says the same, and wins)."""

    after: str | None = Field(
        default=None,
        pattern=WATCH_CURSOR,
        max_length=32,
        description="Resume after this journal position, or after the event with this id: entries up to it "
        "are not sent again",
    )


class InstanceQuery(_Query):
    """The query of `GET /v1/workflows/{name}/instances`: newest first (by created_at, then id)."""

    status: Status | None = None
    limit: QueryInt = Field(default=100, ge=1, le=MAX_PAGE)
    after: Cursor | None = Field(
        default=None, description="The cursor of the previous page (its next_after), passed back as it came"
    )
    before: Cursor | None = Field(
        default=None,
        description="The cursor a page answered as prev_before: the page just before that one (ignored with after)",
    )
    id_prefix: Id | None = Field(
        default=None,
        description="Only instances whose id starts with this (an exact id is its own prefix); such a list goes "
        "by id, then workflow, ascending",
    )
    created_after: QueryTime | None = Field(
        default=None,
        description="Only instances created after this time: epoch seconds, or ISO 8601 with a timezone",
    )
    created_before: QueryTime | None = Field(
        default=None,
        description="Only instances created before this time: epoch seconds, or ISO 8601 with a timezone",
    )


class InstancesQuery(InstanceQuery):
    """The query of `GET /v1/instances`: the tenant's instances across its workflows, newest first."""

    workflow: Id | None = Field(default=None, description="Only this workflow's instances")


class CountsQuery(_Query):
    """The query of `GET /v1/instances/counts`: the filters of a list, but its status."""

    workflow: Id | None = Field(default=None, description="Only this workflow's instances")
    created_after: QueryTime | None = Field(default=None, description="Only instances created after this time")
    created_before: QueryTime | None = Field(default=None, description="Only instances created before this time")
    id_prefix: Id | None = Field(default=None, description="Only instances whose id starts with this")


class WorkflowsQuery(_Query):
    """The query of `GET /v1/workflows`: by name."""

    after: Id | None = Field(default=None, description="Only workflows named after this one (next_after of a page)")
    limit: QueryInt = Field(default=MAX_PAGE, ge=1, le=MAX_PAGE)


class VersionsQuery(_Query):
    """The query of `GET /v1/workflows/{name}`: a page of its versions, the newest first."""

    before: Annotated[int, Field(ge=1, le=MAX_QUERY_INT), BeforeValidator(_whole_number)] | None = Field(
        default=None, description="Only versions below this one (next_before of a page)"
    )
    limit: QueryInt = Field(default=100, ge=1, le=MAX_PAGE)


class JournalQuery(_Query):
    """The query of `GET .../instances/{id}/journal`."""

    after: QueryInt = Field(
        default=-1,
        ge=-1,
        le=MAX_QUERY_INT,
        description="Only positions after this one (next_after of the previous page)",
    )
    limit: QueryInt = Field(default=MAX_PAGE, ge=1, le=MAX_PAGE)


QueryDay = Annotated[
    date,
    BeforeValidator(parse_day),
    WithJsonSchema({"type": "string", "pattern": DAY_PATTERN.pattern, "maxLength": 40}),
]


class UsageQuery(_Query):
    """The query of `GET /v1/usage`: the days (UTC, both included; at most 366) and how rows are grouped."""

    from_: QueryDay | None = Field(
        default=None,
        alias="from",
        description="The first day: a date (2026-01-31), or epoch seconds or ISO 8601 with a timezone (its UTC "
        "day); by default 30 days before `to`",
    )
    to: QueryDay | None = Field(default=None, description="The last day, included (as `from`); by default today")
    group_by: Literal["workflow", "day"] = Field(default="day", description="One row per workflow, or per day")


class AdminUsageQuery(_Query):
    """The query of `GET /v1/admin/usage`: as `GET /v1/usage`, across every tenant or for one."""

    from_: QueryDay | None = Field(default=None, alias="from", description="The first day (as in GET /v1/usage)")
    to: QueryDay | None = Field(default=None, description="The last day, included (as in GET /v1/usage)")
    group_by: Literal["tenant", "workflow", "day"] = Field(
        default="tenant", description="One row per tenant, per workflow (across tenants: by name) or per day"
    )
    tenant: Id | None = Field(default=None, description="Only this tenant's usage")


# -- responses ---------------------------------------------------------------------------------


class Health(_Response):
    status: Literal["ok"]


class Version(_Response):
    name: str
    version: int = Field(ge=1)
    source_hash: str
    created_at: float


class Deployed(Version):
    created: bool = Field(description="False when the source was the same as the latest version's")


class WorkflowList(_Response):
    workflows: list[Version] = Field(description="The latest version of each workflow, by name")
    next_after: str | None = Field(default=None, description="Pass as `after` for the next page; null on the last")


class Retention(_Response):
    """How long each finished status's instances are kept after they finished (null: forever); older ones are
    deleted, with their journals, in the background."""

    complete: str | None = None
    errored: str | None = None
    terminated: str | None = None


class Workflow(_Response):
    name: str
    latest: int
    versions: list[Version] = Field(description="Oldest first: the newest `limit` versions (below `before`, if given)")
    next_before: int | None = Field(
        default=None, description="Pass as `before` for the older versions; null when there are none"
    )
    counts: dict[Status, int] = Field(default_factory=dict, description="How many of its instances are in each status")
    retention: Retention = Field(default_factory=Retention, description="How long its finished instances are kept")


class ErrorInfo(_Response):
    """Why an instance errored."""

    name: str
    message: str
    traceback: str | None = None
    line: int | None = None


class Instance(_Response):
    id: str
    workflow: str
    version: int
    status: Status
    params: Any
    output: Any
    error: ErrorInfo | None
    created_at: float
    updated_at: float
    wake_at: float | None
    activations: int | None = Field(default=None, description="Activations so far (not in lists)")
    replayed_steps: int | None = Field(
        default=None, description="Journal positions the activations replayed (not in lists)"
    )
    hot_resumes: int | None = Field(
        default=None, description="Waits gone on from in a parked isolate, without replay (not in lists)"
    )
    parked: bool | None = Field(
        default=None, description="Waiting in a parked isolate (hot resume); false: replays at its wake"
    )
    rollback: Rollback | None = Field(
        default=None,
        description="Its rollback phase (not in lists): `terminate` once terminated with a rollback, `error` once "
        "its rollbacks run after an error; the journal has an entry of kind `rollback` for each",
    )


class InstancePage(_Response):
    instances: list[Instance] = Field(description="Newest first; each names its workflow")
    next_after: str | None = Field(
        description="An opaque cursor: pass it as ?after= for the next page; null on the last page"
    )
    prev_before: str | None = Field(
        default=None,
        description="An opaque cursor: pass it as ?before= for the page before; null on the first page (or when "
        "the page came by after and is empty)",
    )


class InstanceCounts(_Response):
    counts: dict[Status, int] = Field(description="How many instances the filter matches in each status")
    cap: int = Field(description="Each status is counted up to this many")
    capped: list[Status] = Field(description="The statuses with more than cap instances (their count is cap)")


class BulkItem(_Response):
    workflow: str
    id: str
    outcome: Literal["done", "skipped"]
    reason: str | None = Field(default=None, description="Why it was skipped")


class BulkResult(_Response):
    action: Control
    results: list[BulkItem] = Field(description="One per instance, in the order they were done")
    done: int
    skipped: int
    next_after: str | None = Field(
        description="With a filter: more instances match; send the same request with this as after to go on"
    )


class BatchError(_Response):
    """An entry of a batch that was not created, and why."""

    index: int = Field(description="Its place in the batch, from 0")
    id: str | None
    problem: Problem


class BatchCreated(_Response):
    instances: list[Instance] = Field(description="The entries created, in batch order")
    errors: list[BatchError] = Field(default_factory=list, description="The entries not created")


class Attempt(_Response):
    position: int
    attempt: int
    ok: bool
    error_name: str | None
    error_message: str | None
    fuel: int
    duration_ms: float
    finished_at: float
    traceback: str | None = Field(
        default=None, description="A failed attempt's traceback in the workflow's code (its last 8 KiB)"
    )


class Step(_Response):
    position: int
    name: str
    kind: Literal["do", "sleep", "wait", "rollback"]
    state: str
    attempts: int
    result: Any
    error_name: str | None = None
    error_message: str | None = None
    wake_at: float | None = None
    event_type: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    fuel: int = 0
    duration_ms: float = 0.0
    parent: int | None = Field(
        default=None, description="The position of the step whose body called this one (a nested step.do)"
    )
    occurrence: int | None = Field(
        default=None,
        description="In an async workflow: which call of its name this is (from 0); replay matches it by name and this",
    )
    attempt_limit: int | None = Field(
        default=None, description="A step's most attempts (its retry limit + 1), as its config said at its last attempt"
    )
    attempt_log: list[Attempt]


class WatchEntry(Step):
    """A journal entry as a watch sends it (`event: entry`): as the journal's, but a large result is left out."""

    result_omitted: bool = Field(
        default=False, description="The result is larger than a watch sends (64 KiB): read it from the journal"
    )


class EventRecord(_Response):
    seq: int
    type: str
    payload: Any
    created_at: float
    consumed_at: int | None = Field(description="The journal position of the wait that took it")


class Journal(_Response):
    id: str
    workflow: str
    steps: list[Step]
    events: list[EventRecord]
    log: str = Field(description="What the workflow printed (bounded)")
    next_after: int | None = Field(description="Pass as `after` for the next page; null on the last page")


class BundleVersion(_Response):
    """The version an exported instance is pinned to, with its whole source."""

    version: int
    source_hash: str
    source: str


class Bundle(_Response):
    """An exported instance (`GET .../instances/{id}/export`): everything needed to replay it elsewhere."""

    format: Literal["tenantflow.bundle/1"]
    exported_at: float
    workflow: str
    instance: Instance
    created_at: float = Field(
        description="Where the instance's logical clock starts (its creation; a fork's: its original's)"
    )
    seed: str = Field(description="The seed of its randomness outside step bodies, as hex")
    version: BundleVersion
    params: Any
    journal: list[Step] = Field(description="Every entry in position order, as the journal's steps")
    events: list[EventRecord] = Field(description="Every event, consumed or buffered, by seq")
    log: str = Field(description="What the workflow printed (bounded)")


class InstanceDeleted(_Response):
    id: str
    workflow: str


class WorkflowDeleted(_Response):
    name: str
    instances: int = Field(description="Instances deleted with it")


class EventAccepted(_Response):
    seq: int
    type: str


class Problem(_Response):
    """An RFC 9457 problem document."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    line: int | None = Field(default=None, description="For workflow code errors: the line")
    retry_after_s: float | None = Field(default=None, description="For quota and busy errors: seconds to wait")


class Quotas(_Response):
    max_concurrent: int
    max_instances_per_minute: int
    max_steps: int
    memory_mb: int
    fuel: int
    max_step_cpu_ms: int
    max_source_bytes: int
    max_payload_bytes: int
    max_stored_mb: int
    max_workflows: int = 1000
    egress: list[str]


class TenantInfo(_Response):
    name: str
    operator: bool
    created_at: float
    quotas: Quotas


class TenantKey(TenantInfo):
    """A new tenant, or one with a new key: the key is shown this once (only its hash is stored)."""

    api_key: str


class TenantList(_Response):
    tenants: list[TenantInfo]


class TenantDeleted(_Response):
    name: str
    workflows: int = Field(description="Workflows deleted")
    instances: int = Field(description="Instances deleted, with their journals and events")


class UsageCounts(_Response):
    """What was used: counted in the transactions of the writes they count (see the README's Metering)."""

    activations: int = Field(description="Activations: isolate starts plus waits gone on in a parked isolate")
    isolate_starts: int = Field(description="Fresh isolates started (each replays the journal)")
    replayed_steps: int = Field(description="Journal positions answered by a replay")
    steps: int = Field(description="step.do calls completed")
    attempts: int = Field(description="step.do attempts (successes, failures and retries)")
    fuel: int = Field(description="Fuel burnt by step attempts")
    cpu_s: float = Field(description="The CPU seconds that fuel stands for (fuel / fuel_per_second)")
    workflow_fuel: int = Field(
        description="Fuel burnt by the workflow's own code outside step bodies (replays included), per activation end"
    )
    workflow_cpu_s: float = Field(description="The CPU seconds workflow_fuel stands for")
    duration_ms: float = Field(description="Wall time of step attempts, ms")
    journal_bytes: int = Field(description="Net change of the bytes the journal stores (deletions count negative)")
    instances: int = Field(description="Instances created (forks included)")


class UsageRow(UsageCounts):
    key: str = Field(description="The tenant, workflow or day (YYYY-MM-DD) the row is for")


class UsageReport(_Response):
    from_: str = Field(alias="from", description="The first day (UTC), YYYY-MM-DD")
    to: str = Field(description="The last day (UTC, included), YYYY-MM-DD")
    group_by: Literal["tenant", "workflow", "day"]
    tenant: str | None = Field(description="The tenant the report is for; null: every tenant")
    fuel_per_second: int = Field(description="Fuel per CPU second")
    total: UsageCounts
    rows: list[UsageRow] = Field(description="By key; grouped by day, every day of the range")
