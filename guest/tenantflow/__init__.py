"""tenantflow: the SDK a workflow imports, in the sandbox and on your machine alike.

    from tenantflow import WorkflowEntrypoint, NonRetryableError

    def run(event, step):                    # or: class MyFlow(WorkflowEntrypoint)
        user = step.do("load user", lambda: {"id": event.payload["user"]})
        step.sleep("cool off", "1 day")
        return user

Durable calls go through a transport (`tenantflow.transport`): the host's functions inside
the sandbox, `tenantflow.testing` in a unit test.
"""

from tenantflow._durations import Backoff, Duration, Retries, StepOptions, parse_duration
from tenantflow._errors import CapabilityError, NonRetryableError, RollbackError, StepError, WaitTimeoutError
from tenantflow._fetch import Response, fetch, fetch_async
from tenantflow._step import MAX_RESULT_BYTES, ReceivedEvent, Step, StepContext, StepInfo
from tenantflow._workflow import Event, WorkflowEntrypoint

__all__ = [
    "MAX_RESULT_BYTES",
    "Backoff",
    "CapabilityError",
    "Duration",
    "Event",
    "NonRetryableError",
    "ReceivedEvent",
    "Response",
    "Retries",
    "RollbackError",
    "Step",
    "StepContext",
    "StepError",
    "StepInfo",
    "StepOptions",
    "WaitTimeoutError",
    "WorkflowEntrypoint",
    "fetch",
    "fetch_async",
    "parse_duration",
]
