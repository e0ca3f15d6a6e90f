"""Typed outcomes of an activation."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ErrorInfo:
    """A named error: a `FailureName` (FuelExhausted, WorkflowCodeError, ...) or the workflow's own exception's."""

    name: str
    message: str
    traceback: str = ""
    line: int | None = None


@dataclass(frozen=True)
class Stats:
    """What one activation cost."""

    fuel: int = 0
    duration_ms: float = 0.0
    # From the start to a fresh isolate ready to call: taken from the pool (~0.1 ms) or instantiated (~1 ms).
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
