"""The wasmtime embedding: one `Sandbox.run` is one activation in a fresh isolate."""

from tenantflow.host.journal import (
    Abort,
    Attempt,
    Done,
    EventTimeout,
    Journal,
    Plan,
    Run,
    StepFailed,
    StepCall,
    StepConfig,
    Suspend,
)
from tenantflow.host.limits import Grants, Limits
from tenantflow.host.outcome import Completed, ErrorInfo, Outcome, Failed, Suspended
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
