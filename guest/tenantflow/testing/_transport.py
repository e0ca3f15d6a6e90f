"""The SDK's transport for tests: what the sandbox's host functions do, over a `TestJournal`.

Names and configs are checked as the host checks them (InvalidHostCall), calls are counted into
positions and (name, n-th call) keys as in host/sandbox.py, and a `Suspend` or `Abort` from the
journal ends the activation the way a trap does: by unwinding out of the workflow.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tenantflow.host.journal import (
    Abort,
    Attempt,
    Done,
    EventTimeout,
    Kind,
    Plan,
    Run,
    StepCall,
    StepConfig,
    StepFailed,
    Suspend,
)
from tenantflow.host.limits import (
    EVENT_TYPE_PATTERN,
    MAX_DURATION_MS,
    MAX_EPOCH_SECONDS,
    MAX_NAME_BYTES,
    MAX_RETRIES,
    MAX_STEP_CPU_MS,
)
from tenantflow.transport import Done as SdkDone
from tenantflow.transport import Failed, Failure, Fatal, Ok, Outcome, Polled, Retryable
from tenantflow.transport import Plan as SdkPlan
from tenantflow.transport import Run as SdkRun

if TYPE_CHECKING:
    from tenantflow.testing._environment import WorkflowTestEnvironment
    from tenantflow.testing._journal import TestJournal

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EVENT_TYPE = re.compile(EVENT_TYPE_PATTERN)


class Stop(BaseException):
    """Ends an activation from inside the workflow, as the sandbox's trap does (a BaseException,
    so that the workflow's own `except Exception` does not swallow it)."""

    def __init__(self, signal: Suspend | Abort) -> None:
        super().__init__(str(signal))
        self.signal = signal


def invalid(call: str, message: str) -> Stop:
    return Stop(Abort("InvalidHostCall", f"{call}: {message}"))


def check_name(call: str, name: str) -> str:
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise invalid(call, f"the step name is longer than {MAX_NAME_BYTES} bytes")
    if _CONTROL.search(name):
        raise invalid(call, "the step name contains control characters")
    return name


def step_config(config_json: str) -> StepConfig:
    """The config as the host reads it: out-of-range fields are refused, not defaulted."""
    data = json.loads(config_json)
    default = StepConfig()
    bounds = (
        ("limit", MAX_RETRIES),
        ("delay_ms", MAX_DURATION_MS),
        ("timeout_ms", MAX_DURATION_MS),
        ("cpu_ms", MAX_STEP_CPU_MS),
    )
    for key, maximum in bounds:
        value = data.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
            raise invalid("step-begin", f"bad step config: {key} is a whole number from 0 to {maximum}")
    return StepConfig(
        limit=data.get("limit", default.limit),
        delay_ms=data.get("delay_ms", default.delay_ms),
        backoff=data.get("backoff", default.backoff),
        timeout_ms=data.get("timeout_ms", default.timeout_ms),
        cpu_ms=data.get("cpu_ms"),
    )


class TestTransport:
    """One activation's transport (a fresh one per replay, as a fresh isolate)."""

    __test__ = False  # not a pytest class

    def __init__(self, env: WorkflowTestEnvironment, journal: TestJournal) -> None:
        self.env = env
        self.journal = journal
        self.position = 0
        self.occurrences: Counter[str] = Counter()
        # The bodies running, innermost last (a step.do in a body nests).
        self.flights: list[tuple[StepCall, StepConfig, int, float]] = []
        # An async workflow: its attempts in flight by (name, occurrence), and the one whose body runs now.
        self.keyed = False
        self.open: dict[tuple[str, int], tuple[StepCall, StepConfig, int, float]] = {}
        self.entered: StepCall | None = None

    def _next_call(self, name: str, kind: Kind) -> StepCall:
        if self.keyed:
            parent = None if self.entered is None else self.entered.position
        else:
            parent = self.flights[-1][0].position if self.flights else None
        call = StepCall(self.position, name, self.occurrences[name], kind, parent, self.keyed)
        self.position += 1
        self.occurrences[name] += 1
        return call

    def _journaled(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except (Suspend, Abort) as signal:
            raise Stop(signal) from None

    def _plan(self, call: StepCall, config: StepConfig, plan: Plan) -> SdkPlan:
        if isinstance(plan, Done):
            self.position += plan.span
            return SdkDone(plan.result)
        if isinstance(plan, StepFailed):
            self.position += plan.span
            return Failed(Failure(plan.name, plan.message))
        assert isinstance(plan, Run)
        if self.keyed:
            self.open[(call.name, call.occurrence)] = (call, config, plan.attempt, time.perf_counter())
            return SdkRun(plan.attempt, self.env._stand_in(call, plan.attempt))
        self.position = call.position + 1  # each attempt's nested steps take the same positions
        self.flights.append((call, config, plan.attempt, time.perf_counter()))
        return SdkRun(plan.attempt, self.env._stand_in(call, plan.attempt))

    def step_begin(self, name: str, config: str, kind: Kind = "do") -> SdkPlan:
        check_name("step-begin", name)
        step = step_config(config)
        call = self._next_call(name, kind)
        return self._plan(call, step, self._journaled(self.journal.step_begin, call, step))

    def rollback_begin(self, name: str, config: str) -> SdkPlan:
        return self.step_begin(name, config, "rollback")

    def step_complete(self, name: str, count: int, outcome: Outcome) -> SdkPlan:
        if self.keyed:
            flight = self.open.pop((name, count - 1), None)
        else:
            flight = self.flights.pop() if self.flights and self.flights[-1][0].name == name else None
        if flight is None:
            raise Stop(Abort("WorkflowCodeError", f"step-complete for {name!r} without a step in flight"))
        call, config, number, started = flight
        duration_ms = (time.perf_counter() - started) * 1000
        if duration_ms > config.timeout_ms:
            # The sandbox interrupts the body at its timeout; here it ran to the end, and counts as timed out.
            message = f"step {name!r} ran longer than {config.timeout_ms} ms"
            attempt = Attempt(number, ok=False, error_name="StepTimeout", error_message=message)
        elif isinstance(outcome, Ok):
            attempt = Attempt(number, ok=True, result=outcome.result, duration_ms=duration_ms)
        else:
            failure = outcome.failure
            retryable = isinstance(outcome, Retryable)
            assert retryable or isinstance(outcome, Fatal)
            delay_ms = outcome.delay_ms if isinstance(outcome, Retryable) else None
            if delay_ms is not None and delay_ms > MAX_DURATION_MS:
                raise invalid("step-complete", f"a retry delay is at most {MAX_DURATION_MS} ms (365 days)")
            attempt = Attempt(
                number,
                False,
                None,
                failure.name,
                failure.message,
                retryable,
                duration_ms=duration_ms,
                delay_ms=delay_ms,
                traceback=failure.traceback or None,
            )
        return self._plan(call, config, self._journaled(self.journal.step_complete, call, config, attempt))

    def step_again(self, name: str, count: int) -> SdkPlan:
        # Back-offs end the activation here (the clock is virtual): no plan ever says `Backoff`.
        raise invalid("step-again", "no back-off is waited out in a test run")

    def concurrent(self) -> None:
        if self.position:
            raise invalid("concurrent", "an async workflow says so before its first durable call")
        self.keyed = True

    def enter(self, name: str, count: int) -> None:
        flight = self.open.get((name, count - 1))
        if flight is None:
            raise Stop(Abort("WorkflowCodeError", f"enter {name!r} #{count}: no attempt of it in flight"))
        self.entered = flight[0]

    def leave(self) -> None:
        self.entered = None

    def abandon(self, name: str, count: int) -> None:
        self.open.pop((name, count - 1), None)

    def call_start(self, capability: str, request: str) -> int | Failure:
        # fetch_async on asyncio's own loop calls `call` in a thread instead.
        raise invalid("call-start", "started calls are the sandbox's; tests fetch through `call`")

    def poll(self, timeout_ms: int | None) -> Polled:
        raise invalid("poll", "started calls are the sandbox's; tests fetch through `call`")

    def sleep(self, name: str, duration_ms: int) -> bool:
        check_name("sleep", name)
        if duration_ms > MAX_DURATION_MS:
            raise invalid("sleep", f"a sleep is at most 365 days ({MAX_DURATION_MS} ms), got {duration_ms} ms")
        self._journaled(self.journal.sleep_until, self._next_call(name, "sleep"), None, duration_ms)
        return True

    def sleep_until(self, name: str, wake_at_ms: int) -> bool:
        check_name("sleep-until", name)
        if wake_at_ms > MAX_EPOCH_SECONDS * 1000:
            raise invalid(
                "sleep-until",
                f"sleep_until takes epoch seconds (or a datetime); {wake_at_ms // 1000} looks like milliseconds",
            )
        self._journaled(self.journal.sleep_until, self._next_call(name, "sleep"), wake_at_ms, None)
        return True

    def wait_for_event(self, name: str, event_type: str, timeout_ms: int | None) -> str | Failure:
        check_name("wait-for-event", name)
        if not _EVENT_TYPE.fullmatch(event_type):
            raise invalid("wait-for-event", f"an event type matches {EVENT_TYPE_PATTERN}")
        if timeout_ms is not None and timeout_ms > MAX_DURATION_MS:
            raise invalid("wait-for-event", f"a wait is at most {MAX_DURATION_MS} ms (365 days)")
        call = self._next_call(name, "wait")
        try:
            return json.dumps(self._journaled(self.journal.wait_for_event, call, event_type, timeout_ms))
        except EventTimeout as timeout:
            return Failure("WaitTimeoutError", str(timeout))

    def call(self, capability: str, request: str) -> str | Failure:
        if capability != "fetch":
            return Failure("CapabilityNotGranted", f"no capability named {capability[:100]!r}")
        return self.env._fetch(json.loads(request))

    def log(self, fd: int, text: str) -> None:
        (sys.stderr if fd == 2 else sys.stdout).write(text)
