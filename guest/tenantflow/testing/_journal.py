"""An in-memory journal on a virtual clock, with the runtime's rules (runtime/engine/journal.py).

It implements `tenantflow.host.Journal`: positions and (name, n-th call) keys come from the
transport as the sandbox makes them, retries follow `StepConfig.delay_before`, a wait takes the
first buffered event of its type, and a wait or sleep that is not due raises `Suspend`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

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
from tenantflow.host.limits import MAX_DURATION_MS

State = Literal["running", "retrying", "done", "failed", "sleeping", "waiting", "timed_out"]


@dataclass
class AttemptRecord:
    """One run of a step body."""

    number: int
    ok: bool
    error_name: str | None
    error_message: str | None
    at_ms: int


@dataclass
class Entry:
    """One journal position."""

    position: int
    name: str
    call: int
    kind: Kind
    state: State
    result: Any = None
    error_name: str | None = None
    error_message: str | None = None
    wake_at_ms: int | None = None
    event_type: str | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    parent: int | None = None


@dataclass
class PendingEvent:
    type: str
    payload: Any
    at_ms: int


@dataclass
class Moment:
    """One thing that happened, at virtual time `at_ms`."""

    at_ms: int
    what: Literal["attempt", "retry", "sleep", "wake", "event", "timeout"]
    name: str
    detail: str = ""


class TestJournal:
    """Satisfies `tenantflow.host.Journal`; the environment moves `now_ms` between activations."""

    __test__ = False  # not a pytest class

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms
        self.entries: dict[int, Entry] = {}
        self.events: list[PendingEvent] = []
        self.timeline: list[Moment] = []
        # An async workflow's calls by the transport's position -> the journal position (for `parent`).
        self._resolved: dict[int, int] = {}

    def _resolve(self, call: StepCall) -> StepCall:
        """A keyed call (an async workflow's) at its journal position: the entry of its name and occurrence,
        or the next free position (as the runtime's `Keys`)."""
        if not call.keyed:
            return call
        found = [p for p, e in self.entries.items() if (e.name, e.call) == (call.name, call.occurrence)]
        position = found[0] if found else max(self.entries, default=-1) + 1
        self._resolved[call.position] = position
        parent = None if call.parent is None else self._resolved.get(call.parent, call.parent)
        return dataclasses.replace(call, position=position, parent=parent)

    def _mark(self, what: Any, name: str, detail: str = "") -> None:
        self.timeline.append(Moment(self.now_ms, what, name, detail))

    def _existing(self, call: StepCall) -> Entry | None:
        entry = self.entries.get(call.position)
        if entry is not None and (entry.name != call.name or entry.kind != call.kind):
            raise Abort(
                "NonDeterminismError",
                f"journal position {call.position} holds {entry.kind} {entry.name!r}, "
                f"but the workflow now calls {call.kind} {call.name!r} there",
            )
        return entry

    def _new(self, call: StepCall, state: State, **fields: Any) -> Entry:
        entry = Entry(call.position, call.name, call.occurrence, call.kind, state, parent=call.parent, **fields)
        self.entries[call.position] = entry
        return entry

    # -- step.do -------------------------------------------------------------

    def step_begin(self, call: StepCall, config: StepConfig) -> Plan:
        call = self._resolve(call)
        entry = self._existing(call)
        if entry is None:
            if call.keyed:  # journaled at once, so that the next new call takes the next position
                self._new(call, "running")
            return Run(1)
        span = 0 if call.keyed else self._span(call.position)
        if entry.state == "done":
            return Done(_json(entry.result), span)
        if entry.state == "failed":
            return StepFailed(entry.error_name or "Error", entry.error_message or "", span)
        if entry.wake_at_ms is not None and entry.wake_at_ms > self.now_ms:
            raise Suspend(f"retry of {call.name!r}", entry.wake_at_ms)
        return Run(len(entry.attempts) + 1)

    def _span(self, position: int) -> int:
        """The positions after `position` that its body's nested steps hold (as the runtime's journal)."""
        after = position + 1
        while (entry := self.entries.get(after)) is not None and entry.parent is not None and entry.parent >= position:
            after += 1
        return after - position - 1

    def step_complete(self, call: StepCall, config: StepConfig, attempt: Attempt) -> Plan:
        call = self._resolve(call)
        entry = self.entries.get(call.position) or self._new(call, "running")
        entry.attempts.append(
            AttemptRecord(attempt.attempt, attempt.ok, attempt.error_name, attempt.error_message, self.now_ms)
        )
        if attempt.ok:
            self._mark("attempt", call.name, f"{attempt.attempt}: ok")
            entry.state, entry.result, entry.wake_at_ms = "done", _load(attempt.result), None
            entry.error_name = entry.error_message = None
            return Done(attempt.result or "null")
        self._mark("attempt", call.name, f"{attempt.attempt}: {attempt.error_name}: {attempt.error_message}")
        entry.error_name, entry.error_message = attempt.error_name, attempt.error_message
        if attempt.retryable and attempt.attempt <= config.limit:
            delay_ms = config.delay_before(attempt.attempt + 1) if attempt.delay_ms is None else attempt.delay_ms
            entry.state, entry.wake_at_ms = "retrying", self.now_ms + delay_ms
            self._mark("retry", call.name, f"attempt {attempt.attempt + 1} after {delay_ms} ms")
            if delay_ms <= 0:
                return Run(attempt.attempt + 1)
            raise Suspend(f"retry of {call.name!r}", entry.wake_at_ms)
        entry.state, entry.wake_at_ms = "failed", None
        return StepFailed(attempt.error_name or "Error", attempt.error_message or "")

    # -- step.sleep ----------------------------------------------------------

    def sleep_until(self, call: StepCall, wake_at_ms: int | None, duration_ms: int | None) -> None:
        call = self._resolve(call)
        entry = self._existing(call)
        if entry is None:
            wake = wake_at_ms if wake_at_ms is not None else self.now_ms + (duration_ms or 0)
            if wake > self.now_ms + MAX_DURATION_MS:
                days = (wake - self.now_ms) / 86_400_000
                raise Abort(
                    "InvalidHostCall",
                    f"sleep-until: {call.name!r} would wake {days:.0f} days from now; a sleep is at most 365 days",
                )
            entry = self._new(call, "sleeping", wake_at_ms=wake)
            self._mark("sleep", call.name, f"until +{max(0, wake - self.now_ms)} ms")
        assert entry.wake_at_ms is not None
        if entry.wake_at_ms > self.now_ms:
            raise Suspend(f"sleep {call.name!r}", entry.wake_at_ms)
        if entry.state == "sleeping":
            entry.state = "done"
            self._mark("wake", call.name)

    # -- step.wait_for_event -------------------------------------------------

    def wait_for_event(self, call: StepCall, event_type: str, timeout_ms: int | None) -> Any:
        call = self._resolve(call)
        entry = self._existing(call)
        if entry is not None and entry.state == "done":
            return entry.result
        if entry is not None and entry.state == "timed_out":
            raise EventTimeout(entry.error_message or f"no {event_type!r} event arrived in time")
        if entry is None:
            timeout_at = None if timeout_ms is None else self.now_ms + timeout_ms
            entry = self._new(call, "waiting", wake_at_ms=timeout_at, event_type=event_type)
        for event in self.events:
            if event.type == event_type and event.at_ms <= self.now_ms:
                self.events.remove(event)
                value = {"type": event.type, "payload": event.payload, "timestamp": event.at_ms / 1000}
                entry.state, entry.result = "done", _load(_json(value))
                self._mark("event", call.name, event_type)
                return entry.result
        if entry.wake_at_ms is not None and entry.wake_at_ms <= self.now_ms:
            entry.state = "timed_out"
            entry.error_name = "WaitTimeoutError"
            entry.error_message = f"no {event_type!r} event arrived before the timeout"
            self._mark("timeout", call.name, event_type)
            raise EventTimeout(entry.error_message)
        raise Suspend(f"waiting for {event_type!r}", entry.wake_at_ms)

    def next_event_ms(self, event_type: str | None) -> int | None:
        """When the next buffered event of `event_type` arrives, if it has not yet."""
        times = [e.at_ms for e in self.events if e.type == event_type and e.at_ms > self.now_ms]
        return min(times) if times else None

    def waiting_for(self) -> str | None:
        waits = [e for e in self.entries.values() if e.kind == "wait" and e.state == "waiting"]
        return waits[-1].event_type if waits else None


def _json(value: Any) -> str:
    return json.dumps(value)


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)
