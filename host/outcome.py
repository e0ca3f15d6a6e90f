"""Typed outcomes of an activation."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ErrorInfo:
    """A named error: FuelExhausted, MemoryLimitExceeded, WorkflowCodeError, ..."""

    name: str
    message: str
    traceback: str = ""
    line: int | None = None


@dataclass(frozen=True)
class Stats:
    """What one activation cost."""

    fuel: int = 0
    duration_ms: float = 0.0
    instantiate_ms: float = 0.0
    log: str = ""
    log_truncated: bool = False


@dataclass(frozen=True)
class Completed:
    """`run` returned: `output` is its JSON."""

    output: str
    stats: Stats = field(default_factory=Stats)


@dataclass(frozen=True)
class Suspended:
    """The journal ended the activation; the instance resumes later."""

    reason: str
    wake_at_ms: int | None = None
    stats: Stats = field(default_factory=Stats)


@dataclass(frozen=True)
class Failed:
    """The activation failed with a named error (raised by the workflow or a limit hit)."""

    error: ErrorInfo
    stats: Stats = field(default_factory=Stats)


Outcome = Completed | Suspended | Failed

LIMIT_ERRORS = frozenset(
    {
        "FuelExhausted",
        "MemoryLimitExceeded",
        "DeadlineExceeded",
        "OutputLimitExceeded",
        "StackOverflow",
        "StepTimeout",
    }
)

# Every failure name the host itself gives an activation (beyond the workflow's own exceptions).
HOST_ERRORS = LIMIT_ERRORS | frozenset(
    {
        # `Sandbox.run(cancel=...)` was set (terminate, shutdown); the attempt in flight is not journaled.
        "Cancelled",
        # The guest handed a host function something it refuses (size, shape, JSON, range).
        "InvalidHostCall",
        # The guest called WASI exit (os._exit).
        "GuestExit",
        # The guest crashed (a wasm trap that is none of the limits).
        "GuestTrap",
        # The source does not compile or define a workflow, or calls steps wrongly.
        "WorkflowCodeError",
    }
)
