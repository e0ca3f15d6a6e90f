"""Isolates made ahead of time and dropped after the fact, on a background thread.

An activation needs a fresh isolate (a Store and an instance of the guest component): ~0.8-1.4 ms to
instantiate here. Dropping one afterwards costs as much again with the pooling allocator keeping
16 MiB resident (it zeroes those pages for the slot's next user). `IsolatePool` does both off the
activation's thread: it keeps up to `size` isolates instantiated and ready, and drops used ones.

Each isolate made (ready or on the spot) is also prepared: `prepare`, an export the guest gives for it, is
called once. componentize-py's runtime does its set-up at an instance's first call (it asks the host for
the environment and the arguments, and reseeds `random`): in a busy server that was three host calls, each
waiting for the GIL, between the activation's call into the guest and the workflow's first line.

While an isolate is ready the thread keeps out of the way of the activations: it makes or drops one only
`quiet_s` (QUIET_S) after the last take or retire, so not beside an activation's start or its finish; with
none ready it works at once (the next activation would otherwise make its own).

Isolation is unchanged: an isolate is handed out once, used by one activation and dropped (its linear
memory is never seen by another activation), exactly as when the activation instantiated it itself.

What is per activation is applied when the isolate is taken (`Sandbox._activate`): the memory cap,
the fuel, the epoch deadline and the thread's activation. What wasmtime allows after instantiation:

- the memory cap: `Store.set_limits` is wasmtime's C `wasmtime_store_limiter`, which builds a new
  `StoreLimits` and replaces the store's limiter (wasmtime 50 `crates/c-api/src/store.rs`); every
  later `memory.grow` is checked against the new cap (on the total size asked for, not the growth).
  So a pooled isolate is instantiated under `floor_bytes` and takes the tenant's cap when taken. An
  isolate instantiated under a cap works for any larger cap exactly as if instantiated under it
  (instantiation does not grow memory: the guest starts at 252 pages, ~15.75 MiB, and burns the same
  6,099 fuel under 16 MiB and 256 MiB). An activation whose cap is below the floor instantiates its
  own, as before (and fails the same way if the cap is below the guest's initial memory).
- fuel: `set_fuel` at any time. Instantiation burns a little (`Isolate.fuel_used`); the activation that
  takes the isolate is charged it, so its fuel (budgets, billing) is what it was when it instantiated
  inline. An activation with less fuel than that instantiates its own (and runs out the same way).
- the epoch deadline (`set_epoch_deadline`, relative to the engine's epoch now) and the deadline
  callback (per store, installed when made) need nothing of instantiation.
- instantiation calls no host function, and `prepare` only WASI's environment and arguments (empty for
  every activation; the guest skips the reseed, each run reseeding from its instance's stream): nothing an
  activation would answer differently (checked), so the thread-local activation that host functions read
  is not needed until the activation's call into the guest. The fuel `prepare` burns is charged as
  instantiation's is (it was burned inside the activation's call before).

Bounded: at most `size` ready isolates, each instantiated under `floor_bytes` and prepared, never run, so
each holds at most that much linear memory (resident: ~2.7 MiB measured, ~0.4 MiB unprepared); at most
`size` used isolates wait to be dropped, and no more than `retire_bytes` of their caps (otherwise the
activation drops its own). Each isolate the pool holds (ready, waiting to be dropped,
or being made or dropped: at most 2 × `size` + 1) takes a slot of the pooling allocator (host/engine.py's
POOLING["instances"]; the runtime keeps `IsolatePool.slots` free for it, 9 at the default size, and 3 more).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import wasmtime
from tenantflow.host._wasmtime import EpochCallback
from tenantflow.host.slots import SlotPrimer
from wasmtime.component import Component, Linker

log = logging.getLogger(__name__)

# Ready isolates per Sandbox (per process); `TENANTFLOW_ISOLATE_POOL` overrides it, 0 turns the pool off.
# Four, not two: one instance at a time ~6 ms apart never leaves the thread its `quiet_s`, so it refills only when
# the last ready isolate is taken, beside that activation; with four it does so one time in four (measured on a real
# server: first step p90 4.39 -> 2.78 ms and 3.10 -> 2.75 ms, p50 2.01 -> 1.84 and 1.71 -> 1.69 ms).
DEFAULT_SIZE = 4
# The most `TENANTFLOW_ISOLATE_POOL` asks for: its slots (`slots_held`) leave most of the allocator's to activations.
MAX_SIZE = 32
POOL_ENV = "TENANTFLOW_ISOLATE_POOL"
# The smallest memory cap a tenant can have (the `memory_mb` quota's minimum): a ready isolate is made under
# it, so it serves every tenant, and holds at most this much linear memory while it waits.
FLOOR_BYTES = 16 << 20
# Caps of used isolates waiting to be dropped, at most (beyond it, the activation drops its own).
RETIRE_BYTES = 512 << 20
# Fuel for instantiating (it burns ~6,000).
_INSTANTIATE_FUEL = 1 << 40
# No epoch deadline while instantiating (the callback would only let it go on).
_NO_DEADLINE = 1 << 40
# After a failed instantiation (e.g. the allocator's slots all taken), wait this long before the next try.
_RETRY_S = 0.1
# While an isolate is ready, the thread makes or drops one only this long after the last take or retire: not
# beside an activation's start (its first host calls and step) or its end (the finish's commit), which it
# would slow on a machine with few cores (see `_step`).
QUIET_S = 0.01


def slots_held(size: int) -> int:
    """The allocator slots a pool of `size` holds at most: ready, waiting to be dropped, and one being made."""
    return 2 * size + 1 if size else 0


def size_from_env(default: int = DEFAULT_SIZE) -> int:
    """The pool size `TENANTFLOW_ISOLATE_POOL` asks for (0-MAX_SIZE), or `default`."""
    text = os.environ.get(POOL_ENV, "").strip()
    if not text:
        return default
    try:
        size = int(text)
    except ValueError:
        raise ValueError(f"{POOL_ENV} is a whole number of isolates (0: no pool), got {text[:50]!r}") from None
    if not 0 <= size <= MAX_SIZE:
        raise ValueError(f"{POOL_ENV} is 0-{MAX_SIZE}, got {size}")
    return size


@dataclass(eq=False)
class Isolate:
    """A Store with a fresh instance of the guest and its exported functions, never called yet (but `prepare`)."""

    store: wasmtime.Store
    funcs: tuple[Any, ...]
    # The fuel instantiation (and `prepare`) burned: the activation is charged it.
    fuel_used: int
    # Made ahead of time (False: by the activation that uses it).
    pooled: bool = False
    # The cap it runs under, once taken (what it may hold while waiting to be dropped).
    cap_bytes: int = field(default=0)

    def func(self, exports: Sequence[Any], index: Any) -> Any:
        """The function of export `index` (one of `exports`, the indices the pool resolved)."""
        for export, func in zip(exports, self.funcs, strict=True):
            if export is index:
                return func
        raise KeyError(index)


class IsolatePool:
    """Fresh isolates of `component`: `take` one (ready, or made on the spot), `retire` it when done.

    Safe to call from many threads. `size` 0 makes and drops every isolate on the caller's thread.
    """

    def __init__(
        self,
        engine: wasmtime.Engine,
        linker: Linker,
        component: Component,
        epoch: EpochCallback,
        exports: Sequence[Any],
        size: int = DEFAULT_SIZE,
        floor_bytes: int = FLOOR_BYTES,
        retire_bytes: int = RETIRE_BYTES,
        cores: int | None = None,
        quiet_s: float = QUIET_S,
        prepare: Any = None,
        primer: SlotPrimer | None = None,
    ) -> None:
        self._engine = engine
        self._linker = linker
        self._component = component
        self._epoch = epoch
        self.exports = tuple(exports)
        # The export called once on each isolate made, before it is handed out (None: none).
        self.prepare = prepare
        # Reads in each new slot of the allocator before its first reset (host/slots.py); None: not done. It looks
        # after each isolate is made and before each is dropped.
        self.primer = primer
        self.size = size
        # What it may hold of the allocator's slots (the runtime keeps them free of activations).
        self.slots = slots_held(size)
        self.floor_bytes = floor_bytes
        self.retire_bytes = retire_bytes
        # The pool's thread works only while fewer activations run than there are cores (`cores`): its work
        # on a busy machine is no gain (see `_spare`).
        self.cores = cores if cores is not None else len(os.sched_getaffinity(0))
        self.quiet_s = quiet_s
        # Isolates taken and not yet retired (activations running).
        self.running = 0
        self._ready: deque[Isolate] = deque()
        self._retiring: deque[Isolate] = deque()
        self._retiring_bytes = 0
        # The used isolate the thread is dropping now, the Store it is making.
        self._dropping: Isolate | None = None
        self._building: wasmtime.Store | None = None
        # After a failed instantiation: no new try before this (monotonic seconds), and whether it was said.
        self._retry_at = 0.0
        # When an isolate was last taken or retired (monotonic seconds): the thread waits `quiet_s` after it.
        self._last_use = float("-inf")
        self._failing = False
        self._lock = threading.Condition()
        self._closed = False
        # Counters (read by tests and benchmarks): taken from the pool, made by the caller, made by the thread.
        self.hits = 0
        self.misses = 0
        self.built = 0
        self.dropped_behind = 0
        self._thread: threading.Thread | None = None
        if size > 0:
            self._thread = threading.Thread(target=self._run, name="tenantflow-isolates", daemon=True)
            self._thread.start()

    # -- the activation's side ---------------------------------------------------------------------

    def take(self, memory_bytes: int, fuel: int) -> Isolate:
        """An isolate for an activation under this memory cap and fuel, not yet given their limits.

        Raises `wasmtime.WasmtimeError` as `linker.instantiate` would when made on the spot (e.g. a cap
        below the guest's initial memory). The caller sets the cap, the fuel (less `fuel_used`) and the
        epoch deadline.
        """
        with self._lock:
            self.running += 1
            self._last_use = time.monotonic()
            # Too little fuel to have paid for a ready one's instantiation, or a cap below the one it was made
            # under: made on the spot (and failing as it did before the pool, if it does).
            if self._ready and memory_bytes >= self.floor_bytes and self._ready[0].fuel_used < fuel:
                self.hits += 1
                self._lock.notify_all()
                return self._ready.popleft()
            self.misses += 1
        try:
            return self._make(memory_bytes, fuel, pooled=False)
        except BaseException:
            with self._lock:
                self.running -= 1
                self._lock.notify_all()
            raise

    def retire(self, isolate: Isolate) -> None:
        """`isolate` (from `take`) is done with: dropped on the pool's thread if it has a spare core and not
        too many waiting, else here."""
        with self._lock:
            self.running -= 1
            self._last_use = time.monotonic()
            self._lock.notify_all()
            if (
                not self._closed
                and self._thread is not None
                and self._spare()
                and len(self._retiring) < max(1, self.size)
                and self._retiring_bytes + isolate.cap_bytes <= self.retire_bytes
            ):
                self._retiring.append(isolate)
                self._retiring_bytes += isolate.cap_bytes
                return
        self._drop(isolate)

    def held(self) -> list[wasmtime.Store]:
        """The Stores of the isolates the pool holds (ready, or waiting to be dropped)."""
        with self._lock:
            stores = [isolate.store for isolate in (*self._ready, *self._retiring)]
            if self._dropping is not None:
                stores.append(self._dropping.store)
            if self._building is not None:
                stores.append(self._building)
            return stores

    def settle(self, timeout: float) -> bool:
        """Wait until the thread has nothing left to do (all ready, none to drop); False if it did not."""
        with self._lock:
            return self._lock.wait_for(self._settled, timeout)

    def _settled(self) -> bool:
        idle = not self._retiring and self._dropping is None and self._building is None
        return self._closed or self._thread is None or (idle and (len(self._ready) >= self.size or not self._spare()))

    def _spare(self) -> bool:
        """Whether a core is free of activations. Made or dropped on the pool's thread, an isolate costs more
        CPU than on the activation's (measured: +0.5-0.7 ms an activation back to back, as its pages are
        first touched on another core and the allocator's slots rotate instead of one staying warm): worth
        it for the activation's latency while a core is idle, not when activations keep every core busy."""
        return self.running < self.cores

    @property
    def failing(self) -> bool:
        """Whether the thread's last try to make an isolate failed (it tries again every _RETRY_S)."""
        with self._lock:
            return self._failing

    def ready(self) -> int:
        with self._lock:
            return len(self._ready)

    def retiring(self) -> int:
        with self._lock:
            return len(self._retiring)

    def close(self) -> None:
        """Stop the thread and drop every isolate it holds (those taken are their users' to retire)."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            left = list(self._ready) + list(self._retiring)
            self._ready.clear()
            self._retiring.clear()
            self._retiring_bytes = 0
        for isolate in left:
            isolate.store.close()
        if self.primer is not None:
            self.primer.close()

    # -- making and dropping -----------------------------------------------------------------------

    def _make(self, memory_bytes: int, fuel: int, pooled: bool) -> Isolate:
        store = wasmtime.Store(self._engine)
        if pooled:
            with self._lock:
                self._building = store
        try:
            store.set_limits(memory_size=memory_bytes)
            store.set_fuel(fuel)
            self._epoch.install(store)
            store.set_epoch_deadline(_NO_DEADLINE)
            instance = self._linker.instantiate(store, self._component)
            funcs = tuple(instance.get_func(store, index) for index in self.exports)
            if self.prepare is not None:
                prepare = instance.get_func(store, self.prepare)
                assert prepare is not None
                prepare(store)
                prepare.post_return(store)
        except BaseException:
            store.close()
            raise
        if self.primer is not None:
            self.primer.check()
        return Isolate(store, funcs, fuel - store.get_fuel(), pooled)

    def _drop(self, isolate: Isolate) -> None:
        if self.primer is not None:
            self.primer.check()  # before the slot's reset: a slot new to this process is read in first
        isolate.store.close()

    def _run(self) -> None:
        while self._step():
            pass

    def _step(self) -> bool:
        """Drop one used isolate, or make one ready; False once closed. (A method of its own: no local of
        the thread's loop keeps a Store referred to after it is handed over or dropped.)"""
        with self._lock:
            while not self._closed:
                making = not self._retiring
                if making and (len(self._ready) >= self.size or not self._spare()):
                    self._lock.wait()
                    continue
                # Measured on a real server, one instance at a time on 2 cores: making and dropping beside the
                # activation that just took an isolate (or the finish of the one that just retired its) put its
                # first step at 8.9 ms against 6.4 ms. With none ready, the next activation would make its own:
                # no waiting then.
                resume = self._last_use + self.quiet_s if self._ready else 0.0
                if making:
                    resume = max(resume, self._retry_at)
                pause = resume - time.monotonic()
                if pause <= 0:
                    break
                self._lock.wait(pause)
            if self._closed:
                return False
            if self._retiring:
                self._dropping = self._retiring.popleft()
                self._retiring_bytes -= self._dropping.cap_bytes
        if self._dropping is not None:
            self._drop(self._dropping)
            with self._lock:
                self._dropping = None
                self.dropped_behind += 1
                self._lock.notify_all()
            return True
        try:
            isolate = self._make(self.floor_bytes, _INSTANTIATE_FUEL, pooled=True)
        except Exception:
            # E.g. every slot of the pooling allocator taken: activations make their own meanwhile.
            if not self._failing:
                log.warning("could not make an isolate ahead of time; retrying every %s s", _RETRY_S, exc_info=True)
            with self._lock:
                self._building = None
                self._failing = True
                self._retry_at = time.monotonic() + _RETRY_S
            return True
        with self._lock:
            self._building = None
            self._failing = False
            if self._closed:
                isolate.store.close()
                return False
            self._ready.append(isolate)
            self.built += 1
            self._lock.notify_all()
        return True
