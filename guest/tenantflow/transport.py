"""What the SDK asks of whoever runs the workflow: the host functions, as a small protocol.

Inside the sandbox the transport is the WIT bindings (`tenantflow._wit`, installed by the
harness at build time); on the host it is whatever a test or a local runner installs, e.g.
`tenantflow.testing`. Everything crosses as JSON text and plain values, as it does over WIT.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

__all__ = [
    "Backoff",
    "Completion",
    "Done",
    "Failed",
    "Failure",
    "Fatal",
    "Ok",
    "Outcome",
    "Plan",
    "Polled",
    "Retryable",
    "Run",
    "Stopped",
    "Transport",
    "current",
    "host_text",
    "install",
    "installed",
]


class Failure:
    """An error with a name (an exception class name) and a message; a failed attempt's has the traceback of
    what its body raised."""

    __slots__ = ("name", "message", "traceback")

    def __init__(self, name: str, message: str, traceback: str = "") -> None:
        self.name = name
        self.message = message
        self.traceback = traceback

    def __repr__(self) -> str:
        return f"Failure({self.name!r}, {self.message!r})"


# -- what to do next for a `step.do` call -------------------------------------------------------


class Run:
    """Run the body now; `attempt` counts from 1. A test transport may hand a `stand_in` body."""

    __slots__ = ("attempt", "stand_in")

    def __init__(self, attempt: int, stand_in: Callable[[], Any] | None = None) -> None:
        self.attempt = attempt
        self.stand_in = stand_in

    def __repr__(self) -> str:
        return f"Run({self.attempt!r}, {self.stand_in!r})"


class Done:
    """The step's journaled JSON result: return it."""

    __slots__ = ("result",)

    def __init__(self, result: str) -> None:
        self.result = result

    def __repr__(self) -> str:
        return f"Done({self.result!r})"


class Failed:
    """The step failed for good: raise this into the workflow."""

    __slots__ = ("failure",)

    def __init__(self, failure: Failure) -> None:
        self.failure = failure

    def __repr__(self) -> str:
        return f"Failed({self.failure!r})"


class Stopped:
    """The instance is terminated with a rollback: unwind the workflow (no new durable call will be
    answered) and run the rollbacks of the steps that completed."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Stopped()"


STOPPED = Stopped()


class Backoff:
    """An async workflow's retry back-off: wait `delay_s` seconds (other steps go on), then `step_again`."""

    __slots__ = ("delay_s",)

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    def __repr__(self) -> str:
        return f"Backoff({self.delay_s!r})"


Plan = Run | Done | Failed | Stopped | Backoff


class Completion:
    """A started call that finished: its id and the answer (JSON text, or a failure)."""

    __slots__ = ("id", "answer")

    def __init__(self, id: int, answer: str | Failure) -> None:
        self.id = id
        self.answer = answer


class Polled:
    """What `poll` saw: the host's monotonic clock in ms, and the started calls that finished."""

    __slots__ = ("now_ms", "done")

    def __init__(self, now_ms: int, done: list[Completion]) -> None:
        self.now_ms = now_ms
        self.done = done


# -- how one attempt of a step body ended --------------------------------------------------------


class Ok:
    """The body returned; `result` is its JSON."""

    __slots__ = ("result",)

    def __init__(self, result: str) -> None:
        self.result = result

    def __repr__(self) -> str:
        return f"Ok({self.result!r})"


class Retryable:
    """The body raised; the step's retry policy decides what comes next (`delay_ms`, when given, is the
    delay before the next attempt that `retries.delay` as a function chose)."""

    __slots__ = ("failure", "delay_ms")

    def __init__(self, failure: Failure, delay_ms: int | None = None) -> None:
        self.failure = failure
        self.delay_ms = delay_ms

    def __repr__(self) -> str:
        return f"Retryable({self.failure!r}, {self.delay_ms!r})"


class Fatal:
    """The body failed in a way no retry can fix (NonRetryableError, a result that is not JSON)."""

    __slots__ = ("failure",)

    def __init__(self, failure: Failure) -> None:
        self.failure = failure

    def __repr__(self) -> str:
        return f"Fatal({self.failure!r})"


Outcome = Ok | Retryable | Fatal


class Transport(Protocol):
    """The host functions of the WIT world `tenantflow:sandbox/host`.

    A call that must wait (a sleep, an event, a retry back-off) may never return: the sandbox
    ends the isolate instead, and the workflow is replayed later.
    """

    def step_begin(self, name: str, config: str) -> Plan:
        """Start (or replay) `step.do(name)`; `config` is JSON with retries and timeout in ms."""
        ...

    def rollback_begin(self, name: str, config: str) -> Plan:
        """Start (or replay) the rollback of the completed step `name`, at the journal's next position."""
        ...

    def step_complete(self, name: str, count: int, outcome: Outcome) -> Plan:
        """Report the attempt of `name`'s call number `count` started by its last `Run` plan."""
        ...

    def step_again(self, name: str, count: int) -> Plan:
        """After a `Backoff` plan: the next attempt of that call (or its outcome)."""
        ...

    def concurrent(self) -> None:
        """The workflow is async: durable calls match the journal by name and count; bodies may overlap."""
        ...

    def enter(self, name: str, count: int) -> None:
        """The body of `name`'s call number `count` runs from now."""
        ...

    def leave(self) -> None:
        """The workflow's own code runs from now."""
        ...

    def abandon(self, name: str, count: int) -> None:
        """The attempt of `name`'s call number `count` will not complete (its task was cancelled)."""
        ...

    def sleep(self, name: str, duration_ms: int) -> bool:
        """`step.sleep`: returns True once the journaled wake time has passed, False to stop (`Stopped`)."""
        ...

    def sleep_until(self, name: str, wake_at_ms: int) -> bool:
        """`step.sleep_until`: wake time as milliseconds since the epoch; as `sleep`."""
        ...

    def wait_for_event(self, name: str, event_type: str, timeout_ms: int | None) -> str | Failure | Stopped:
        """The event's JSON ({type, payload, timestamp}), a failure when the wait timed out, or `Stopped`."""
        ...

    def call(self, capability: str, request: str) -> str | Failure:
        """A capability granted by the platform (e.g. "fetch"); request and response are JSON."""
        ...

    def call_start(self, capability: str, request: str) -> int | Failure:
        """`call` without waiting: an id for `poll`."""
        ...

    def poll(self, timeout_ms: int | None) -> Polled:
        """Wait until a started call finishes or `timeout_ms` passes (None: until one finishes)."""
        ...

    def log(self, fd: int, text: str) -> None:
        """One chunk of the workflow's stdout (1) or stderr (2)."""
        ...


class _Unbound:
    """The transport outside any runner: every durable call explains what is missing."""

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            "no workflow runner: step calls and fetch work inside tenantflow's sandbox, "
            "or under tenantflow.testing.WorkflowTestEnvironment"
        )

    step_begin = rollback_begin = step_complete = step_again = sleep = sleep_until = wait_for_event = call = _refuse
    concurrent = enter = leave = abandon = call_start = poll = _refuse

    def log(self, fd: int, text: str) -> None:
        pass


_current: Transport = _Unbound()


def current() -> Transport:
    """The installed transport."""
    return _current


def install(transport: Transport) -> Transport:
    """Make `transport` the one `Step()` and `fetch` use; returns the one it replaces."""
    global _current
    previous, _current = _current, transport
    return previous


@contextmanager
def installed(transport: Transport) -> Iterator[Transport]:
    """`transport` installed for the duration of a `with` block."""
    previous = install(transport)
    try:
        yield transport
    finally:
        install(previous)


def host_text(value: str) -> str:
    """`value` as valid UTF-8 for the host: lone surrogates become backslash escapes."""
    if value.isascii():  # nearly every name: no surrogates, and no encoding to find out
        return value
    try:
        value.encode()
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode()
    return value
