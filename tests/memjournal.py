"""A small in-memory `Journal` for sandbox tests and benchmarks (no runtime, no SQL).

Step results are keyed by position; failed attempts are retried at once inside the same
activation (no back-off) until `StepConfig.limit` is used up; sleeps and event waits suspend
unless already due or delivered. Every call and attempt is recorded for assertions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tenantflow.host import Attempt, Done, EventTimeout, Plan, Run, StepCall, StepConfig, StepFailed, Suspend


@dataclass
class MemJournal:
    """Satisfies `tenantflow.host.Journal`; `events` maps an event type to the event returned by a wait."""

    events: dict[str, Any] = field(default_factory=dict)
    timed_out_events: set[str] = field(default_factory=set)
    results: dict[int, str] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    calls: list[StepCall] = field(default_factory=list)
    attempts: list[tuple[StepCall, Attempt]] = field(default_factory=list)
    wakes: dict[int, int] = field(default_factory=dict)

    def step_begin(self, call: StepCall, config: StepConfig) -> Plan:
        self.calls.append(call)
        self.names.setdefault(call.position, call.name)
        if call.position in self.results:
            return Done(self.results[call.position])
        return Run(1)

    def step_complete(self, call: StepCall, config: StepConfig, attempt: Attempt) -> Plan:
        self.attempts.append((call, attempt))
        if attempt.ok:
            assert attempt.result is not None
            self.results[call.position] = attempt.result
            return Done(attempt.result)
        if not attempt.retryable or attempt.attempt > config.limit:
            return StepFailed(attempt.error_name or "Error", attempt.error_message or "")
        return Run(attempt.attempt + 1)

    def sleep_until(self, call: StepCall, wake_at_ms: int | None, duration_ms: int | None) -> None:
        self.calls.append(call)
        now_ms = int(time.time() * 1000)
        if call.position not in self.wakes:
            self.wakes[call.position] = wake_at_ms if wake_at_ms is not None else now_ms + (duration_ms or 0)
        if self.wakes[call.position] > now_ms:
            raise Suspend("sleep", self.wakes[call.position])

    def wait_for_event(self, call: StepCall, event_type: str, timeout_ms: int | None) -> Any:
        self.calls.append(call)
        if event_type in self.timed_out_events:
            raise EventTimeout(f"no {event_type!r} event within {timeout_ms} ms")
        if event_type in self.events:
            return self.events[event_type]
        raise Suspend("event")

    def moment(self, call: StepCall) -> float | None:
        return None  # no logical time: the sandbox's clocks stay real

    def attempts_of(self, name: str) -> list[Attempt]:
        return [attempt for call, attempt in self.attempts if call.name == name]
