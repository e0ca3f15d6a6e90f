"""Host functions whose WIT types are resolved once, not on every call.

wasmtime-py's `LinkerInstance.add_func` asks the C API for the function's parameter and result
types on every call, and its variant, record, option and result types ask again for their cases
and fields each time they convert a value. For the guest's small host interface that was most of
the cost of a host call (a `step.do` is two calls). `add_func` here registers the same kind of
callback, but resolves the function's types on its first call and keeps them, with the compound
types switched to subclasses that remember their cases and fields (types never change; the
wasmtime-py internals this needs are in host/_wasmtime.py).

The cached types assume that one linker serves one component, as a `Sandbox`'s does.

Two more jobs for the sandbox's limits: each function has a cap on the strings (and lists) it lifts
from the guest, and a string longer than the cap reaches the host function as `TooLarge(size)`,
never decoded into a Python str. Note that wasmtime itself has already copied the string out of
the guest's memory by then (its dynamic host functions lift every argument before the callback
runs): that one copy is bounded by the guest's memory cap; the decode (two more copies) is not done.
And `set_meter` installs a per-thread hook called at the end of each host call (after the result
is lowered), so that the sandbox can charge the host's CPU time to the activation's fuel.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

from tenantflow.host import _wasmtime
from tenantflow.host._wasmtime import TooLarge
from wasmtime import StoreContext, WasmtimeError
from wasmtime.component import LinkerInstance, ValType

__all__ = ["HostFunc", "Meter", "TooLarge", "add_func", "set_meter"]

HostFunc = Callable[..., Any]

_CALL_STATE = threading.local()

Meter = Callable[[], None]


def set_meter(meter: Meter | None) -> None:
    """Call `meter()` at the end of each host call on this thread; it may raise WasmtimeError to trap."""
    _CALL_STATE.meter = meter


class _Entry:
    def __init__(self, fn: HostFunc, max_bytes: Callable[[], int]) -> None:
        self.fn = fn
        self.max_bytes = max_bytes
        self.params: list[ValType] | None = None
        self.result: ValType | None = None
        self.lock = threading.Lock()

    def resolve(self, ty_raw: Any) -> list[ValType]:
        with self.lock:
            if self.params is None:
                params, self.result = _wasmtime.signature(ty_raw)
                self.params = params
            return self.params


_ENTRIES: dict[int, _Entry] = {}
_KEYS = itertools.count(1)


def _call(env: int, context: Any, ty_raw: Any, args: Any, nargs: int, results: Any, nresults: int) -> int:
    store = StoreContext(context)
    try:
        entry = _ENTRIES[env]
        _wasmtime.set_lift_cap(entry.max_bytes())
        params = entry.params if entry.params is not None else entry.resolve(ty_raw)
        if len(params) != nargs or nresults != (0 if entry.result is None else 1):
            raise WasmtimeError("host function called with an unexpected signature")
        value = entry.fn(store, *_wasmtime.lift(params, args))
        if entry.result is not None:
            _wasmtime.lower(entry.result, store, value, results)
        elif value is not None:
            raise WasmtimeError("host function without a result returned a value")
        meter: Meter | None = getattr(_CALL_STATE, "meter", None)
        if meter is not None:
            meter()
    except WasmtimeError as error:
        return _wasmtime.error_pointer(error)
    except BaseException as error:
        return _wasmtime.error_pointer(WasmtimeError(f"host function failed: {type(error).__name__}: {error}"))
    finally:
        _wasmtime.release(store)
    return 0


def _finalize(env: int) -> None:
    _ENTRIES.pop(env, None)


_CALL = _wasmtime.host_callback(_call)
_FINALIZE = _wasmtime.host_finalizer(_finalize)


def _unbounded() -> int:
    return 1 << 62


def add_func(instance: LinkerInstance, name: str, fn: HostFunc, max_bytes: Callable[[], int] = _unbounded) -> None:
    """Like `instance.add_func(name, fn)`: `fn(store, *args)` gets and returns Python values.

    A string or list argument (at any depth) longer than `max_bytes()` (asked on each call, so it
    can follow the calling activation's limits) arrives as `TooLarge`.
    """
    key = next(_KEYS)
    _ENTRIES[key] = _Entry(fn, max_bytes)
    try:
        _wasmtime.link_host_func(instance, name, _CALL, key, _FINALIZE)
    except WasmtimeError:
        _ENTRIES.pop(key, None)
        raise
