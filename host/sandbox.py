"""One activation = one fresh Store and component instance, with limits, host functions and a journal.

A host function never lets a Python exception cross into wasmtime-py (its
hand-off of Python exceptions goes through a process-wide slot, which is not
safe across threads). It records the exception on the activation and traps
with a plain WasmtimeError; `Sandbox.run` reads the recorded exception after
the trap. A trapped instance is dropped with its Store, never re-entered.

The guest's WASI is host/wasi.py's (nothing waits past the deadline or the
cancel); every host import checks the size and shape of its arguments before
working (host/limits.py has the caps); the host CPU spent for the guest is
charged to its fuel (`_Activation.meter`).

CPU budgets (a Store has one fuel counter, swapped between them): each step
attempt gets its own (the step's `cpu`, default 30 s; exhausted, it is a failed
attempt, journaled and retried as the step says); the code outside step bodies
gets `Limits.fuel` afresh at every durable call, so only code that never
reaches one runs out. Once the new work of an activation (replay not counted)
has used CHECKPOINT_SHARE of that fuel or of the wall clock, it ends at the
next step boundary as Suspended("continue") and goes on in a fresh activation.

Hot resume: when the journal raises a parkable Suspend (a wait) and implements `Parking`, the host
function blocks in `Parking.park` (the GIL released, the guest stopped inside the host call) instead of
trapping; when the wait is over it asks the journal again and returns into the same isolate, with the
activation's clocks and budgets started afresh. If the park ends otherwise (evicted, paused, stopping),
the Suspend goes on as before and the instance is replayed from its journal later.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import wasmtime
from tenantflow.host import jsoncheck, wasi
from tenantflow.host._wasmtime import EpochCallback, FuelCounter, StringExport, TrapKind, record, trap_kind
from tenantflow.host.calls import MAX_CALLS_IN_FLIGHT, Answer, StartedCalls
from tenantflow.host.engine import CHECK_S, ENGINE_SETTINGS, EpochTicker, load_guest_file, make_engine
from tenantflow.host.errors import HostRefusal, invalid_call
from tenantflow.host.failures import FailureName
from tenantflow.host.fastcall import TooLarge, add_func, set_meter
from tenantflow.host.fetch import FetchError, fetch
from tenantflow.host.journal import (
    Abort,
    Attempt,
    Deferring,
    Done,
    EventTimeout,
    Journal,
    Kind,
    Parking,
    Plan,
    Ready,
    Run,
    StepCall,
    StepConfig,
    StepFailed,
    Stop,
    Suspend,
)
from tenantflow.host.limits import (
    CHARGE_QUANTUM_S,
    CHECKPOINT_SHARE,
    EVENT_TYPE_PATTERN,
    FUEL_PER_SECOND,
    MAX_ATTEMPT_TRACEBACK_BYTES,
    MAX_CALL_REQUEST_BYTES,
    MAX_CONFIG_BYTES,
    MAX_DURATION_MS,
    MAX_EPOCH_SECONDS,
    MAX_ERROR_MESSAGE_BYTES,
    MAX_ERROR_NAME_BYTES,
    MAX_LIFT_BYTES,
    MAX_NAME_BYTES,
    MAX_RANDOM_BYTES,
    MAX_RETRIES,
    MAX_STEP_CPU_MS,
    MAX_STREAM_WRITE_BYTES,
    MAX_TRACEBACK_BYTES,
    MAX_WAKE_AT_MS,
    Grants,
    Limits,
)
from tenantflow.host.outcome import Completed, ErrorInfo, Failed, Outcome, Stats, Suspended
from tenantflow.host.pool import IsolatePool, size_from_env
from tenantflow.host.slots import SlotPrimer
from wasmtime.component import Component, Linker, Record, ResourceType, Variant

HOST_INTERFACE = "tenantflow:sandbox/host@0.1.0"
# The reason of the Suspended an activation ends with when it checkpoints (the instance goes on at once).
CHECKPOINT_REASON = "continue"

_GUEST_ERRORS = {"MemoryError": FailureName.MEMORY_LIMIT_EXCEEDED, "RecursionError": FailureName.STACK_OVERFLOW}
# CPython-on-wasm quirk: when `x += x` (or `x + x`) on a str cannot get memory under the cap, the
# guest reports "TypeError: unsupported operand type(s) for +=: '' and ''": the failed allocation
# leaves the type objects' names zeroed (the interpreter's memory is damaged, and catching the
# error in the guest can trap later). No real type is nameless, and wasmtime-py gives the host no
# way to read a component's memory size, so the nameless operands are the signal.
_NAMELESS_OPERANDS = re.compile(r"^unsupported operand type\(s\) for \S+: '' and ''$")


# A limit enforced by a host function (e.g. the log cap) ended the activation.
LimitHit = HostRefusal

_EVENT_TYPE = re.compile(EVENT_TYPE_PATTERN)
# Host functions with an effect outside the isolate, or a wait: a `Deferring` journal's pending step writes
# commit before them. The others are the journal's own calls (a write of theirs carries the pending ones) or
# touch only the isolate.
_FLUSHING = frozenset({"call-start", "call", "poll"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class _Interrupted(Exception):
    """A WASI wait reached the deadline or saw the cancel; `Sandbox._trapped` names the outcome."""


def _wait_ready(act: _Activation) -> None:
    """Block until the instance the activation runs is known to exist; `_Interrupted` (Cancelled) if it does not."""
    ready, act.ready = act.ready, None
    if ready is not None and not ready.wait():
        act.cancelled = True
        raise _Interrupted()


def clip(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` of UTF-8, with a marker saying how much was dropped."""
    if len(text) <= max_bytes // 4:
        return text
    data = text.encode("utf-8", "backslashreplace")
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", "ignore") + f"... [clipped by the host: {len(data)} bytes]"


def _stream_write_cap() -> int:
    return MAX_STREAM_WRITE_BYTES


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _check_name(call: str, what: str, name: Any) -> str:
    if isinstance(name, TooLarge) or _utf8_size(name) > MAX_NAME_BYTES:
        raise invalid_call(call, f"the {what} is longer than {MAX_NAME_BYTES} bytes")
    if _CONTROL.search(name):
        raise invalid_call(call, f"the {what} contains control characters")
    return str(name)


# The draws from an instance's random stream are numbered from here. Its first ten were read by componentize-py's
# start-up reseed of `random`, the next ten by the harness's own reseed, which it then stopped making. Then the harness
# reseeded once, at the start of each run, with `seed-bytes` (2,496 bytes: what ten reads of 256 gave), and skipped
# componentize-py's (made when the isolate is prepared, outside any activation). Now that reseed's draws are the run's
# seed (`run-seed`), set aside at the run's start and computed only when the workflow first draws from `random` outside
# its step bodies (most never do), so an instance draws there exactly what it drew before (a replay across the upgrades
# included). tests/host/test_host_wasi.py pins a seed's first draws, and fails if that changes.
SKIPPED_DRAWS = 10
# The most a WASI random read gives the guest (wasi-libc's getentropy); `seed-bytes` answers as that many reads.
WASI_READ_BYTES = 256
# A run's seed for `random`: what CPython's `seed()` reads (624 32-bit words), drawn as WASI reads would draw it.
RUN_SEED_BYTES = 2496


def _draw(seed: bytes, number: int, length: int) -> bytes:
    """Draw `number` (from 1) of the random stream of an instance's `seed`."""
    return hashlib.shake_256(seed + number.to_bytes(8, "big")).digest(length)


def _read_sizes(length: int) -> list[int]:
    """The sizes of the WASI random reads that would give `length` bytes (WASI_READ_BYTES at most each)."""
    return [min(WASI_READ_BYTES, length - done) for done in range(0, length, WASI_READ_BYTES)]


RUN_SEED_DRAWS = len(_read_sizes(RUN_SEED_BYTES))


@dataclass
class _InFlight:
    call: StepCall
    config: StepConfig
    attempt: int
    started: float
    # The attempt's own fuel budget (the Store's fuel counter holds it while the body runs).
    fuel_before: int
    # When the attempt overruns the step's timeout (monotonic seconds).
    timeout_at: float
    # When the body must stop running: its timeout, or the activation's end (monotonic seconds).
    deadline: float = math.inf
    # An async workflow's body runs in turns (`enter` ... `leave`): what is left of its budget between turns,
    # the counter's value when its turn began, and the fuel of its turns so far.
    fuel_left: int = 0
    entered_fuel: int = 0
    used: int = 0
    # The activation's count of calls with an effect when the attempt began (`_Activation.effects`).
    effects: int = 0


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
    # Nested step.do calls in flight inside the body of `in_flight`, innermost last: they run within its CPU
    # budget and deadlines, and are journaled as steps of their own.
    nested: list[_InFlight] = field(default_factory=list)
    step_deadline: float | None = None
    timed_out: bool = False
    cancel: threading.Event | None = None
    cancelled: bool = False
    # Until it is passed (None since): host calls with effects outside the sandbox wait for it (`Sandbox.run`).
    ready: Ready | None = None
    cpu_mark: float = 0.0
    fuel_mark: int = 0
    checked_at: float = 0.0
    journal_s: float = 0.0
    wasi: wasi.WasiState = field(default_factory=wasi.WasiState)
    started: float = field(default_factory=time.monotonic)
    # Fuel used outside step bodies in segments already closed, and by step attempts.
    orchestration_fuel: int = 0
    step_fuel: int = 0
    # `orchestration_fuel` when the first step body ran here (before it: replay, not counted for checkpoints).
    frontier_fuel: int | None = None
    # A step attempt was journaled in this activation: a checkpoint now loses nothing.
    progressed: bool = False
    # The log's size when it was last handed to `Parking.park` (unchanged: not handed again).
    parked_log_size: int = -1
    # Calls with an effect outside the isolate made so far (a step whose attempt made one commits as it completes).
    effects: int = 0
    # Determinism outside step bodies: the instance's logical time (epoch seconds; None: the real clocks)
    # and the seed of its random stream (None: the host's CSPRNG), with the draws made from it so far.
    logical_s: float | None = None
    seed: bytes | None = None
    draws: int = SKIPPED_DRAWS + RUN_SEED_DRAWS
    # An async workflow (`concurrent`): its calls are keyed; the attempts begun and not completed, by (name,
    # count), and those waiting out a retry back-off (`backoff` plan) until `step-again`.
    concurrent: bool = False
    flights: dict[tuple[str, int], _InFlight] = field(default_factory=dict)
    backing_off: dict[tuple[str, int], tuple[StepCall, StepConfig, float]] = field(default_factory=dict)
    calls: StartedCalls = field(default_factory=StartedCalls)
    # The Store's fuel counter (read and written on every durable call: without wasmtime-py's wrappers).
    fuel: FuelCounter = field(init=False)

    def __post_init__(self) -> None:
        self.fuel = FuelCounter(self.store)

    @functools.cached_property
    def parking(self) -> bool:
        """Whether the journal can park (a runtime-checkable Protocol's isinstance is slow: asked once)."""
        return isinstance(self.journal, Parking)

    @functools.cached_property
    def deferring(self) -> Deferring | None:
        """The journal, if it may leave a step's write pending (`Deferring`); asked once."""
        return self.journal if isinstance(self.journal, Deferring) else None

    @property
    def unflushed(self) -> bool:
        """The journal holds writes it answered before committing (`Deferring`)."""
        return self.deferring is not None and self.deferring.pending

    def flush(self) -> None:
        """Commit the journal's pending writes before a host call with an effect (see `Deferring`)."""
        if self.deferring is not None:
            self.journaled(self.deferring.flush)

    def flush_after_effect(self, flight: _InFlight) -> None:
        """`flight`'s attempt, just completed, made a call with an effect (a fetch): commit it now, so that a crash
        does not make a finished step's effect happen again."""
        if self.effects > flight.effects and self.unflushed:
            self.flush()

    def next_call(self, name: str, kind: Any) -> StepCall:
        parent = None
        if self.in_flight is not None:
            enclosing = (self.nested[-1] if self.nested else self.in_flight).call
            if kind != "do":
                raise Abort(
                    FailureName.WORKFLOW_CODE_ERROR,
                    f"{kind} {name!r} was called inside the body of step {enclosing.name!r}",
                )
            parent = enclosing.position
        call = StepCall(self.position, name, self.occurrences[name], kind, parent, self.concurrent)
        self.position += 1
        self.occurrences[name] += 1
        return call

    def advance(self, call: StepCall) -> None:
        """A durable call returned: the logical time moves on to when the journal says it finished."""
        if self.logical_s is not None:
            moment = self.journal.moment(call)
            if moment is not None and moment > self.logical_s:
                self.logical_s = moment

    def returned(self, call: StepCall, answer: Stop | None) -> bool:
        """A sleep's answer: True (it is over: the logical time moves on) or False (stop)."""
        if isinstance(answer, Stop):
            return False
        self.advance(call)
        return True

    def wall_ns(self) -> int:
        if self.logical_s is None or self.in_flight is not None:
            return time.time_ns()
        return int(self.logical_s * 1e9)

    def monotonic_ns(self) -> int:
        if self.logical_s is None or self.in_flight is not None:
            return time.monotonic_ns()
        return int(self.logical_s * 1e9)

    def random_bytes(self, length: int) -> bytes:
        if self.seed is None or self.in_flight is not None:
            return os.urandom(length)
        self.draws += 1
        return _draw(self.seed, self.draws, length)

    def run_seed(self) -> bytes:
        """The run's seed for the workflow's `random`: the instance stream's RUN_SEED_DRAWS draws after the skipped
        ones, set aside for it (whatever was drawn since the run started); from the CSPRNG without an instance seed."""
        if self.seed is None:
            return os.urandom(RUN_SEED_BYTES)
        seed = self.seed
        return b"".join(_draw(seed, SKIPPED_DRAWS + 1 + n, size) for n, size in enumerate(_read_sizes(RUN_SEED_BYTES)))

    @functools.cached_property
    def lift_cap(self) -> int:
        """No host import takes a string longer than the largest thing it may keep (+1 to tell "over")."""
        largest = max(self.limits.output_bytes, self.limits.log_bytes, MAX_CALL_REQUEST_BYTES)
        return min(largest, MAX_LIFT_BYTES) + 1

    def end(self) -> float:
        """When the activation (or the step body in flight) must be over, in monotonic seconds."""
        return self.deadline if self.step_deadline is None else self.step_deadline

    def ticks_left(self) -> int:
        """Epoch ticks until the next deadline check (at most CHECK_S away), or 0 once a deadline passed."""
        if self.cancel is not None and self.cancel.is_set():
            self.cancelled = True
            return 0
        left = self.end() - time.monotonic()
        if left <= 0:
            self.timed_out = True
            return 0
        return int(self.ticker.ticks(min(left, CHECK_S)))

    def charge(self, seconds: float) -> None:
        """Charge host CPU or wait time to the fuel; FuelExhausted once the fuel is gone."""
        cost = int(seconds * FUEL_PER_SECOND)
        if cost <= 0:
            return
        self.fuel_mark -= cost
        self.fuel.set(self._less(self.fuel.get(), cost))

    def _less(self, left: int, cost: int) -> int:
        """`left` less `cost`; if that is all of it, the counter is emptied and this raises FuelExhausted."""
        if cost >= left:
            self.fuel.set(0)
            raise self.exhausted()
        return left - cost

    def exhausted(self) -> HostRefusal:
        """The error for a fuel counter at 0: the step attempt's budget, or the orchestration's."""
        if self.in_flight is not None:
            budget = self.in_flight.fuel_before
            return HostRefusal(
                FailureName.STEP_CPU_EXHAUSTED,
                f"step {self.in_flight.call.name!r} used its CPU budget of {budget * 1000 // FUEL_PER_SECOND} ms",
            )
        seconds = self.limits.fuel / FUEL_PER_SECOND
        return HostRefusal(
            FailureName.FUEL_EXHAUSTED,
            f"the workflow ran {seconds:g} s of CPU outside any step without reaching one "
            f"(fuel {self.limits.fuel}; an endless loop outside step bodies?)",
        )

    def refill(self, fuel: int) -> None:
        """Put `fuel` in the Store's one counter (meter first: the host CPU so far is charged to what it held)."""
        self.fuel.set(fuel)
        self.fuel_mark = fuel

    def end_segment(self) -> None:
        """A durable call: the code since the last one is done; the next segment gets the full budget."""
        self._close_segment()
        self.refill(self.limits.fuel)

    def _close_segment(self) -> None:
        """Count the orchestration's segment so far (metered) as used; the caller refills the counter."""
        self.orchestration_fuel += self.limits.fuel - self.metered()

    def new_flight(self, call: StepCall, config: StepConfig, attempt: int) -> _InFlight:
        """An attempt about to run: its budget and deadlines."""
        if self.frontier_fuel is None:
            self.frontier_fuel = self.orchestration_fuel
        budget = config.fuel_budget(self.limits.max_step_cpu_ms)
        now = time.monotonic()
        timeout_at = now + config.timeout_ms / 1000
        # A body runs within the activation's wall clock, unless its `cpu` asks for more time than is left.
        limit = self.deadline
        if config.cpu_ms is not None:
            limit = max(limit, now + config.cpu_budget_ms(self.limits.max_step_cpu_ms) / 1000)
        flight = _InFlight(call, config, attempt, time.perf_counter(), budget, timeout_at, min(timeout_at, limit))
        flight.fuel_left = budget
        flight.effects = self.effects
        return flight

    def start_body(self, call: StepCall, config: StepConfig, attempt: int) -> None:
        """Swap the orchestration's fuel for the attempt's own budget and set the attempt's deadlines."""
        self._close_segment()
        flight = self.new_flight(call, config, attempt)
        self.step_deadline = flight.deadline
        self.refill(flight.fuel_before)
        flight.entered_fuel = flight.fuel_before
        self.in_flight = flight

    def switch(self, target: _InFlight | None) -> None:
        """An async workflow's turn: from now the Store's fuel counter, the deadlines, the clocks and the
        random bytes are `target`'s (a step body) or the orchestration's (None)."""
        left = self.metered()
        current = self.in_flight
        if current is target:
            self.fuel.set(left)
            return
        if current is None:
            self.orchestration_fuel += self.limits.fuel - left
        else:
            current.used += current.entered_fuel - left
            self.step_fuel += current.entered_fuel - left
            current.fuel_left = left
        self.in_flight = target
        if target is None:
            self.step_deadline = None
            self.refill(self.limits.fuel)
            return
        self.step_deadline = target.deadline
        self.refill(target.fuel_left)
        target.entered_fuel = target.fuel_left

    def attempt_fuel(self, flight: _InFlight) -> int:
        """The fuel `flight`'s attempt has used so far."""
        if flight is self.in_flight:
            return flight.used + flight.entered_fuel - self.fuel.get()
        return flight.used

    def next_timeout(self) -> float:
        """When the first of the async workflow's attempts in flight overruns its timeout (monotonic)."""
        return min((flight.timeout_at for flight in self.flights.values()), default=math.inf)

    def end_body(self) -> int:
        """The attempt's fuel; the orchestration gets a fresh segment. Raises if the attempt's budget ran out."""
        flight = self.in_flight
        assert flight is not None
        used = flight.entered_fuel - self.metered()
        self.step_fuel += used
        self.in_flight = None
        self.step_deadline = None
        self.refill(self.limits.fuel)
        return used

    def should_checkpoint(self) -> bool:
        """Whether to end here and go on in a fresh activation: progress is journaled and the
        orchestration's new work or the wall clock is past CHECKPOINT_SHARE of its budget."""
        if not self.progressed or self.flights or len(self.calls):
            return False
        segment = self.limits.fuel - self.fuel.get() if self.in_flight is None else 0
        new_work = self.orchestration_fuel + segment - (self.frontier_fuel or 0)
        elapsed = time.monotonic() - self.started
        return new_work > self.limits.fuel * CHECKPOINT_SHARE or elapsed > self.limits.deadline_s * CHECKPOINT_SHARE

    def durable(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A journal call that may have to wait: parked through the wait if the journal can, then asked again."""
        while True:
            try:
                return self.journaled(fn, *args)
            except Suspend as wait:
                if not self.park(wait):
                    raise

    def park(self, wait: Suspend) -> bool:
        """Hold this isolate through `wait` (True: it is over, go on here) or not (False: end with it)."""
        journal = self.journal
        if not wait.parkable or not self.parking:
            return False
        assert isinstance(journal, Parking)
        self.meter(force=True)
        log = "" if self.log_size == self.parked_log_size else "".join(self.log)
        self.parked_log_size = self.log_size
        self.ticker.release()
        try:
            resumed = journal.park(wait, log)
        finally:
            self.ticker.hold()
        if self.cancel is not None and self.cancel.is_set():
            self.cancelled = True
            raise _Interrupted()
        if not resumed:
            return False
        # A fresh start for everything measured per activation: wall clock, new work, host CPU.
        now = time.monotonic()
        self.started = now
        self.deadline = now + self.limits.deadline_s
        self.frontier_fuel = self.orchestration_fuel
        self.progressed = False
        self.start_metering()
        self.journal_s = 0.0
        return True

    def start_metering(self) -> None:
        self.cpu_mark = time.thread_time()
        self.fuel_mark = self.fuel.get()
        self.checked_at = time.perf_counter()

    def journaled(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A journal call, whose time is not charged to the guest.

        The journal's work is the platform's bookkeeping, bounded by the step quota, and its cost
        depends on the store (SQLite or PostgreSQL, and their load), not on the tenant: charged, a
        10,000-step workflow ran out of fuel on SQLite. Its wall time (a cheap clock, and never less
        than its CPU time) is taken off the host CPU that `meter` charges.
        """
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.journal_s += time.perf_counter() - started

    def meter(self, force: bool = False) -> None:
        """Charge the thread CPU time that the fuel did not count (the host's work) since the last check.

        Reading the thread's CPU clock is a system call (~2 us here), so it is read at most once per
        CHARGE_QUANTUM_S of wall time, at the end of a host call: thread CPU since the last check
        minus the guest's own CPU (its fuel burnt / FUEL_PER_SECOND) is what the host spent.
        """
        if not force and time.perf_counter() - self.checked_at < CHARGE_QUANTUM_S:
            return
        read = self.fuel.get()
        left = self._metered(read)
        if left != read:
            self.fuel.set(left)

    def metered(self) -> int:
        """`meter(force=True)` for a caller that then writes the counter itself (a refill): the counter's value
        with the host's CPU charged, not written back."""
        return self._metered(self.fuel.get())

    def _metered(self, fuel: int) -> int:
        """The counter's value `fuel` less the host's CPU since the last check (FuelExhausted if that is all)."""
        self.checked_at = time.perf_counter()
        cpu = time.thread_time()
        host_s = (cpu - self.cpu_mark) - (self.fuel_mark - fuel) / FUEL_PER_SECOND - self.journal_s
        self.cpu_mark, self.journal_s = cpu, 0.0
        cost = int(host_s * FUEL_PER_SECOND)
        if cost > 0:
            fuel = self._less(fuel, cost)
        self.fuel_mark = fuel
        return fuel

    def wait_until(self, ready_at: float) -> None:
        """WASI poll: wait until `ready_at`, never past the deadline, waking every CHECK_S for the cancel."""
        if self.unflushed:
            self.flush()  # a step's write waits for nothing of the workflow's: a terminate must find it
        while True:
            now = time.monotonic()
            if ready_at <= now:
                return
            if self.cancel is not None and self.cancel.is_set():
                self.cancelled = True
                raise _Interrupted()
            end = self.end()
            if now >= end:
                self.timed_out = True
                raise _Interrupted()
            pause = min(ready_at, end, now + CHECK_S) - now
            if self.cancel is not None:
                self.cancel.wait(pause)
            else:
                time.sleep(pause)
            self.charge(time.monotonic() - now)

    def write_stream(self, fd: int, text: str) -> None:
        self.append_log(text)

    def append_log(self, text: str) -> None:
        size = _utf8_size(text)
        if self.log_size + size > self.limits.log_bytes:
            self.log_truncated = True
            raise HostRefusal(
                FailureName.OUTPUT_LIMIT_EXCEEDED, f"the activation printed more than {self.limits.log_bytes} bytes"
            )
        self.log_size += size
        self.log.append(text)

    def fuel_used(self) -> int:
        """All fuel used: closed orchestration segments, step attempts and the current budget's use."""
        current = self.fuel.get()
        if self.in_flight is not None:
            return self.orchestration_fuel + self.step_fuel + self.in_flight.entered_fuel - current
        return int(self.orchestration_fuel + self.step_fuel + self.limits.fuel - current)


def _bounded_int(data: dict[str, Any], key: str, default: int, maximum: int) -> int:
    value = data.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{key} must be a whole number >= 0, got {str(value)[:50]!r}")
    if value > maximum:
        raise ValueError(f"{key} is at most {maximum}, got {str(value)[:50]}")
    return value


@functools.lru_cache(maxsize=256)
def _step_config(config_json: str) -> StepConfig:
    """The step's config from the guest's JSON (a workflow uses few distinct ones: cached).

    Out-of-range or mistyped fields are refused (InvalidHostCall), not defaulted: a silently
    ignored `retries={"limit": 10**9}` would hide the mistake. The guest library checks the same.
    """
    call = "step-begin"
    data = jsoncheck.parse(config_json, call)
    if not isinstance(data, dict):
        raise invalid_call(call, "the step config is not a JSON object")
    default = StepConfig()
    try:
        backoff = data.get("backoff", default.backoff)
        if backoff not in ("constant", "linear", "exponential"):
            raise ValueError("backoff is 'constant', 'linear' or 'exponential'")
        return StepConfig(
            limit=_bounded_int(data, "limit", default.limit, MAX_RETRIES),
            delay_ms=_bounded_int(data, "delay_ms", default.delay_ms, MAX_DURATION_MS),
            backoff=backoff,
            timeout_ms=_bounded_int(data, "timeout_ms", default.timeout_ms, MAX_DURATION_MS),
            cpu_ms=_bounded_int(data, "cpu_ms", 0, MAX_STEP_CPU_MS) if "cpu_ms" in data else None,
        )
    except ValueError as error:
        raise invalid_call(call, f"bad step config: {error}") from None


def _trap_cause(text: str) -> str:
    """The cause of a trap ("wasm trap: ...") without wasmtime's backtrace dump."""
    _, caused, cause = text.partition("Caused by:")
    lines = [line.strip() for line in (cause if caused else text).splitlines() if line.strip()]
    return "; ".join(lines)[:1000] if lines else "the guest trapped"


def _failure(name: str, message: str) -> Record:
    return record(name=name, message=message, traceback="")


class Sandbox:
    """Runs workflow source in fresh isolates of the guest component.

    One Sandbox holds the engine, the compiled component and the linker; it is
    safe to call `run` from many threads at once (wasmtime releases the GIL
    while guest code runs).
    """

    def __init__(
        self,
        component: Component | None = None,
        engine: wasmtime.Engine | None = None,
        *,
        pool: int | None = None,
        artifact: str | os.PathLike[str] | None = None,
    ) -> None:
        """`component`, if given, must come with the `engine` (from `make_engine`) it was loaded for.

        `pool`: isolates kept instantiated ahead of time (host/pool.py); None: `TENANTFLOW_ISOLATE_POOL`, or 4.
        `artifact`: the file `component` was deserialized from, if it was, so that each slot its isolates take is
        read in before its first reset (host/slots.py); the guest this loads itself always is.
        """
        if (component is None) != (engine is None):
            raise ValueError("pass both a component and the engine it was loaded for, or neither")
        if engine is None:
            self.engine, self.settings = make_engine()
        else:
            self.engine, self.settings = engine, dict(ENGINE_SETTINGS)
        if component is None:
            component, artifact = load_guest_file(self.engine, self.settings)
        self.component = component
        self._local = threading.local()
        self._ticker = EpochTicker(self.engine)
        self._epoch = EpochCallback(self._ticks_left)
        self.linker = Linker(self.engine)
        with self.linker.root() as root:
            for interface, entries in wasi.imports(self.component, self.engine, HOST_INTERFACE).items():
                with root.add_instance(interface) as instance:
                    for entry in entries:
                        if entry.resource is not None:
                            instance.add_resource(entry.name, ResourceType.host(entry.resource), self._drop_resource)
                        elif entry.func is not None:
                            call = f"{interface}.{entry.name}"
                            guarded = self._guarded(call, entry.func, with_store=True)
                            add_func(instance, entry.name, guarded, _stream_write_cap)
            with root.add_instance(HOST_INTERFACE) as host:
                for name, fn in self._host_functions().items():
                    # Those without effects outside the sandbox answer before the instance is durable (`run(ready=)`).
                    seeds = name in ("seed-bytes", "run-seed")
                    gated = not (seeds or name == "log")
                    guarded = self._guarded(
                        name,
                        fn,
                        checks_sizes=name == "log",
                        detached=seeds,
                        gated=gated,
                        flushes=name in _FLUSHING,
                    )
                    add_func(host, name, guarded, self._lift_cap)
        run_index = self.component.get_export_index("run")
        run_compiled_index = self.component.get_export_index("run-compiled")
        check_index = self.component.get_export_index("check")
        prepare_index = self.component.get_export_index("prepare")
        if run_index is None or run_compiled_index is None or check_index is None or prepare_index is None:
            raise RuntimeError("the guest component exports no run/run-compiled/check/prepare")
        self._run_index = run_index
        self._run_compiled_index = run_compiled_index
        self._check_index = check_index
        size = size_from_env() if pool is None else pool
        exports = (run_index, run_compiled_index, check_index)
        self._calls = {index: StringExport() for index in exports}
        self.isolates = IsolatePool(
            self.engine,
            self.linker,
            self.component,
            self._epoch,
            exports,
            size,
            prepare=prepare_index,
            primer=SlotPrimer(artifact) if artifact is not None else None,
        )

    def close(self) -> None:
        self.isolates.close()
        self._ticker.close()

    def _ticks_left(self) -> int:
        act: _Activation | None = getattr(self._local, "activation", None)
        return 1 if act is None else act.ticks_left()

    def _lift_cap(self) -> int:
        """The longest string a host import takes from the current activation; longer is never decoded."""
        act: _Activation | None = getattr(self._local, "activation", None)
        if act is None:
            return MAX_LIFT_BYTES
        return act.lift_cap

    def _meter(self) -> None:
        """Charge the host's CPU time to the activation's fuel (fastcall calls this after each call)."""
        act: _Activation | None = getattr(self._local, "activation", None)
        if act is None or act.pending is not None:
            return
        try:
            act.meter()
        except HostRefusal as refusal:
            act.pending = refusal
            raise wasmtime.WasmtimeError("tenantflow: activation ended by the host") from None

    def _drop_resource(self, store: Any, rep: int) -> None:
        # Runs inside wasmtime-py's exception slot: it must never raise.
        act: _Activation | None = getattr(self._local, "activation", None)
        if act is not None:
            act.wasi.pollables.pop(rep, None)

    # -- activations -------------------------------------------------------

    def run(
        self,
        source: str,
        event: dict[str, Any],
        journal: Journal,
        limits: Limits | None = None,
        grants: Grants | None = None,
        cancel: threading.Event | None = None,
        *,
        clock_start: float | None = None,
        seed: bytes | None = None,
        code: bytes | None = None,
        ready: Ready | None = None,
    ) -> Outcome:
        """Run `run(event, step)` from the top in a fresh isolate until it returns, fails or suspends.

        Once `cancel` is set the activation ends within about CHECK_S with Failed(Cancelled), whether
        the guest is running, waiting in WASI or fetching; the attempt in flight is not journaled.

        Deterministic replay: with `clock_start` (the instance's creation, epoch seconds), the guest's clocks
        read the instance's logical time outside step bodies (it starts there and moves on to when each
        durable call finished, as the journal says: `Journal.moment`); with `seed`, its random bytes outside
        step bodies come from a stream of that seed. Inside a body, the real clocks and the CSPRNG.

        `code`: `source` as `compile` gave it (what the deploy check compiled), so the guest does not compile
        it again (a third of a short activation's CPU).

        `ready`: the activation may start before the instance it runs is durable (its creation still committing):
        the guest starts and runs the workflow's code, but its first host call with an effect outside the sandbox
        (a durable call, and so any step body, a capability call) waits until `ready.wait()` answers; False ends
        the activation Cancelled. The random bytes of a reseed and the log do not wait, nor does WASI.

        A journal that is `Deferring` may answer a step's completion before its write commits: a host call with an
        effect outside the isolate (a capability call, a wait for one, a WASI wait) waits for that write (`flush`);
        one still pending when the run ends is the caller's to commit.
        """
        args: tuple[Any, ...]
        if code is None:
            index, args = self._run_index, (source, json.dumps(event))
        else:
            # The code's bytes as the characters of those code points: a string is lowered as one copy.
            index, args = self._run_compiled_index, (source, code.decode("latin-1"), json.dumps(event))
        outcome = self._activate(index, args, journal, limits, grants, cancel, clock_start, seed, ready=ready)
        assert not isinstance(outcome, bytes)  # only `compile` asks for code
        return outcome

    def check(
        self, source: str, limits: Limits | None = None, cancel: threading.Event | None = None
    ) -> ErrorInfo | None:
        """Compile the source in a fresh isolate and check it defines a workflow; the error or None."""
        compiled = self.compile(source, limits, cancel)
        return compiled if isinstance(compiled, ErrorInfo) else None

    def compile(
        self, source: str, limits: Limits | None = None, cancel: threading.Event | None = None
    ) -> bytes | ErrorInfo:
        """`check`, and the source's code object as the guest compiled it, marshalled (for `run(code=)`)."""
        outcome = self._activate(self._check_index, (source,), _NoJournal(), limits, None, cancel, code_out=True)
        if isinstance(outcome, bytes):
            return outcome
        if isinstance(outcome, Failed):
            return outcome.error
        return ErrorInfo(FailureName.GUEST_TRAP, f"the check ended without code ({type(outcome).__name__})")

    def _activate(
        self,
        index: Any,
        args: tuple[Any, ...],
        journal: Journal,
        limits: Limits | None,
        grants: Grants | None,
        cancel: threading.Event | None = None,
        clock_start: float | None = None,
        seed: bytes | None = None,
        code_out: bool = False,
        ready: Ready | None = None,
    ) -> Outcome | bytes:
        limits = limits or Limits()
        started = time.perf_counter()
        isolate = self.isolates.take(limits.memory_bytes, limits.fuel)
        store = isolate.store
        try:
            # A pooled isolate was made under the smallest cap: the tenant's replaces it (host/pool.py), and the
            # activation is charged the fuel its instantiation burned, as when it instantiates its own.
            isolate.cap_bytes = limits.memory_bytes
            store.set_limits(memory_size=limits.memory_bytes)
            store.set_fuel(limits.fuel - isolate.fuel_used)
            act = _Activation(
                store, journal, limits, grants or Grants(), self._ticker, time.monotonic() + limits.deadline_s
            )
            act.cancel, act.ready = cancel, ready
            act.logical_s, act.seed = clock_start, seed
            store.set_epoch_deadline(act.ticks_left())
        except BaseException:
            self.isolates.retire(isolate)
            raise
        self._local.activation = act
        set_meter(self._meter)
        self._ticker.hold()
        try:
            func = isolate.func(self.isolates.exports, index)
            assert func is not None
            instantiated = time.perf_counter()
            act.start_metering()
            try:
                value = self._calls[index](func, store, *args)
            except wasmtime.WasmtimeError as trap:
                # wasmtime-py raises from a frame that holds the error: without this, that cycle keeps
                # every frame of the call alive, the Store (and its pool slot) with them.
                trap.__traceback__ = None
                return self._trapped(act, trap, started, instantiated)
            func.post_return(store)
            if code_out and isinstance(value, bytes | bytearray | list):
                return bytes(value)
            return self._returned(act, value, started, instantiated)
        finally:
            # The recorded exception's traceback holds the host function's frame, which holds the
            # activation: drop it, or the Store (and its pool slot) lives until the cycle collector runs.
            act.pending = None
            act.calls.close()
            self._local.activation = None
            set_meter(None)
            self._ticker.release()
            del act, store
            # Dropped off this thread (host/pool.py), and now, whatever still refers to it: never used again.
            self.isolates.retire(isolate)

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
            if name == "TypeError" and _NAMELESS_OPERANDS.search(message):
                name = FailureName.MEMORY_LIMIT_EXCEEDED
            if name == FailureName.MEMORY_LIMIT_EXCEEDED:
                message = (
                    f"MemoryError: the guest ran out of memory (cap {act.limits.memory_bytes} bytes) {message}".strip()
                )
            return Failed(
                ErrorInfo(
                    clip(name, MAX_ERROR_NAME_BYTES),
                    clip(message, MAX_ERROR_MESSAGE_BYTES),
                    clip(error.traceback, MAX_TRACEBACK_BYTES),
                    error.line,
                ),
                stats,
            )
        if value is None:
            return Completed("null", stats)
        if len(value) > act.limits.output_bytes or _utf8_size(value) > act.limits.output_bytes:
            message = f"the output is at most {act.limits.output_bytes} bytes of JSON, got {_utf8_size(value)}"
            return Failed(ErrorInfo(FailureName.OUTPUT_LIMIT_EXCEEDED, message), stats)
        try:
            jsoncheck.check(value, "the workflow's output")
        except HostRefusal as refusal:
            return Failed(ErrorInfo(refusal.name, refusal.message), stats)
        return Completed(value, stats)

    def _trapped(self, act: _Activation, trap: wasmtime.WasmtimeError, started: float, instantiated: float) -> Outcome:
        stats = self._stats(act, started, instantiated)
        pending = act.pending
        if isinstance(pending, Suspend):
            return Suspended(pending.reason, pending.wake_at_ms, stats)
        if (
            isinstance(pending, HostRefusal)
            and pending.name == FailureName.STEP_CPU_EXHAUSTED
            and act.in_flight is not None
        ):
            return self._attempt_failed(act, stats, pending.name, pending.message)
        if isinstance(pending, Abort | HostRefusal):
            return Failed(ErrorInfo(pending.name, pending.message), stats)
        if act.cancelled:
            return Failed(
                ErrorInfo(FailureName.CANCELLED, "the activation was cancelled (terminate or shutdown)"), stats
            )
        if isinstance(pending, _Interrupted):
            pending = None
        if pending is not None:
            raise pending
        kind = trap_kind(trap)
        if kind is TrapKind.OUT_OF_FUEL:
            refusal = act.exhausted()
            if act.in_flight is not None:
                return self._attempt_failed(act, stats, refusal.name, refusal.message)
            error = ErrorInfo(refusal.name, refusal.message)
        elif act.timed_out or kind is TrapKind.INTERRUPT:
            flight = act.in_flight
            if flight is not None and time.monotonic() >= flight.timeout_at:
                message = f"step {flight.call.name!r} ran longer than {flight.config.timeout_ms} ms"
                return self._attempt_failed(act, stats, FailureName.STEP_TIMEOUT, message)
            message = f"the activation ran longer than {act.limits.deadline_s} s"
            error = ErrorInfo(FailureName.DEADLINE_EXCEEDED, message)
        elif kind is TrapKind.STACK_OVERFLOW:
            error = ErrorInfo(FailureName.STACK_OVERFLOW, "the guest's call stack is exhausted (unbounded recursion?)")
        elif kind is TrapKind.MEMORY:
            error = ErrorInfo(
                FailureName.MEMORY_LIMIT_EXCEEDED, f"the guest ran out of memory (cap {act.limits.memory_bytes} bytes)"
            )
        else:
            error = ErrorInfo(FailureName.GUEST_TRAP, f"the guest crashed: {_trap_cause(str(trap))}")
        return Failed(error, stats)

    def _attempt_failed(self, act: _Activation, stats: Stats, name: str, message: str) -> Outcome:
        """The attempt overran its timeout or CPU budget: journal it as a failed attempt (the step's
        retry policy decides what comes next) and let the instance go on in a fresh isolate."""
        flight = act.in_flight
        assert flight is not None
        attempt = Attempt(
            attempt=flight.attempt,
            ok=False,
            error_name=name,
            error_message=message,
            fuel=act.attempt_fuel(flight),
            duration_ms=(time.perf_counter() - flight.started) * 1000,
        )
        try:
            act.journal.step_complete(flight.call, flight.config, attempt)
        except Suspend as suspend:
            return Suspended(suspend.reason, suspend.wake_at_ms, stats)
        except Abort as abort:
            return Failed(ErrorInfo(abort.name, abort.message), stats)
        return Suspended(f"{name}; replay to go on", None, stats)

    # -- host functions ----------------------------------------------------

    def _guarded(
        self,
        call: str,
        fn: Callable[..., Any],
        with_store: bool = False,
        checks_sizes: bool = False,
        detached: bool = False,
        gated: bool = False,
        flushes: bool = False,
    ) -> Callable[..., Any]:
        """`fn(act, *args)` (or `fn(act, store, *args)`) as a host function; `gated`: it waits for the
        activation's `ready` first (see `run`); `flushes`: and for a `Deferring` journal's pending write.

        The host's CPU time (lifting and lowering included) is charged to the fuel by `_meter`, and
        whatever it raises is recorded on the activation, which then traps. An argument longer
        than the function's cap is refused before `fn` runs, unless `checks_sizes` (it names its own error).
        Outside an activation only WASI (`with_store`) and `detached` functions answer, given `_DETACHED`.
        """

        def host_function(store: Any, *args: Any) -> Any:
            act: _Activation | None = getattr(self._local, "activation", None)
            if act is None:
                # An isolate being prepared (host/pool.py), or an export called directly on an instance
                # from `linker.instantiate` (benchmarks, tools), outside `Sandbox.run`: WASI (and a run's
                # reseed's bytes) answers without ever waiting, the rest refuses.
                if with_store:
                    return fn(_DETACHED, store, *args)
                if detached:
                    return fn(_DETACHED, *args)
                raise wasmtime.WasmtimeError(f"tenantflow: {call} outside an activation")
            if act.pending is not None:
                raise wasmtime.WasmtimeError("tenantflow: the activation is ending")
            try:
                if gated and act.ready is not None:
                    _wait_ready(act)
                if flushes:
                    if act.unflushed:
                        act.flush()
                    act.effects += 1
                for arg in () if checks_sizes else args:
                    if isinstance(arg, TooLarge):
                        raise invalid_call(call, f"an argument of {arg.size} bytes is longer than the host accepts")
                return fn(act, store, *args) if with_store else fn(act, *args)
            except BaseException as error:
                act.pending = error
                raise wasmtime.WasmtimeError("tenantflow: activation ended by the host") from None

        return host_function

    def _host_functions(self) -> dict[str, Callable[..., Any]]:
        return {
            "step-begin": self._step_begin,
            "rollback-begin": self._rollback_begin,
            "step-complete": self._step_complete,
            "step-again": self._step_again,
            "concurrent": self._concurrent,
            "enter": self._enter,
            "leave": self._leave,
            "abandon": self._abandon,
            "call-start": self._call_start,
            "poll": self._poll,
            "sleep": self._sleep,
            "sleep-until": self._sleep_until,
            "wait-for-event": self._wait_for_event,
            "log": self._log,
            "seed-bytes": self._seed_bytes,
            "run-seed": self._run_seed,
            "call": self._call,
        }

    def _plan(self, act: _Activation, call: StepCall, config: StepConfig, plan: Plan) -> Any:
        if isinstance(plan, Done):
            act.position += plan.span
            act.advance(call)
            return plan.result
        if isinstance(plan, StepFailed):
            act.position += plan.span
            act.advance(call)
            return _failure(plan.name, plan.message)
        if isinstance(plan, Stop):
            return None  # the payload-less case of the WIT variant
        if act.should_checkpoint():
            raise Suspend(CHECKPOINT_REASON)
        act.position = call.position + 1  # each attempt's nested steps take the same positions
        act.start_body(call, config, plan.attempt)
        return plan.attempt

    def _step_begin(self, act: _Activation, name: str, config_json: str, kind: Kind = "do") -> Any:
        what = "step-begin" if kind == "do" else "rollback-begin"
        name = _check_name(what, "step name", name)
        if _utf8_size(config_json) > MAX_CONFIG_BYTES:
            raise invalid_call(what, f"the step config is longer than {MAX_CONFIG_BYTES} bytes")
        config = _step_config(config_json)
        call = act.next_call(name, kind)
        if act.concurrent:
            if act.in_flight is None:
                act.end_segment()
            again = functools.partial(act.journal.step_begin, call, config)
            return self._concurrent_plan(act, call, config, self._concurrent_ask(act, again, again))
        if call.parent is not None:
            # A wait (a retry's back-off) ends the activation: the enclosing attempt is replayed later.
            return self._nested_plan(act, call, config, act.journaled(act.journal.step_begin, call, config))
        act.end_segment()
        return self._plan(act, call, config, act.durable(act.journal.step_begin, call, config))

    def _nested_plan(self, act: _Activation, call: StepCall, config: StepConfig, plan: Plan) -> Any:
        """A nested step's plan: it runs in the enclosing body's CPU budget and deadline; its own fuel is
        measured for its journal entry (and counted in its parent's too)."""
        if isinstance(plan, Done | StepFailed):
            act.position += plan.span
            return plan.result if isinstance(plan, Done) else _failure(plan.name, plan.message)
        if isinstance(plan, Stop):
            return None
        act.position = call.position + 1  # each attempt's nested steps take the same positions
        act.meter(force=True)
        nested = _InFlight(call, config, plan.attempt, time.perf_counter(), act.fuel.get(), math.inf)
        nested.effects = act.effects
        act.nested.append(nested)
        return plan.attempt

    def _nested_complete(self, act: _Activation, name: str, outcome: Variant) -> Any:
        flight = act.nested[-1]
        if flight.call.name != name:
            raise Abort(FailureName.WORKFLOW_CODE_ERROR, f"step-complete for {name!r} without a step in flight")
        act.meter(force=True)
        attempt = self._attempt(act, flight, outcome, flight.fuel_before - act.fuel.get())
        act.nested.pop()
        plan = act.journaled(act.journal.step_complete, flight.call, flight.config, attempt)
        act.flush_after_effect(flight)
        return self._nested_plan(act, flight.call, flight.config, plan)

    def _rollback_begin(self, act: _Activation, name: str, config_json: str) -> Any:
        return self._step_begin(act, name, config_json, "rollback")

    def _attempt(self, act: _Activation, flight: _InFlight, outcome: Variant, fuel: int) -> Attempt:
        """The attempt the guest reports, checked: a result is bounded JSON, error strings are clipped."""
        duration_ms = (time.perf_counter() - flight.started) * 1000
        payload: Any = outcome.payload
        if outcome.tag == "ok":
            if isinstance(payload, TooLarge) or _utf8_size(payload) > act.limits.output_bytes:
                return Attempt(
                    flight.attempt,
                    ok=False,
                    error_name=FailureName.OUTPUT_LIMIT_EXCEEDED,
                    error_message=f"a step result is at most {act.limits.output_bytes} bytes of JSON",
                    retryable=False,
                    fuel=fuel,
                    duration_ms=duration_ms,
                )
            jsoncheck.check(payload, f"step-complete of {flight.call.name!r}")
            return Attempt(flight.attempt, ok=True, result=payload, fuel=fuel, duration_ms=duration_ms)
        delay_ms = None
        if outcome.tag == "retry-after":
            delay_ms = getattr(payload, "delay-ms")  # wasmtime-py names a record's fields as the WIT does
            if delay_ms > MAX_DURATION_MS:
                raise invalid_call("step-complete", f"a retry delay is at most {MAX_DURATION_MS} ms (365 days)")
            payload = payload.failure
        name, message, trace = payload.name, payload.message, payload.traceback
        return Attempt(
            flight.attempt,
            ok=False,
            error_name="(too long)" if isinstance(name, TooLarge) else clip(name, MAX_ERROR_NAME_BYTES),
            error_message=(
                f"(a message of {message.size} bytes, dropped by the host)"
                if isinstance(message, TooLarge)
                else clip(message, MAX_ERROR_MESSAGE_BYTES)
            ),
            retryable=outcome.tag in ("retryable", "retry-after"),
            fuel=fuel,
            duration_ms=duration_ms,
            delay_ms=delay_ms,
            traceback=None if isinstance(trace, TooLarge) or not trace else clip(trace, MAX_ATTEMPT_TRACEBACK_BYTES),
        )

    def _step_complete(self, act: _Activation, name: str, count: int, outcome: Variant) -> Any:
        name = _check_name("step-complete", "step name", name)
        if act.concurrent:
            return self._concurrent_complete(act, name, count, outcome)
        if act.nested:
            return self._nested_complete(act, name, outcome)
        flight = act.in_flight
        if flight is None or flight.call.name != name:
            raise Abort(FailureName.WORKFLOW_CODE_ERROR, f"step-complete for {name!r} without a step in flight")
        attempt = self._attempt(act, flight, outcome, act.end_body())
        try:
            plan = act.journaled(act.journal.step_complete, flight.call, flight.config, attempt)
        except Suspend as wait:
            # A retry's back-off: parked through it, the next attempt is the journal's to plan.
            if not act.park(wait):
                raise
            plan = act.durable(act.journal.step_begin, flight.call, flight.config)
        else:
            act.progressed = True
            act.flush_after_effect(flight)
            if not isinstance(plan, Run) and act.should_checkpoint():
                # The attempt is journaled (committed before the end, if not yet): the replay returns it.
                raise Suspend(CHECKPOINT_REASON)
        return self._plan(act, flight.call, flight.config, plan)

    # -- async workflows: steps side by side -------------------------------------------------------------

    def _concurrent(self, act: _Activation) -> None:
        if act.position:
            raise invalid_call("concurrent", "an async workflow says so before its first durable call")
        act.concurrent = True

    def _concurrent_ask(self, act: _Activation, first: Callable[[], Plan], again: Callable[[], Plan]) -> Plan | float:
        """Ask the journal for a step's plan. A retry back-off that ends within the activation is waited out in
        the guest (the seconds to wait: its other steps go on meanwhile; `_poll` parks or ends the activation
        if nothing else is left to wait for); a longer one as a synchronous workflow's (parked or suspended)."""
        ask = first
        while True:
            try:
                plan: Plan = act.journaled(ask)
                return plan
            except Suspend as wait:
                if wait.in_isolate_s is not None and wait.in_isolate_s < act.deadline - time.monotonic() - CHECK_S:
                    return wait.in_isolate_s
                if not act.park(wait):
                    raise
                ask = again

    def _concurrent_plan(self, act: _Activation, call: StepCall, config: StepConfig, plan: Plan | float) -> Any:
        if isinstance(plan, float):
            act.backing_off[(call.name, call.occurrence)] = (call, config, time.time() + plan)
            return plan
        if isinstance(plan, Done):
            act.advance(call)
            return plan.result
        if isinstance(plan, StepFailed):
            act.advance(call)
            return _failure(plan.name, plan.message)
        if isinstance(plan, Stop):
            return None
        if not act.flights and act.should_checkpoint():
            raise Suspend(CHECKPOINT_REASON)
        act.flights[(call.name, call.occurrence)] = act.new_flight(call, config, plan.attempt)
        return plan.attempt

    def _concurrent_complete(self, act: _Activation, name: str, count: int, outcome: Variant) -> Any:
        flight = act.flights.get((name, count - 1))
        if flight is None or flight is act.in_flight:
            raise Abort(FailureName.WORKFLOW_CODE_ERROR, f"step-complete for {name!r} #{count} without its attempt")
        del act.flights[(name, count - 1)]
        attempt = self._attempt(act, flight, outcome, flight.used)
        call, config = flight.call, flight.config
        first = functools.partial(act.journal.step_complete, call, config, attempt)
        plan = self._concurrent_ask(act, first, functools.partial(act.journal.step_begin, call, config))
        act.progressed = True
        act.flush_after_effect(flight)
        return self._concurrent_plan(act, call, config, plan)

    def _step_again(self, act: _Activation, name: str, count: int) -> Any:
        waited = act.backing_off.pop((name, count - 1), None)
        if waited is None:
            raise Abort(FailureName.WORKFLOW_CODE_ERROR, f"step-again for {name!r} #{count} without a back-off")
        call, config, _ = waited
        again = functools.partial(act.journal.step_begin, call, config)
        return self._concurrent_plan(act, call, config, self._concurrent_ask(act, again, again))

    def _enter(self, act: _Activation, name: str, count: int) -> None:
        flight = act.flights.get((name, count - 1))
        if flight is None:
            raise Abort(FailureName.WORKFLOW_CODE_ERROR, f"enter {name!r} #{count}: no attempt of it in flight")
        act.switch(flight)

    def _leave(self, act: _Activation) -> None:
        act.switch(None)

    def _abandon(self, act: _Activation, name: str, count: int) -> None:
        flight = act.flights.get((name, count - 1))
        if flight is None or flight is act.in_flight:
            raise Abort(FailureName.WORKFLOW_CODE_ERROR, f"abandon {name!r} #{count}: no attempt of it in flight")
        del act.flights[(name, count - 1)]  # its turns' fuel is in `step_fuel` already, as a lost attempt's

    def _call_start(self, act: _Activation, capability: str, request: str) -> Any:
        checked = self._fetch_request(act, capability, request)
        if isinstance(checked, Record):
            return checked
        if len(act.calls) >= MAX_CALLS_IN_FLIGHT:
            return _failure(
                FailureName.TOO_MANY_CALLS, f"at most {MAX_CALLS_IN_FLIGHT} calls are in flight at once in a workflow"
            )
        grants, parsed = checked
        return act.calls.start(functools.partial(_fetch_answer, grants, parsed))

    def _poll(self, act: _Activation, timeout_ms: int | None) -> Any:
        """Wait for a started call, the timeout, an attempt's timeout, the deadline or the cancel. The wait is
        not charged to the fuel (a fetch's is not either); it ends with the activation's wall clock."""
        until = math.inf if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        if until == math.inf and not len(act.calls):
            raise Abort(FailureName.WORKFLOW_CODE_ERROR, "the workflow waits with no call in flight and no timer")
        act.meter(force=True)
        while True:
            self._check_timeouts(act)
            if act.backing_off and not act.flights and not len(act.calls):
                self._wait_out_backoffs(act)
            now = time.monotonic()
            if act.cancel is not None and act.cancel.is_set():
                act.cancelled = True
                raise _Interrupted()
            end = act.end()
            if now >= end:
                act.timed_out = True
                raise _Interrupted()
            pause = max(0.0, min(until, end, act.next_timeout(), now + CHECK_S) - now)
            if len(act.calls):
                done = act.calls.finished(pause)
            else:
                done = []
                (act.cancel or act.calls.abandon).wait(pause)
            if done or time.monotonic() >= until:
                # A call bounded by its step's timeout ends as that timeout passes: the attempt fails with
                # StepTimeout, not with what the call answered at that moment.
                self._check_timeouts(act)
                break
        act.start_metering()  # the wait is not the guest's CPU
        finished = [record(id=call_id, answer=_answer(answer)) for call_id, answer in done]
        return record(**{"now-ms": int(time.monotonic() * 1000), "done": finished})

    def _wait_out_backoffs(self, act: _Activation) -> None:
        """Only retry back-offs are left to wait for: park through the first (or end the activation, to go on
        when it is over), as a synchronous workflow's back-off."""
        call, _, wake = min(act.backing_off.values(), key=lambda waiting: waiting[2])
        wait = Suspend(f"retry of {call.name!r}", math.ceil(wake * 1000), parkable=True)
        if not act.park(wait):
            raise wait

    def _check_timeouts(self, act: _Activation) -> None:
        """An attempt in flight that overran its timeout: journaled as failed (StepTimeout) and the
        activation ends, to go on in a fresh one (the other attempts in flight run again there)."""
        now = time.monotonic()
        for flight in list(act.flights.values()):
            if flight is act.in_flight or flight.timeout_at > now:
                continue
            attempt = Attempt(
                attempt=flight.attempt,
                ok=False,
                error_name=FailureName.STEP_TIMEOUT,
                error_message=f"step {flight.call.name!r} ran longer than {flight.config.timeout_ms} ms",
                fuel=flight.used,
                duration_ms=(time.perf_counter() - flight.started) * 1000,
            )
            act.journaled(act.journal.step_complete, flight.call, flight.config, attempt)
            raise Suspend(f"{FailureName.STEP_TIMEOUT}; replay to go on")

    def _sleep(self, act: _Activation, name: str, duration_ms: int) -> bool:
        name = _check_name("sleep", "step name", name)
        if duration_ms > MAX_DURATION_MS:
            raise invalid_call("sleep", f"a sleep is at most 365 days ({MAX_DURATION_MS} ms), got {duration_ms} ms")
        call = act.next_call(name, "sleep")
        act.end_segment()
        return act.returned(call, act.durable(act.journal.sleep_until, call, None, duration_ms))

    def _sleep_until(self, act: _Activation, name: str, wake_at_ms: int) -> bool:
        name = _check_name("sleep-until", "step name", name)
        if wake_at_ms > MAX_EPOCH_SECONDS * 1000:
            raise invalid_call(
                "sleep-until",
                f"sleep_until takes epoch seconds (or a datetime); {wake_at_ms // 1000} looks like milliseconds",
            )
        if not 0 <= wake_at_ms <= MAX_WAKE_AT_MS:
            raise invalid_call("sleep-until", "the wake time is before 1970 or after the year 9999")
        call = act.next_call(name, "sleep")
        act.end_segment()
        return act.returned(call, act.durable(act.journal.sleep_until, call, wake_at_ms, None))

    def _wait_for_event(self, act: _Activation, name: str, event_type: str, timeout_ms: int | None) -> Any:
        name = _check_name("wait-for-event", "step name", name)
        if isinstance(event_type, TooLarge) or not _EVENT_TYPE.fullmatch(event_type):
            raise invalid_call("wait-for-event", f"an event type matches {EVENT_TYPE_PATTERN}")
        if timeout_ms is not None and timeout_ms > MAX_DURATION_MS:
            raise invalid_call("wait-for-event", f"a wait is at most {MAX_DURATION_MS} ms (365 days)")
        call = act.next_call(name, "wait")
        act.end_segment()
        try:
            event = act.durable(act.journal.wait_for_event, call, event_type, timeout_ms)
            if isinstance(event, Stop):
                return None
            act.advance(call)
            return json.dumps(event)
        except EventTimeout as timeout:
            act.advance(call)
            return _failure(FailureName.WAIT_TIMEOUT_ERROR, str(timeout) or f"no {event_type!r} event arrived in time")

    def _log(self, act: _Activation, fd: int, text: str) -> None:
        if isinstance(text, TooLarge):
            act.log_truncated = True
            raise HostRefusal(
                FailureName.OUTPUT_LIMIT_EXCEEDED, f"the activation printed more than {act.limits.log_bytes} bytes"
            )
        act.append_log(text)

    def _seed_bytes(self, act: _Activation | _Detached, length: int) -> bytes:
        """What WASI random reads of at most WASI_READ_BYTES each, `length` bytes in all, would give: the same draws
        from the instance's stream (outside step bodies), in one host call instead of one per read."""
        if length > MAX_RANDOM_BYTES:
            raise invalid_call("seed-bytes", f"{length} bytes asked, at most {MAX_RANDOM_BYTES}")
        return b"".join(act.random_bytes(size) for size in _read_sizes(length))

    def _run_seed(self, act: _Activation | _Detached) -> bytes:
        return act.run_seed()

    def _fetch_request(self, act: _Activation, capability: str, request: str) -> Record | tuple[Grants, dict[str, Any]]:
        """A fetch request, checked, with the grants it runs under; or the failure to answer."""
        if capability != "fetch":
            return _failure(FailureName.CAPABILITY_NOT_GRANTED, f"no capability named {str(capability)[:100]!r}")
        if isinstance(request, TooLarge) or _utf8_size(request) > MAX_CALL_REQUEST_BYTES:
            raise invalid_call("call", f"a fetch request is at most {MAX_CALL_REQUEST_BYTES} bytes of JSON")
        parsed = jsoncheck.parse(request, "call")
        if not isinstance(parsed, dict):
            raise invalid_call("call", "a fetch request is a JSON object")
        # A fetch may not outlast the activation, nor the timeout of the step body it is made in.
        remaining = act.end() - time.monotonic()
        grants = act.grants
        if remaining < grants.fetch_timeout_s:
            grants = dataclasses.replace(grants, fetch_timeout_s=max(0.0, remaining))
        return grants, parsed

    def _call(self, act: _Activation, capability: str, request: str) -> Any:
        checked = self._fetch_request(act, capability, request)
        if isinstance(checked, Record):
            return checked
        answer = _fetch_answer(*checked, act.cancel)
        if not isinstance(answer, str) and act.cancel is not None and act.cancel.is_set():
            act.cancelled = True
            raise _Interrupted()
        return _answer(answer)


def _fetch_answer(grants: Grants, request: dict[str, Any], cancel: threading.Event | None) -> Answer:
    """The response of a fetch, or its failure's name and message."""
    try:
        return fetch(grants, request, cancel)
    except FetchError as error:
        return error.failure, str(error)
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        return FailureName.BAD_REQUEST, f"malformed fetch request: {str(error)[:200]}"


def _answer(answer: Answer) -> str | Record:
    return answer if isinstance(answer, str) else _failure(*answer)


class _Detached:
    """The WASI caller of an instance used outside `Sandbox.run`: it never waits and keeps no log."""

    def __init__(self) -> None:
        self.wasi = wasi.WasiState()

    def wait_until(self, ready_at: float) -> None:
        if ready_at > time.monotonic():
            raise HostRefusal(FailureName.INVALID_HOST_CALL, "a WASI wait outside an activation")

    def write_stream(self, fd: int, text: str) -> None:
        pass

    def wall_ns(self) -> int:
        return time.time_ns()

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    def random_bytes(self, length: int) -> bytes:
        return os.urandom(length)

    def run_seed(self) -> bytes:
        return os.urandom(RUN_SEED_BYTES)


_DETACHED = _Detached()


class _NoJournal:
    """The journal of `Sandbox.check`: any durable call means the source does more than define a workflow."""

    def _refuse(self, *args: Any) -> Any:
        raise Abort(FailureName.WORKFLOW_CODE_ERROR, "the workflow source calls steps at import time")

    step_begin = step_complete = sleep_until = wait_for_event = _refuse

    def moment(self, call: StepCall) -> float | None:
        return None
