"""`step`: the durable calls of a workflow, made through the installed transport.

Every durable operation is a call into the host, which reads and writes the journal. When the
host needs the workflow to wait (a sleep, an event, a retry back-off) it does not return: it
traps, and the isolate is thrown away.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypedDict, TypeVar, overload

from tenantflow import transport as _transport
from tenantflow._durations import Duration, Retries, StepOptions, parse_duration, step_config
from tenantflow._errors import NonRetryableError, StepError, WaitTimeoutError
from tenantflow.transport import Done, Failed, Failure, Fatal, Ok, Outcome, Retryable, Transport, host_text

T = TypeVar("T")

MAX_RESULT_BYTES = 1 << 20
"""The largest step result and workflow output, in bytes of JSON."""


class ReceivedEvent(TypedDict):
    """What `step.wait_for_event` returns."""

    type: str
    payload: Any
    timestamp: float


MAX_NAME = 256
"""The longest step, sleep or wait name (the host refuses longer ones too)."""


class StepInfo:
    """The step a body runs for: its name, and which call of that name it is in the run (1 for the first)."""

    __slots__ = ("name", "count")

    def __init__(self, name: str, count: int) -> None:
        self.name = name
        self.count = count

    def __repr__(self) -> str:
        return f"StepInfo(name={self.name!r}, count={self.count!r})"


class StepContext:
    """What a step body (or a retry delay function) that takes one argument is given: `attempt` (1 for the
    first), `step` (its name and count) and `config` (the step's options as given: retries, timeout, cpu)."""

    __slots__ = ("attempt", "step", "config")

    def __init__(self, attempt: int, step: StepInfo, config: dict[str, Any]) -> None:
        self.attempt = attempt
        self.step = step
        self.config = config

    def __repr__(self) -> str:
        return f"StepContext(attempt={self.attempt!r}, step={self.step!r}, config={self.config!r})"


if TYPE_CHECKING:
    StepBody = Callable[[], T] | Callable[[StepContext], T]
    """A step body: no arguments, or the step's context."""


def _failure(error: BaseException) -> Failure:
    if isinstance(error, NonRetryableError):
        return Failure(host_text(error.name[:MAX_NAME]), host_text(error.message[:4096]))
    return Failure(type(error).__name__, host_text(str(error)[:4096]))


def _raise_failure(failure: Failure) -> NoReturn:
    if failure.name == "NonRetryableError":
        raise NonRetryableError(failure.message)
    raise StepError(failure.name, failure.message)


def _check_name(name: Any) -> str:
    """A step, sleep or wait name: 1-256 characters, no control characters (ValueError, at the call)."""
    if not isinstance(name, str) or not name:
        raise TypeError("a step name is a non-empty string")
    if len(name) > MAX_NAME:
        raise ValueError(f"a step name is at most {MAX_NAME} characters, got {len(name)}")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in name):
        raise ValueError(f"a step name has no control characters: {name[:60]!r}")
    return name


def _takes_context(fn: Callable[..., Any]) -> bool:
    """Whether `fn` has a positional parameter without a default (it is given the step's context). A
    parameter with a default, as in `lambda i=i: ...`, keeps its default. Read from the code object: the
    SDK loads nothing it can do without (no `inspect`, no dataclasses or typing at run time), since every
    object in the snapshot's heap makes each isolate's garbage collection work more (measured: +14% fuel
    for an allocating loop)."""
    bound = 0
    target: Any = fn
    if not hasattr(target, "__code__"):
        # A bound method (`self` is given), or an object whose __call__ is one.
        method = target if hasattr(target, "__func__") else vars(type(target)).get("__call__")
        if method is not None:
            target, bound = getattr(method, "__func__", method), 1
    code = getattr(target, "__code__", None)
    if code is None:  # a builtin or a partial: called with no arguments
        return False
    if code.co_flags & 0x04:  # *args
        return True
    required: int = code.co_argcount - len(getattr(target, "__defaults__", None) or ()) - bound
    return required >= 1


class Step:
    """The `step` argument of `run(event, step)`."""

    def __init__(self, transport: Transport | None = None) -> None:
        self._transport = transport if transport is not None else _transport.current()
        self._in_body = False
        self._counts: dict[str, int] = {}

    @overload
    def do(
        self,
        name: str,
        fn_or_config: StepBody[T],
        fn: None = None,
        *,
        retries: Retries | None = None,
        timeout: Duration | None = None,
        cpu: Duration | None = None,
    ) -> T: ...

    @overload
    def do(
        self,
        name: str,
        fn_or_config: StepOptions,
        fn: StepBody[T],
        *,
        retries: Retries | None = None,
        timeout: Duration | None = None,
        cpu: Duration | None = None,
    ) -> T: ...

    @overload
    def do(
        self,
        name: str,
        fn_or_config: StepOptions | None = None,
        fn: None = None,
        *,
        retries: Retries | None = None,
        timeout: Duration | None = None,
        cpu: Duration | None = None,
    ) -> Callable[[StepBody[T]], T]: ...

    def do(
        self,
        name: str,
        fn_or_config: Any = None,
        fn: Callable[..., Any] | None = None,
        *,
        retries: Retries | None = None,
        timeout: Duration | None = None,
        cpu: Duration | None = None,
    ) -> Any:
        """Run `fn` once, durably: `step.do(name, fn)`, `step.do(name, config, fn)` or `@step.do(name)`.

        The decorator form runs the step at once and binds its result to the function's name.
        `cpu` is each attempt's CPU budget (default 30 seconds, at most 5 minutes); an attempt that
        uses it up fails with StepCPUExhausted and is retried as `retries` says.
        """
        _check_name(name)
        if isinstance(fn_or_config, dict):
            retries = fn_or_config.get("retries", retries)
            timeout = fn_or_config.get("timeout", timeout)
            cpu = fn_or_config.get("cpu", cpu)
        elif callable(fn_or_config):
            fn = fn_or_config
        elif fn_or_config is not None:
            raise TypeError("step.do(name, fn) or step.do(name, config, fn)")
        config = step_config(retries, timeout, cpu)
        given = {k: v for k, v in (("retries", retries), ("timeout", timeout), ("cpu", cpu)) if v is not None}
        if fn is None:
            return lambda body: self._run_step(name, config, given, body)
        return self._run_step(name, config, given, fn)

    def _run_step(self, name: str, config: str, given: dict[str, Any], fn: Callable[..., Any]) -> Any:
        if self._in_body:
            raise RuntimeError(f"step {name!r} is called inside another step's body; steps cannot nest")
        count = self._counts[name] = self._counts.get(name, 0) + 1
        name = host_text(name)
        transport = self._transport
        plan = transport.step_begin(name, config)
        while True:
            if isinstance(plan, Done):
                return json.loads(plan.result)
            if isinstance(plan, Failed):
                _raise_failure(plan.failure)
            context = StepContext(plan.attempt, StepInfo(name, count), given)
            plan = transport.step_complete(name, self._attempt(plan.stand_in or fn, context))

    def _attempt(self, fn: Callable[..., Any], context: StepContext) -> Outcome:
        self._in_body = True
        try:
            value = fn(context) if _takes_context(fn) else fn()
        except NonRetryableError as error:
            return Fatal(_failure(error))
        except Exception as error:
            return Retryable(_failure(error))
        finally:
            self._in_body = False
        try:
            text = json.dumps(value)
        except (TypeError, ValueError) as error:
            return Fatal(Failure("ResultNotSerializable", str(error)))
        if len(text) > MAX_RESULT_BYTES:
            message = f"a step result is at most {MAX_RESULT_BYTES} bytes of JSON, got {len(text)}"
            return Fatal(Failure("OutputLimitExceeded", message))
        return Ok(text)

    def sleep(self, name: str, duration: Duration) -> None:
        """Sleep durably for a duration ("1 day", or milliseconds)."""
        self._check_outside_body(name)
        self._transport.sleep(host_text(name), parse_duration(duration))

    def sleep_until(self, name: str, when: datetime.datetime | float) -> None:
        """Sleep durably until a datetime (naive means UTC) or epoch seconds."""
        self._check_outside_body(name)
        if isinstance(when, datetime.datetime):
            if when.tzinfo is None:
                when = when.replace(tzinfo=datetime.UTC)
            epoch = when.timestamp()
        elif isinstance(when, (int, float)) and not isinstance(when, bool):
            epoch = float(when)
        else:
            raise TypeError("sleep_until takes a datetime or epoch seconds")
        self._transport.sleep_until(host_text(name), int(epoch * 1000))

    def wait_for_event(self, name: str, event_type: str, timeout: Duration | None = "24 hours") -> ReceivedEvent:
        """Wait durably for an event of `event_type`; returns {type, payload, timestamp}.

        Raises `WaitTimeoutError` when `timeout` passes first; `timeout=None` waits for ever.
        """
        self._check_outside_body(name)
        if not isinstance(event_type, str) or not event_type:
            raise TypeError("event_type is a non-empty string")
        timeout_ms = None if timeout is None else parse_duration(timeout)
        answer = self._transport.wait_for_event(host_text(name), host_text(event_type), timeout_ms)
        if isinstance(answer, Failure):
            raise WaitTimeoutError(answer.message)
        result: ReceivedEvent = json.loads(answer)
        return result

    def _check_outside_body(self, name: str) -> None:
        _check_name(name)
        if self._in_body:
            raise RuntimeError(f"step {name!r} is called inside a step body; steps cannot nest")
