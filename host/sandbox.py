"""One activation = one fresh Store and component instance, with limits, host functions and a journal.

A host function never lets a Python exception cross into wasmtime-py (its
hand-off of Python exceptions goes through a process-wide slot, which is not
safe across threads). It records the exception on the activation and traps
with a plain WasmtimeError; `Sandbox.run` reads the recorded exception after
the trap. A trapped instance is dropped with its Store, never re-entered.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import wasmtime
from tenantflow.host.engine import CHECK_S, ENGINE_SETTINGS, EpochCallback, EpochTicker, make_engine
from tenantflow.host.fastcall import add_func
from tenantflow.host.fetch import FetchError, fetch
from tenantflow.host.journal import (
    Abort,
    Attempt,
    Done,
    EventTimeout,
    Journal,
    Plan,
    StepCall,
    StepConfig,
    StepFailed,
    Suspend,
)
from tenantflow.host.limits import Grants, Limits
from tenantflow.host.outcome import Completed, ErrorInfo, Failed, Outcome, Stats, Suspended
from tenantflow.wasm_build.build import load_component
from wasmtime.component import Component, Linker, Record, Variant

HOST_INTERFACE = "tenantflow:sandbox/host@0.1.0"

_GUEST_ERRORS = {"MemoryError": "MemoryLimitExceeded", "RecursionError": "StackOverflow"}


class LimitHit(Exception):
    """A limit enforced by a host function (e.g. the log cap) ended the activation."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


@dataclass
class _InFlight:
    call: StepCall
    config: StepConfig
    attempt: int
    started: float
    fuel_before: int


@dataclass
class _Activation:
    store: wasmtime.Store
    journal: Journal
    limits: Limits
    grants: Grants
    ticker: EpochTicker
    deadline: float
    position: int = 0
    occurrences: Counter[str] = field(default_factory=Counter)
    pending: BaseException | None = None
    log: list[str] = field(default_factory=list)
    log_size: int = 0
    log_truncated: bool = False
    in_flight: _InFlight | None = None
    step_deadline: float | None = None
    timed_out: bool = False

    def next_call(self, name: str, kind: Any) -> StepCall:
        if self.in_flight is not None:
            raise Abort(
                "WorkflowCodeError", f"step {name!r} was called inside the body of {self.in_flight.call.name!r}"
            )
        call = StepCall(self.position, name, self.occurrences[name], kind)
        self.position += 1
        self.occurrences[name] += 1
        return call

    def ticks_left(self) -> int:
        """Epoch ticks until the next deadline check (at most CHECK_S away), or 0 once a deadline passed."""
        end = self.deadline if self.step_deadline is None else min(self.deadline, self.step_deadline)
        left = end - time.monotonic()
        if left <= 0:
            self.timed_out = True
            return 0
        return int(self.ticker.ticks(min(left, CHECK_S)))

    def fuel_used(self) -> int:
        return int(self.limits.fuel - self.store.get_fuel())


@functools.lru_cache(maxsize=256)
def _step_config(config_json: str) -> StepConfig:
    """The step's config from the guest's JSON (a workflow uses few distinct ones: cached)."""
    try:
        return StepConfig.from_json(json.loads(config_json))
    except (ValueError, AttributeError):
        return StepConfig()


def _trap_cause(text: str) -> str:
    """The cause of a trap ("wasm trap: ...") without wasmtime's backtrace dump."""
    _, caused, cause = text.partition("Caused by:")
    lines = [line.strip() for line in (cause if caused else text).splitlines() if line.strip()]
    return "; ".join(lines)[:1000] if lines else "the guest trapped"


def _failure(name: str, message: str) -> Record:
    record = Record()
    vars(record).update(name=name, message=message)
    return record


class Sandbox:
    """Runs workflow source in fresh isolates of the guest component.

    One Sandbox holds the engine, the compiled component and the linker; it is
    safe to call `run` from many threads at once (wasmtime releases the GIL
    while guest code runs).
    """

    def __init__(self, component: Component | None = None, engine: wasmtime.Engine | None = None) -> None:
        """`component`, if given, must come with the `engine` (from `make_engine`) it was loaded for."""
        if (component is None) != (engine is None):
            raise ValueError("pass both a component and the engine it was loaded for, or neither")
        if engine is None:
            self.engine, self.settings = make_engine()
        else:
            self.engine, self.settings = engine, dict(ENGINE_SETTINGS)
        self.component = component if component is not None else load_component(self.engine, self.settings)
        self._local = threading.local()
        self._ticker = EpochTicker(self.engine)
        self._epoch = EpochCallback(self._ticks_left)
        self.linker = Linker(self.engine)
        self.linker.add_wasip2()
        with self.linker.root() as root, root.add_instance(HOST_INTERFACE) as host:
            for name, fn in self._host_functions().items():
                add_func(host, name, self._guarded(fn))
        run_index = self.component.get_export_index("run")
        check_index = self.component.get_export_index("check")
        if run_index is None or check_index is None:
            raise RuntimeError("the guest component exports no run/check")
        self._run_index = run_index
        self._check_index = check_index

    def close(self) -> None:
        self._ticker.close()

    def _ticks_left(self) -> int:
        act: _Activation | None = getattr(self._local, "activation", None)
        return 1 if act is None else act.ticks_left()

    # -- activations -------------------------------------------------------

    def run(
        self,
        source: str,
        event: dict[str, Any],
        journal: Journal,
        limits: Limits | None = None,
        grants: Grants | None = None,
    ) -> Outcome:
        """Run `run(event, step)` from the top in a fresh isolate until it returns, fails or suspends."""
        return self._activate(self._run_index, (source, json.dumps(event)), journal, limits, grants)

    def check(self, source: str, limits: Limits | None = None) -> ErrorInfo | None:
        """Compile the source in a fresh isolate and check it defines a workflow; the error or None."""
        outcome = self._activate(self._check_index, (source,), _NoJournal(), limits, None)
        return outcome.error if isinstance(outcome, Failed) else None

    def _activate(
        self,
        index: Any,
        args: tuple[Any, ...],
        journal: Journal,
        limits: Limits | None,
        grants: Grants | None,
    ) -> Outcome:
        limits = limits or Limits()
        started = time.perf_counter()
        store = wasmtime.Store(self.engine)
        store.set_wasi(wasmtime.WasiConfig())
        store.set_limits(memory_size=limits.memory_bytes)
        store.set_fuel(limits.fuel)
        act = _Activation(
            store, journal, limits, grants or Grants(), self._ticker, time.monotonic() + limits.deadline_s
        )
        self._epoch.install(store)
        store.set_epoch_deadline(act.ticks_left())
        self._local.activation = act
        try:
            instance = self.linker.instantiate(store, self.component)
            func = instance.get_func(store, index)
            assert func is not None
            instantiated = time.perf_counter()
            try:
                value = func(store, *args)
            except wasmtime.WasmtimeError as trap:
                # wasmtime-py raises from a frame that holds the error: without this, that cycle keeps
                # every frame of the call alive, the Store (and its pool slot) with them.
                trap.__traceback__ = None
                return self._trapped(act, trap, started, instantiated)
            func.post_return(store)
            return self._returned(act, value, started, instantiated)
        finally:
            # The recorded exception's traceback holds the host function's frame, which holds the
            # activation: drop it, or the Store (and its pool slot) lives until the cycle collector runs.
            act.pending = None
            self._local.activation = None
            del act, store

    def _stats(self, act: _Activation, started: float, instantiated: float) -> Stats:
        return Stats(
            fuel=act.fuel_used(),
            duration_ms=(time.perf_counter() - started) * 1000,
            instantiate_ms=(instantiated - started) * 1000,
            log="".join(act.log),
            log_truncated=act.log_truncated,
        )

    def _returned(self, act: _Activation, value: Any, started: float, instantiated: float) -> Outcome:
        stats = self._stats(act, started, instantiated)
        if isinstance(value, Record):
            error: Any = value
            name = _GUEST_ERRORS.get(error.name, error.name)
            message = error.message
            if name == "MemoryLimitExceeded":
                message = (
                    f"MemoryError: the guest ran out of memory (cap {act.limits.memory_bytes} bytes) {message}".strip()
                )
            return Failed(ErrorInfo(name, message, error.traceback, error.line), stats)
        if value is None:
            return Completed("null", stats)
        if len(value) > act.limits.output_bytes:
            message = f"the output is at most {act.limits.output_bytes} bytes of JSON, got {len(value)}"
            return Failed(ErrorInfo("OutputLimitExceeded", message), stats)
        return Completed(value, stats)

    def _trapped(self, act: _Activation, trap: wasmtime.WasmtimeError, started: float, instantiated: float) -> Outcome:
        stats = self._stats(act, started, instantiated)
        pending = act.pending
        if isinstance(pending, Suspend):
            return Suspended(pending.reason, pending.wake_at_ms, stats)
        if isinstance(pending, Abort | LimitHit):
            return Failed(ErrorInfo(pending.name, pending.message), stats)
        if pending is not None:
            raise pending
        text = str(trap)
        if "all fuel consumed" in text:
            error = ErrorInfo("FuelExhausted", f"the activation used its fuel budget of {act.limits.fuel}")
        elif act.timed_out or "interrupt" in text:
            if act.in_flight is not None and act.step_deadline is not None and time.monotonic() >= act.step_deadline:
                return self._step_timed_out(act, stats)
            error = ErrorInfo("DeadlineExceeded", f"the activation ran longer than {act.limits.deadline_s} s")
        elif "call stack exhausted" in text:
            error = ErrorInfo("StackOverflow", "the guest's call stack is exhausted (unbounded recursion?)")
        elif "memory" in text.lower() and "out of bounds" not in text:
            error = ErrorInfo(
                "MemoryLimitExceeded", f"the guest ran out of memory (cap {act.limits.memory_bytes} bytes)"
            )
        else:
            error = ErrorInfo("GuestTrap", f"the guest crashed: {_trap_cause(text)}")
        return Failed(error, stats)

    def _step_timed_out(self, act: _Activation, stats: Stats) -> Outcome:
        """The attempt overran its timeout: journal it as a failed attempt and let the instance go on."""
        flight = act.in_flight
        assert flight is not None
        attempt = Attempt(
            attempt=flight.attempt,
            ok=False,
            error_name="StepTimeout",
            error_message=f"step {flight.call.name!r} ran longer than {flight.config.timeout_ms} ms",
            fuel=flight.fuel_before - act.store.get_fuel(),
            duration_ms=(time.perf_counter() - flight.started) * 1000,
        )
        try:
            act.journal.step_complete(flight.call, flight.config, attempt)
        except Suspend as suspend:
            return Suspended(suspend.reason, suspend.wake_at_ms, stats)
        except Abort as abort:
            return Failed(ErrorInfo(abort.name, abort.message), stats)
        return Suspended("step timed out; replay to go on", None, stats)

    # -- host functions ----------------------------------------------------

    def _guarded(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def host_function(store: Any, *args: Any) -> Any:
            act: _Activation = self._local.activation
            if act.pending is not None:
                raise wasmtime.WasmtimeError("tenantflow: the activation is ending")
            try:
                return fn(act, *args)
            except BaseException as error:
                act.pending = error
                raise wasmtime.WasmtimeError("tenantflow: activation ended by the host") from None

        return host_function

    def _host_functions(self) -> dict[str, Callable[..., Any]]:
        return {
            "step-begin": self._step_begin,
            "step-complete": self._step_complete,
            "sleep": self._sleep,
            "sleep-until": self._sleep_until,
            "wait-for-event": self._wait_for_event,
            "log": self._log,
            "call": self._call,
        }

    def _plan(self, act: _Activation, call: StepCall, config: StepConfig, plan: Plan) -> Any:
        if isinstance(plan, Done):
            return plan.result
        if isinstance(plan, StepFailed):
            return _failure(plan.name, plan.message)
        now = time.monotonic()
        timeout = config.timeout_ms / 1000
        act.step_deadline = now + timeout if now + timeout < act.deadline else None
        act.in_flight = _InFlight(call, config, plan.attempt, time.perf_counter(), act.store.get_fuel())
        return plan.attempt

    def _step_begin(self, act: _Activation, name: str, config_json: str) -> Any:
        call = act.next_call(name, "do")
        config = _step_config(config_json[:4096])
        return self._plan(act, call, config, act.journal.step_begin(call, config))

    def _step_complete(self, act: _Activation, name: str, outcome: Variant) -> Any:
        flight = act.in_flight
        if flight is None or flight.call.name != name:
            raise Abort("WorkflowCodeError", f"step-complete for {name!r} without a step in flight")
        act.in_flight = None
        act.step_deadline = None
        fuel = flight.fuel_before - act.store.get_fuel()
        duration_ms = (time.perf_counter() - flight.started) * 1000
        payload: Any = outcome.payload
        if outcome.tag == "ok":
            result: str = payload
            if len(result) > act.limits.output_bytes:
                attempt = Attempt(
                    flight.attempt,
                    ok=False,
                    error_name="OutputLimitExceeded",
                    error_message=f"a step result is at most {act.limits.output_bytes} bytes of JSON",
                    retryable=False,
                    fuel=fuel,
                    duration_ms=duration_ms,
                )
            else:
                attempt = Attempt(flight.attempt, ok=True, result=result, fuel=fuel, duration_ms=duration_ms)
        else:
            attempt = Attempt(
                flight.attempt,
                ok=False,
                error_name=payload.name,
                error_message=payload.message,
                retryable=outcome.tag == "retryable",
                fuel=fuel,
                duration_ms=duration_ms,
            )
        plan = act.journal.step_complete(flight.call, flight.config, attempt)
        return self._plan(act, flight.call, flight.config, plan)

    def _sleep(self, act: _Activation, name: str, duration_ms: int) -> None:
        act.journal.sleep_until(act.next_call(name, "sleep"), None, duration_ms)

    def _sleep_until(self, act: _Activation, name: str, wake_at_ms: int) -> None:
        act.journal.sleep_until(act.next_call(name, "sleep"), wake_at_ms, None)

    def _wait_for_event(self, act: _Activation, name: str, event_type: str, timeout_ms: int | None) -> Any:
        call = act.next_call(name, "wait")
        try:
            return json.dumps(act.journal.wait_for_event(call, event_type, timeout_ms))
        except EventTimeout as timeout:
            return _failure("WaitTimeoutError", str(timeout) or f"no {event_type!r} event arrived in time")

    def _log(self, act: _Activation, fd: int, text: str) -> None:
        if act.log_size + len(text) > act.limits.log_bytes:
            act.log_truncated = True
            raise LimitHit("OutputLimitExceeded", f"the activation printed more than {act.limits.log_bytes} bytes")
        act.log_size += len(text)
        act.log.append(text)

    def _call(self, act: _Activation, capability: str, request: str) -> Any:
        if capability != "fetch":
            return _failure("CapabilityNotGranted", f"no capability named {capability!r}")
        # A fetch may not outlast the activation, nor the timeout of the step body it is made in.
        end = act.deadline if act.step_deadline is None else min(act.deadline, act.step_deadline)
        remaining = end - time.monotonic()
        grants = act.grants
        if remaining < grants.fetch_timeout_s:
            grants = dataclasses.replace(grants, fetch_timeout_s=max(0.0, remaining))
        try:
            return fetch(grants, json.loads(request))
        except FetchError as error:
            return _failure(type(error).__name__, str(error))
        except (ValueError, TypeError, KeyError) as error:
            return _failure("BadRequest", f"malformed fetch request: {error}")


class _NoJournal:
    """The journal of `Sandbox.check`: any durable call means the source does more than define a workflow."""

    def _refuse(self, *args: Any) -> Any:
        raise Abort("WorkflowCodeError", "the workflow source calls steps at import time")

    step_begin = step_complete = sleep_until = wait_for_event = _refuse
