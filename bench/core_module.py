"""The core-module prototype against the componentize-py guest, in one run: `python -m bench.core_module`.

Not a test (never part of `make test`). The prototype (docs/core-module.md) is CPython 3.11 for WASI from
Debian's source, embedded in a plain core wasm module (bench/core_prototype/tfcore.c) and
pre-initialized with Wizer; `bench/core_prototype/build.sh` builds it into ~/.cache/tenantflow-core
(run here when missing). The component guest is measured through `tenantflow.host.Sandbox`, the prototype
through `CoreSandbox` below (a minimal host: fresh Store per activation, the same engine and its
settings, fuel, epoch deadline, memory cap, core imports with the WIT host's roles).

First instruction is measured with the source compiled in the guest per activation, and with the version's
code compiled ahead (`Sandbox.compile` / `CoreSandbox.compile` once, then `run-compiled` / `tf_run_compiled`
per activation), from a fresh isolate and from one instantiated ahead of time (the component Sandbox's pool;
a core Store instantiated before the timer). The component Sandbox runs without a pool (`pool=0`) for every
figure but that last pair.

Both guests run in the same process on the same engine, interleaved (A, B, A, B, ...) so a drifting
machine load hits both alike; every figure is reported as min and median within the run. Prints one
JSON line per figure and a Markdown summary at the end.

    python -m bench.core_module [--runs 200] [--quick]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import wasmtime
import zstandard
from tenantflow.host import Limits
from tenantflow.host.engine import make_engine
from tenantflow.host.journal import Attempt, Done, Run, StepCall, StepConfig, StepFailed, Stop
from wasmtime import _ffi as ffi
from wasmtime._extern import wrap_extern
from wasmtime._func import enter_wasm

from bench.sandbox_bench import WORK, FastJournal, FirstLogSandbox, fresh_store, rss_mb

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "bench" / "core_prototype" / "build.sh"
RESULTS: dict[str, dict[str, Any]] = {}


def cache_dir() -> Path:
    return Path(os.environ.get("TENANTFLOW_CORE_CACHE") or Path.home() / ".cache" / "tenantflow-core")


# -- the prototype's module ------------------------------------------------------------------------------


def core_wasm() -> Path:
    wasm = cache_dir() / "tfcore.wasm"
    if not wasm.exists():
        print(f"building the core-module prototype ({BUILD_SCRIPT}); the first build takes ~10 min", file=sys.stderr)
        subprocess.run(["sh", str(BUILD_SCRIPT)], check=True)
    return wasm


def load_core_module(engine: wasmtime.Engine, settings: dict[str, object]) -> wasmtime.Module:
    """The prototype precompiled for `engine` (cached by the module's bytes, the settings and wasmtime)."""
    wasm = core_wasm().read_bytes()
    digest = hashlib.sha256(wasm)
    digest.update(f"wasmtime={version('wasmtime')}".encode())
    for name in sorted(settings):
        digest.update(f"{name}={settings[name]}".encode())
    artifact = cache_dir() / f"tfcore-{digest.hexdigest()[:32]}.cwasm"
    if not artifact.exists():
        compiled = wasmtime.Module(engine, wasm).serialize()
        fd, tmp = tempfile.mkstemp(dir=artifact.parent)
        with os.fdopen(fd, "wb") as out:
            out.write(compiled)
        os.replace(tmp, artifact)
    return wasmtime.Module.deserialize_file(engine, str(artifact))


def mutable_globals(wasm: bytes) -> int:
    """How many mutable globals the module defines (its state outside linear memory, besides tables)."""

    def leb(pos: int) -> tuple[int, int]:
        result = shift = 0
        while True:
            byte = wasm[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return result, pos

    pos = 8
    while pos < len(wasm):
        section = wasm[pos]
        size, pos = leb(pos + 1)
        if section == 6:  # the global section: (valtype, mut, init expr ending in 0x0b) each
            count, p = leb(pos)
            mutable = 0
            for _ in range(count):
                mutable += wasm[p + 1]
                p += 2
                while wasm[p] != 0x0B:
                    p += 1
                p += 1
            return mutable
        pos += size
    return 0


# -- a minimal host for the core module ------------------------------------------------------------------


@dataclass
class CoreActivation:
    store: wasmtime.Store
    journal: Any
    memory: wasmtime.Memory | None = None
    position: int = 0
    in_flight: tuple[StepCall, StepConfig, int] | None = None
    log: list[str] = field(default_factory=list)
    first_log: float | None = None
    output: tuple[int, str] | None = None
    code: bytes | None = None
    pending: bytes = b""


class CoreInstance:
    """One live instance of the prototype: its Store, memory and exports."""

    def __init__(self, box: CoreSandbox, store: wasmtime.Store, act: CoreActivation) -> None:
        self.box, self.store, self.act = box, store, act
        self.instance = box.linker.instantiate(store, box.module)
        memory = self._export("memory")
        assert isinstance(memory, wasmtime.Memory)
        self.memory = act.memory = memory
        self.alloc = self._func("tf_alloc")

    def _export(self, name: str) -> Any:
        """One export by name (`Instance.exports` wraps every export of the module, ~0.1 ms here)."""
        item = ffi.wasmtime_extern_t()
        raw = name.encode()
        if not ffi.wasmtime_instance_export_get(
            self.store._context(), ctypes.byref(self.instance._instance), raw, len(raw), ctypes.byref(item)
        ):
            raise KeyError(name)
        return wrap_extern(item)

    def _func(self, name: str) -> wasmtime.Func:
        func = self._export(name)
        assert isinstance(func, wasmtime.Func)
        return func

    def _call(self, func: wasmtime.Func, *args: int) -> int:
        """Call an export taking i32s and answering one i32, with the C API directly: wasmtime-py's
        `Func.__call__` asks for the function's type and converts each value through `Val` on every call
        (~60 µs a call here, measured on `tf_alloc`), which the component Sandbox's call path does not."""
        params = (ffi.wasmtime_val_t * len(args))()
        for slot, value in zip(params, args, strict=True):
            slot.kind = ffi.WASMTIME_I32.value
            slot.of.i32 = value
        results = (ffi.wasmtime_val_t * 1)()
        with enter_wasm(self.store) as trap:
            error = ffi.wasmtime_func_call(
                self.store._context(), ctypes.byref(func._func), params, len(args), results, 1, trap
            )
            if error:
                raise wasmtime.WasmtimeError._from_ptr(error)
        return int(results[0].of.i32)

    def _args(self, *parts: bytes) -> list[int]:
        """The parts written into guest memory (one `tf_alloc` for all of them): (pointer, length) each."""
        ptr = self._call(self.alloc, max(1, sum(len(part) for part in parts)))
        base = ctypes.addressof(self.memory.data_ptr(self.store).contents)
        if ptr <= 0 or ptr + sum(len(part) for part in parts) > self.memory.data_len(self.store):
            raise wasmtime.WasmtimeError("tenantflow: tf_alloc answered outside the guest's memory")
        out: list[int] = []
        for part in parts:
            ctypes.memmove(base + ptr, part, len(part))
            out += [ptr, len(part)]
            ptr += len(part)
        return out

    def _enter(self, export: wasmtime.Func, *parts: bytes) -> None:
        self.box.current = self.act
        try:
            self._call(export, *self._args(*parts))
        finally:
            self.box.current = None

    def run(self, source: str, event: dict[str, Any]) -> tuple[int, str]:
        self._enter(self._func("tf_run"), source.encode(), json.dumps(event).encode())
        assert self.act.output is not None
        return self.act.output

    def run_compiled(self, source: str, code: bytes, event: dict[str, Any]) -> tuple[int, str]:
        """`run` with the code `check` made: the guest loads it (marshal) instead of compiling the source."""
        self._enter(self._func("tf_run_compiled"), source.encode(), code, json.dumps(event).encode())
        assert self.act.output is not None
        return self.act.output

    def check(self, source: str) -> bytes | tuple[int, str]:
        """The source compiled by this guest's interpreter, its module run once: the marshalled code, or the
        (status, error JSON) answer."""
        self._enter(self._func("tf_check"), source.encode())
        if self.act.code is not None:
            return self.act.code
        assert self.act.output is not None
        return self.act.output

    def resume(self, value: Any) -> tuple[int, str]:
        self._enter(self._func("tf_resume"), json.dumps(value).encode())
        assert self.act.output is not None
        return self.act.output

    def fuel_used(self, limits: Limits) -> int:
        return limits.fuel - self.store.get_fuel()


class CoreSandbox:
    """Fresh isolates of the prototype, on the component Sandbox's engine (same settings, same pooling)."""

    def __init__(self, engine: wasmtime.Engine, module: wasmtime.Module, epoch_ticks: Callable[[float], int]) -> None:
        self.engine, self.module, self.epoch_ticks = engine, module, epoch_ticks
        self.current: CoreActivation | None = None
        self.linker = wasmtime.Linker(engine)
        self.linker.define_wasi()
        i32, i64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()
        imports: dict[str, tuple[list[wasmtime.ValType], list[wasmtime.ValType], Callable[..., Any]]] = {
            "step_begin": ([i32] * 6, [i32], self._step_begin),
            "step_complete": ([i32] * 6, [i32], self._step_complete),
            "sleep": ([i32, i32, i64], [i32], self._sleep),
            "wait_for_event": ([i32, i32, i32, i32, i64, i32, i32], [i32], self._wait_for_event),
            "log": ([i32, i32, i32], [], self._log),
            "take": ([i32], [], self._take),
            "output": ([i32, i32, i32], [], self._output),
        }
        for name, (params, results, fn) in imports.items():
            self.linker.define_func("tenantflow", name, wasmtime.FuncType(params, results), fn)

    def new_store(self, limits: Limits) -> wasmtime.Store:
        store = wasmtime.Store(self.engine)
        store.set_wasi(wasmtime.WasiConfig())  # no preopens, no environment, no inherited stdio
        store.set_limits(memory_size=limits.memory_bytes)
        store.set_fuel(limits.fuel)
        store.set_epoch_deadline(self.epoch_ticks(limits.deadline_s))
        return store

    def instance(self, journal: Any = None, limits: Limits | None = None) -> CoreInstance:
        store = self.new_store(limits or Limits())
        return CoreInstance(self, store, CoreActivation(store, journal if journal is not None else FastJournal()))

    def run(
        self,
        source: str,
        event: dict[str, Any],
        journal: Any,
        limits: Limits | None = None,
        code: bytes | None = None,
    ) -> tuple[int, str]:
        inst = self.instance(journal, limits)
        return inst.run(source, event) if code is None else inst.run_compiled(source, code, event)

    def compile(self, source: str, limits: Limits | None = None) -> bytes:
        """`Sandbox.compile`'s counterpart: in a fresh isolate, once per workflow version (code objects are the
        guest interpreter's: CPython 3.11 here, not the host's)."""
        answer = self.instance(limits=limits).check(source)
        if not isinstance(answer, bytes):
            raise RuntimeError(f"the core module's check failed: {answer}")
        return answer

    # -- host functions: pointers and lengths into the caller's memory, bounds-checked --------------------

    def _read(self, ptr: int, length: int) -> bytes:
        act = self.current
        assert act is not None and act.memory is not None
        size = act.memory.data_len(act.store)
        if ptr < 0 or length < 0 or ptr + length > size:
            raise wasmtime.WasmtimeError("tenantflow: a host call's argument lies outside the guest's memory")
        base = ctypes.addressof(act.memory.data_ptr(act.store).contents)
        return ctypes.string_at(base + ptr, length)

    def _answer(self, text: str, out: int, cap: int) -> int:
        act = self.current
        assert act is not None and act.memory is not None
        data = text.encode()
        if len(data) > cap:
            act.pending = data
            return len(data)
        if out < 0 or out + len(data) > act.memory.data_len(act.store):
            raise wasmtime.WasmtimeError("tenantflow: the reply buffer lies outside the guest's memory")
        ctypes.memmove(ctypes.addressof(act.memory.data_ptr(act.store).contents) + out, data, len(data))
        return len(data)

    def _plan(self, act: CoreActivation, call: StepCall, config: StepConfig, plan: Any) -> str:
        if isinstance(plan, Done):
            act.position = call.position + 1 + plan.span
            return "D" + plan.result
        if isinstance(plan, StepFailed):
            act.position = call.position + 1 + plan.span
            return f"F{plan.name}\n{plan.message}"
        if isinstance(plan, Stop):
            return "S"
        assert isinstance(plan, Run)
        act.in_flight = (call, config, plan.attempt)
        return f"R{plan.attempt}"

    def _step_begin(self, name_ptr: int, name_len: int, cfg_ptr: int, cfg_len: int, out: int, cap: int) -> int:
        act = self.current
        assert act is not None
        name = self._read(name_ptr, name_len).decode()
        config = StepConfig.from_json(json.loads(self._read(cfg_ptr, cfg_len)))
        call = StepCall(act.position, name, 0, "do")
        return self._answer(self._plan(act, call, config, act.journal.step_begin(call, config)), out, cap)

    def _step_complete(self, name_ptr: int, name_len: int, o_ptr: int, o_len: int, out: int, cap: int) -> int:
        act = self.current
        assert act is not None and act.in_flight is not None
        call, config, attempt_no = act.in_flight
        act.in_flight = None
        outcome = self._read(o_ptr, o_len).decode()
        tag, rest = outcome[:1], outcome[1:]
        if tag == "O":
            attempt = Attempt(attempt_no, ok=True, result=rest)
        else:
            name, _, message = rest.rpartition("\n") if tag == "T" else rest.partition("\n")
            attempt = Attempt(attempt_no, ok=False, error_name=name, error_message=message)
        return self._answer(self._plan(act, call, config, act.journal.step_complete(call, config, attempt)), out, cap)

    def _sleep(self, name_ptr: int, name_len: int, duration_ms: int) -> int:
        return 1

    def _wait_for_event(self, n_ptr: int, n_len: int, t_ptr: int, t_len: int, timeout: int, out: int, cap: int) -> int:
        event_type = self._read(t_ptr, t_len).decode()
        return self._answer("E" + json.dumps({"type": event_type, "payload": None}), out, cap)

    def _log(self, fd: int, ptr: int, length: int) -> None:
        act = self.current
        assert act is not None
        if act.first_log is None:
            act.first_log = time.perf_counter()
        act.log.append(self._read(ptr, length).decode())

    def _take(self, out: int) -> None:
        act = self.current
        assert act is not None
        self._answer(act.pending.decode(), out, len(act.pending))

    def _output(self, status: int, ptr: int, length: int) -> None:
        act = self.current
        assert act is not None
        data = self._read(ptr, length)
        if status == 3:  # tf_check's marshalled code
            act.code = data
        else:
            act.output = (status, data.decode())


# -- reporting ------------------------------------------------------------------------------------------


def emit(name: str, **fields: Any) -> None:
    RESULTS[name] = fields
    print(json.dumps({"name": name, **fields}), flush=True)


def summary(samples: list[float], scale: float = 1000.0) -> dict[str, float]:
    """min and median (and n) of samples in seconds, in ms (scale 1000) or µs (scale 1e6)."""
    return {
        "min": round(min(samples) * scale, 4),
        "p50": round(statistics.median(samples) * scale, 4),
        "n": len(samples),
    }


def interleaved(fns: dict[str, Callable[[], float]], runs: int, warmup: int = 5) -> dict[str, list[float]]:
    """Each fn returns one sample; run them A, B, A, B, ... (the order flipped every round)."""
    names = list(fns)
    out: dict[str, list[float]] = {name: [] for name in names}
    for i in range(runs + warmup):
        for name in names if i % 2 == 0 else reversed(names):
            value = fns[name]()
            if i >= warmup:
                out[name].append(value)
    return out


# -- figures --------------------------------------------------------------------------------------------


def bench_instantiate(box: FirstLogSandbox, core: CoreSandbox, runs: int) -> None:
    limits = Limits()
    drops: dict[str, list[float]] = {"component": [], "core": []}

    def component() -> float:
        store = fresh_store(box, limits)
        started = time.perf_counter()
        instance = box.linker.instantiate(store, box.component)
        elapsed = time.perf_counter() - started
        started = time.perf_counter()
        del instance, store
        drops["component"].append(time.perf_counter() - started)
        return elapsed

    def prototype() -> float:
        store = core.new_store(limits)
        started = time.perf_counter()
        instance = core.linker.instantiate(store, core.module)
        elapsed = time.perf_counter() - started
        started = time.perf_counter()
        del instance, store
        drops["core"].append(time.perf_counter() - started)
        return elapsed

    def component_store() -> float:
        started = time.perf_counter()
        fresh_store(box, limits)
        return time.perf_counter() - started

    def prototype_store() -> float:
        started = time.perf_counter()
        core.new_store(limits)
        return time.perf_counter() - started

    got = interleaved({"component": component, "core": prototype}, runs)
    stores = interleaved({"component": component_store, "core": prototype_store}, runs)
    emit(
        "instantiate_ms",
        component=summary(got["component"]),
        core=summary(got["core"]),
        speedup_p50=round(statistics.median(got["component"]) / statistics.median(got["core"]), 2),
        drop_component=summary(drops["component"][5:]),
        drop_core=summary(drops["core"][5:]),
        store_setup_component=summary(stores["component"]),
        store_setup_core=summary(stores["core"]),
        what="linker.instantiate on a fresh Store (Store setup and the drop of the Store, which returns the pool "
        "slot, shown apart)",
    )


FIRST = "print(1)\n\ndef run(event, step):\n    return 1\n"


def fresh_samplers(
    box: FirstLogSandbox,
    core: CoreSandbox,
    first: dict[str, list[float]],
    total: dict[str, list[float]],
    code: tuple[bytes, bytes] | None = None,
) -> dict[str, Callable[[], float]]:
    """One activation of `FIRST` in a fresh isolate of each guest, timed to its first instruction (into `first`) and
    to its return (into `total`, the drop of the Store included); with `code` (the component's, the core module's)
    the version's code compiled ahead, else the source compiled in the guest."""

    def component() -> float:
        box.first_log = None
        started = time.perf_counter()
        outcome = box.run(FIRST, {"payload": None}, FastJournal(), code=None if code is None else code[0])
        ended = time.perf_counter()
        assert box.first_log is not None and getattr(outcome, "output", None) == "1", outcome
        first["component"].append(box.first_log - started)
        total["component"].append(ended - started)
        return 0.0

    def prototype() -> float:
        started = time.perf_counter()
        instance = core.instance()
        if code is None:
            answer = instance.run(FIRST, {"payload": None})
        else:
            answer = instance.run_compiled(FIRST, code[1], {"payload": None})
        first_log = instance.act.first_log
        del instance  # as Sandbox.run drops its Store before it returns
        ended = time.perf_counter()
        assert answer == (0, "1") and first_log is not None, answer
        first["core"].append(first_log - started)
        total["core"].append(ended - started)
        return 0.0

    return {"component": component, "core": prototype}


def bench_first_instruction(box: FirstLogSandbox, core: CoreSandbox, runs: int) -> None:
    first: dict[str, list[float]] = {"component": [], "core": []}
    total: dict[str, list[float]] = {"component": [], "core": []}
    interleaved(fresh_samplers(box, core, first, total), runs, warmup=0)
    warm = 5  # drop the first rounds: caches, pool slots
    emit(
        "fresh_isolate_to_first_instruction_ms",
        component=summary(first["component"][warm:]),
        core=summary(first["core"][warm:]),
        speedup_p50=round(statistics.median(first["component"][warm:]) / statistics.median(first["core"][warm:]), 2),
        target_p50_ms=0.25,
        what="fresh Store + instantiate + compile + exec of print(1), until the print reaches the host",
    )
    emit(
        "trivial_activation_ms",
        component=summary(total["component"][warm:]),
        core=summary(total["core"][warm:]),
        what="the same activation end to end (print(1), return 1), the drop of the Store included",
    )


def bench_first_instruction_compiled(
    box: FirstLogSandbox, pooled: FirstLogSandbox, core: CoreSandbox, runs: int
) -> None:
    """First instruction with the version's code compiled ahead, as the runtime runs a deployed version: the
    host compiled it once in each guest (`Sandbox.compile`, `CoreSandbox.compile`: code objects are the guest
    interpreter's), and every activation loads the marshalled code instead of compiling the source.

    Two pairs, all four interleaved: from a fresh isolate (the component's Sandbox without a pool; the core
    module's Store made and instantiated inside the timer), and from an isolate instantiated ahead of time
    (what a pool gives: the component's Sandbox with a pool of ready, prepared isolates, settled before and
    after each sample so its thread is idle while anything is timed; the core module's Store instantiated
    before the timer starts and dropped after it stops)."""
    component_code = box.compile(FIRST)
    assert isinstance(component_code, bytes), component_code
    core_code = core.compile(FIRST)
    first: dict[str, list[float]] = {"component": [], "core": [], "component_pooled": [], "core_pooled": []}
    total: dict[str, list[float]] = {name: [] for name in first}
    hits = {"taken": 0, "hits": 0}
    fresh = fresh_samplers(box, core, first, total, (component_code, core_code))

    def component_pooled() -> float:
        assert pooled.isolates.settle(timeout=5)
        before = pooled.isolates.hits
        pooled.first_log = None
        started = time.perf_counter()
        outcome = pooled.run(FIRST, {"payload": None}, FastJournal(), code=component_code)
        ended = time.perf_counter()
        assert pooled.first_log is not None and getattr(outcome, "output", None) == "1", outcome
        first["component_pooled"].append(pooled.first_log - started)
        total["component_pooled"].append(ended - started)
        hits["taken"] += 1
        hits["hits"] += pooled.isolates.hits - before
        pooled.isolates.settle(timeout=5)  # the used isolate dropped, a new one made: not beside the next sample
        return 0.0

    def prototype_pooled() -> float:
        instance = core.instance()
        started = time.perf_counter()
        answer = instance.run_compiled(FIRST, core_code, {"payload": None})
        ended = time.perf_counter()
        first_log = instance.act.first_log
        del instance  # dropped after the timer, as the pool's thread drops a used isolate
        assert answer == (0, "1") and first_log is not None, answer
        first["core_pooled"].append(first_log - started)
        total["core_pooled"].append(ended - started)
        return 0.0

    fns = {
        **fresh,
        "component_pooled": component_pooled,
        "core_pooled": prototype_pooled,
    }
    interleaved(fns, runs, warmup=0)
    warm = 5  # drop the first rounds: caches, pool slots

    def ratio(a: str, b: str, samples: dict[str, list[float]]) -> float:
        return round(statistics.median(samples[a][warm:]) / statistics.median(samples[b][warm:]), 2)

    emit(
        "first_instruction_compiled_fresh_ms",
        component=summary(first["component"][warm:]),
        core=summary(first["core"][warm:]),
        speedup_p50=ratio("component", "core", first),
        speedup_min=round(min(first["component"][warm:]) / min(first["core"][warm:]), 2),
        target_p50_ms=0.25,
        code_bytes={"component": len(component_code), "core": len(core_code)},
        what="fresh isolate -> print(1) reaches the host, the version's code compiled ahead (run-compiled / "
        "tf_run_compiled: marshal.loads + exec); component Sandbox pool=0, core Store made inside the timer",
    )
    emit(
        "activation_compiled_fresh_ms",
        component=summary(total["component"][warm:]),
        core=summary(total["core"][warm:]),
        speedup_p50=ratio("component", "core", total),
        what="the same activation end to end (print(1), return 1), the drop of the Store included",
    )
    emit(
        "first_instruction_compiled_preinstantiated_ms",
        component=summary(first["component_pooled"][warm:]),
        core=summary(first["core_pooled"][warm:]),
        speedup_p50=ratio("component_pooled", "core_pooled", first),
        speedup_min=round(min(first["component_pooled"][warm:]) / min(first["core_pooled"][warm:]), 2),
        target_p50_ms=0.25,
        component_pool_hits=f"{hits['hits']}/{hits['taken']}",
        what="an isolate instantiated ahead of time -> print(1) reaches the host, code compiled ahead; component: "
        "Sandbox(pool=2), settled before and after each sample (the ready isolate is prepared; limits, fuel and "
        "deadline applied when taken, inside the timer); core: the Store made and instantiated before the timer",
    )
    emit(
        "activation_compiled_preinstantiated_ms",
        component=summary(total["component_pooled"][warm:]),
        core=summary(total["core_pooled"][warm:]),
        speedup_p50=ratio("component_pooled", "core_pooled", total),
        what="the same, to the activation's return; the drop is off the path on both (the pool's thread; the core "
        "Store dropped after the timer)",
    )


def in_guest_source(call: str, per: int, rounds: int, preamble: str) -> str:
    return textwrap.dedent(
        f"""
        import time
        {preamble}

        def run(event, step):
            out = []
            for b in range({rounds + 10}):
                started = time.perf_counter_ns()
                for i in range({per}):
                    {call}
                out.append((time.perf_counter_ns() - started) / {per})
            return out[10:]
        """
    )


def bench_host_calls(box: FirstLogSandbox, core: CoreSandbox, rounds: int) -> None:
    cases = {
        "host_call_us": ('host.log(1, "")', '_tfhost.log(1, "")', 50, "one guest -> host -> guest call (log)"),
        "step_do_us": (
            'step.do("s", lambda: i)',
            'step.do("s", lambda: i)',
            20,
            "step.do of a new step, in-memory journal: begin, run body, complete (two host calls)",
        ),
    }
    for name, (component_call, core_call, per, what) in cases.items():
        samples: dict[str, list[float]] = {"component": [], "core": []}
        component_src = in_guest_source(component_call, per, rounds, "from wit_world.imports import host")
        core_src = in_guest_source(core_call, per, rounds, "import _tfhost")
        for i in range(6):
            if i % 2 == 0:
                outcome = box.run(component_src, {"payload": None}, FastJournal())
                samples["component"] += [ns / 1e9 for ns in json.loads(outcome.output)]  # type: ignore[union-attr]
            else:
                status, text = core.run(core_src, {"payload": None}, FastJournal())
                assert status == 0, text
                samples["core"] += [ns / 1e9 for ns in json.loads(text)]
        emit(
            name,
            component=summary(samples["component"], 1e6),
            core=summary(samples["core"], 1e6),
            per_sample=per,
            what=what + "; timed inside the guest, 3 activations each, alternated",
        )


def bench_compute(box: FirstLogSandbox, core: CoreSandbox, runs: int, n: int = 300_000) -> None:
    namespace: dict[str, Any] = {}
    exec(WORK, namespace)
    work = namespace["work"]
    expected = work(n)
    source = WORK + textwrap.dedent(
        f"""
        import time

        def run(event, step):
            started = time.perf_counter()
            result = work({n})
            return [time.perf_counter() - started, result]
        """
    )

    def native() -> float:
        started = time.perf_counter()
        assert work(n) == expected
        return time.perf_counter() - started

    def component() -> float:
        outcome = box.run(source, {"payload": None}, FastJournal())
        elapsed, result = json.loads(outcome.output)  # type: ignore[union-attr]
        assert result == expected
        return float(elapsed)

    def prototype() -> float:
        status, text = core.run(source, {"payload": None}, FastJournal())
        assert status == 0, text
        elapsed, result = json.loads(text)
        assert result == expected
        return float(elapsed)

    got = interleaved({"native": native, "component": component, "core": prototype}, runs, warmup=2)
    native_p50 = statistics.median(got["native"])
    emit(
        "compute_ms",
        native=summary(got["native"]),
        component=summary(got["component"]),
        core=summary(got["core"]),
        component_vs_native_p50=round(statistics.median(got["component"]) / native_p50, 2),
        core_vs_native_p50=round(statistics.median(got["core"]) / native_p50, 2),
        native_python=sys.version.split()[0],
        what=f"the same pure-Python loop ({n} iterations): host CPython, the component guest (CPython 3.14, "
        "componentize-py) and the core module (CPython 3.11 from Debian's source), both fuel-metered",
    )


# -- RSS per live isolate: each measured in a fresh child process --------------------------------------------

SMALL = "def run(event, step):\n    return {'ok': [1, 2, 3]}\n"


def rss_child(kind: str, live: int) -> None:
    box = FirstLogSandbox(pool=0)
    core = CoreSandbox(box.engine, load_core_module(box.engine, box.settings), box._ticker.ticks)
    limits = Limits()
    # One instance of each first, so the code pages and artifacts are mapped before the baseline.
    held: list[Any] = []
    gc.collect()
    before = rss_mb()
    for _ in range(live):
        if kind == "component":
            store = fresh_store(box, limits)
            instance = box.linker.instantiate(store, box.component)
            func = instance.get_func(store, box._run_index)
            assert func is not None
            func(store, SMALL, '{"payload": null}')
            func.post_return(store)
            held.append((store, instance))
        else:
            inst = core.instance(limits=limits)
            assert inst.run(SMALL, {"payload": None})[0] == 0
            held.append(inst)
    after = rss_mb()
    print(json.dumps({"mb_per_isolate": (after - before) / live}))
    box.close()


def bench_rss(rounds: int, live: int) -> None:
    got: dict[str, list[float]] = {"component": [], "core": []}
    for i in range(rounds * 2):
        kind = ("component", "core")[i % 2]
        done = subprocess.run(
            [sys.executable, "-m", "bench.core_module", "--rss-child", kind, "--live", str(live)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        got[kind].append(json.loads(done.stdout.strip().splitlines()[-1])["mb_per_isolate"])
    emit(
        "rss_mb_per_isolate",
        component={"min": round(min(got["component"]), 3), "p50": round(statistics.median(got["component"]), 3)},
        core={"min": round(min(got["core"]), 3), "p50": round(statistics.median(got["core"]), 3)},
        live=live,
        rounds=rounds,
        what=f"RSS delta / {live} live isolates, each instantiated and having run a small workflow (compiled "
        "and executed), in a fresh process per measurement (fresh pool slots), alternated",
    )


# -- save/restore of a suspended isolate (core module only) --------------------------------------------------

PARKED = textwrap.dedent(
    """
    def run(event, step):
        seen = step.do("load", lambda: list(range(1000)))
        table = {i: str(i) * 10 for i in range(20000)}
        approval = yield {"wait_for": "approval"}
        total = step.do("after", lambda: sum(seen) + len(table))
        return {"approved": approval, "total": total, "check": table[12345]}
    """
)
EXPECTED = {"approved": "yes", "total": sum(range(1000)) + 20000, "check": "12345" * 10}
PAGE = 65536


def _memory_bytes(inst: CoreInstance) -> bytes:
    size = inst.memory.data_len(inst.store)
    return ctypes.string_at(ctypes.addressof(inst.memory.data_ptr(inst.store).contents), size)


def restore(core: CoreSandbox, saved: bytes, journal: Any, position: int) -> CoreInstance:
    """A fresh instance (from the Wizer snapshot) with `saved` as its linear memory.

    `position` is the host's side of the isolate (its count of durable calls), saved with the memory."""
    inst = core.instance(journal)
    inst.act.position = position
    pages = len(saved) // PAGE
    have = inst.memory.size(inst.store)
    if pages > have:
        inst.memory.grow(inst.store, pages - have)
    ctypes.memmove(ctypes.addressof(inst.memory.data_ptr(inst.store).contents), saved, len(saved))
    return inst


def bench_save_restore(core: CoreSandbox, runs: int, directory: Path) -> None:
    wasm = core_wasm().read_bytes()
    saves: list[float] = []
    saves_zstd: list[float] = []
    loads: list[float] = []
    loads_zstd: list[float] = []
    resumes: list[float] = []
    replays: list[float] = []
    sizes: dict[str, int] = {}
    path = directory / "isolate.mem"
    zpath = directory / "isolate.mem.zst"
    compressor, decompressor = zstandard.ZstdCompressor(level=1), zstandard.ZstdDecompressor()
    pristine = _memory_bytes(core.instance())
    for _ in range(runs):
        journal = FastJournal()
        inst = core.instance(journal)
        status, text = inst.run(PARKED, {"payload": None})
        assert status == 2 and json.loads(text) == {"wait_for": "approval"}, (status, text)
        position = inst.act.position
        # Save: the whole linear memory (no wasm frame is live between exports), written and fsynced.
        started = time.perf_counter()
        saved = _memory_bytes(inst)
        with path.open("wb") as out:
            out.write(saved)
            out.flush()
            os.fsync(out.fileno())
        saves.append(time.perf_counter() - started)
        started = time.perf_counter()
        packed = compressor.compress(_memory_bytes(inst))
        with zpath.open("wb") as out:
            out.write(packed)
            out.flush()
            os.fsync(out.fileno())
        saves_zstd.append(time.perf_counter() - started)
        sizes = {
            "memory_bytes": len(saved),
            "zstd1_bytes": len(packed),
            "pages_changed_vs_snapshot": sum(
                1
                for p in range(0, len(saved), PAGE)
                if p >= len(pristine) or saved[p : p + PAGE] != pristine[p : p + PAGE]
            ),
        }
        del inst, saved  # evicted: the Store and its pool slot are gone
        gc.collect()
        # Restore from disk into a fresh instance and resume; the workflow goes on where it stopped.
        started = time.perf_counter()
        inst = restore(core, path.read_bytes(), journal, position)
        loads.append(time.perf_counter() - started)
        started = time.perf_counter()
        status, text = inst.resume("yes")
        resumes.append(time.perf_counter() - started)
        assert status == 0 and json.loads(text) == EXPECTED, (status, text)
        del inst
        started = time.perf_counter()
        inst = restore(core, decompressor.decompress(zpath.read_bytes()), journal, position)
        loads_zstd.append(time.perf_counter() - started)
        assert inst.resume("yes")[0] == 0
        del inst
        # What eviction costs today instead: replay from the top in a fresh isolate (journal answers).
        started = time.perf_counter()
        replay = core.instance(journal)
        assert replay.run(PARKED, {"payload": None})[0] == 2
        replays.append(time.perf_counter() - started)
        del replay
    # And in another process: the saved file alone (plus the module) resumes the workflow there.
    other = subprocess.run(
        [sys.executable, "-m", "bench.core_module", "--restore-child", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    resumed_elsewhere = other.returncode == 0 and json.loads(other.stdout.strip().splitlines()[-1]) == EXPECTED
    emit(
        "save_restore_suspended_isolate",
        **sizes,
        pages_in_snapshot=len(pristine) // PAGE,
        mutable_globals_in_module=mutable_globals(wasm),
        save_ms=summary(saves),
        save_zstd1_ms=summary(saves_zstd),
        restore_ms=summary(loads),
        restore_zstd1_ms=summary(loads_zstd),
        resume_to_result_ms=summary(resumes),
        replay_to_same_point_ms=summary(replays),
        resumed_correctly=True,
        resumed_in_another_process=resumed_elsewhere,
        what="a workflow suspended at an export boundary (a generator's yield) holding a 20,000-entry dict: "
        "its linear memory written to a file (fsync), the isolate dropped, a fresh instance restored from the "
        "file and resumed; replay = a fresh isolate re-running it from the top with the journal's answers",
    )


def restore_child(path: str) -> None:
    engine, settings = make_engine()
    core = CoreSandbox(engine, load_core_module(engine, settings), lambda s: 1 << 40)
    journal = FastJournal()
    journal.results[0] = json.dumps(list(range(1000)))  # the first step, as the journal would have it
    inst = restore(core, Path(path).read_bytes(), journal, 1)
    status, text = inst.resume("yes")
    assert status == 0, text
    print(text)


# -- main ----------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--live", type=int, default=50)
    parser.add_argument("--rss-child", choices=["component", "core"])
    parser.add_argument("--restore-child")
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.live)
        return
    if args.restore_child:
        restore_child(args.restore_child)
        return
    runs = 30 if args.quick else args.runs
    # Fresh isolates for the component too (no pool: the Sandbox's default keeps isolates instantiated ahead);
    # `pooled` has one, for the pre-instantiated pair, on the same engine and component.
    box = FirstLogSandbox(pool=0)
    pooled = FirstLogSandbox(box.component, box.engine, pool=2)
    try:
        core = CoreSandbox(box.engine, load_core_module(box.engine, box.settings), box._ticker.ticks)
        load = os.getloadavg()
        bench_instantiate(box, core, runs)
        bench_first_instruction(box, core, runs)
        bench_first_instruction_compiled(box, pooled, core, runs)
        bench_host_calls(box, core, 50 if args.quick else 200)
        bench_compute(box, core, 5 if args.quick else 15)
        bench_rss(1 if args.quick else 3, args.live)
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            bench_save_restore(core, 5 if args.quick else 20, Path(tmp))
        emit(
            "environment",
            cpus=os.cpu_count(),
            load_before=[round(x, 2) for x in load],
            load_after=[round(x, 2) for x in os.getloadavg()],
            wasmtime=version("wasmtime"),
            componentize_py=version("componentize-py"),
            core_versions=(cache_dir() / "tfcore.versions").read_text().strip(),
        )
    finally:
        pooled.close()
        box.close()


if __name__ == "__main__":
    main()
