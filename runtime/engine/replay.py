"""Replay an instance's journal in the real sandbox, with no store and no side effects.

Every durable call is answered from the recorded journal and no step body runs: the workflow's code
between the calls runs as it did (its clocks and randomness are the instance's: logical time and its
seed), so a replay shows what the instance did and printed, and whether some code (the pinned version or
another) makes the same calls in the same order (an async workflow's calls, which may begin in another order,
by name and count). The replay stops at the first call the journal cannot
answer: a call it does not hold (the instance had not got that far, or the code diverges there), a step
that was still in progress, a sleep or wait that was not over, or the `until` step.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tenantflow.host import (
    Abort,
    Attempt,
    Done,
    EventTimeout,
    Failed,
    FailureName,
    Grants,
    Limits,
    Outcome,
    Plan,
    Sandbox,
    StepCall,
    StepConfig,
    StepFailed,
    Suspend,
)
from tenantflow.runtime.engine.journal import entry_moment, nested_span
from tenantflow.runtime.records import Entry

__all__ = ["Divergence", "Replay", "ReplayJournal", "replay"]

UNTIL = "reached the --until step"


@dataclass(frozen=True)
class Divergence:
    """Where the code parts from the journal: the position, what the journal holds there (None: the journal
    ends there although the instance had finished) and what the code calls instead (None: it returns)."""

    position: int
    recorded: str | None
    called: str | None

    def describe(self) -> str:
        recorded = self.recorded or "nothing (the instance had finished)"
        called = self.called or "nothing (the workflow returns)"
        return f"at position {self.position} the journal holds {recorded}, but the code calls {called}"


def _call(kind: str, name: str) -> str:
    return f"{kind} {name!r}"


@dataclass
class ReplayJournal:
    """Implements the host's Journal protocol from recorded entries; never runs a body, never writes."""

    entries: dict[int, Entry]
    finished: bool
    until: tuple[str, int] | None = None
    answered: list[int] = field(default_factory=list)
    # The last position answered or skipped with an answered step (its nested steps).
    reached: int = -1
    divergence: Divergence | None = None
    stop: str | None = None
    _seen: Counter[str] = field(default_factory=Counter)
    _keyed: dict[tuple[str, int], Entry] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._keyed = {(e.name, e.occurrence): e for e in self.entries.values() if e.occurrence is not None}

    def _find(self, call: StepCall) -> Entry | None:
        if call.keyed:
            return self._keyed.get((call.name, call.occurrence))
        return self.entries.get(call.position)

    def _entry(self, call: StepCall) -> Entry:
        """The entry that answers `call`, or the end of the replay (Suspend) or a divergence (Abort)."""
        if call.parent is None and call.kind == "do":
            self._seen[call.name] += 1
            if self.until is not None and self.until == (call.name, self._seen[call.name]):
                raise self._stopped(UNTIL)
        entry = self._find(call)
        if entry is None:
            if call.keyed:
                if self.finished:
                    position = max(self.entries, default=-1) + 1
                    self.divergence = Divergence(position, None, _call(call.kind, call.name))
                    raise Abort(FailureName.NON_DETERMINISM_ERROR, self.divergence.describe())
                raise self._stopped(f"the journal ends before {_call(call.kind, call.name)}")
            if self.finished or call.position < max(self.entries, default=-1):
                self.divergence = Divergence(call.position, None, _call(call.kind, call.name))
                raise Abort(FailureName.NON_DETERMINISM_ERROR, self.divergence.describe())
            raise self._stopped(f"the journal ends before {_call(call.kind, call.name)}")
        if entry.name != call.name or entry.kind != call.kind:
            self.divergence = Divergence(call.position, _call(entry.kind, entry.name), _call(call.kind, call.name))
            raise Abort(FailureName.NON_DETERMINISM_ERROR, self.divergence.describe())
        return entry

    def _stopped(self, reason: str) -> Suspend:
        self.stop = reason
        return Suspend(reason)

    def _answered(self, entry: Entry, span: int = 0) -> None:
        self.answered.append(entry.position)
        self.reached = max(self.reached, entry.position + span)

    def step_begin(self, call: StepCall, config: StepConfig) -> Plan:
        entry = self._entry(call)
        span = 0 if call.keyed else nested_span(self.entries, call.position)
        if entry.state == "done":
            self._answered(entry, span)
            return Done(entry.result or "null", span)
        if entry.state == "failed":
            self._answered(entry, span)
            return StepFailed(entry.error_name or "Error", entry.error_message or "", span)
        raise self._stopped(f"{_call(call.kind, call.name)} was in progress ({entry.state})")

    def step_complete(self, call: StepCall, config: StepConfig, attempt: Attempt) -> Plan:
        raise Abort(FailureName.INVALID_HOST_CALL, "a replay runs no step body")  # step_begin never says Run

    def sleep_until(self, call: StepCall, wake_at_ms: int | None, duration_ms: int | None) -> None:
        entry = self._entry(call)
        if entry.position == max(self.entries) and not self.finished:
            raise self._stopped(f"{_call(call.kind, call.name)} was not over")
        self._answered(entry)
        return None

    def wait_for_event(self, call: StepCall, event_type: str, timeout_ms: int | None) -> Any:
        entry = self._entry(call)
        if entry.state == "done":
            self._answered(entry)
            return json.loads(entry.result or "null")
        if entry.state == "timed_out":
            self._answered(entry)
            raise EventTimeout(entry.error_message or f"no {event_type!r} event arrived in time")
        raise self._stopped(f"{_call(call.kind, call.name)} was waiting for {event_type!r}")

    def moment(self, call: StepCall) -> float | None:
        entry = self._find(call)
        return None if entry is None else entry_moment(self.entries, entry.position)


@dataclass(frozen=True)
class Replay:
    """What a replay did: the sandbox's outcome, the positions answered in order, where and why it stopped,
    and the first divergence (None: the code makes the journal's calls in its order)."""

    outcome: Outcome
    answered: list[int]
    stop: str | None
    divergence: Divergence | None

    @property
    def clean(self) -> bool:
        return self.divergence is None


def _at(entry: Entry) -> int:
    return entry.position


def replay(
    sandbox: Sandbox,
    source: str,
    entries: Sequence[Entry],
    *,
    params: Any,
    instance_id: str,
    created_at: float,
    seed: bytes,
    finished: bool,
    until: tuple[str, int] | None = None,
    limits: Limits | None = None,
) -> Replay:
    """Replay `entries` with `source` in a fresh isolate (no egress: a fetch outside a step is refused)."""
    journal = ReplayJournal({e.position: e for e in entries}, finished, until)
    event = {"payload": params, "timestamp": created_at, "instance_id": instance_id}
    outcome = sandbox.run(source, event, journal, limits, Grants(), clock_start=created_at, seed=seed)
    if journal.divergence is None and journal.stop is None and entries:
        # The code returned or failed before making every call the journal holds.
        if any(e.occurrence is not None for e in entries):  # an async workflow's: any order, nested ones skipped
            answered = set(journal.answered)
            left = sorted((e for e in entries if e.position not in answered and e.parent is None), key=_at)
        else:
            left = sorted((e for e in entries if e.position > journal.reached), key=_at)
        if left:
            called = None
            if isinstance(outcome, Failed):
                called = f"nothing: it fails with {outcome.error.name}: {outcome.error.message[:300]}"
            journal.divergence = Divergence(left[0].position, _call(left[0].kind, left[0].name), called)
    return Replay(outcome, journal.answered, journal.stop, journal.divergence)
