"""The wasmtime embedding: one `Sandbox.run` is one activation in a fresh isolate."""

from tenantflow.host.journal import (
    Abort,
    Attempt,
    Done,
    EventTimeout,
    Journal,
    Plan,
    Run,
    StepCall,
    StepConfig,
    StepFailed,
    Suspend,
)
from tenantflow.host.limits import Grants, Limits
from tenantflow.host.outcome import Completed, ErrorInfo, Failed, Outcome, Suspended
from tenantflow.host.sandbox import Sandbox

__all__ = [
    "Abort",
    "Attempt",
    "Completed",
    "Done",
    "ErrorInfo",
    "EventTimeout",
    "Failed",
    "Grants",
    "Journal",
    "Limits",
    "Outcome",
    "Plan",
    "Run",
    "Sandbox",
    "StepCall",
    "StepConfig",
    "StepFailed",
    "Suspend",
    "Suspended",
]
