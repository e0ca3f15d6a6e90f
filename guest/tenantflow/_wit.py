"""The transport inside the sandbox: the WIT world's host functions (the only SDK module that knows them)."""

from __future__ import annotations

from componentize_py_types import Err
from wit_world.imports import host

from tenantflow.transport import STOPPED, Done, Failed, Failure, Ok, Outcome, Plan, Retryable, Run, Stopped


def _plan(plan: host.Plan) -> Plan:
    if isinstance(plan, host.Plan_Done):
        return Done(plan.value)
    if isinstance(plan, host.Plan_Run):
        return Run(plan.value)
    if isinstance(plan, host.Plan_Stop):
        return STOPPED
    return Failed(Failure(plan.value.name, plan.value.message))


def _attempt(outcome: Outcome) -> host.Attempt:
    if isinstance(outcome, Ok):
        return host.Attempt_Ok(outcome.result)
    failure = host.Failure(outcome.failure.name, outcome.failure.message)
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

    def step_complete(self, name: str, outcome: Outcome) -> Plan:
        return _plan(host.step_complete(name, _attempt(outcome)))

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
