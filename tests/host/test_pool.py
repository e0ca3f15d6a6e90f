"""The pool of ready isolates (host/pool.py): bounded, refilled, one isolate per activation, per-activation
limits applied when taken, closed cleanly. No timings: the pool's thread is waited for with `settle`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import wasmtime
from memjournal import MemJournal
from tenantflow.host import Completed, Failed, Limits, Outcome, Sandbox
from tenantflow.host.pool import FLOOR_BYTES, MAX_SIZE, POOL_ENV, IsolatePool, size_from_env

SETTLE_S = 60
# The guest component's initial linear memory is ~15.75 MiB (252 pages).
BELOW_INITIAL = 8 << 20


def _pool(sandbox: Sandbox, size: int, cores: int = 64, quiet_s: float = 0.0, prepare: bool = True) -> IsolatePool:
    exports = (sandbox.component.get_export_index("check"),)
    return IsolatePool(
        sandbox.engine,
        sandbox.linker,
        sandbox.component,
        sandbox._epoch,
        exports,
        size,
        cores=cores,
        quiet_s=quiet_s,
        prepare=sandbox.component.get_export_index("prepare") if prepare else None,
    )


@pytest.fixture
def pool(sandbox: Sandbox) -> Iterator[IsolatePool]:
    made = _pool(sandbox, 3)
    yield made
    made.close()


def _closed(store: wasmtime.Store) -> bool:
    try:
        store.ptr()
    except ValueError:
        return True
    return False


def _run(sandbox: Sandbox, source: str, limits: Limits) -> Outcome:
    return sandbox.run(source, {"payload": None}, MemJournal(), limits)


def test_the_pool_fills_to_its_size_and_no_further(pool: IsolatePool) -> None:
    assert pool.settle(SETTLE_S)
    assert pool.ready() == 3
    taken = [pool.take(256 << 20, 10**10) for _ in range(2)]
    assert pool.hits == 2 and all(isolate.pooled for isolate in taken)
    assert pool.settle(SETTLE_S)
    assert pool.ready() == 3
    assert pool.built == 5
    for isolate in taken:
        pool.retire(isolate)
    assert pool.settle(SETTLE_S)
    assert pool.ready() == 3 and pool.built == 5


def test_an_empty_pool_makes_one_on_the_spot(sandbox: Sandbox) -> None:
    empty = _pool(sandbox, 0)
    try:
        isolate = empty.take(256 << 20, 10**10)
        assert not isolate.pooled and empty.misses == 1 and empty.ready() == 0
        empty.retire(isolate)
        assert _closed(isolate.store), "with no thread, the activation drops its own isolate"
    finally:
        empty.close()


def test_used_isolates_are_dropped_never_handed_out_again(pool: IsolatePool) -> None:
    assert pool.settle(SETTLE_S)
    seen: list[wasmtime.Store] = []
    for _ in range(8):
        isolate = pool.take(256 << 20, 10**10)
        assert all(isolate.store is not store for store in seen)
        seen.append(isolate.store)
        pool.retire(isolate)
    assert pool.settle(SETTLE_S)
    assert all(_closed(store) for store in seen)
    assert not any(store in pool.held() for store in seen)


def test_no_refill_while_activations_hold_every_core(sandbox: Sandbox) -> None:
    busy = _pool(sandbox, 2, cores=1)
    try:
        assert busy.settle(SETTLE_S) and busy.ready() == 2
        isolate = busy.take(256 << 20, 10**10)
        assert busy.settle(SETTLE_S)
        assert busy.ready() == 1, "refilled while an activation held the only core"
        busy.retire(isolate)
        assert busy.settle(SETTLE_S)
        assert busy.ready() == 2
    finally:
        busy.close()


def test_while_one_is_ready_the_thread_waits_out_a_take_and_a_retire(sandbox: Sandbox) -> None:
    quiet = _pool(sandbox, 3, quiet_s=3600)
    try:
        assert quiet.settle(SETTLE_S) and quiet.ready() == 3
        first = quiet.take(256 << 20, 10**10)
        quiet.retire(quiet.take(256 << 20, 10**10))
        time.sleep(0.5)
        assert quiet.ready() == 1 and quiet.built == 3, "refilled beside an activation's start while one was ready"
        assert quiet.retiring() == 1, "dropped beside an activation's end while one was ready"
        quiet.take(256 << 20, 10**10)
        # None ready: the next activation would make its own, so the thread works at once (drop, then make).
        deadline = time.monotonic() + SETTLE_S
        while quiet.ready() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert quiet.ready() == 1 and quiet.retiring() == 0
        time.sleep(0.5)
        assert quiet.ready() == 1, "one ready again: the rest waits out the quiet period"
        quiet.retire(first)
    finally:
        quiet.close()


def test_instantiation_fuel_is_the_same_pooled_or_not(sandbox: Sandbox, pool: IsolatePool) -> None:
    """The activation is charged what instantiation burned: the same whichever thread made the isolate."""
    assert pool.settle(SETTLE_S)
    pooled = pool.take(256 << 20, 10**10)
    empty = _pool(sandbox, 0)
    try:
        here = empty.take(256 << 20, 10**10)
        assert pooled.pooled and not here.pooled
        assert pooled.fuel_used == here.fuel_used > 0
        empty.retire(here)
    finally:
        pool.retire(pooled)
        empty.close()


def test_less_fuel_or_a_cap_below_the_floor_is_made_on_the_spot(pool: IsolatePool) -> None:
    assert pool.settle(SETTLE_S)
    with pytest.raises(wasmtime.WasmtimeError, match="memory"):
        pool.take(BELOW_INITIAL, 10**10)
    with pytest.raises(wasmtime.WasmtimeError, match="fuel"):
        pool.take(256 << 20, 10)
    assert pool.hits == 0 and pool.running == 0
    small = pool.take(FLOOR_BYTES - 1, 10**10)  # under the floor, above the guest's initial memory
    assert not small.pooled
    pool.retire(small)


def test_making_an_isolate_asks_nothing_of_an_activation(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pooled isolate is made (and prepared) with no activation on its thread: were the guest to ask WASI for
    random bytes or the time meanwhile, it would get the host's, not the activation's (seeded, logical)."""
    from tenantflow.host import sandbox as sandbox_module

    calls: list[str] = []

    class Recording(sandbox_module._Detached):
        def __getattribute__(self, name: str) -> object:
            calls.append(name)
            return object.__getattribute__(self, name)

    monkeypatch.setattr(sandbox_module, "_DETACHED", Recording())
    here = _pool(sandbox, 0)
    try:
        isolate = here.take(256 << 20, 10**10)
        here.retire(isolate)
    finally:
        here.close()
    assert calls == []


def test_each_isolate_made_is_prepared_and_charged_for_it(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """`prepare` takes componentize-py's first-call set-up (the environment and the arguments: two host calls; its
    reseed of `random` is skipped) out of the activation, whose run then asks nothing more (its
    seed's bytes only at its first draw from `random`)."""
    from tenantflow.host import _wasmtime

    host_calls: list[int] = []
    lift = _wasmtime.lift

    def counting(*args: object) -> object:
        host_calls.append(1)
        return lift(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(_wasmtime, "lift", counting)
    bare, prepared = _pool(sandbox, 0, prepare=False), _pool(sandbox, 0)
    try:
        plain = bare.take(256 << 20, 10**10)
        assert host_calls == []
        ready = prepared.take(256 << 20, 10**10)
        assert len(host_calls) == 2
        assert ready.fuel_used > plain.fuel_used
        bare.retire(plain)
        prepared.retire(ready)
    finally:
        bare.close()
        prepared.close()
    box = Sandbox(sandbox.component, sandbox.engine, pool=0)
    try:
        host_calls.clear()
        outcome = _run(box, "def run(event, step):\n    return 1\n", Limits())
        assert isinstance(outcome, Completed), outcome
        assert len(host_calls) == 2  # made and prepared on the spot; a run that never draws asks no `run-seed`
    finally:
        box.close()


def test_a_pool_that_cannot_make_isolates_leaves_activations_to_make_their_own(sandbox: Sandbox) -> None:
    exports = (sandbox.component.get_export_index("check"),)
    # A floor below the guest's initial memory: every isolate made ahead of time fails to instantiate.
    broken = IsolatePool(sandbox.engine, sandbox.linker, sandbox.component, sandbox._epoch, exports, 2, BELOW_INITIAL)
    try:
        deadline = time.monotonic() + SETTLE_S
        while not broken.failing and time.monotonic() < deadline:
            time.sleep(0.01)
        assert broken.failing and broken.ready() == 0 and broken.built == 0
        isolate = broken.take(256 << 20, 10**10)
        assert not isolate.pooled
        broken.retire(isolate)
    finally:
        broken.close()
    assert broken.held() == []


def test_close_drops_every_isolate_and_stops_the_thread(sandbox: Sandbox) -> None:
    made = _pool(sandbox, 2)
    assert made.settle(SETTLE_S)
    held = made.held()
    taken = made.take(256 << 20, 10**10)
    made.close()
    assert made.held() == [] and made.ready() == 0
    assert made._thread is not None and not made._thread.is_alive()
    assert all(_closed(store) for store in held if store is not taken.store)
    assert not _closed(taken.store), "an isolate in use is its activation's to retire"
    made.retire(taken)
    assert _closed(taken.store)
    after = made.take(256 << 20, 10**10)  # closed: made on the spot
    assert not after.pooled
    made.retire(after)
    assert _closed(after.store)


def test_a_sandbox_closes_its_pool() -> None:
    box = Sandbox(pool=2)
    assert box.isolates.settle(SETTLE_S) and box.isolates.ready() == 2
    held = box.isolates.held()
    box.close()
    assert box.isolates.held() == [] and all(_closed(store) for store in held)


# -- through Sandbox.run: isolation and per-activation limits with pooled isolates ------------------


@pytest.fixture(scope="module")
def pooled(sandbox: Sandbox) -> Iterator[Sandbox]:
    """A Sandbox with a pool whatever TENANTFLOW_ISOLATE_POOL says (on the session's engine and guest)."""
    box = Sandbox(sandbox.component, sandbox.engine, pool=2)
    yield box
    box.close()


def test_every_activation_gets_a_fresh_memory(pooled: Sandbox) -> None:
    source = (
        "import builtins\n"
        "def run(event, step):\n"
        "    seen = getattr(builtins, 'tenantflow_mark', None)\n"
        "    builtins.tenantflow_mark = 'left behind'\n"
        "    return seen\n"
    )
    hits = pooled.isolates.hits
    for _ in range(6):
        assert pooled.isolates.settle(SETTLE_S)
        outcome = _run(pooled, source, Limits())
        assert isinstance(outcome, Completed), outcome
        assert json.loads(outcome.output) is None, "an activation saw what an earlier one left"
    assert pooled.isolates.hits >= hits + 6


@pytest.mark.parametrize(
    ("cap_mb", "ok"),
    [(64, False), (256, True), (64, False)],
)
def test_a_pooled_isolate_takes_the_activations_memory_cap(pooled: Sandbox, cap_mb: int, ok: bool) -> None:
    """Made under the 16 MiB floor, it grows to the tenant's cap and no further."""
    source = "def run(event, step):\n    return len(bytearray(100 << 20))\n"
    assert pooled.isolates.settle(SETTLE_S)
    hits = pooled.isolates.hits
    outcome = _run(pooled, source, Limits(memory_bytes=cap_mb << 20))
    assert pooled.isolates.hits == hits + 1
    if ok:
        assert isinstance(outcome, Completed) and json.loads(outcome.output) == 100 << 20, outcome
    else:
        assert isinstance(outcome, Failed) and outcome.error.name == "MemoryLimitExceeded", outcome


def test_a_pooled_isolate_takes_the_activations_fuel_and_deadline(pooled: Sandbox) -> None:
    spin = "def run(event, step):\n    while True:\n        pass\n"
    assert pooled.isolates.settle(SETTLE_S)
    hits = pooled.isolates.hits
    fuel = _run(pooled, spin, Limits(fuel=50_000_000))
    assert isinstance(fuel, Failed) and fuel.error.name == "FuelExhausted", fuel
    assert fuel.stats.fuel >= 50_000_000
    assert pooled.isolates.settle(SETTLE_S)
    deadline = _run(pooled, spin, Limits(fuel=10**13, deadline_s=0.3))
    assert isinstance(deadline, Failed) and deadline.error.name == "DeadlineExceeded", deadline
    assert pooled.isolates.hits == hits + 2


def test_pool_size_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(POOL_ENV, raising=False)
    assert size_from_env() == 4
    monkeypatch.setenv(POOL_ENV, "0")
    assert size_from_env() == 0
    monkeypatch.setenv(POOL_ENV, "5")
    assert size_from_env() == 5
    monkeypatch.setenv(POOL_ENV, str(MAX_SIZE))
    assert size_from_env() == MAX_SIZE
    for bad in ("-1", str(MAX_SIZE + 1), "64", "two"):
        monkeypatch.setenv(POOL_ENV, bad)
        with pytest.raises(ValueError, match=POOL_ENV):
            size_from_env()


def test_a_pool_holds_at_most_its_slots(sandbox: Sandbox) -> None:
    """Ready, waiting to be dropped and one being made: what the runtime keeps free of activations for it."""
    assert _pool(sandbox, 0).slots == 0
    made = _pool(sandbox, 2, quiet_s=10.0)
    try:
        assert made.slots == 5
        assert made.settle(SETTLE_S) and made.ready() == 2
        taken = [made.take(256 << 20, 10**10) for _ in range(2)]
        for isolate in taken:
            made.retire(isolate)
        # Two used ones wait out `quiet_s` to be dropped; the thread makes no new one meanwhile (one is ready).
        assert len(made.held()) <= made.slots
    finally:
        made.close()
