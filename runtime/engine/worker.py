"""The scheduler and worker pool: claim runnable instances, run activations on threads.

A dispatcher thread leases runnable instances (new, timer due, event arrived,
retry due, resumed, lease expired) and hands them to a bounded thread pool.
It sleeps until the next wake time in the store or until `wake()` is called,
so a due timer fires within a few milliseconds, not at the next poll.

Every running activation has a cancel event. It is set when the instance is no
longer ours to run (terminated, restarted, its lease taken over: seen at once
for controls made through this process, within CANCEL_CHECK_S for others) and
when the pool stops and the grace period is over; the sandbox then ends the
activation within a few milliseconds, wherever the guest is.

Hot resume (runtime/engine/parking.py): an activation that waits may park its isolate. A parked isolate
gives its activation slot back (the dispatcher claims other work in it) but stays held: heartbeats keep
its lease, and the cancel watcher looks at it too. It is nudged when this process sends it an event or a
control, and when the store says it is due or no longer ours (checked every CANCEL_CHECK_S, and at once
on a NOTIFY from another process).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from tenantflow.host import ISOLATE_SLOTS, MAX_MEMORY_BYTES, Sandbox
from tenantflow.runtime.engine.clock import Clock, SystemClock
from tenantflow.runtime.engine.executor import Activated, Executor
from tenantflow.runtime.engine.parking import (
    DEFAULT_MAX_PARK_S,
    DEFAULT_PARK_MEMORY_MB,
    STOPPING,
    Evicted,
    Parker,
    ParkingLot,
    Slots,
)
from tenantflow.runtime.records import ActivationState, Claim, Handoff, InstanceKey, Quotas
from tenantflow.runtime.store import SQLStore
from tenantflow.runtime.store.rows import EndedRow

log = logging.getLogger("tenantflow.worker")

DEFAULT_LEASE_S = 30.0
POLL_S = 1.0
# How often the pool asks the store whether the instances it runs are still its own.
CANCEL_CHECK_S = 0.5
# How long `stop` lets running activations reach their next step before cancelling them.
STOP_GRACE_S = 2.0
# Isolate slots kept free of activations and parked isolates besides the sandbox's isolate pool's (`IsolatePool.slots`):
# the deploy checks' 2 (service/checks.py CHECK_THREADS) and one to spare.
SPARE_SLOTS = 3
# How long a create's thread, its transaction committed, waits for an activation waiting on that commit to pass its
# gate (see `Committed.settle`); it then needs the GIL back, which the activation lets go of when it next blocks or
# returns into the guest (at worst after the interpreter's switch interval, 5 ms).
HANDOFF_S = 0.001


def max_workers(sandbox: Sandbox) -> int:
    """The most activation threads beside `sandbox`'s isolate pool: each holds one of the allocator's slots."""
    return ISOLATE_SLOTS - sandbox.isolates.slots - SPARE_SLOTS


def new_owner(host: str | None = None) -> str:
    """A lease owner: host name (this host's by default), pid and a random part."""
    return f"{host or socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _dead_local_owners(owners: list[str]) -> list[str]:
    """Lease owners on this host whose process is gone (their leases need not run out)."""
    host = socket.gethostname()
    dead = []
    for owner in owners:
        name, _, rest = owner.partition(":")
        pid_text = rest.partition(":")[0]
        if name != host or not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            dead.append(owner)
        except PermissionError:
            pass
    return dead


class Committed:
    """Whether the transaction that created an instance committed, once it has ended: the `ready` of an activation
    started before that (tenantflow.host.Ready), and of its executor's writes.

    `settle` hands over: if an activation is waiting at its gate (its first call with an effect), the create's
    thread waits until it has passed (at most HANDOFF_S) and then for the GIL, which the activation soon lets go of
    (its host call returns into the guest, or its write waits for the store). Otherwise the woken activation waited
    for the GIL while the create's thread logged and answered (a real server: created → first step p50 1.67 →
    1.40 ms, the client's round trip unchanged)."""

    def __init__(self) -> None:
        self._ended = threading.Event()
        self._ok = False
        self._waiting = False
        self._through = threading.Event()

    def settle(self, ok: bool) -> None:
        self._ok = ok
        self._ended.set()
        if ok and self._waiting:
            self._through.wait(HANDOFF_S)

    def ended(self) -> bool:
        return self._ended.is_set()

    def wait(self) -> bool:
        self._waiting = True
        self._ended.wait()
        self._through.set()
        return self._ok


class Offer:
    """A create's hand-off: the slots offered (None: none) and where the claims it took go. The claims are adopted
    in the create's transaction, before its commit: their activations start meanwhile and wait for `committed`
    before anything with an effect (see `Sandbox.run(ready=)`), which the create settles once its transaction ends."""

    def __init__(self, pool: WorkerPool, handoff: Handoff | None) -> None:
        self.handoff = handoff
        self.adopted = 0
        self.committed = Committed()
        self._pool = pool

    def adopt(self, claims: list[Claim], states: Mapping[Claim, ActivationState] | None = None) -> None:
        """Run the claims the create took, in the slots offered; `states`: what their activations would load
        (the create knows it: a new instance has no journal), so they start without a read."""
        self.adopted += len(claims)
        self._pool._run(claims, len(claims), states, self.committed)


class WorkerPool:
    def __init__(
        self,
        store: SQLStore,
        executor: Executor,
        clock: Clock,
        *,
        threads: int = 4,
        lease_s: float = DEFAULT_LEASE_S,
        owner: str | None = None,
        on_done: Callable[[Activated], None] | None = None,
        park_memory_mb: int = DEFAULT_PARK_MEMORY_MB,
        max_park_s: float = DEFAULT_MAX_PARK_S,
        tenant_cap: int | None = None,
    ) -> None:
        """`park_memory_mb` 0 turns hot resume off; it is off with a clock other than the system's too (a
        parked isolate waits in real time). `tenant_cap`: the most activations one tenant runs at once, across
        the processes on the store (with its quota's `max_concurrent`); by default this pool's `threads`."""
        self.store = store
        self.executor = executor
        self.clock = clock
        self.threads = threads
        self.tenant_cap = tenant_cap or threads
        self.lease_s = lease_s
        self.owner = owner or new_owner()
        self.on_done = on_done
        self.stopping = executor.stopping or threading.Event()
        self._kick = threading.Event()
        self._look = threading.Event()
        self._lock = threading.Lock()
        self._held: dict[Claim, threading.Event] = {}
        # Claims a create handed over in its transaction, by that transaction's end: until it has ended, their
        # instances are not visible to other connections, and the watcher does not take them for lost.
        self._committing: dict[Claim, Committed] = {}
        self._running: Counter[str] = Counter()
        # Set when the dispatcher found due work it did not claim (no free slot, or its tenant is at its
        # limit): a slot an isolate gives back by parking kicks it then, and only then (an ending activation
        # always does: what it leaves may be due soon).
        self._starved = False
        self.slots = Slots(threads, on_free=self._slot_freed)
        budget = park_memory_mb << 20 if isinstance(clock, SystemClock) else 0
        self.lot = ParkingLot(budget, max(0, max_workers(executor.sandbox) - threads), max_park_s)
        # Parked isolates hold a thread each, blocked with the GIL released.
        workers = threads + (self.lot.max_count if self.lot.enabled else 0)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tenantflow-activation")
        self._dispatcher = threading.Thread(target=self._dispatch, name="tenantflow-dispatcher", daemon=True)
        self._heartbeat = threading.Thread(target=self._beat, name="tenantflow-heartbeat", daemon=True)
        self._watcher = threading.Thread(target=self._watch, name="tenantflow-cancel-watch", daemon=True)

    def start(self) -> None:
        recovered = self.store.expire_leases(_dead_local_owners(self.store.lease_owners()))
        if recovered:
            log.info("recovered %d instances of dead workers", recovered)
        self.store.listen(self._notified)
        self._dispatcher.start()
        self._heartbeat.start()
        self._watcher.start()

    def wake(self) -> None:
        """Something became runnable (created, event, resumed): look now."""
        self._kick.set()

    def nudge(self, key: InstanceKey) -> None:
        """An event or a control reached `key`: if it is parked here, it looks now."""
        self.lot.nudge(key)

    def _notified(self) -> None:
        self._kick.set()
        self._look.set()

    def stop(self, timeout: float = 30.0, grace_s: float = STOP_GRACE_S) -> None:
        """Stop claiming; running activations reach their next step or are cancelled after `grace_s`."""
        self.stopping.set()
        self._kick.set()
        self._look.set()
        self.lot.evict_all(STOPPING)
        self._dispatcher.join(timeout)
        deadline = time.monotonic() + grace_s
        while self.busy and time.monotonic() < deadline:
            time.sleep(0.01)
        with self._lock:
            for cancel in self._held.values():
                cancel.set()
        self._pool.shutdown(wait=True)
        self._heartbeat.join(timeout)
        self._watcher.join(timeout)

    def cancel(self, key: InstanceKey) -> bool:
        """End the activation of `key` running here if the store says it is no longer ours (terminated,
        restarted); a claim made since then (a restarted instance claimed again) runs on."""
        with self._lock:
            claims = [claim for claim in self._held if claim.key == key]
        if not claims:
            return False
        return len(self._cancel_lost(claims)) < len(claims)

    def cancel_tenant(self, tenant_id: str) -> None:
        """End what runs or is parked here of a tenant whose instances are gone (a deleted tenant)."""
        with self._lock:
            claims = [claim for claim in self._held if claim.key.tenant_id == tenant_id]
        if claims:
            self._cancel_lost(claims)

    def _cancel_lost(self, claims: list[Claim]) -> dict[Claim, EndedRow]:
        """Cancel (and nudge, if parked) what of `claims` is no longer ours; what still is, with its row."""
        still = self.store.held(self.owner, claims)
        with self._lock:
            lost = [cancel for claim, cancel in self._held.items() if claim in claims and claim not in still]
        for cancel in lost:
            cancel.set()
        for claim in claims:
            if claim not in still:
                self.lot.nudge(claim.key)
        return still

    def run_one(self) -> bool:
        """Claim one runnable instance and run its activation in this thread; whether there was one.

        For local runs and tests that drive time themselves; `start` runs the threads instead."""
        claims = self.store.claim(self.owner, 1, self.clock.now(), self.lease_s, max_per_tenant=self.tenant_cap)
        for claim in claims:
            self.executor.activate(claim)
        return bool(claims)

    def next_wake(self) -> float | None:
        """When the earliest waiting instance becomes runnable (None: nothing is waiting on a time)."""
        return self.store.next_wake(self.clock.now())

    @property
    def busy(self) -> int:
        """Activations running (parked isolates not counted)."""
        return self.slots.active

    def _dispatch(self) -> None:
        while not self.stopping.is_set():
            try:
                waited = self._dispatch_once()
            except Exception:
                log.exception("dispatcher error; retrying")
                waited = POLL_S
            self._kick.wait(waited)
            self._kick.clear()

    def _slot_freed(self) -> None:
        if self._starved:
            self._kick.set()

    def _dispatch_once(self) -> float:
        """Claim what fits; the time to wait before looking again."""
        self._starved = False
        free = self.slots.free()
        if free <= 0:
            self._starved = True
            return POLL_S
        # One index seek says whether anything is due; the claim's fair-share reads only run if so.
        wake = self.store.next_wake(self.clock.now())
        if wake is None:
            return POLL_S
        delay = wake - self.clock.now()
        if delay > 0:
            return min(POLL_S, delay)
        free = self.slots.reserve(free)
        try:
            claims = self.store.claim(self.owner, free, self.clock.now(), self.lease_s, max_per_tenant=self.tenant_cap)
        except BaseException:
            self.slots.unreserve(free)
            raise
        self._run(claims, free)
        if claims and len(claims) < free:
            return 0.0
        self._starved = True
        # All slots taken, or due but not claimable (its tenant is at its concurrency limit): a finishing
        # activation kicks us.
        return POLL_S

    @contextmanager
    def handoff(self, count: int) -> Iterator[Offer]:
        """Free slots offered to a create of `count` instances in this process (`Offer.handoff` None: none free,
        or the pool is not running): the create claims what it may in its own transaction and gives the claims
        to `Offer.adopt` within this block; the slots it did not use are given back after it."""
        reserved = 0
        if self._dispatcher.is_alive() and not self.stopping.is_set():
            reserved = self.slots.reserve(count)
        offer = Offer(self, Handoff(self.owner, reserved, self.lease_s, self.tenant_cap) if reserved else None)
        try:
            yield offer
        finally:
            self.slots.unreserve(reserved - offer.adopted)

    def _run(
        self,
        claims: list[Claim],
        reserved: int,
        states: Mapping[Claim, ActivationState] | None = None,
        committing: Committed | None = None,
    ) -> None:
        """Start the activations of `claims` in slots reserved for them; give back the rest of `reserved`.
        `committing`: the end of the create's transaction that claimed them, still open (a hand-off)."""
        self.slots.unreserve(reserved - len(claims))
        for claim in claims:
            cancel = self._hold(claim, committing)
            try:
                self._pool.submit(self._activate, claim, cancel, None if states is None else states.get(claim))
            except RuntimeError:  # the pool has stopped (a create's hand-off raced its stop): its lease runs out
                log.warning("not running %s: the worker pool has stopped", claim.key)
                self._release(claim)
                self.slots.unreserve(1)

    def _activate(self, claim: Claim, cancel: threading.Event, state: ActivationState | None = None) -> None:
        """Run `claim`'s activation in its slot, then whatever its end leased for that slot, one after another:
        the claim of a slot an activation leaves is made in the same commit as its end (see
        `SQLStore.finish_and_claim`), not by the dispatcher in one of its own."""
        while True:
            successors: list[Claim] = []
            try:
                try:
                    done = self.executor.activate(
                        claim, cancel, self._parker if self.lot.enabled else None, state, self._successor
                    )
                except Exception:
                    log.exception("activation of %s failed", claim.key)
                    done = Activated(claim, "failed", None)
                successors = done.successors
            finally:
                self._release(claim)
                if successors:
                    claim, state = successors[0], None
                    cancel = self._hold(claim)
                else:
                    self.slots.give()
                    self._kick.set()
            if self.on_done is not None:
                try:
                    self.on_done(done)
                except Exception:
                    log.exception("on_done of %s failed", done.claim.key)
            if not successors:
                return

    def _successor(self) -> Handoff | None:
        """The slot an ending activation leaves, offered to what is due next (none once the pool stops, or while
        the slot is owed to a parked isolate)."""
        if self.stopping.is_set() or not self.slots.passable():
            return None
        return Handoff(self.owner, 1, self.lease_s, self.tenant_cap)

    def _hold(self, claim: Claim, committing: Committed | None = None) -> threading.Event:
        """Count `claim` as running here (heartbeats, the cancel watcher, the tenant's count); its cancel event."""
        cancel = threading.Event()
        with self._lock:
            if self.stopping.is_set():
                # Held after `stop` cancelled what it holds (an end's successor, a create's hand-off that raced
                # it): it ends at once and hands its instance back.
                cancel.set()
            self._held[claim] = cancel
            if committing is not None:
                self._committing[claim] = committing
            self._running[claim.key.tenant_id] += 1
        return cancel

    def _release(self, claim: Claim) -> None:
        """`_hold` undone: `claim` no longer runs here."""
        with self._lock:
            self._held.pop(claim, None)
            self._committing.pop(claim, None)
            self._running[claim.key.tenant_id] -= 1

    def _parker(self, claim: Claim, quotas: Quotas) -> Parker:
        with self._lock:
            cancel = self._held.get(claim)
        return Parker(
            self.lot,
            self.slots,
            self.store,
            self.clock,
            claim,
            lease_s=self.lease_s,
            memory_bytes=min(quotas.memory_mb << 20, MAX_MEMORY_BYTES),
            max_running=min(quotas.max_concurrent, self.tenant_cap),
            cancel=cancel,
            stopping=self.stopping,
            on_end=self._park_ended,
        )

    def _park_ended(self, claim: Claim, evicted: Evicted | None) -> None:
        metrics = self.executor.metrics
        if metrics is not None:
            metrics.park(claim.key.tenant_id, evicted)

    def _watch(self) -> None:
        checked = time.monotonic()
        while True:
            notified = self._look.wait(CANCEL_CHECK_S)
            self._look.clear()
            if self.stopping.is_set():
                return
            try:
                # Every CANCEL_CHECK_S: is what runs here still ours? At once on a NOTIFY too: is what is
                # parked here due (an event sent through another process)?
                # One read answers both (parked isolates are held too).
                parked = self.lot.claims()
                claims = parked
                if not notified or time.monotonic() - checked >= CANCEL_CHECK_S:
                    checked = time.monotonic()
                    with self._lock:
                        claims = [c for c in self._held if c not in self._committing or self._committing[c].ended()]
                if not claims:
                    continue
                still = self._cancel_lost(claims)
                now = self.clock.now()
                for claim in parked:
                    row = still.get(claim)
                    # Paused, resumed or due (gone ones were nudged above): its parker looks now.
                    if row is not None and (row.status != "waiting" or row.due(now)):
                        self.lot.nudge(claim.key)
            except Exception:
                log.exception("checking held instances failed")

    def _beat(self) -> None:
        while not self.stopping.wait(self.lease_s / 3):
            with self._lock:
                held = list(self._held)
            try:
                self.store.heartbeat(self.owner, held, self.clock.now() + self.lease_s)
            except Exception:
                log.exception("heartbeat failed")
