"""The journal of one activation: answers the host's durable calls from the store.

Replay returns what is recorded. A step's new result is answered before its
write commits (`Deferred`): the pending writes commit together before the
workflow's next call with an effect outside its isolate (the host's `flush`),
with the journal's next write of its own, or with the activation's end, and
at the latest once `MAX_PENDING_STEPS`, `MAX_PENDING_BYTES` or `MAX_PENDING_S`
is reached; any other call's result is written before it answers. When the
instance has to wait, this raises `Suspend`; a wait is parkable, and with a
`Parker` the isolate may wait parked and go on (`park`), or else it is thrown
away.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from tenantflow.host import (
    STOP,
    Abort,
    Attempt,
    Done,
    EventTimeout,
    FailureName,
    Plan,
    Run,
    StepCall,
    StepConfig,
    StepFailed,
    Stop,
    Suspend,
)
from tenantflow.host.limits import MAX_DURATION_MS
from tenantflow.runtime.engine.clock import Clock
from tenantflow.runtime.engine.parking import Parker
from tenantflow.runtime.errors import InvalidInput
from tenantflow.runtime.records import (
    DUE_SLACK_S,
    ActivationCounts,
    ActivationState,
    AttemptRecord,
    Claim,
    Entry,
    InstanceKey,
    check_event_type,
)
from tenantflow.runtime.store import PAUSING_STATUSES, LeaseLost, Recording, SQLStore

# Step writes answered before their commit (`Deferred`) wait for one commit together: at most this many, this many
# bytes of results, and only while the first of them began (its body) less than MAX_PENDING_S ago. What a crash
# makes run again: cheap steps, never one whose body took longer than that (it commits as it completes).
MAX_PENDING_STEPS = 64
MAX_PENDING_BYTES = 1 << 20
MAX_PENDING_S = 0.05


def _ms(seconds: float) -> int:
    return math.ceil(seconds * 1000)


def nested_span(entries: Mapping[int, Entry], position: int) -> int:
    """How many positions after `position` its body's nested steps hold: they follow it, each with a parent at
    or after it. A replay answered that step from the journal skips them."""
    after = position + 1
    while (entry := entries.get(after)) is not None and entry.parent is not None and entry.parent >= position:
        after += 1
    return after - position - 1


def entry_moment(entries: Mapping[int, Entry], position: int) -> float | None:
    """When the call at `position` finished, as the journal records it (the instance's logical time after it):
    a sleep at its wake time (its row is written when it begins), anything else at its last write."""
    entry = entries.get(position)
    if entry is None:
        return None
    return entry.wake_at if entry.kind == "sleep" else entry.updated_at


class Keys:
    """Where an async workflow's calls are journaled. Its calls may run side by side, so they begin in another
    order on replay: each is matched by its name and occurrence (which call of that name it is), not by the
    position the host counted, and a new one is journaled after everything recorded."""

    def __init__(self, entries: Mapping[int, Entry]) -> None:
        self._positions = {(e.name, e.occurrence): p for p, e in entries.items() if e.occurrence is not None}
        self._next = max(entries, default=-1) + 1
        # The host's position of each call this activation made -> its journal position (for `parent`).
        self._resolved: dict[int, int] = {}

    def resolve(self, call: StepCall) -> StepCall:
        """`call` at its journal position (a keyed call), or as it is."""
        if not call.keyed:
            return call
        key = (call.name, call.occurrence)
        position = self._positions.get(key)
        if position is None:
            position = self._positions[key] = self._next
            self._next += 1
        self._resolved[call.position] = position
        parent = None if call.parent is None else self._resolved.get(call.parent, call.parent)
        return dataclasses.replace(call, position=position, parent=parent)


@dataclasses.dataclass(frozen=True)
class Deferred:
    """A write answered before its commit: a step's (Done), or an event wait's (its entry as it begins to wait,
    or done with the event it consumed)."""

    entry: Entry
    attempt: AttemptRecord | None
    consumed: int | None = None


class InstanceJournal:
    """Implements the host's Journal protocol for one claimed instance."""

    def __init__(
        self,
        store: SQLStore,
        claim: Claim,
        state: ActivationState,
        clock: Clock,
        stopping: threading.Event | None = None,
        parker: Parker | None = None,
        on_write: Callable[[InstanceKey], None] | None = None,
    ) -> None:
        self.store = store
        self.on_write = on_write
        self.claim = claim
        self.clock = clock
        self.entries = dict(state.entries)
        self.events = list(state.events)
        self.max_steps = state.quotas.max_steps
        # The step quota counts `step.do` calls only (as Cloudflare's), not sleeps and event waits.
        self.steps = sum(1 for entry in state.entries.values() if entry.kind == "do")
        self.quotas = state.quotas
        self.stopping = stopping
        # Set when a write found the instance no longer ours: its state is someone else's to record.
        self.lease_lost = False
        self.waiting_for: str | None = None
        self.attempts: list[tuple[float, int]] = []
        self.parker = parker
        # Terminated with a rollback: every durable call not journaled as finished answers STOP, and the
        # workflow unwinds into its rollbacks.
        self.unwinding = state.instance.rollback == "terminate"
        # Journal positions this activation answered from what was recorded before it started (replay).
        self.replayed = 0
        self._to_replay = set(state.entries)
        self.keys = Keys(state.entries)
        # Waits gone on from in the parked isolate.
        self.resumes = 0
        # What a park's write has told the store of this activation already.
        self._reported = ActivationCounts(replayed=0, activations=0, resumes=0, workflow_fuel=0)
        # Steps' writes answered Done before their commit (the host's `Deferring`), in order: committed together
        # before the next call with an effect (`flush`), with another write, a sleep's, a wait's or the
        # activation's end (`carried`), or once there are too many or the first has waited too long.
        self._deferred: list[Deferred] = []
        self._deferred_bytes = 0
        self._deferred_since = 0.0

    def _counts(self) -> ActivationCounts:
        return ActivationCounts(replayed=self.replayed, activations=1, resumes=self.resumes, workflow_fuel=0)

    def unreported(self) -> ActivationCounts:
        """What this activation adds to its instance's counts that no park has written yet."""
        counts, told = self._counts(), self._reported
        return ActivationCounts(
            replayed=counts["replayed"] - told["replayed"],
            activations=counts["activations"] - told["activations"],
            resumes=counts["resumes"] - told["resumes"],
            workflow_fuel=0,
        )

    def park(self, wait: Suspend, log: str) -> bool:
        """The host's `Parking.park`: wait in this isolate if the parker takes it (events refreshed). An event
        wait's park carries the pending writes (the wait's own entry among them) in its commit; if it makes
        none, they stay pending for the activation's end."""
        carried = self.carried() if wait.waiting_for is not None and self.parker is not None else None
        if carried is None:
            self.flush()
        if self.parker is None:
            return False
        parked = self.parker.park(wait, log or None, self.unreported(), before=carried)
        if carried is not None and carried.ran:
            self.carried_written(carried)
        if parked.reported:
            self._reported = self._counts()
        if not parked.resumed:
            return False
        self.resumes += 1
        if parked.events is not None:
            self.events = list(parked.events)
        self.waiting_for = None
        return True

    def _existing(self, call: StepCall) -> Entry | None:
        if call.position in self._to_replay:
            self._to_replay.discard(call.position)
            self.replayed += 1
        entry = self.entries.get(call.position)
        if entry is not None and (entry.name != call.name or entry.kind != call.kind):
            raise Abort(
                FailureName.NON_DETERMINISM_ERROR,
                f"journal position {call.position} holds {entry.kind} {entry.name!r}, "
                f"but the workflow now calls {call.kind} {call.name!r} there",
            )
        return entry

    def _check_step_quota(self) -> None:
        if self.steps >= self.max_steps:
            raise Abort(FailureName.STEP_LIMIT_EXCEEDED, f"an instance may make at most {self.max_steps} step.do calls")

    def _new(self, call: StepCall, state: str, **fields: Any) -> Entry:
        if call.kind == "do":
            self._check_step_quota()
            self.steps += 1
        now = self.clock.now()
        occurrence = call.occurrence if call.keyed else None
        return Entry(
            call.position,
            call.name,
            call.kind,
            state,
            created_at=now,
            updated_at=now,
            parent=call.parent,
            occurrence=occurrence,
            **fields,
        )

    def _span(self, position: int) -> int:
        """`nested_span`, the positions skipped counted as replayed."""
        span = nested_span(self.entries, position)
        for skipped in range(position + 1, position + 1 + span):
            if skipped in self._to_replay:
                self._to_replay.discard(skipped)
                self.replayed += 1
        return span

    def _write(self, entry: Entry, attempt: AttemptRecord | None = None, consumed: int | None = None) -> None:
        self._stamp(entry)
        self._commit(entry, attempt, consumed)

    def _write_later(self, entry: Entry, attempt: AttemptRecord | None = None, consumed: int | None = None) -> None:
        """`_write`, answered now and committed with the pending writes (`_defer`)."""
        self._stamp(entry)
        self.entries[entry.position] = entry
        self._defer(Deferred(entry, attempt, consumed))

    def _stamp(self, entry: Entry) -> None:
        """What a write checks before the store does any work for it, and its time."""
        if self.store.storage_exhausted(self.claim.key.tenant_id, self.quotas):
            raise Abort(FailureName.STORAGE_QUOTA_EXCEEDED, f"the tenant's {self.quotas.storage_exhausted()}")
        entry.updated_at = self.clock.now()

    def _commit(self, entry: Entry, attempt: AttemptRecord | None = None, consumed: int | None = None) -> None:
        """Write `entry`, and the pending writes first in the same commit. If the store raises, the pending writes
        rolled back with it and are still pending."""
        carried = self.carried()
        try:
            status = self.store.record(self.claim, entry, attempt, entry.updated_at, consumed, before=carried)
        except LeaseLost:
            self._lost()
        if carried is None or carried.status not in PAUSING_STATUSES:  # else only the carried writes were
            self.entries[entry.position] = entry
        self._committed(status)

    def _lost(self) -> NoReturn:
        self._clear()
        self.lease_lost = True
        raise Suspend("lease lost") from None

    def _committed(self, status: str) -> None:
        """After a write committed (the pending writes with it): watchers are told; a pause or a stopping worker
        found then ends the activation."""
        self._clear()
        self._written()
        if status in PAUSING_STATUSES:
            raise Suspend("paused")
        if self.stopping is not None and self.stopping.is_set():
            raise Suspend("worker stopping", _ms(self.clock.now()))

    def _written(self) -> None:
        if self.on_write is not None:
            self.on_write(self.claim.key)

    # -- a step's write left pending (the host's Deferring) -------------------

    @property
    def pending(self) -> bool:
        return bool(self._deferred)

    def _defer(self, deferred: Deferred) -> None:
        """Leave a step's write pending; commit the pending writes now if there are too many, or too old."""
        if not self._deferred:
            took = 0.0 if deferred.attempt is None else deferred.attempt.duration_ms / 1000
            self._deferred_since = time.monotonic() - took
        self._deferred.append(deferred)
        self._deferred_bytes += len(deferred.entry.result or "")
        if len(self._deferred) >= MAX_PENDING_STEPS or self._deferred_bytes >= MAX_PENDING_BYTES:
            self.flush()
        else:
            self._flush_if_old()

    def _flush_if_old(self) -> None:
        if self._deferred and time.monotonic() - self._deferred_since >= MAX_PENDING_S:
            self.flush()

    def _clear(self) -> None:
        self._deferred = []
        self._deferred_bytes = 0

    def flush(self) -> None:
        """Commit the pending writes (every one, even if the first finds the instance being paused), raising what
        `_write` would have (Suspend: lease lost, paused, stopping)."""
        carried = self.carried()
        if carried is None:
            return
        try:
            status = self.store.record_all(self.claim, carried)
        except LeaseLost:
            self._lost()
        self._committed(status)

    def carried(self) -> Recording | None:
        """The pending writes, to go first in another write's transaction (a sleep's, a wait's: `_commit`; the
        activation's end: `finish_and_claim(before=)`); None if there are none. They stay pending until that
        write has committed (`carried_written`), so a write that raised leaves them for `flush`."""
        if not self._deferred:
            return None
        return self.store.recordings(self.claim, [(d.entry, d.attempt, d.consumed) for d in self._deferred])

    def carried_written(self, recording: Recording) -> None:
        """After the end's commit: what its carried writes found (the lease lost; else watchers are told)."""
        self._clear()
        if recording.status is None:
            self.lease_lost = True
        else:
            self._written()

    def moment(self, call: StepCall) -> float | None:
        return entry_moment(self.entries, self.keys.resolve(call).position)

    def _due(self, wake_at: float | None) -> bool:
        return wake_at is None or wake_at <= self.clock.now() + DUE_SLACK_S

    # -- step.do -------------------------------------------------------------

    def step_begin(self, call: StepCall, config: StepConfig) -> Plan:
        self._flush_if_old()  # the workflow's code since may have taken a while: not before another body
        call = self.keys.resolve(call)
        entry = self._existing(call)
        # A keyed call's nested steps are matched by their keys too (never called: nothing to skip).
        if entry is not None and entry.state == "done":
            return Done(entry.result or "null", 0 if call.keyed else self._span(call.position))
        if entry is not None and entry.state == "failed":
            span = 0 if call.keyed else self._span(call.position)
            return StepFailed(entry.error_name or "Error", entry.error_message or "", span)
        if self.unwinding and call.kind == "do":
            return STOP
        if entry is None:
            self._check_step_quota()
            return Run(1)
        if not self._due(entry.wake_at):
            raise self._retry_wait(call, entry.wake_at or 0)
        return Run(entry.attempts + 1)

    def _retry_wait(self, call: StepCall, wake_at: float) -> Suspend:
        in_isolate = max(0.0, wake_at - self.clock.now()) if self.clock.realtime else None
        return Suspend(f"retry of {call.name!r}", _ms(wake_at), parkable=True, in_isolate_s=in_isolate)

    def step_complete(self, call: StepCall, config: StepConfig, attempt: Attempt) -> Plan:
        call = self.keys.resolve(call)
        now = self.clock.now()
        self.attempts.append((attempt.duration_ms, attempt.fuel))
        entry = self.entries.get(call.position) or self._new(call, "running")
        entry.attempts = attempt.attempt
        entry.fuel += attempt.fuel
        entry.duration_ms += attempt.duration_ms
        record = AttemptRecord(
            call.position,
            attempt.attempt,
            attempt.ok,
            attempt.error_name,
            attempt.error_message,
            attempt.fuel,
            attempt.duration_ms,
            now,
            attempt.traceback,
        )
        entry.attempt_limit = config.limit + 1
        if attempt.ok:
            entry.state, entry.result, entry.wake_at = "done", attempt.result, None
            entry.error_name = entry.error_message = None
            # Answered now, committed before the workflow's next call with an effect, or with the end.
            self._write_later(entry, record)
            return Done(attempt.result or "null")
        entry.error_name, entry.error_message = attempt.error_name, attempt.error_message
        if attempt.retryable and attempt.attempt <= config.limit:
            delay_ms = config.delay_before(attempt.attempt + 1) if attempt.delay_ms is None else attempt.delay_ms
            delay = delay_ms / 1000
            entry.state, entry.wake_at = "retrying", now + delay
            self._write(entry, record)
            if delay <= 0:
                return Run(attempt.attempt + 1)
            raise self._retry_wait(call, entry.wake_at)
        entry.state, entry.wake_at = "failed", None
        self._write(entry, record)
        return StepFailed(attempt.error_name or "Error", attempt.error_message or "")

    # -- step.sleep ----------------------------------------------------------

    def sleep_until(self, call: StepCall, wake_at_ms: int | None, duration_ms: int | None) -> Stop | None:
        try:
            return self._sleep_until(call, wake_at_ms, duration_ms)
        finally:
            self.flush()  # unless its write took the pending one with it

    def _sleep_until(self, call: StepCall, wake_at_ms: int | None, duration_ms: int | None) -> Stop | None:
        call = self.keys.resolve(call)
        entry = self._existing(call)
        if self.unwinding and (entry is None or not self._due(entry.wake_at)):
            return STOP
        if entry is None:
            now = self.clock.now()
            wake = wake_at_ms / 1000 if wake_at_ms is not None else now + (duration_ms or 0) / 1000
            if wake > now + MAX_DURATION_MS / 1000:
                # Checked against the instance's clock when first journaled, never again on replay.
                days = (wake - now) / 86_400
                raise Abort(
                    FailureName.INVALID_HOST_CALL,
                    f"sleep-until: {call.name!r} would wake {days:.0f} days from now; a sleep is at most 365 days",
                )
            entry = self._new(call, "sleeping", wake_at=wake)
            self._write(entry)
        if not self._due(entry.wake_at):
            raise Suspend(f"sleep {call.name!r}", _ms(entry.wake_at or 0), parkable=True)
        return None

    # -- step.wait_for_event -------------------------------------------------

    @staticmethod
    def _check_event_type(event_type: str) -> None:
        """A wait for a type no event can have (the API refuses it) would wait forever: fail it now."""
        try:
            check_event_type(event_type)
        except InvalidInput as error:
            raise Abort("InvalidEventType", str(error)) from None

    def wait_for_event(self, call: StepCall, event_type: str, timeout_ms: int | None) -> Any:
        """An event's payload, recorded or consumed now (its write left pending, as a step's); or Suspend, the
        wait's own entry left pending with the writes before it: the park's commit carries them (`park`), or else
        the activation's end."""
        call = self.keys.resolve(call)
        entry = self._existing(call)
        if entry is not None and entry.state == "done":
            return json.loads(entry.result or "null")
        if entry is not None and entry.state == "timed_out":
            raise EventTimeout(entry.error_message or f"no {event_type!r} event arrived in time")
        if self.unwinding:
            return STOP
        fresh = entry is None
        if entry is None:
            self._check_event_type(event_type)
            timeout_at = None if timeout_ms is None else self.clock.now() + timeout_ms / 1000
            entry = self._new(call, "waiting", wake_at=timeout_at, event_type=event_type)
        for event in self.events:
            if event.type == event_type:
                self.events.remove(event)
                value = {"type": event.type, "payload": event.payload, "timestamp": event.created_at}
                entry.state, entry.result = "done", json.dumps(value)
                self._write_later(entry, consumed=event.seq)
                return value
        if entry.wake_at is not None and self._due(entry.wake_at):
            entry.state = "timed_out"
            entry.error_name = FailureName.WAIT_TIMEOUT_ERROR
            entry.error_message = f"no {event_type!r} event arrived before the timeout"
            self._write(entry)
            raise EventTimeout(entry.error_message)
        if fresh:
            self._write_later(entry)
        self.waiting_for = event_type
        wake_at_ms = None if entry.wake_at is None else _ms(entry.wake_at)
        raise Suspend(f"waiting for {event_type!r}", wake_at_ms, parkable=True, waiting_for=event_type)
