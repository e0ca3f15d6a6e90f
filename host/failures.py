"""The names of the failures the platform itself gives (beyond a workflow's own exception names).

One list for the guest, the host and the runtime: the guest builds its names from the same strings
(tests/host/test_failure_names.py holds the guest's source against this enum), the host and the
runtime use the members. Members are `str`s, so they compare equal to, store and serialize as
their names.
"""

from __future__ import annotations

import enum

__all__ = ["HOST_ERRORS", "LIMIT_ERRORS", "FailureName"]


class FailureName(enum.StrEnum):
    """A failure name the guest, the host or the runtime gives an activation, a step or a call."""

    # -- limits: the activation used up what it may use -----------------------------------------
    FUEL_EXHAUSTED = "FuelExhausted"
    MEMORY_LIMIT_EXCEEDED = "MemoryLimitExceeded"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    # The output, a step result or the log is over its cap.
    OUTPUT_LIMIT_EXCEEDED = "OutputLimitExceeded"
    STACK_OVERFLOW = "StackOverflow"
    # One attempt of a step overran the step's timeout (a failed attempt; the instance goes on).
    STEP_TIMEOUT = "StepTimeout"
    # One attempt of a step used its CPU budget (the step's `cpu`; a failed attempt that is retried).
    STEP_CPU_EXHAUSTED = "StepCPUExhausted"

    # -- the host ends the activation ---------------------------------------------------------------
    # `Sandbox.run(cancel=...)` was set (terminate, shutdown); the attempt in flight is not journaled.
    CANCELLED = "Cancelled"
    # The guest handed a host function something it refuses (size, shape, JSON, range).
    INVALID_HOST_CALL = "InvalidHostCall"
    # The guest called WASI exit (os._exit).
    GUEST_EXIT = "GuestExit"
    # The guest crashed (a wasm trap that is none of the limits).
    GUEST_TRAP = "GuestTrap"
    # The source does not compile or define a workflow, or calls steps wrongly.
    WORKFLOW_CODE_ERROR = "WorkflowCodeError"

    # -- the guest library ----------------------------------------------------------------------
    # The workflow's return value is not JSON.
    OUTPUT_NOT_SERIALIZABLE = "OutputNotSerializable"
    # A step body's return value is not JSON.
    RESULT_NOT_SERIALIZABLE = "ResultNotSerializable"
    # The exception a step body raises to fail at once (the guest re-raises it by this name).
    NON_RETRYABLE_ERROR = "NonRetryableError"
    # A `retries.delay` function raised or returned no duration: the step fails at once.
    RETRY_DELAY_ERROR = "RetryDelayError"
    # A rollback failed for good (its error and the one that caused the rollback are in the message).
    ROLLBACK_ERROR = "RollbackError"
    # The run unwound because the instance was terminated with a rollback.
    TERMINATED = "Terminated"

    # -- the durable runtime (the journal and the worker) ---------------------------------------
    # The workflow took different steps on replay than the journal recorded.
    NON_DETERMINISM_ERROR = "NonDeterminismError"
    STEP_LIMIT_EXCEEDED = "StepLimitExceeded"
    STORAGE_QUOTA_EXCEEDED = "StorageQuotaExceeded"
    # `step.wait_for_event` timed out (the guest raises its WaitTimeoutError).
    WAIT_TIMEOUT_ERROR = "WaitTimeoutError"
    # The activation failed in the host (not the workflow's doing) too many times in a row.
    HOST_FAULT = "HostFault"

    # -- capability calls (`host.call`): the guest sees these as the call's error -----------------
    CAPABILITY_NOT_GRANTED = "CapabilityNotGranted"
    BAD_REQUEST = "BadRequest"
    FETCH_ERROR = "FetchError"
    EGRESS_DENIED = "EgressDenied"
    FETCH_TIMEOUT = "FetchTimeout"
    RESPONSE_TOO_LARGE = "ResponseTooLarge"
    # An async workflow started more calls at once than it may have in flight (`fetch_async`).
    TOO_MANY_CALLS = "TooManyCalls"


# An activation that ended on one of these hit a limit (counted per tenant and name in the metrics).
LIMIT_ERRORS: frozenset[FailureName] = frozenset(
    {
        FailureName.FUEL_EXHAUSTED,
        FailureName.MEMORY_LIMIT_EXCEEDED,
        FailureName.DEADLINE_EXCEEDED,
        FailureName.OUTPUT_LIMIT_EXCEEDED,
        FailureName.STACK_OVERFLOW,
        FailureName.STEP_TIMEOUT,
        FailureName.STEP_CPU_EXHAUSTED,
    }
)

# Every failure name the host itself gives an activation (beyond the workflow's own exceptions).
HOST_ERRORS: frozenset[FailureName] = LIMIT_ERRORS | frozenset(
    {
        FailureName.CANCELLED,
        FailureName.INVALID_HOST_CALL,
        FailureName.GUEST_EXIT,
        FailureName.GUEST_TRAP,
        FailureName.WORKFLOW_CODE_ERROR,
    }
)
