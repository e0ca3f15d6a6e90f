"""Every use of wasmtime-py's private names, in one place.

Mirrors wasmtime-py 50.0.x (pyproject pins `wasmtime>=50,<51`). Each use below says which part of
50.0.x it depends on and why the public API does not suffice. tests/host/test_wasmtime_canary.py
names each private symbol used here and fails, pointing at this module, if an upgrade removes or
reshapes one; no other module under host/ may touch wasmtime-py's internals (the canary checks that
too).

What is here:
- the pooling allocator (no Python API in 50.0.x; its C API is in the ctypes bindings), and its
  `pagemap_scan` option, which the C API does not reach (one byte of wasmtime's Rust struct, found
  by a fingerprint of the fields around it and left alone if the fingerprint does not match);
- the epoch deadline callback (idem);
- the C side of host/fastcall.py's host functions (registered through the C API with their WIT
  types resolved once), and the caching subclasses of the component value types that lift and
  lower their arguments (with a size cap on strings and lists);
- calling the guest's exports with string arguments (`StringExport`);
- building a `Record` from fields, and reading what kind of trap ended a call;
- the C functions of a microsecond that keep the GIL (`hold_gil_in_short_calls`).
"""

from __future__ import annotations

import ctypes
import enum
import functools
import threading
from collections.abc import Callable
from typing import Any

# 50.0.x: `wasmtime._ffi` re-exports the ctypes bindings of the C API (`_bindings.py`), needed for
# the pooling allocator, the epoch deadline callback and `wasmtime_component_linker_instance_add_func`
# with our own callback, none of which wasmtime-py wraps in a way we can use.
# `wasmtime.component._types` holds the value types' lifting and lowering (`convert_from_c`,
# `convert_to_c`, `_tagged`, `_lift`) that the subclasses below override; the public names
# (`wasmtime.component.VariantType`, ...) are the same classes.
import wasmtime
from wasmtime import StoreContext, WasmtimeError
from wasmtime import _bindings as bindings
from wasmtime import _ffi as ffi
from wasmtime.component import LinkerInstance, Record
from wasmtime.component import _types as wit

# -- the pooling allocator ---------------------------------------------------------------------------


def configure_pooling(config: wasmtime.Config, pooling: dict[str, int]) -> bool:
    """Switch `config` to the pooling allocator with these sizes; True if `pagemap_scan` was switched on.

    50.0.x: `wasmtime.Config` has no pooling setting; the C API's `wasmtime_pooling_allocation_*`
    functions are in the bindings (`config.ptr()` is the `wasm_config_t*`).
    """
    instances = pooling["instances"]
    per_component = pooling["core_instances_per_component"]
    cfg = ffi.wasmtime_pooling_allocation_config_new()
    try:
        pagemap = bool(pooling.get("pagemap_scan")) and _enable_pagemap_scan(cfg)
        ffi.wasmtime_pooling_allocation_config_total_component_instances_set(cfg, instances)
        ffi.wasmtime_pooling_allocation_config_max_core_instances_per_component_set(cfg, per_component)
        ffi.wasmtime_pooling_allocation_config_total_core_instances_set(cfg, instances * per_component)
        ffi.wasmtime_pooling_allocation_config_max_memories_per_component_set(cfg, 8)
        ffi.wasmtime_pooling_allocation_config_total_memories_set(cfg, instances * 2)
        ffi.wasmtime_pooling_allocation_config_max_tables_per_component_set(cfg, per_component)
        ffi.wasmtime_pooling_allocation_config_total_tables_set(cfg, instances * per_component)
        ffi.wasmtime_pooling_allocation_config_total_stacks_set(cfg, instances)
        ffi.wasmtime_pooling_allocation_config_max_memory_size_set(cfg, pooling["max_memory_bytes"])
        ffi.wasmtime_pooling_allocation_config_linear_memory_keep_resident_set(cfg, pooling["keep_resident_bytes"])
        ffi.wasmtime_pooling_allocation_config_table_keep_resident_set(cfg, pooling["keep_resident_bytes"])
        ffi.wasmtime_pooling_allocation_config_max_unused_warm_slots_set(cfg, pooling["warm_slots"])
        ffi.wasmtime_pooling_allocation_strategy_set(config.ptr(), cfg)
    finally:
        ffi.wasmtime_pooling_allocation_config_delete(cfg)
    return pagemap


# `PoolingAllocationConfig::pagemap_scan(Enabled)` (wasmtime 37 and later; off by default, not in the C API):
# when an isolate's slot is reset, the pages the guest only read (Linux's PAGEMAP_SCAN ioctl, kernel 6.7 and
# later, tells them apart) are not copied back from the image; the rest of `keep_resident` is.
# 50.0.1's C API boxes the Rust struct as `wasmtime_pooling_allocation_config_t`; rustc laid it out with
# `linear_memory_keep_resident` and `table_keep_resident` (usize) at 104 and 112, `max_unused_warm_slots` (u32) at
# 128, then `memory_protection_keys: Enabled` at 132 and `pagemap_scan: Enabled` at 133 (`Enabled` is a one-byte
# enum: Auto 0, Yes 1, No 2; both default to No). The layout is not a contract: `_enable_pagemap_scan` writes the
# byte only if the fields the C API can set sit where this expects them. The canary test checks the fingerprint,
# and that the byte does what it should (in a fresh process, a used slot keeps MiBs less resident with it).
# (C API setter, offset, size, a sentinel value unlike any default): each field set through its setter must read back
# at its offset.
PAGEMAP_FINGERPRINT = (
    (ffi.wasmtime_pooling_allocation_config_linear_memory_keep_resident_set, 104, 8, 0x0000_0011_1111_1111),
    (ffi.wasmtime_pooling_allocation_config_table_keep_resident_set, 112, 8, 0x0000_0022_2222_2222),
    (ffi.wasmtime_pooling_allocation_config_max_unused_warm_slots_set, 128, 4, 0x3333_3333),
)
MPK_OFFSET = 132
PAGEMAP_SCAN_OFFSET = 133
ENABLED_AUTO, ENABLED_NO = 0, 2


def pagemap_fingerprint_matches(cfg: Any) -> bool:
    """Set the fingerprint's fields of a fresh pooling config `cfg` and check they land where expected."""
    for setter, _, _, value in PAGEMAP_FINGERPRINT:
        setter(cfg, value)
    raw = _config_bytes(cfg, PAGEMAP_SCAN_OFFSET + 1)
    fields = all(
        int.from_bytes(raw[offset : offset + size], "little") == value for _, offset, size, value in PAGEMAP_FINGERPRINT
    )
    return fields and raw[MPK_OFFSET] == ENABLED_NO and raw[PAGEMAP_SCAN_OFFSET] == ENABLED_NO


def _enable_pagemap_scan(cfg: Any) -> bool:
    """`pagemap_scan(Enabled::Auto)` on a fresh pooling config (wasmtime uses it where the kernel has the ioctl)."""
    if not pagemap_fingerprint_matches(cfg):
        return False
    ctypes.c_ubyte.from_address(_config_address(cfg) + PAGEMAP_SCAN_OFFSET).value = ENABLED_AUTO
    return True


def _config_address(cfg: Any) -> int:
    address = ctypes.cast(cfg, ctypes.c_void_p).value
    if address is None:
        raise WasmtimeError("a null pooling allocation config")
    return address


def _config_bytes(cfg: Any, size: int) -> bytes:
    return ctypes.string_at(_config_address(cfg), size)


# -- short calls keep the GIL ------------------------------------------------------------------------

# C functions that take a microsecond, touch only the calling thread's Store or plain memory, never call back into
# Python and never wait on a lock that a thread waiting for the GIL could hold.
HOLD_GIL = (
    "wasmtime_context_get_fuel",
    "wasmtime_context_set_fuel",
    "wasmtime_context_set_epoch_deadline",
    "wasmtime_store_limiter",
    "wasm_byte_vec_delete",
    "wasmtime_component_val_new",
    "wasmtime_component_val_delete",
    "wasmtime_component_vallist_new_uninit",
    # What `component.Func.__call__` asks of an export's type on every call (reads of the component's types).
    "wasmtime_component_func_type",
    "wasmtime_component_func_type_param_count",
    "wasmtime_component_func_type_param_nth",
    "wasmtime_component_func_type_result",
    "wasmtime_component_func_type_delete",
    "wasmtime_component_result_type_ok",
    "wasmtime_component_result_type_err",
    "wasmtime_component_result_type_delete",
    "wasmtime_component_record_type_field_count",
    "wasmtime_component_record_type_field_nth",
    "wasmtime_component_record_type_delete",
    "wasmtime_component_valtype_delete",
)


@functools.cache
def hold_gil_in_short_calls() -> None:
    """Make the HOLD_GIL functions keep the GIL while they run (once per process; every engine's calls).

    50.0.x: the bindings load every C function from a `ctypes.CDLL` (`ffi.dll`), so each call lets go of the GIL
    and takes it back. For a call of a microsecond, taking it back is what costs: while another thread runs
    Python (the server's event loop, another activation) the caller waits for it to yield, up to the switch
    interval. Measured inside activations on a machine of this kind: `get_fuel` 14 us a call against 1.6 us
    outside them, `set_limits` 120-190 us against 2 us. Each is rebound (the bindings' `_<name>`, which their
    wrappers call) to the same function of the same library loaded as a `ctypes.PyDLL`, which keeps the GIL.
    Calls that run wasm, instantiate or drop a Store still let it go.
    """
    library = ctypes.PyDLL(ffi.dll._name)
    for name in HOLD_GIL:
        released = getattr(bindings, f"_{name}")
        held = getattr(library, name)
        held.restype, held.argtypes = released.restype, released.argtypes
        setattr(bindings, f"_{name}", held)


# -- the fuel counter --------------------------------------------------------------------------------


class FuelCounter:
    """A Store's fuel counter, read and written with one C call each (a step's metering reads it several times).

    50.0.x: `Store.get_fuel` allocates a `c_uint64` and goes through two wrappers on every call; this keeps one
    buffer and calls the bindings' `_wasmtime_context_get_fuel`/`_set_fuel` (rebound to keep the GIL by
    `hold_gil_in_short_calls`). `Store._context()` raises once the Store is closed, as `get_fuel` does.
    """

    __slots__ = ("_out", "_store", "_value")

    def __init__(self, store: wasmtime.Store) -> None:
        self._store = store
        self._value = ctypes.c_uint64(0)
        self._out = ctypes.byref(self._value)

    def get(self) -> int:
        error = bindings._wasmtime_context_get_fuel(self._store._context(), self._out)
        if error:
            raise WasmtimeError._from_ptr(error)
        return int(self._value.value)

    def set(self, fuel: int) -> None:
        error = bindings._wasmtime_context_set_fuel(self._store._context(), fuel)
        if error:
            raise WasmtimeError._from_ptr(error)


# -- the epoch deadline callback ---------------------------------------------------------------------

# 50.0.x: the C signature of `wasmtime_store_epoch_deadline_callback`'s callback (the bindings declare
# it inline in the argtypes, not as a named type).
_DEADLINE_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_size_t,
    ctypes.POINTER(ffi.wasmtime_context_t),
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_uint64),
    ctypes.POINTER(ffi.wasmtime_update_deadline_kind_t),
)
_NO_FINALIZER = ctypes.cast(0, ctypes.CFUNCTYPE(None, ctypes.c_void_p))
# WASMTIME_UPDATE_DEADLINE_CONTINUE: keep running with the new deadline.
_CONTINUE = 0
# Part of the trap message, so that `trap_kind` reads the callback's trap as an interrupt.
_DEADLINE_MESSAGE = b"tenantflow: deadline reached (interrupt)"


class EpochCallback:
    """Re-arms a store's epoch deadline: `ticks_left()` > 0 lets the guest run that many more ticks, 0 traps.

    Compiled wasm caches the deadline it saw on entry to a function and rereads it only once the
    cached value has passed, so lowering a store's deadline from a host call (e.g. when a step body
    with a short `timeout` starts) is not seen by a loop already running. Re-arming in short slices
    through this callback bounds that staleness to one slice. One instance serves many stores; keep
    it alive as long as they live.

    50.0.x: `wasmtime.Store` offers only `set_epoch_deadline`; the callback is the C API's
    `wasmtime_store_epoch_deadline_callback`, reached through the bindings.
    """

    def __init__(self, ticks_left: Callable[[], int]) -> None:
        self._ticks_left = ticks_left
        self._fn = _DEADLINE_CALLBACK(self._on_deadline)

    def install(self, store: wasmtime.Store) -> None:
        ffi.wasmtime_store_epoch_deadline_callback(store.ptr(), self._fn, None, _NO_FINALIZER)

    def _on_deadline(self, context: Any, env: Any, delta: Any, kind: Any) -> int:
        try:
            ticks = self._ticks_left()
        except BaseException:
            ticks = 0
        if ticks <= 0:
            error = ffi.wasmtime_error_new(_DEADLINE_MESSAGE)
            return ctypes.cast(error, ctypes.c_void_p).value or 0
        delta[0] = ticks
        kind[0] = _CONTINUE
        return 0


# -- traps -------------------------------------------------------------------------------------------


class TrapKind(enum.Enum):
    """What ended a call into the guest with a `WasmtimeError`."""

    OUT_OF_FUEL = "out of fuel"
    INTERRUPT = "interrupt"
    STACK_OVERFLOW = "stack overflow"
    MEMORY = "memory"
    OTHER = "other"


def trap_kind(error: Exception) -> TrapKind:
    """The kind of trap, read from its message.

    wasmtime's C API has trap codes (`wasmtime_trap_code`), but only for a `wasm_trap_t`, which core
    wasm calls return; a component call (`wasmtime_component_func_call`) returns a `wasmtime_error_t`,
    and 50.0.x's C API has no way from that to the trap code. So the text is what there is; the
    phrases are wasmtime's `Trap` display strings (wasmtime 37-50): "all fuel consumed by
    WebAssembly", "interrupt", "call stack exhausted", and memory failures that are not
    "out of bounds memory access" (a guest bug, not a limit).
    """
    text = str(error)
    if "all fuel consumed" in text:
        return TrapKind.OUT_OF_FUEL
    if "interrupt" in text:
        return TrapKind.INTERRUPT
    if "call stack exhausted" in text:
        return TrapKind.STACK_OVERFLOW
    if "memory" in text.lower() and "out of bounds" not in text:
        return TrapKind.MEMORY
    return TrapKind.OTHER


# -- values ------------------------------------------------------------------------------------------


def record(**fields: Any) -> Record:
    """A WIT record value with these fields.

    50.0.x: `Record()` takes no fields; lowering reads the record type's field names as attributes
    of the value (`RecordType.convert_to_c`), so a plain attribute bag is what it expects.
    """
    value = Record()
    vars(value).update(fields)
    return value


class TooLarge:
    """An argument the guest passed that is longer than the function's cap; it was not decoded."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __repr__(self) -> str:
        return f"TooLarge({self.size})"


# The cap on strings and lists lifted on this thread, set by host/fastcall.py's callback before lifting.
_LIFT = threading.local()


def _cap() -> int:
    cap: int = getattr(_LIFT, "cap", 1 << 62)
    return cap


def _gil_holding(library: str | None, name: str, argtypes: tuple[Any, ...], restype: Any) -> Any:
    """C function `name` of `library` (None: the process's own, libc), called with the GIL held: a `ctypes.PyDLL`
    function, typed here. A `CDLL` one (`ctypes.memmove`, the bindings') lets go of the GIL for the call and takes
    it back after, which inside a busy server means waiting for another thread to yield it (up to the switch
    interval) for a copy of a few bytes: measured in a fan-out of ten-step instances, activation threads spent ~7%
    of their time waiting there, lowering host calls' results."""
    fn = getattr(ctypes.PyDLL(library), name)
    fn.argtypes, fn.restype = argtypes, restype
    return fn


# libc's memmove, for the values of a list<u8>.
_memmove = _gil_holding(None, "memmove", (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t), ctypes.c_void_p)
# The C API's `wasm_byte_vec_new` (a new vector holding a copy of the bytes), typed to take a `bytes` as it is: one C
# call where `ffi.str_to_capi` makes three and copies twice (the bindings' `_wasm_byte_vec_new` takes a pointer to
# `wasm_byte_t`).
_byte_vec_new = _gil_holding(
    ffi.dll._name, "wasm_byte_vec_new", (ctypes.POINTER(ffi.wasm_byte_vec_t), ctypes.c_size_t, ctypes.c_char_p), None
)


def _byte_vec(text: str) -> Any:
    """`text` as a fresh `wasm_byte_vec_t` (what wasmtime takes ownership of): `ffi.str_to_capi` in one C call."""
    return _bytes_vec(text.encode())


def _bytes_vec(data: bytes) -> Any:
    vec = ffi.wasm_byte_vec_t()
    _byte_vec_new(ctypes.byref(vec), len(data), data)
    return vec


class _String(wit.String):
    # 50.0.x: `String.convert_from_c` decodes `c.of.string` (a `wasm_byte_vec_t` it owns, deleted after) to a
    # str, and `convert_to_c` sets the value's kind and a fresh byte vector. Both here copy the bytes once.
    def convert_from_c(self, c: Any) -> Any:
        vec = c.of.string
        size = int(vec.size)
        text = TooLarge(size) if size > _cap() else ctypes.string_at(vec.data, size).decode()
        bindings._wasm_byte_vec_delete(ctypes.byref(vec))
        return text

    def convert_to_c(self, store: Any, val: Any, ptr: Any) -> None:
        if not isinstance(val, str):
            raise TypeError("expected string type")
        contents = ptr.contents
        contents.kind = ffi.WASMTIME_COMPONENT_STRING
        contents.of.string = _byte_vec(val)


class _Variant(wit.VariantType):
    """A variant type that also precomputes how to pick a case (same rules as 50.0.x's `VariantLikeType`)."""

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

    @functools.cached_property
    def _by_type(self) -> dict[type, tuple[bytes, wit.ValType | None]]:
        """An untagged variant's case for a value of exactly this class (the first case that takes it, as in
        `_by_class`) and its name's bytes; a value of a subclass is looked up in `_by_class`."""
        picks: dict[type, tuple[bytes, wit.ValType | None]] = {}
        for classes, name, ty in self._by_class:
            for cls in (type(None),) if classes is None else classes:
                picks.setdefault(cls, (name.encode(), ty))
        return picks

    # 50.0.x: mirrors `VariantLikeType.convert_to_c` (the payload lowered into a fresh
    # `wasmtime_component_val_t`, the case name as a `wasm_name_t`).
    def convert_to_c(self, store: Any, val: Any, ptr: Any) -> None:
        if self._is_tagged:
            if not isinstance(val, wit.Variant):
                raise TypeError("expected Variant type")
            name, payload = val.tag, val.payload
            if name not in self._by_name:
                raise ValueError("value not valid for this variant")
            tag, ty = name.encode(), self._by_name[name]
        else:
            pick = self._by_type.get(type(val))
            if pick is None:
                for classes, case, case_type in self._by_class:
                    if (val is None) if classes is None else isinstance(val, classes):
                        pick = case.encode(), case_type
                        break
                else:
                    raise ValueError("value not valid for this variant")
            tag, ty = pick
            payload = val
        raw_ptr = None
        if ty is not None:
            raw = ffi.wasmtime_component_val_t()
            ty.convert_to_c(store, payload, ctypes.pointer(raw))
            raw_ptr = bindings._wasmtime_component_val_new(ctypes.byref(raw))
        variant = ptr.contents.of.variant
        ptr.contents.kind = ffi.WASMTIME_COMPONENT_VARIANT
        variant.discriminant = _bytes_vec(tag)
        variant.val = raw_ptr

    # 50.0.x: mirrors `VariantType.convert_from_c` (the case name is a `wasm_name_t` the lift deletes).
    def convert_from_c(self, c: Any) -> Any:
        variant = c.of.variant
        name = variant.discriminant
        tag = ctypes.string_at(name.data, name.size).decode()
        bindings._wasm_byte_vec_delete(ctypes.byref(name))
        return self._lift(tag, variant.val)

    # 50.0.x: mirrors `VariantLikeType._lift` (the payload's val is emptied, then deleted).
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
        bindings._wasmtime_component_val_delete(ptr)
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


# 50.0.x: the ctypes layout of `wasmtime_component_val_t` (a kind byte, then a union).
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
        # values out as wasmtime_component_val_t structs (kind byte, u8 payload at the union's
        # offset) in one buffer and copy it in.
        size = len(val)
        raw = ffi.wasmtime_component_vallist_t()
        ffi.wasmtime_component_vallist_new_uninit(raw, size)
        if size:
            layout = bytearray(size * _VAL_SIZE)
            layout[_KIND_OFFSET::_VAL_SIZE] = bytes([_KIND_U8]) * size
            layout[_PAYLOAD_OFFSET::_VAL_SIZE] = val
            _memmove(raw.data, bytes(layout), len(layout))
        contents = ptr.contents
        contents.kind = ffi.WASMTIME_COMPONENT_LIST
        contents.of.list = raw

    # 50.0.x: `ListType.convert_from_c` reads the list through `c.of.tuple` (same layout as `of.list`).
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
    """Switch `ty` and the types inside it to their caching subclasses (types never change)."""
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


# -- calling the guest's exports ----------------------------------------------------------------------


class StringExport:
    """Calls of one export whose parameters are all strings (the guest's `run`, `run-compiled`, `check`), its
    result type read once: the same for every isolate of the component.

    50.0.x: `component.Func.__call__` reads the function's type through the C API on every call (a new FuncType,
    its parameter and result types as new Python objects), lowers each string with `ffi.str_to_capi` (two copies,
    the GIL let go for one), then calls `wasmtime_component_func_call` through `_enter.enter_wasm`. This does the
    same with the result type kept, each argument lowered by `_byte_vec` (one copy, the GIL kept; wasmtime checks
    each value's kind against the parameter's type) and the error read as `enter_wasm` reads it, less its check of
    wasmtime-py's LAST_EXCEPTION, which only its own host functions set (host/fastcall.py returns ours itself).
    Measured on a one-step activation 10 ms apart: 0.21 ms of CPU from the call to the guest's entry, ~0.07 after.
    """

    def __init__(self) -> None:
        self._result: wit.ValType | None = None
        self._typed = False

    def __call__(self, func: Any, store: wasmtime.Store, *args: str) -> Any:
        if not self._typed:
            self._result = func.type(store).result
            self._typed = True
        result_type = self._result
        values = (ffi.wasmtime_component_val_t * len(args))()
        lowered = 0
        try:
            for value, text in zip(values, args, strict=True):
                value.kind = ffi.WASMTIME_COMPONENT_STRING
                value.of.string = _byte_vec(text)
                lowered += 1
            result = ffi.wasmtime_component_val_t()
            error = ffi.wasmtime_component_func_call(
                ctypes.byref(func._func),
                store._context(),
                values,
                lowered,
                None if result_type is None else ctypes.byref(result),
                0 if result_type is None else 1,
            )
            if error:
                raise WasmtimeError._from_ptr(error)
            return None if result_type is None else result_type.convert_from_c(result)
        finally:
            for i in range(lowered):
                ffi.wasmtime_component_val_delete(ctypes.byref(values[i]))


# -- host functions through the C API ----------------------------------------------------------------
#
# 50.0.x: `LinkerInstance.add_func` asks the C API for the function's type on every call and lifts
# every argument without a cap; host/fastcall.py registers the same kind of C callback itself
# (`wasmtime_component_linker_instance_add_func`) with these helpers.

# `callback(env, context, type, args, nargs, results, nresults) -> wasmtime_error_t* or 0`.
RawHostFunc = Callable[[int, Any, Any, Any, int, Any, int], int]


def host_callback(fn: RawHostFunc) -> Any:
    """`fn` as the C API's `wasmtime_component_func_callback_t` (keep the result alive while it is linked)."""
    return ffi.wasmtime_component_func_callback_t(fn)


def host_finalizer(fn: Callable[[int], None]) -> Any:
    """`fn(env)` as the finalizer the C API calls when the linker lets go of a host function."""
    return ctypes.CFUNCTYPE(None, ctypes.c_void_p)(fn)


def link_host_func(instance: LinkerInstance, name: str, callback: Any, env: int, finalizer: Any) -> None:
    """Define `name` in `instance` as `callback`, which receives `env`; raises WasmtimeError if refused."""
    encoded = name.encode()
    error = ffi.wasmtime_component_linker_instance_add_func(
        instance.ptr(), ctypes.create_string_buffer(encoded), len(encoded), callback, env, finalizer
    )
    if error:
        raise WasmtimeError._from_ptr(error)


def signature(ty_raw: Any) -> tuple[list[wit.ValType], wit.ValType | None]:
    """The parameter and result types of a host function from the callback's type pointer, switched
    to the caching subclasses (resolve once per function: they never change).

    50.0.x: `FuncType._from_ptr(ptr, owner=...)`; `owner=True` because the type is borrowed from the
    caller and must never be deleted here.
    """
    func_type = wit.FuncType._from_ptr(ty_raw, owner=True)
    params = [ty for _, ty in func_type.params]
    result = func_type.result
    for ty in params:
        _freeze(ty)
    _freeze(result)
    return params, result


def lift(params: list[wit.ValType], args: Any) -> list[Any]:
    """The Python values of a callback's arguments (`args` is its `wasmtime_component_val_t*`).

    50.0.x: `ValType.convert_from_c` takes the C value and owns what it points to.
    """
    return [ty.convert_from_c(args[i]) for i, ty in enumerate(params)]


def lower(ty: wit.ValType, store: StoreContext, value: Any, results: Any) -> None:
    """Write `value` into a callback's result slot (50.0.x: `ValType.convert_to_c`)."""
    ty.convert_to_c(store, value, results)


def set_lift_cap(cap: int) -> None:
    """Strings and lists longer than `cap` lifted on this thread (until the next call) arrive as `TooLarge`."""
    _LIFT.cap = cap


def release(store: StoreContext) -> None:
    """End a callback's `StoreContext` (50.0.x: `_invalidate`, as wasmtime-py's own trampoline does)."""
    store._invalidate()


def error_pointer(error: WasmtimeError) -> int:
    """The `wasmtime_error_t*` of `error`, handed over to wasmtime as a callback's owned return value.

    50.0.x: `_consume` takes the pointer without the Python object deleting it.
    """
    return ctypes.cast(error._consume(), ctypes.c_void_p).value or 0
