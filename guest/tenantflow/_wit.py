"""The transport inside the sandbox: the WIT world's host functions (the only SDK module that knows them)."""

from __future__ import annotations

from componentize_py_types import Err
from wit_world.imports import host

from tenantflow.transport import (
    STOPPED,
    Backoff,
    Completion,
    Done,
    Failed,
    Failure,
    Ok,
    Outcome,
    Plan,
    Polled,
    Retryable,
    Run,
    Stopped,
)


def _plan(plan: host.Plan) -> Plan:
    if isinstance(plan, host.Plan_Done):
        return Done(plan.value)
    if isinstance(plan, host.Plan_Run):
        return Run(plan.value)
    if isinstance(plan, host.Plan_Stop):
        return STOPPED
    if isinstance(plan, host.Plan_Backoff):
        return Backoff(plan.value)
    return Failed(Failure(plan.value.name, plan.value.message))


def _attempt(outcome: Outcome) -> host.Attempt:
    if isinstance(outcome, Ok):
        return host.Attempt_Ok(outcome.result)
    failure = host.Failure(outcome.failure.name, outcome.failure.message, outcome.failure.traceback)
    if isinstance(outcome, Retryable):
        if outcome.delay_ms is not None:
            return host.Attempt_RetryAfter(host.Delayed(failure, outcome.delay_ms))
        return host.Attempt_Retryable(failure)
    return host.Attempt_Fatal(failure)


class WitTransport:
    """`tenantflow.transport.Transport` over the imports of `tenantflow:sandbox/host`."""

    def step_begin(self, name: str, config: str) -> Plan:
        return _plan(host.step_begin(name, config))

    def rollback_begin(self, name: str, config: str) -> Plan:
        return _plan(host.rollback_begin(name, config))

    def step_complete(self, name: str, count: int, outcome: Outcome) -> Plan:
        return _plan(host.step_complete(name, count, _attempt(outcome)))

    def step_again(self, name: str, count: int) -> Plan:
        return _plan(host.step_again(name, count))

    def concurrent(self) -> None:
        host.concurrent()

    def enter(self, name: str, count: int) -> None:
        host.enter(name, count)

    def leave(self) -> None:
        host.leave()

    def abandon(self, name: str, count: int) -> None:
        host.abandon(name, count)

    def call_start(self, capability: str, request: str) -> int | Failure:
        try:
            started: int = host.call_start(capability, request)
        except Err as err:
            return Failure(err.value.name, err.value.message)
        return started

    def poll(self, timeout_ms: int | None) -> Polled:
        polled = host.poll(timeout_ms)
        done = []
        for completion in polled.done:
            answer = completion.answer
            if isinstance(answer, Err):
                done.append(Completion(completion.id, Failure(answer.value.name, answer.value.message)))
            else:
                done.append(Completion(completion.id, answer.value))
        return Polled(polled.now_ms, done)

    def sleep(self, name: str, duration_ms: int) -> bool:
        return bool(host.sleep(name, duration_ms))

    def sleep_until(self, name: str, wake_at_ms: int) -> bool:
        return bool(host.sleep_until(name, wake_at_ms))

    def wait_for_event(self, name: str, event_type: str, timeout_ms: int | None) -> str | Failure | Stopped:
        waited = host.wait_for_event(name, event_type, timeout_ms)
        if isinstance(waited, host.Waited_Event):
            event: str = waited.value
            return event
        if isinstance(waited, host.Waited_TimedOut):
            return Failure(waited.value.name, waited.value.message)
        return STOPPED

    def call(self, capability: str, request: str) -> str | Failure:
        try:
            answer: str = host.call(capability, request)
        except Err as err:
            return Failure(err.value.name, err.value.message)
        return answer

    def log(self, fd: int, text: str) -> None:
        host.log(fd, text)

    def seed_bytes(self, length: int) -> bytes:
        return bytes(host.seed_bytes(length))

    def run_seed(self) -> bytes:
        return bytes(host.run_seed())
