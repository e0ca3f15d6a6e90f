"""`step`: the durable calls of a workflow, made through the installed transport.

Every durable operation is a call into the host, which reads and writes the journal. When the
host needs the workflow to wait (a sleep, an event, a retry back-off) it does not return: it
traps, and the isolate is thrown away.
"""

from __future__ import annotations

import datetime
import os
import random
import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypedDict, TypeVar, overload

from tenantflow import _codec
from tenantflow import transport as _transport
from tenantflow._durations import Duration, Retries, RollbackOptions, StepOptions, parse_duration, step_config
from tenantflow._errors import NonRetryableError, RollbackError, StepError, Unwind, WaitTimeoutError
from tenantflow._streams import Streams
from tenantflow.transport import (
    Backoff,
    Done,
    Failed,
    Failure,
    Fatal,
    Ok,
    Outcome,
    Plan,
    Retryable,
    Stopped,
    Transport,
    host_text,
)

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
    """What a step body that takes one argument (a rollback that takes two, a `retries.delay` function) is
    given: `attempt` (1 for the first), `step` (its name and count), `config` (the options as given:
    retries, timeout, cpu) and, for a rollback, `error`: the exception that caused the rollback."""

    __slots__ = ("attempt", "step", "config", "error")

    def __init__(
        self, attempt: int, step: StepInfo, config: dict[str, Any], error: BaseException | None = None
    ) -> None:
        self.attempt = attempt
        self.step = step
        self.config = config
        self.error = error

    def __repr__(self) -> str:
        return f"StepContext(attempt={self.attempt!r}, step={self.step!r}, config={self.config!r})"


class _Call:
    """One durable body to run: a step's or a rollback's, with its options."""

    __slots__ = (
        "name",
        "count",
        "config",
        "given",
        "delay",
        "limit",
        "fn",
        "with_context",
        "output",
        "error",
        "raised",
        "attempt",
    )

    def __init__(self, name: str, count: int, given: dict[str, Any], fn: Callable[..., Any]) -> None:
        self.name = name
        self.count = count
        self.given = given
        self.delay: Callable[[StepContext, BaseException], Any] | None = None
        self.limit: int = 5
        if not given:  # the defaults (most steps)
            self.config = "{}"
        else:
            retries = given.get("retries")
            self.config = step_config(retries, given.get("timeout"), given.get("cpu"))
            if isinstance(retries, dict):
                delay = retries.get("delay")
                self.delay = delay if callable(delay) else None
                self.limit = retries.get("limit", 5)
        self.fn = fn
        self.with_context = False
        self.output: Any = None
        self.error: BaseException | None = None
        # What the last attempt in this activation raised: a step that fails for good raises from it, so that
        # the error points at the line in the body, not at the step.do call.
        self.raised: BaseException | None = None
        self.attempt = 0  # the attempt running (or last run) in this activation, from 1

    def context(self) -> StepContext:
        """The context of the attempt running: made only for a body that takes it (or a `retries.delay`)."""
        return StepContext(self.attempt, StepInfo(self.name, self.count), self.given, self.error)


class _StepCall:
    """`@step.do(name)` on a function in an async workflow: `await x()` (or `await x`) runs the step; each
    call is a call of the step's name."""

    __slots__ = ("_step", "_args")

    def __init__(self, step: Step, *args: Any) -> None:
        self._step = step
        self._args = args

    def __call__(self) -> Any:
        return self._step._step_async(*self._args)

    def __await__(self) -> Any:
        return self().__await__()


class _Undo:
    """A completed step's rollback, to run if the instance fails or is terminated with a rollback."""

    __slots__ = ("started", "name", "count", "fn", "given", "output")

    def __init__(self, started: int, name: str, count: int, fn: Callable[..., Any], given: dict[str, Any]) -> None:
        self.started = started
        self.name = name
        self.count = count
        self.fn = fn
        self.given = given
        self.output: Any = None


if TYPE_CHECKING:
    StepBody = Callable[[], T] | Callable[[StepContext], T]
    """A step body: no arguments, or the step's context."""


def _call_body(fn: Callable[..., Any], call: _Call) -> Any:
    """Call a body (or a rollback, given the step's output; or a test's stand-in for either) with the context
    of `call`'s attempt if it takes one."""
    rollback = call.error is not None
    with_context = call.with_context if fn is call.fn else _takes_context(fn, 1 if rollback else 0)
    if rollback:
        return fn(call.output, call.context()) if with_context else fn(call.output)
    return fn(call.context()) if with_context else fn()


def _result(call: _Call, value: Any) -> Outcome:
    """A body's return value as the attempt's outcome: bounded JSON (a rollback's value is not kept)."""
    if call.error is not None:
        value = None
    try:
        text = _codec.dumps(value)
    except (TypeError, ValueError) as error:
        return Fatal(Failure("ResultNotSerializable", str(error)))
    if len(text) > MAX_RESULT_BYTES:
        message = f"a step result is at most {MAX_RESULT_BYTES} bytes of JSON, got {len(text)}"
        return Fatal(Failure("OutputLimitExceeded", message))
    return Ok(text)


MAX_TRACEBACK = 8192
"""The longest traceback kept with a failed attempt, in characters (its end: where the error was raised)."""

_SDK_DIR = os.path.dirname(__file__)


def _traceback(error: BaseException) -> str:
    """What `error` went through in the workflow's code: its traceback without the SDK's own frames."""
    import traceback  # in the snapshot already (the harness's)

    try:
        summary = traceback.TracebackException.from_exception(error)
        summary.stack = traceback.StackSummary.from_list(
            [frame for frame in summary.stack if not frame.filename.startswith(_SDK_DIR)]
        )
        return host_text("".join(summary.format())[-MAX_TRACEBACK:])
    except Exception:  # a traceback that cannot be rendered is left out, not the failure
        return ""


def _failure(error: BaseException) -> Failure:
    """A failed attempt's error: name, message and traceback."""
    if isinstance(error, NonRetryableError):
        return Failure(host_text(error.name[:MAX_NAME]), host_text(error.message[:4096]), _traceback(error))
    return Failure(type(error).__name__, host_text(str(error)[:4096]), _traceback(error))


def _reason(cause: BaseException) -> Failure:
    """What caused a rollback, by name and message (a step that failed for good: its error, not the wrapper)."""
    if isinstance(cause, StepError):
        return Failure(cause.name, cause.message)
    try:
        return _failure(cause) if isinstance(cause, Exception) else Failure(type(cause).__name__, str(cause))
    except Exception:  # an exception whose str() raises
        return Failure(type(cause).__name__, "(the error's message could not be rendered)")


def _raise_failure(failure: Failure, cause: BaseException | None = None) -> NoReturn:
    error = NonRetryableError(failure.message) if failure.name == "NonRetryableError" else None
    raise (error or StepError(failure.name, failure.message)) from cause


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
"""The control characters a name may not have (C0, DEL and C1)."""


def _check_name(name: Any) -> str:
    """A step, sleep or wait name: 1-256 characters, no control characters (ValueError, at the call)."""
    if not isinstance(name, str) or not name:
        raise TypeError("a step name is a non-empty string")
    if len(name) > MAX_NAME:
        raise ValueError(f"a step name is at most {MAX_NAME} characters, got {len(name)}")
    if _CONTROL.search(name):
        raise ValueError(f"a step name has no control characters: {name[:60]!r}")
    return name


def _rollback_options(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError("rollback_config is a dict with retries, timeout and cpu")
    unknown = set(value) - {"retries", "timeout", "cpu"}
    if unknown:
        raise ValueError(f"unknown rollback_config keys: {sorted(unknown)}")
    step_config(value.get("retries"), value.get("timeout"), value.get("cpu"))  # checked now, not when failing
    return {k: v for k, v in value.items() if v is not None}


def _is_coroutine(value: Any) -> bool:
    """Whether `value` is what calling an `async def` returns (read without `inspect`, as `_takes_context`)."""
    return hasattr(value, "cr_code") and hasattr(value, "send")


class _Entered:
    """Drives a step body's coroutine and tells the host at each resume that the body runs (`enter`) and at
    each suspension that it does not (`leave`, or back into the body it runs inside): the host charges the
    CPU between the two to that step's attempt, and its clocks and random bytes are real there."""

    __slots__ = ("_coroutine", "_enter", "_leave")

    def __init__(self, coroutine: Any, enter: Callable[[], None], leave: Callable[[], None]) -> None:
        self._coroutine = coroutine
        self._enter = enter
        self._leave = leave

    def __await__(self) -> Any:
        coroutine = self._coroutine
        value: Any = None
        error: BaseException | None = None
        while True:
            self._enter()
            try:
                yielded = coroutine.send(value) if error is None else coroutine.throw(error)
            except StopIteration as stop:
                return stop.value
            finally:
                self._leave()
            try:
                value, error = (yield yielded), None
            except GeneratorExit:
                coroutine.close()
                raise
            except BaseException as thrown:  # e.g. the task's cancellation: handed to the body
                value, error = None, thrown


_FUNCTION = type(_check_name)


def _takes_context(fn: Callable[..., Any], given: int = 0) -> bool:
    """Whether `fn` has a positional parameter without a default beyond the `given` ones (it is given the
    step's context). A parameter with a default, as in `lambda i=i: ...`, keeps its default. Read from the
    code object: the
    SDK loads nothing it can do without (no `inspect`, no dataclasses or typing at run time), since every
    object in the snapshot's heap makes each isolate's garbage collection work more (measured: +14% fuel
    for an allocating loop)."""
    if type(fn) is _FUNCTION:  # a def or a lambda, as nearly every body is: its attributes read directly
        fn_code, defaults = fn.__code__, fn.__defaults__
        return bool(fn_code.co_flags & 0x04) or fn_code.co_argcount - (len(defaults) if defaults else 0) >= given + 1
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
    return required >= given + 1


class Step:
    """The `step` argument of `run(event, step)`."""

    def __init__(
        self, transport: Transport | None = None, streams: Streams | None = None, *, concurrent: bool = False
    ) -> None:
        self._transport = transport if transport is not None else _transport.current()
        # An async workflow: every durable call is awaited, and step bodies may run side by side.
        self.concurrent = concurrent
        # The calls whose bodies run now (async workflow), innermost last: see `_Entered`.
        self._entered: list[_Call] = []
        # The sandbox's `random` streams: a body draws from its own (see tenantflow._streams).
        self._streams = streams
        # Step bodies running (a step.do in a body nests), and whether a `retries.delay` function runs.
        self._depth = 0
        self._in_delay = False
        self._counts: dict[str, int] = {}
        self._started = 0
        self._undo: list[_Undo] = []
        # The host stopped a durable call (terminate with rollback): the run unwinds into the rollbacks.
        self.stopped = False

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
        rollback: Callable[..., Any] | None = None,
        rollback_config: RollbackOptions | None = None,
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
        rollback: Callable[..., Any] | None = None,
        rollback_config: RollbackOptions | None = None,
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
        rollback: Callable[..., Any] | None = None,
        rollback_config: RollbackOptions | None = None,
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
        rollback: Callable[..., Any] | None = None,
        rollback_config: RollbackOptions | None = None,
    ) -> Any:
        """Run `fn` once, durably: `step.do(name, fn)`, `step.do(name, config, fn)` or `@step.do(name)`.

        The decorator form runs the step at once and binds its result to the function's name.
        `cpu` is each attempt's CPU budget (default 30 seconds, at most 5 minutes); an attempt that
        uses it up fails with StepCPUExhausted and is retried as `retries` says. `retries["delay"]` may be
        a function `delay(ctx, error)` returning the delay before the next attempt.

        `rollback(output)` (or `rollback(output, ctx)`, `ctx.error` being the cause) undoes the step once it
        has completed, if the instance then fails or is terminated with a rollback: the rollbacks of the
        completed steps run in reverse order of step start, each durably (journaled, retried per
        `rollback_config`, never run again once done).
        """
        _check_name(name)
        if isinstance(fn_or_config, dict):
            retries = fn_or_config.get("retries", retries)
            timeout = fn_or_config.get("timeout", timeout)
            cpu = fn_or_config.get("cpu", cpu)
            rollback = fn_or_config.get("rollback", rollback)
            rollback_config = fn_or_config.get("rollback_config", rollback_config)
        elif callable(fn_or_config):
            fn = fn_or_config
        elif fn_or_config is not None:
            raise TypeError("step.do(name, fn) or step.do(name, config, fn)")
        if rollback is not None and not callable(rollback):
            raise TypeError("rollback is a function of the step's output (and a context)")
        if retries is None and timeout is None and cpu is None:
            given: dict[str, Any] = {}
        else:
            given = {k: v for k, v in (("retries", retries), ("timeout", timeout), ("cpu", cpu)) if v is not None}
        undo_options = {} if rollback_config is None else _rollback_options(rollback_config)
        if self.concurrent:
            if fn is None:
                return lambda body: _StepCall(self, name, given, body, rollback, undo_options)
            return self._step_async(name, given, fn, rollback, undo_options)
        if fn is None:
            return lambda body: self._step(name, given, body, rollback, undo_options)
        return self._step(name, given, fn, rollback, undo_options)

    async def _step_async(
        self,
        name: str,
        given: dict[str, Any],
        fn: Callable[..., Any],
        rollback: Callable[..., Any] | None,
        undo_options: dict[str, Any],
    ) -> Any:
        """`step.do` in an async workflow: as `_step`, awaited; other steps run while its body awaits."""
        # Counted when the step begins (no await before `step_begin`): the host counts in the same order.
        call, started = self._new_call(name, given, fn)
        output = await self._run_async(call, self._transport.step_begin(call.name, call.config))
        self._keep_undo(started, call, rollback, undo_options, output)
        return output

    async def _run_async(self, call: _Call, plan: Plan) -> Any:
        transport = self._transport
        while True:
            if isinstance(plan, Done):
                return _codec.loads(plan.result)
            if isinstance(plan, Failed):
                _raise_failure(plan.failure, call.raised)
            if isinstance(plan, Stopped):
                self._stop()
            if isinstance(plan, Backoff):
                import asyncio  # loaded by async workflows only: the snapshot stays small

                await asyncio.sleep(plan.delay_s)
                plan = transport.step_again(call.name, call.count)
                continue
            call.attempt = plan.attempt
            outcome = await self._attempt_async(plan.stand_in or call.fn, call)
            plan = transport.step_complete(call.name, call.count, outcome)

    def _enter(self, call: _Call) -> None:
        if not self._entered and self._streams is not None:
            self._streams.enter_body()
        self._entered.append(call)
        self._transport.enter(call.name, call.count)

    def _leave(self) -> None:
        self._entered.pop()
        if self._entered:
            inner = self._entered[-1]
            self._transport.enter(inner.name, inner.count)
            return
        self._transport.leave()
        if self._streams is not None:
            self._streams.leave_body()

    async def _attempt_async(self, fn: Callable[..., Any], call: _Call) -> Outcome:
        self._enter(call)
        try:
            value = _call_body(fn, call)
        except NonRetryableError as error:
            call.raised = error
            return Fatal(_failure(error))
        except Exception as error:
            call.raised = error
            return self._retryable(call, error)
        finally:
            self._leave()
        if _is_coroutine(value):
            try:
                value = await _Entered(value, lambda: self._enter(call), self._leave)
            except NonRetryableError as error:
                call.raised = error
                return Fatal(_failure(error))
            except Exception as error:
                call.raised = error
                return self._retryable(call, error)
            except BaseException:  # cancelled (the loser of a race): the attempt is not journaled
                self._transport.abandon(call.name, call.count)
                raise
        return _result(call, value)

    def _step(
        self,
        name: str,
        given: dict[str, Any],
        fn: Callable[..., Any],
        rollback: Callable[..., Any] | None,
        undo_options: dict[str, Any],
    ) -> Any:
        call, started = self._new_call(name, given, fn)
        output = self._run(call, self._transport.step_begin(call.name, call.config))
        self._keep_undo(started, call, rollback, undo_options, output)
        return output

    def _new_call(self, name: str, given: dict[str, Any], fn: Callable[..., Any]) -> tuple[_Call, int]:
        """A `step.do` call, counted among the calls of its name, and its place in the order of step start."""
        if self._in_delay:
            raise RuntimeError(f"step {name!r} is called inside a retries.delay function")
        count = self._counts[name] = self._counts.get(name, 0) + 1
        call = _Call(host_text(name), count, given, fn)
        call.with_context = _takes_context(fn)
        started = self._started
        self._started += 1
        return call, started

    def _keep_undo(
        self,
        started: int,
        call: _Call,
        rollback: Callable[..., Any] | None,
        undo_options: dict[str, Any],
        output: Any,
    ) -> None:
        """Remember a completed step's rollback, to run if the instance fails or is terminated with one."""
        if rollback is not None:
            undo = _Undo(started, call.name, call.count, rollback, undo_options)
            undo.output = output
            self._undo.append(undo)

    def _run(self, call: _Call, plan: Plan) -> Any:
        """Drive one durable body from its first plan: run its attempts until it is done or failed for good."""
        transport = self._transport
        while True:
            if isinstance(plan, Done):
                return _codec.loads(plan.result)
            if isinstance(plan, Failed):
                _raise_failure(plan.failure, call.raised)
            if isinstance(plan, Stopped):
                self._stop()
            if isinstance(plan, Backoff):  # the host plans these for async workflows only
                raise RuntimeError("a retry back-off plan in a synchronous workflow")
            call.attempt = plan.attempt
            outcome = self._attempt(plan.stand_in or call.fn, call)
            plan = transport.step_complete(call.name, call.count, outcome)

    def _stop(self) -> NoReturn:
        self.stopped = True
        raise Unwind("the instance is terminated with a rollback")

    def _attempt(self, fn: Callable[..., Any], call: _Call) -> Outcome:
        self._depth += 1
        if self._depth == 1 and self._streams is not None:
            self._streams.enter_body()
        try:
            value = _call_body(fn, call)
            if _is_coroutine(value):  # an `async def` body: run on a loop of its own to its end
                from tenantflow import _loop

                value = _loop.run(_loop.HostLoop(self._transport), value)
        except NonRetryableError as error:
            call.raised = error
            return Fatal(_failure(error))
        except Exception as error:
            call.raised = error
            return self._retryable(call, error)
        finally:
            self._depth -= 1
            if self._depth == 0 and self._streams is not None:
                self._streams.leave_body()
        return _result(call, value)

    def _retryable(self, call: _Call, error: Exception) -> Outcome:
        """A failed attempt; with `retries.delay` as a function, it chooses the delay before the next one."""
        failure = _failure(error)
        if call.delay is None or call.attempt > call.limit:
            return Retryable(failure)
        self._in_delay = True
        try:
            delay_ms = parse_duration(call.delay(call.context(), error))
        except Exception as bad:
            message = f"retries.delay raised {type(bad).__name__}: {bad}"[:4096]
            return Fatal(Failure("RetryDelayError", host_text(message)))
        finally:
            self._in_delay = False
        return Retryable(failure, delay_ms)

    def _roll_back(self, cause: BaseException) -> None:
        """Run the rollbacks of the completed steps, last started first; RollbackError if one fails for good
        (the ones after it are not run)."""
        if not self._undo:
            return
        if isinstance(cause, Unwind):
            cause = StepError("Terminated", "the instance was terminated with a rollback")
        reason = _reason(cause)
        for undo in sorted(self._undo, key=lambda u: u.started, reverse=True):
            call = _Call(undo.name, undo.count, undo.given, undo.fn)
            call.with_context = _takes_context(undo.fn, 1)
            call.output = undo.output
            call.error = cause
            try:
                self._run(call, self._transport.rollback_begin(undo.name, call.config))
            except (StepError, NonRetryableError) as failed:
                raise RollbackError(undo.name, failed.name, failed.message, reason.name, reason.message) from None

    async def _roll_back_async(self, cause: BaseException) -> None:
        """`_roll_back` in an async workflow: each rollback awaited in turn (a rollback may be `async def`)."""
        if not self._undo:
            return
        if isinstance(cause, Unwind):
            cause = StepError("Terminated", "the instance was terminated with a rollback")
        reason = _reason(cause)
        for undo in sorted(self._undo, key=lambda u: u.started, reverse=True):
            # A rollback is a durable call of its own: counted as the host counts it.
            count = self._counts[undo.name] = self._counts.get(undo.name, 0) + 1
            call = _Call(undo.name, count, undo.given, undo.fn)
            call.with_context = _takes_context(undo.fn, 1)
            call.output = undo.output
            call.error = cause
            try:
                await self._run_async(call, self._transport.rollback_begin(undo.name, call.config))
            except (StepError, NonRetryableError) as failed:
                raise RollbackError(undo.name, failed.name, failed.message, reason.name, reason.message) from None

    @staticmethod
    def now() -> datetime.datetime:
        """The current time (UTC): outside step bodies, the instance's logical time, the same on every replay
        (as `datetime.now()` there)."""
        return datetime.datetime.now(datetime.UTC)

    @staticmethod
    def random() -> float:
        """A random float in [0, 1): outside step bodies, from the instance's seed (as `random.random()`)."""
        return random.random()

    @staticmethod
    def uuid4() -> uuid.UUID:
        """A random UUID: outside step bodies, from the instance's seed (as `uuid.uuid4()`)."""
        return uuid.uuid4()

    def sleep(self, name: str, duration: Duration) -> Any:
        """Sleep durably for a duration ("1 day", or milliseconds). Awaited in an async workflow."""
        if self.concurrent:
            return self._awaited(self._sleep, name, duration)
        return self._sleep(name, duration)

    async def _awaited(self, fn: Callable[..., T], *args: Any) -> T:
        """A durable wait in an async workflow: made when awaited, and counted among the calls of its name.
        The whole workflow waits with it (the host suspends the isolate): steps run side by side, waits do not."""
        self._counts[args[0]] = self._counts.get(args[0], 0) + 1
        return fn(*args)

    def _sleep(self, name: str, duration: Duration) -> None:
        self._check_outside_body(name)
        if not self._transport.sleep(host_text(name), parse_duration(duration)):
            self._stop()

    def sleep_until(self, name: str, when: datetime.datetime | float) -> Any:
        """Sleep durably until a datetime (naive means UTC) or epoch seconds. Awaited in an async workflow."""
        if self.concurrent:
            return self._awaited(self._sleep_until, name, when)
        return self._sleep_until(name, when)

    def _sleep_until(self, name: str, when: datetime.datetime | float) -> None:
        self._check_outside_body(name)
        if isinstance(when, datetime.datetime):
            if when.tzinfo is None:
                when = when.replace(tzinfo=datetime.UTC)
            epoch = when.timestamp()
        elif isinstance(when, (int, float)) and not isinstance(when, bool):
            epoch = float(when)
        else:
            raise TypeError("sleep_until takes a datetime or epoch seconds")
        if not self._transport.sleep_until(host_text(name), int(epoch * 1000)):
            self._stop()

    def wait_for_event(self, name: str, event_type: str, timeout: Duration | None = "24 hours") -> Any:
        """Wait durably for an event of `event_type`; returns {type, payload, timestamp} (awaited in an async
        workflow).

        Raises `WaitTimeoutError` when `timeout` passes first; `timeout=None` waits for ever.
        """
        if self.concurrent:
            return self._awaited(self._wait_for_event, name, event_type, timeout)
        return self._wait_for_event(name, event_type, timeout)

    def _wait_for_event(self, name: str, event_type: str, timeout: Duration | None) -> ReceivedEvent:
        self._check_outside_body(name)
        if not isinstance(event_type, str) or not event_type:
            raise TypeError("event_type is a non-empty string")
        timeout_ms = None if timeout is None else parse_duration(timeout)
        answer = self._transport.wait_for_event(host_text(name), host_text(event_type), timeout_ms)
        if isinstance(answer, Failure):
            raise WaitTimeoutError(answer.message)
        if isinstance(answer, Stopped):
            self._stop()
        result: ReceivedEvent = _codec.loads(answer)
        return result

    def _check_outside_body(self, name: str) -> None:
        _check_name(name)
        if self._depth or self._in_delay or self._entered:
            # Not retryable: the body would make the same call on every attempt.
            raise NonRetryableError(
                f"{name!r}: step.sleep and step.wait_for_event are made outside step bodies (a body may call step.do)",
                "WorkflowCodeError",
            )
