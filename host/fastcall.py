"""Host functions whose WIT types are resolved once, not on every call.

wasmtime-py's `LinkerInstance.add_func` asks the C API for the function's parameter and result
types on every call, and its variant, record, option and result types ask again for their cases
and fields each time they convert a value. For the guest's small host interface that was most of
the cost of a host call (a `step.do` is two calls). `add_func` here registers the same kind of
callback, but resolves the function's types on its first call and keeps them, with the compound
types switched to subclasses that remember their cases and fields (types never change).

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

import ctypes
import functools
import itertools
import threading
from collections.abc import Callable
from typing import Any

from wasmtime import StoreContext, WasmtimeError
from wasmtime import _ffi as ffi
from wasmtime.component import _types as wit
from wasmtime.component._linker import LinkerInstance

HostFunc = Callable[..., Any]

_CALL_STATE = threading.local()


class TooLarge:
    """An argument the guest passed that is longer than the function's cap; it was not decoded."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __repr__(self) -> str:
        return f"TooLarge({self.size})"


Meter = Callable[[], None]


def set_meter(meter: Meter | None) -> None:
    """Call `meter()` at the end of each host call on this thread; it may raise WasmtimeError to trap."""
    _CALL_STATE.meter = meter


def _cap() -> int:
    cap: int = getattr(_CALL_STATE, "cap", 1 << 62)
    return cap


class _String(wit.String):
    def convert_from_c(self, c: Any) -> Any:
        size = int(c.of.string.size)
        if size > _cap():
            ffi.wasm_byte_vec_delete(ctypes.byref(c.of.string))
            return TooLarge(size)
        return super().convert_from_c(c)


class _Variant(wit.VariantType):
    """A variant type that also precomputes how to pick a case (same rules as `VariantLikeType._lower`)."""

    @functools.cached_property
    def cases(self) -> list[tuple[str, wit.ValType | None]]:
        return super().cases

    @functools.cached_property
    def _is_tagged(self) -> bool:
        return super()._tagged()

    def _tagged(self) -> bool:
        return self._is_tagged

    @functools.cached_property
    def _by_name(self) -> dict[str, wit.ValType | None]:
        return dict(self.cases)

    @functools.cached_property
    def _by_class(self) -> list[tuple[tuple[type, ...] | None, str, wit.ValType | None]]:
        picks: list[tuple[tuple[type, ...] | None, str, wit.ValType | None]] = []
        for name, ty in self.cases:
            classes: set[type] = set()
            if ty is not None:
                ty.add_classes(classes)
            picks.append((tuple(classes) if ty is not None else None, name, ty))
        return picks

    def convert_to_c(self, store: Any, val: Any, ptr: Any) -> None:
        if self._is_tagged:
            if not isinstance(val, wit.Variant):
                raise TypeError("expected Variant type")
            name, payload = val.tag, val.payload
            if name not in self._by_name:
                raise ValueError("value not valid for this variant")
            ty = self._by_name[name]
        else:
            for classes, case, case_type in self._by_class:
                if (val is None) if classes is None else isinstance(val, classes):
                    name, ty = case, case_type
                    break
            else:
                raise ValueError("value not valid for this variant")
            payload = val
        raw_ptr = None
        if ty is not None:
            raw = ffi.wasmtime_component_val_t()
            ty.convert_to_c(store, payload, ctypes.pointer(raw))
            raw_ptr = ffi.wasmtime_component_val_new(ctypes.byref(raw))
        contents = ptr.contents
        contents.kind = ffi.WASMTIME_COMPONENT_VARIANT
        contents.of.variant.discriminant = ffi.str_to_capi(name)
        contents.of.variant.val = raw_ptr

    def _lift(self, tag: str, ptr: Any) -> Any:
        if tag not in self._by_name:
            raise ValueError(f"tag {tag} not found in variant cases")
        ty = self._by_name[tag]
        if ty is None:
            return wit.Variant(tag) if self._is_tagged else None
        contents = ptr.contents
        payload = ty.convert_from_c(contents)
        contents.kind = ffi.WASMTIME_COMPONENT_BOOL
        contents.of.boolean = False
        ffi.wasmtime_component_val_delete(ptr)
        return wit.Variant(tag, payload) if self._is_tagged else payload


class _Record(wit.RecordType):
    @functools.cached_property
    def fields(self) -> list[tuple[str, wit.ValType]]:
        return super().fields


class _Option(wit.OptionType):
    @functools.cached_property
    def payload(self) -> wit.ValType:
        return super().payload


class _Result(wit.ResultType):
    @functools.cached_property
    def ok(self) -> wit.ValType | None:
        return super().ok

    @functools.cached_property
    def err(self) -> wit.ValType | None:
        return super().err


_VAL_SIZE = ctypes.sizeof(ffi.wasmtime_component_val_t)
_KIND_OFFSET = ffi.wasmtime_component_val_t.kind.offset
_PAYLOAD_OFFSET = ffi.wasmtime_component_val_t.of.offset
_KIND_U8 = ffi.WASMTIME_COMPONENT_U8.value


class _List(wit.ListType):
    @functools.cached_property
    def element(self) -> wit.ValType:
        return super().element

    @functools.cached_property
    def _bytes(self) -> bool:
        return isinstance(self.element, wit.U8)

    def convert_to_c(self, store: Any, val: Any, ptr: Any) -> None:
        if not (self._bytes and isinstance(val, bytes)):
            super().convert_to_c(store, val, ptr)
            return
        # list<u8> from bytes (WASI random, stream reads) without a Python call per byte: lay the
        # values out as wasmtime_component_val_t structs (kind byte at offset 0, u8 payload at the
        # union's offset) in one buffer and copy it in. Depends on wasmtime-py's ctypes layout,
        # which the offsets below are read from.
        size = len(val)
        raw = ffi.wasmtime_component_vallist_t()
        ffi.wasmtime_component_vallist_new_uninit(raw, size)
        if size:
            layout = bytearray(size * _VAL_SIZE)
            layout[_KIND_OFFSET::_VAL_SIZE] = bytes([_KIND_U8]) * size
            layout[_PAYLOAD_OFFSET::_VAL_SIZE] = val
            ctypes.memmove(raw.data, bytes(layout), len(layout))
        contents = ptr.contents
        contents.kind = ffi.WASMTIME_COMPONENT_LIST
        contents.of.list = raw

    def convert_from_c(self, c: Any) -> Any:
        size = int(c.of.tuple.size)
        if size > _cap():
            ffi.wasmtime_component_valtuple_delete(ctypes.byref(c.of.tuple))
            return TooLarge(size)
        return super().convert_from_c(c)


class _Tuple(wit.TupleType):
    @functools.cached_property
    def elements(self) -> list[wit.ValType]:
        return super().elements


_FROZEN: dict[type, type] = {
    wit.VariantType: _Variant,
    wit.RecordType: _Record,
    wit.OptionType: _Option,
    wit.ResultType: _Result,
    wit.ListType: _List,
    wit.TupleType: _Tuple,
    wit.String: _String,
}


def _freeze(ty: wit.ValType | None) -> None:
    """Switch `ty` and the types inside it to their caching subclasses."""
    if ty is None:
        return
    frozen = _FROZEN.get(type(ty))
    if frozen is not None:
        ty.__class__ = frozen
    children: list[wit.ValType | None] = []
    if isinstance(ty, wit.VariantType):
        children = [case for _, case in ty.cases]
    elif isinstance(ty, wit.RecordType):
        children = [field for _, field in ty.fields]
    elif isinstance(ty, wit.OptionType):
        children = [ty.payload]
    elif isinstance(ty, wit.ResultType):
        children = [ty.ok, ty.err]
    elif isinstance(ty, wit.ListType):
        children = [ty.element]
    elif isinstance(ty, wit.TupleType):
        children = list(ty.elements)
    for child in children:
        _freeze(child)


class _Entry:
    def __init__(self, fn: HostFunc, max_bytes: Callable[[], int]) -> None:
        self.fn = fn
        self.max_bytes = max_bytes
        self.params: list[wit.ValType] | None = None
        self.result: wit.ValType | None = None
        self.lock = threading.Lock()

    def resolve(self, ty_raw: Any) -> list[wit.ValType]:
        with self.lock:
            if self.params is None:
                func_type = wit.FuncType._from_ptr(ty_raw, owner=True)  # borrowed: never deleted here
                params = [ty for _, ty in func_type.params]
                result = func_type.result
                for ty in params:
                    _freeze(ty)
                _freeze(result)
                self.result = result
                self.params = params
            return self.params


_ENTRIES: dict[int, _Entry] = {}
_KEYS = itertools.count(1)


def _error_pointer(error: WasmtimeError) -> int:
    return ctypes.cast(error._consume(), ctypes.c_void_p).value or 0


def _call(env: int, context: Any, ty_raw: Any, args: Any, nargs: int, results: Any, nresults: int) -> int:
    store = StoreContext(context)
    try:
        entry = _ENTRIES[env]
        _CALL_STATE.cap = entry.max_bytes()
        params = entry.params if entry.params is not None else entry.resolve(ty_raw)
        if len(params) != nargs or nresults != (0 if entry.result is None else 1):
            raise WasmtimeError("host function called with an unexpected signature")
        value = entry.fn(store, *[ty.convert_from_c(args[i]) for i, ty in enumerate(params)])
        if entry.result is not None:
            entry.result.convert_to_c(store, value, results)
        elif value is not None:
            raise WasmtimeError("host function without a result returned a value")
        meter: Meter | None = getattr(_CALL_STATE, "meter", None)
        if meter is not None:
            meter()
    except WasmtimeError as error:
        return _error_pointer(error)
    except BaseException as error:
        return _error_pointer(WasmtimeError(f"host function failed: {type(error).__name__}: {error}"))
    finally:
        store._invalidate()
    return 0


def _finalize(env: int) -> None:
    _ENTRIES.pop(env, None)


_CALL = ffi.wasmtime_component_func_callback_t(_call)
_FINALIZE = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(_finalize)


def _unbounded() -> int:
    return 1 << 62


def add_func(instance: LinkerInstance, name: str, fn: HostFunc, max_bytes: Callable[[], int] = _unbounded) -> None:
    """Like `instance.add_func(name, fn)`: `fn(store, *args)` gets and returns Python values.

    A string or list argument (at any depth) longer than `max_bytes()` (asked on each call, so it
    can follow the calling activation's limits) arrives as `TooLarge`.
    """
    key = next(_KEYS)
    _ENTRIES[key] = _Entry(fn, max_bytes)
    encoded = name.encode()
    error = ffi.wasmtime_component_linker_instance_add_func(
        instance.ptr(), ctypes.create_string_buffer(encoded), len(encoded), _CALL, key, _FINALIZE
    )
    if error:
        _ENTRIES.pop(key, None)
        raise WasmtimeError._from_ptr(error)
