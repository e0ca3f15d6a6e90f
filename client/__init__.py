"""The Python client of a tenantflow server: for platform backends, scripts and tests.

    from tenantflow.client import Client

    with Client("http://127.0.0.1:8787", key=OPERATOR_KEY) as admin:
        acme = admin.create_tenant("acme", {"max_concurrent": 4})     # acme.api_key, shown once

    with Client("http://127.0.0.1:8787", key=acme.api_key) as client:
        approval = client.workflow("approval")
        approval.deploy(source)
        instance = approval.start({"amount": 120})
        instance.send_event("approved", {"by": "ana"})
        print(instance.result(timeout=60))

`AsyncClient` is the same for asyncio (`await`, `async with`). Answers are typed models (pydantic);
errors are `ApiError` subclasses named for the problem (`NotFound`, `InvalidState`, `QuotaExceeded`, ...);
429 and 503 answers are retried as `Retry` says, honouring Retry-After. Waiting for an instance
(`wait`, `result`) is a server-side long poll, not a polling loop; `watch()` follows one live (server-sent
events: `StatusEvent`, `EntryEvent`, `ResetEvent`) until it has finished.
"""

from tenantflow.client._async import AsyncClient, AsyncInstanceHandle, AsyncWorkflowHandle
from tenantflow.client._calls import DEFAULT_URL, Batch, Day, Retry
from tenantflow.client._errors import (
    ApiError,
    BadRequest,
    ClientError,
    Conflict,
    Forbidden,
    InstanceFailed,
    InvalidInput,
    InvalidState,
    NotFound,
    QuotaExceeded,
    ServerError,
    TooLarge,
    Unauthorized,
    Unavailable,
    WaitTimeout,
    WatchBroken,
    WorkflowCodeError,
)
from tenantflow.client._sync import Client, InstanceHandle, WorkflowHandle
from tenantflow.client._watch import EntryEvent, ResetEvent, StatusEvent, WatchEvent
from tenantflow.runtime.contract import (
    Attempt,
    BatchError,
    BulkItem,
    BulkResult,
    Bundle,
    Deployed,
    ErrorInfo,
    EventAccepted,
    EventRecord,
    Health,
    Instance,
    InstanceCounts,
    InstancePage,
    Journal,
    Quotas,
    Retention,
    Step,
    TenantDeleted,
    TenantInfo,
    TenantKey,
    UsageCounts,
    UsageReport,
    UsageRow,
    Version,
    WatchEntry,
    Workflow,
)
from tenantflow.runtime.records import FINISHED, STATUSES, Status

__all__ = [
    "DEFAULT_URL",
    "FINISHED",
    "STATUSES",
    "ApiError",
    "AsyncClient",
    "AsyncInstanceHandle",
    "AsyncWorkflowHandle",
    "Attempt",
    "BadRequest",
    "Batch",
    "BatchError",
    "BulkItem",
    "BulkResult",
    "Bundle",
    "Client",
    "ClientError",
    "Conflict",
    "Day",
    "Deployed",
    "EntryEvent",
    "ErrorInfo",
    "InstanceCounts",
    "EventAccepted",
    "EventRecord",
    "Forbidden",
    "Health",
    "Instance",
    "InstanceFailed",
    "InstanceHandle",
    "InstancePage",
    "InvalidInput",
    "InvalidState",
    "Journal",
    "NotFound",
    "QuotaExceeded",
    "Quotas",
    "ResetEvent",
    "Retention",
    "Retry",
    "ServerError",
    "Status",
    "StatusEvent",
    "Step",
    "TenantDeleted",
    "TenantInfo",
    "TenantKey",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "UsageCounts",
    "UsageReport",
    "UsageRow",
    "Version",
    "WaitTimeout",
    "WatchBroken",
    "WatchEntry",
    "WatchEvent",
    "Workflow",
    "WorkflowCodeError",
    "WorkflowHandle",
]
