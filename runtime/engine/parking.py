"""Hot resume: isolates parked at their waits, per worker process.

A parked isolate is an activation whose host call blocks in `Parker.park` (the GIL released) while its
instance waits. In the store the instance is `waiting`, with its wake time and the event type it waits for,
and still leased by this process: no other worker claims it, and the pool's heartbeat keeps the lease
alive. When the wait is over (its timer is due, or `ParkingLot.nudge` says an event, a control or a resume
came), the parker takes an activation slot back and `store.unpark` makes the instance `running` again
(fenced, within its tenant's concurrency limit) with the events it has not consumed: the host call returns
into the same isolate and the workflow goes on without replay. A timer shorter than SHORT_TIMER_S (a
pause between two steps, a quick back-off) parks without either write: the instance stays `running` in
the store, as if the activation were between two steps, and a pause or terminate that comes meanwhile is
seen at its next fenced write or by the pool's cancel watcher, as for any running activation.

Parking is bounded per process: a memory budget (each parked isolate counts as its memory cap, the most
it can hold, so the budget is a bound and not an estimate), a number of isolates (the pooling allocator's
slots beside the activations), and a longest park. The least recently parked isolate is evicted to make
room. A park that ends any other way than resumed (evicted, paused, stopping, terminated) ends the
activation as a plain suspend: the instance is replayed from its journal when it wakes, and the journal
stays the only source of truth.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tenantflow.runtime.records import DUE_SLACK_S, ActivationCounts, Claim, EventRecord, InstanceKey

if TYPE_CHECKING:
    # Names for annotations only: the CLI reads this module's defaults without loading the sandbox or the store.
    from tenantflow.host import Suspend
    from tenantflow.runtime.engine.clock import Clock
    from tenantflow.runtime.store import Recording, SQLStore

__all__ = [
    "DEFAULT_MAX_PARK_S",
    "DEFAULT_PARK_MEMORY_MB",
    "Evicted",
    "Parked",
    "Parker",
    "ParkingLot",
    "Slots",
]

# 4 GiB of the 24 GiB this machine kind has: 16 isolates at the default memory cap of 256 MiB each, more
# for tenants with a lower cap (the pooling allocator's slots bound the count too).
DEFAULT_PARK_MEMORY_MB = 4096
# A wait that ends later than this is not parked, and a park this long is evicted: the isolate of an
# instance that waits minutes for an event costs more memory than its replay costs CPU.
DEFAULT_MAX_PARK_S = 300.0
# A timer that ends within this parks without telling the store (two commits fewer per wait): its instance
# stays `running`, and counts against its tenant's concurrency, for at most this long, as a step would.
# Longer, and the nap would hold back the tenant's other instances (one worker thread: all of them).
SHORT_TIMER_S = 0.1
# Why a wait did not go on in its isolate (the reasons evictions are counted by).
Evicted = str
OFF = "hot resume off"
LONG_WAIT = "long wait"
BUDGET = "memory budget"
PARK_TIME = "park time"
PAUSED = "paused"
STOPPING = "stopping"
LOST = "not held"
CONCURRENCY = "concurrency limit"


@dataclass(frozen=True)
class Parked:
    """How a park ended, for the journal: go on in the isolate (`resumed`) with the instance's unconsumed
    `events` (None: as they were, after a short timer); `reported`: the park's write told the store the log
    and counts."""

    resumed: bool
    events: list[EventRecord] | None = None
    reported: bool = False


class Slots:
    """A worker pool's activation slots. A parked isolate gives its slot back; one that resumes takes a slot
    before new claims do (`free` counts the resuming as taken)."""

    def __init__(self, size: int, on_free: Callable[[], None] | None = None) -> None:
        self.size = size
        self._on_free = on_free
        self._cond = threading.Condition()
        self._active = 0
        self._resuming = 0

    @property
    def active(self) -> int:
        with self._cond:
            return self._active

    def free(self) -> int:
        with self._cond:
            return self.size - self._active - self._resuming

    def reserve(self, most: int) -> int:
        """Take up to `most` free slots at once for activations about to be claimed; how many were taken (each
        is given back with `give`, or with `unreserve` if its claim did not come)."""
        with self._cond:
            taken = max(0, min(most, self.size - self._active - self._resuming))
            self._active += taken
            return taken

    def unreserve(self, count: int) -> None:
        """Give back reserved slots whose claims did not come (no activation ended: nothing new to look at)."""
        if count > 0:
            with self._cond:
                self._active -= count
                self._cond.notify_all()

    def give(self) -> None:
        with self._cond:
            self._active -= 1
            self._cond.notify_all()
        if self._on_free is not None:
            self._on_free()

    def passable(self) -> bool:
        """Whether an ending activation's slot may go to a new claim at once: not when it is over the size (a
        park that ended without resuming, `restore`) nor when a parked isolate waits to resume in it."""
        with self._cond:
            return self._active <= self.size and self._resuming == 0

    def restore(self) -> None:
        """A park ends without resuming: the activation only records its end, which it may do over the size."""
        with self._cond:
            self._active += 1

    def retake(self, stop: Callable[[], bool]) -> bool:
        """Wait for a slot to resume in; False if `stop()` says to give up first."""
        with self._cond:
            self._resuming += 1
            try:
                while self._active >= self.size:
                    if stop():
                        return False
                    self._cond.wait(0.05)
                self._active += 1
                return True
            finally:
                self._resuming -= 1


@dataclass(eq=False)
class _Spot:
    claim: Claim
    size: int
    nudged: threading.Event = field(default_factory=threading.Event)
    evicted: Evicted | None = None

    def evict(self, reason: Evicted) -> None:
        self.evicted = reason
        self.nudged.set()


class ParkingLot:
    """The parked isolates of one worker process, least recently parked first."""

    def __init__(self, budget_bytes: int, max_count: int, max_park_s: float) -> None:
        self.budget_bytes = budget_bytes
        self.max_count = max_count
        self.max_park_s = max_park_s
        self._lock = threading.Lock()
        self._spots: OrderedDict[InstanceKey, _Spot] = OrderedDict()
        self._used = 0

    @property
    def enabled(self) -> bool:
        return self.budget_bytes > 0 and self.max_count > 0 and self.max_park_s > 0

    def admit(self, spot: _Spot) -> bool:
        """Make room for `spot` (evicting the least recently parked) and hold it; False if it can never fit."""
        if not self.enabled or spot.size > self.budget_bytes:
            return False
        with self._lock:
            while self._spots and (self._used + spot.size > self.budget_bytes or len(self._spots) >= self.max_count):
                _, oldest = self._spots.popitem(last=False)
                self._used -= oldest.size
                oldest.evict(BUDGET)
            self._spots[spot.claim.key] = spot
            self._used += spot.size
        return True

    def leave(self, spot: _Spot) -> None:
        with self._lock:
            if self._spots.get(spot.claim.key) is spot:
                del self._spots[spot.claim.key]
                self._used -= spot.size

    def nudge(self, key: InstanceKey) -> bool:
        """Something happened to `key` (an event, a control): its parked isolate, if any, looks now."""
        with self._lock:
            spot = self._spots.get(key)
        if spot is not None:
            spot.nudged.set()
        return spot is not None

    def evict_all(self, reason: Evicted) -> None:
        with self._lock:
            spots = list(self._spots.values())
        for spot in spots:
            spot.evict(reason)

    def claims(self) -> list[Claim]:
        with self._lock:
            return [spot.claim for spot in self._spots.values()]

    def usage(self) -> tuple[int, int]:
        """(parked isolates, bytes of budget they hold)."""
        with self._lock:
            return len(self._spots), self._used


class Parker:
    """Parks the isolate of one activation at its waits: what `InstanceJournal.park` calls."""

    def __init__(
        self,
        lot: ParkingLot,
        slots: Slots,
        store: SQLStore,
        clock: Clock,
        claim: Claim,
        *,
        lease_s: float,
        memory_bytes: int,
        max_running: int,
        cancel: threading.Event | None,
        stopping: threading.Event,
        on_end: Callable[[Claim, Evicted | None], None] | None = None,
    ) -> None:
        self.lot = lot
        self.slots = slots
        self.store = store
        self.clock = clock
        self.claim = claim
        self.lease_s = lease_s
        self.memory_bytes = memory_bytes
        self.max_running = max_running
        self.cancel = cancel
        self.stopping = stopping
        # Told how each wait ended: None (resumed in the isolate) or why not.
        self.on_end = on_end

    def park(self, wait: Suspend, log: str | None, counts: ActivationCounts, before: Recording | None = None) -> Parked:
        """Hold the isolate until `wait` is over (or not: the activation ends with `wait`). `log` (None:
        unchanged), the `counts` and the journal writes `before` go to the store with the park's write, if it
        makes one."""
        ended: Evicted | None = None
        try:
            parked, ended = self._park(wait, log, counts, before)
            return parked
        finally:
            if self.on_end is not None:
                self.on_end(self.claim, ended)

    def _park(
        self, wait: Suspend, log: str | None, counts: ActivationCounts, before: Recording | None
    ) -> tuple[Parked, Evicted | None]:
        if not self.lot.enabled:
            return Parked(False), OFF
        now = self.clock.now()
        wake_at = None if wait.wake_at_ms is None else wait.wake_at_ms / 1000
        # A timer further off than the longest park is not worth the memory; an event may come any moment.
        if wait.waiting_for is None and (wake_at is None or wake_at - now > self.lot.max_park_s):
            return Parked(False), LONG_WAIT
        spot = _Spot(self.claim, self.memory_bytes)
        if not self.lot.admit(spot):
            return Parked(False), BUDGET
        try:
            if wait.waiting_for is None and wake_at is not None and wake_at - now <= SHORT_TIMER_S:
                resumed, ended = self._nap(spot, wake_at)
                return Parked(resumed), ended
            row = self.store.park(
                self.claim,
                now,
                wake_at=wake_at,
                waiting_for=wait.waiting_for,
                lease_until=now + self.lease_s,
                log=log,
                before=before,
                **counts,
            )
            if row is None:
                return Parked(False), LOST
            if row.status != "waiting":
                return Parked(False, reported=True), PAUSED
            self.slots.give()
            resumed, events, ended = self._wait(spot, row.wake_at)
            if not resumed:
                self.slots.restore()
            return Parked(resumed, events, reported=True), ended
        finally:
            self.lot.leave(spot)

    def _gone(self) -> Evicted | None:
        if self.cancel is not None and self.cancel.is_set():
            return LOST
        if self.stopping.is_set():
            return STOPPING
        return None

    def _nap(self, spot: _Spot, wake_at: float) -> tuple[bool, Evicted | None]:
        """A short timer: wait it out with the slot given back, the store left as it is."""
        self.slots.give()
        while True:
            timeout = wake_at - self.clock.now()
            if timeout > 0:
                spot.nudged.wait(timeout)
                spot.nudged.clear()
            ended = spot.evicted or self._gone()
            if ended is None and timeout > 0 and wake_at > self.clock.now() + DUE_SLACK_S:
                continue  # nudged early (an event for a later wait, a resume): nothing to do yet
            if ended is not None or not self.slots.retake(lambda: spot.evicted is not None or self._gone() is not None):
                self.slots.restore()
                return False, ended or spot.evicted or self._gone()
            return True, None

    def _wait(self, spot: _Spot, wake_at: float | None) -> tuple[bool, list[EventRecord] | None, Evicted | None]:
        give_up = time.monotonic() + self.lot.max_park_s
        while True:
            ended = spot.evicted or self._gone()
            if ended is not None:
                return False, None, ended
            left = give_up - time.monotonic()
            if left <= 0:
                return False, None, PARK_TIME
            timeout = left if wake_at is None else min(left, wake_at - self.clock.now())
            if timeout > 0:
                spot.nudged.wait(timeout)
            spot.nudged.clear()
            ended = spot.evicted or self._gone()
            if ended is not None:
                return False, None, ended
            if not self.slots.retake(lambda: spot.evicted is not None or self._gone() is not None):
                continue
            now = self.clock.now()
            row, events = self.store.unpark(self.claim, now, now + self.lease_s, self.max_running)
            if events is not None:
                return True, events, None
            self.slots.give()
            if row is None:
                return False, None, LOST
            if row.status != "waiting":
                return False, None, PAUSED
            if row.due(now):
                # Due, but the tenant runs all it may: the instance waits its turn among the claims.
                return False, None, CONCURRENCY
            wake_at = row.wake_at
