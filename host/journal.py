"""The contract between the sandbox and whoever keeps the journal (the runtime).

The host counts durable calls and hands each one to a `Journal` as a
`StepCall`; the journal answers from what it has recorded, records what is
new, or raises `Suspend` to end the activation until the instance may go on.
No SQL here: the runtime implements this protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from tenantflow.host.limits import DEFAULT_STEP_CPU_MS, FUEL_PER_SECOND, MAX_DURATION_MS

Kind = Literal["do", "sleep", "wait", "rollback"]
Backoff = Literal["constant", "linear", "exponential"]


@dataclass(frozen=True)
class StepCall:
    """One durable call: its position in the run, its name and which call of that name it is.

    `keyed`: the call is an async workflow's, whose calls may run side by side and begin in another order on
    replay: the journal matches it by name and occurrence, not by position (`position` is only the order in
    which this activation made its calls)."""

    position: int
    name: str
    occurrence: int
    kind: Kind
    # The position of the step whose body makes this call (a nested step.do), or None.
    parent: int | None = None
    keyed: bool = False


@dataclass(frozen=True)
class StepConfig:
    """Retries, timeout and CPU budget of `step.do`, with Cloudflare Workflows' defaults.

    `cpu_ms` None is the default budget (DEFAULT_STEP_CPU_MS); either way the tenant's cap applies.
    """

    limit: int = 5
    delay_ms: int = 10_000
    backoff: Backoff = "exponential"
    timeout_ms: int = 600_000
    cpu_ms: int | None = None

    def cpu_budget_ms(self, cap_ms: int) -> int:
        """The CPU one attempt may use, in ms: the step's `cpu` (or the default) within the tenant's cap."""
        return min(DEFAULT_STEP_CPU_MS if self.cpu_ms is None else self.cpu_ms, cap_ms)

    def fuel_budget(self, cap_ms: int) -> int:
        return self.cpu_budget_ms(cap_ms) * FUEL_PER_SECOND // 1000

    def delay_before(self, attempt: int) -> int:
        """Milliseconds to wait before `attempt` (2 is the first retry)."""
        retry = attempt - 1
        delay: float
        if self.backoff == "constant":
            delay = self.delay_ms
        elif self.backoff == "linear":
            delay = self.delay_ms * retry
        else:
            delay = self.delay_ms * 2.0 ** (retry - 1)
        return int(min(delay, MAX_DURATION_MS))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepConfig:
        default = cls()
        backoff = data.get("backoff", default.backoff)
        return cls(
            limit=_whole(data.get("limit"), default.limit),
            delay_ms=_whole(data.get("delay_ms"), default.delay_ms),
            backoff=backoff if backoff in ("constant", "linear", "exponential") else default.backoff,
            timeout_ms=_whole(data.get("timeout_ms"), default.timeout_ms),
            cpu_ms=_whole(data.get("cpu_ms"), None),
        )


def _whole(value: Any, default: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return default


@dataclass(frozen=True)
class Run:
    """Run the step body now; `attempt` counts from 1."""

    attempt: int


@dataclass(frozen=True)
class Done:
    """The step's journaled JSON result. `span`: how many positions after it its body's nested steps hold
    (skipped: the body does not run again)."""

    result: str
    span: int = 0


@dataclass(frozen=True)
class StepFailed:
    """The step failed for good; the error is raised into the workflow. `span` as Done's."""

    name: str
    message: str
    span: int = 0


@dataclass(frozen=True)
class Stop:
    """The instance is terminated with a rollback: the workflow unwinds (a durable call that is not
    journaled as finished is not made) and runs the rollbacks of its completed steps."""


STOP = Stop()

Plan = Run | Done | StepFailed | Stop


@dataclass(frozen=True)
class Attempt:
    """How one attempt of a step body ended, and what it cost."""

    attempt: int
    ok: bool
    result: str | None = None
    error_name: str | None = None
    error_message: str | None = None
    retryable: bool = True
    fuel: int = 0
    duration_ms: float = 0.0
    # The delay before the next attempt that `retries.delay` as a function chose (None: the config's).
    delay_ms: int | None = None
    # The tenant's traceback of what a failed attempt's body raised (None: none given).
    traceback: str | None = None


class Suspend(Exception):
    """Raised by a journal to end the activation; the instance goes on later.

    A `parkable` suspension is a wait (a timer, a retry's back-off, an event of type `waiting_for`):
    a journal that implements `Parking` may keep the isolate and go on in it when the wait is over.
    `in_isolate_s`: a retry's back-off that may be waited out in the isolate, this many seconds of real time
    (an async workflow's, while its other steps go on); None when the journal's clock is not real time.
    """

    def __init__(
        self,
        reason: str,
        wake_at_ms: int | None = None,
        *,
        parkable: bool = False,
        waiting_for: str | None = None,
        in_isolate_s: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wake_at_ms = wake_at_ms
        self.parkable = parkable
        self.waiting_for = waiting_for
        self.in_isolate_s = in_isolate_s


class Abort(Exception):
    """Raised by a journal to fail the activation with a named error (e.g. NonDeterminismError)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


class EventTimeout(Exception):
    """Raised by `Journal.wait_for_event` when the wait timed out; the workflow sees WaitTimeoutError."""


class Journal(Protocol):
    """What the host asks of the runtime during one activation."""

    def step_begin(self, call: StepCall, config: StepConfig) -> Plan: ...

    def step_complete(self, call: StepCall, config: StepConfig, attempt: Attempt) -> Plan: ...

    def sleep_until(self, call: StepCall, wake_at_ms: int | None, duration_ms: int | None) -> Stop | None: ...

    def wait_for_event(self, call: StepCall, event_type: str, timeout_ms: int | None) -> Any:
        """The event ({type, payload, timestamp}), or STOP; raises EventTimeout or Suspend."""
        ...

    def moment(self, call: StepCall) -> float | None:
        """When the call, which has just returned, finished as the journal records it (epoch seconds): a
        step's or wait's last write, a sleep's wake time; None if unrecorded. The instance's logical time
        moves on to it, the same on every replay."""
        ...


class Ready(Protocol):
    """What an activation started before the instance it runs is durable waits for (`Sandbox.run(ready=)`)."""

    def wait(self) -> bool:
        """Block until it is known: True, the instance exists (go on); False, it does not (the activation ends
        Cancelled, having done nothing outside the sandbox)."""
        ...


@runtime_checkable
class Deferring(Protocol):
    """A journal that may answer a step's `step_complete` with Done before its write has committed (`pending`).

    The workflow's code goes on meanwhile, other steps included, up to its next host call with an effect outside
    the sandbox (a capability call, a wait for one, a wait in WASI), before which the host calls `flush`: that
    commits the pending writes, or raises what they would have raised (Suspend, Abort). What the workflow did in
    between touched nothing but its own isolate. The journal's own calls are not flushed first: a write of theirs
    (a failed attempt's, a sleep's, a wait's) commits the pending writes with its own, and the journal may commit
    them whenever it chooses (it bounds how many wait). Writes still pending when the activation ends are the
    caller's of `Sandbox.run` to commit (with the end, in one commit) or to `flush`."""

    @property
    def pending(self) -> bool: ...

    def flush(self) -> None: ...


@runtime_checkable
class Parking(Protocol):
    """A journal that can hold an isolate through a wait (hot resume) instead of ending the activation."""

    def park(self, wait: Suspend, log: str) -> bool:
        """Block until the wait is over (True: the host asks the journal again and goes on in this isolate)
        or the isolate must go (False: the activation ends with `wait`, and the instance is replayed later)."""
        ...
