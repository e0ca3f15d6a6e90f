"""The wasmtime embedding: one `Sandbox.run` is one activation in a fresh isolate."""

from tenantflow.host.engine import ISOLATE_SLOTS, MAX_MEMORY_BYTES
from tenantflow.host.failures import HOST_ERRORS, LIMIT_ERRORS, FailureName
from tenantflow.host.journal import (
    STOP,
    Abort,
    Attempt,
    Deferring,
    Done,
    EventTimeout,
    Journal,
    Parking,
    Plan,
    Ready,
    Run,
    StepCall,
    StepConfig,
    StepFailed,
    Stop,
    Suspend,
)
from tenantflow.host.limits import Grants, Limits
from tenantflow.host.outcome import Completed, ErrorInfo, Failed, Outcome, Suspended
from tenantflow.host.sandbox import Sandbox

__all__ = [
    "Abort",
    "Attempt",
    "Completed",
    "Deferring",
    "Done",
    "ErrorInfo",
    "EventTimeout",
    "Failed",
    "FailureName",
    "Grants",
    "HOST_ERRORS",
    "ISOLATE_SLOTS",
    "Journal",
    "Parking",
    "LIMIT_ERRORS",
    "Limits",
    "MAX_MEMORY_BYTES",
    "Outcome",
    "Plan",
    "Ready",
    "Run",
    "Sandbox",
    "StepCall",
    "StepConfig",
    "StepFailed",
    "STOP",
    "Stop",
    "Suspend",
    "Suspended",
]
