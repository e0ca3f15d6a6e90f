"""The WASI the guest really needs, and nothing that can block past the activation's deadline.

Instead of wasmtime's full WASI (`Linker.add_wasip2`), whose poll blocks inside the host where epoch
interruption does not reach, the sandbox links this module's implementation of exactly the WASI
imports the guest component has (`Component.type.imports`):

- clocks: wall clock and monotonic clock read the caller's clocks (an activation answers the instance's
  logical time outside step bodies: deterministic replay); a clock pollable is "ready at T" on the
  host's monotonic clock.
- poll / block: wait through `WasiCaller.wait_until`, which never waits past the activation's (or
  the step's) deadline, observes cancellation every CHECK_S and charges the wait to the fuel.
- random: the caller's bytes (an activation: a stream from the instance's seed outside step bodies, the
  host's CSPRNG inside them), at most MAX_RANDOM_BYTES per call (refused before allocating).
- streams: stdout/stderr writes go to the activation's bounded log; stdin is closed; every stream
  pollable is always ready.
- cli: no environment, no arguments, no terminal; `exit` ends the activation (GuestExit).
- filesystem: no preopened directory, so no descriptor can exist; descriptor methods trap.
- sockets: creating a socket or resolving a name answers access-denied; other methods trap.

Every other import of the component is linked to a function that ends the activation with
InvalidHostCall, so a guest that reaches one fails with a named error instead of failing to link.
Resources are declared in the interface that defines them only; the interfaces that `use` them
refer to that definition (wasmtime type-checks resource imports where they are defined).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import wasmtime
from tenantflow.host._wasmtime import record
from tenantflow.host.errors import HostRefusal, invalid_call
from tenantflow.host.failures import FailureName
from tenantflow.host.limits import MAX_POLL_LIST, MAX_RANDOM_BYTES, MAX_STREAM_WRITE_BYTES
from wasmtime.component import (
    Component,
    ComponentInstanceType,
    FuncType,
    Record,
    ResourceAny,
    ResourceHost,
    ResourceType,
    Variant,
)

# Host resource type ids; each resource is declared in the interface that defines it.
_DEFINED: dict[str, dict[str, int]] = {
    "wasi:io/poll": {"pollable": 1},
    "wasi:io/error": {"error": 2},
    "wasi:io/streams": {"input-stream": 3, "output-stream": 4},
    "wasi:cli/terminal-input": {"terminal-input": 5},
    "wasi:cli/terminal-output": {"terminal-output": 6},
    "wasi:filesystem/types": {"descriptor": 7, "directory-entry-stream": 8},
    "wasi:sockets/network": {"network": 9},
    "wasi:sockets/udp": {"udp-socket": 10, "incoming-datagram-stream": 11, "outgoing-datagram-stream": 12},
    "wasi:sockets/tcp": {"tcp-socket": 13},
    "wasi:sockets/ip-name-lookup": {"resolve-address-stream": 14},
}
_POLLABLE = 1
_INPUT_STREAM = 3
_OUTPUT_STREAM = 4
_NETWORK = 9
# Stream handles: the rep says which stream it is.
_STDIN, _STDOUT, _STDERR = 0, 1, 2
_ALWAYS = 0.0


class WasiCaller(Protocol):
    """What the WASI functions need from the activation that calls them."""

    wasi: WasiState

    def wait_until(self, ready_at: float) -> None:
        """Return once monotonic time `ready_at` has come; raise if the activation must end first."""

    def write_stream(self, fd: int, text: str) -> None:
        """Append C-level stdout (1) or stderr (2) output to the activation's bounded log."""

    def wall_ns(self) -> int:
        """The wall clock the guest reads (an activation: the instance's logical time outside step bodies)."""

    def monotonic_ns(self) -> int:
        """The monotonic clock the guest reads (as `wall_ns`)."""

    def random_bytes(self, length: int) -> bytes:
        """Random bytes for the guest (an activation: from the instance's seed outside step bodies)."""


@dataclass
class WasiState:
    """Per-activation WASI state: the live pollables (rep -> the monotonic time they are ready)."""

    pollables: dict[int, float] = field(default_factory=dict)
    next_rep: int = 1

    def pollable(self, ready_at: float) -> ResourceHost:
        rep = self.next_rep
        self.next_rep += 1
        self.pollables[rep] = ready_at
        return ResourceHost.own(rep, _POLLABLE)


def _rep(store: Any, handle: ResourceAny) -> int:
    """The handle's rep. Every method given a borrowed handle takes it so (`to_host`) before returning: one left
    untaken traps the call ("borrow handles still remain at the end of the call")."""
    return int(handle.to_host(store).rep)


def _ready_at(caller: WasiCaller, store: Any, handle: ResourceAny) -> float:
    return caller.wasi.pollables.get(_rep(store, handle), _ALWAYS)


# -- wasi:io/poll ----------------------------------------------------------------------------------


def _block(caller: WasiCaller, store: Any, this: ResourceAny) -> None:
    caller.wait_until(_ready_at(caller, store, this))


def _poll(caller: WasiCaller, store: Any, handles: list[ResourceAny]) -> list[int]:
    if not handles:
        raise invalid_call("wasi:io/poll.poll", "an empty list of pollables")
    if len(handles) > MAX_POLL_LIST:
        raise invalid_call("wasi:io/poll.poll", f"more than {MAX_POLL_LIST} pollables")
    ready = [_ready_at(caller, store, handle) for handle in handles]
    caller.wait_until(min(ready))
    now = time.monotonic()
    return [index for index, at in enumerate(ready) if at <= now]


# -- wasi:clocks -----------------------------------------------------------------------------------


def _monotonic_now(caller: WasiCaller, store: Any) -> int:
    return caller.monotonic_ns()


def _resolution(caller: WasiCaller, store: Any) -> int:
    return 1000


def _subscribe_instant(caller: WasiCaller, store: Any, when_ns: int) -> ResourceHost:
    return caller.wasi.pollable(when_ns / 1e9)


def _subscribe_duration(caller: WasiCaller, store: Any, duration_ns: int) -> ResourceHost:
    return caller.wasi.pollable(time.monotonic() + duration_ns / 1e9)


def _datetime(seconds: int, nanoseconds: int) -> Record:
    return record(seconds=seconds, nanoseconds=nanoseconds)


def _wall_now(caller: WasiCaller, store: Any) -> Record:
    seconds, nanoseconds = divmod(caller.wall_ns(), 1_000_000_000)
    return _datetime(seconds, nanoseconds)


def _wall_resolution(caller: WasiCaller, store: Any) -> Record:
    return _datetime(0, 1000)


# -- wasi:random -----------------------------------------------------------------------------------


def _random_bytes(caller: WasiCaller, store: Any, length: int) -> bytes:
    if length > MAX_RANDOM_BYTES:
        raise invalid_call("wasi:random/random.get-random-bytes", f"{length} bytes asked, at most {MAX_RANDOM_BYTES}")
    return caller.random_bytes(length)


# -- wasi:io/streams and wasi:cli ------------------------------------------------------------------

# `stream-error.closed`: wasmtime-py lowers `result<list<u8>, stream-error>` by the value's class, and
# `stream-error` (a resource or nothing) untagged, so its payload-less case is None (a Variant matches no case).
_CLOSED = None
# `result<_, stream-error>`: both cases may be nothing, so that result is tagged (a Variant).
_WRITTEN = Variant("ok")


def _stream_pollable(caller: WasiCaller, store: Any, this: ResourceAny) -> ResourceHost:
    _rep(store, this)
    return caller.wasi.pollable(_ALWAYS)


def _read(caller: WasiCaller, store: Any, this: ResourceAny, length: int) -> None:
    _rep(store, this)
    return _CLOSED


def _check_write(caller: WasiCaller, store: Any, this: ResourceAny) -> int:
    _rep(store, this)
    return MAX_STREAM_WRITE_BYTES


def _write(caller: WasiCaller, store: Any, this: ResourceAny, contents: bytes) -> Variant:
    fd = _rep(store, this)
    if len(contents) > MAX_STREAM_WRITE_BYTES:
        raise invalid_call("wasi:io/streams.output-stream.write", f"more than {MAX_STREAM_WRITE_BYTES} bytes")
    if fd in (_STDOUT, _STDERR):
        caller.write_stream(fd, contents.decode("utf-8", "backslashreplace"))
    return _WRITTEN


def _flush(caller: WasiCaller, store: Any, this: ResourceAny) -> Variant:
    _rep(store, this)
    return _WRITTEN


def _stdin(caller: WasiCaller, store: Any) -> ResourceHost:
    return ResourceHost.own(_STDIN, _INPUT_STREAM)


def _stdout(caller: WasiCaller, store: Any) -> ResourceHost:
    return ResourceHost.own(_STDOUT, _OUTPUT_STREAM)


def _stderr(caller: WasiCaller, store: Any) -> ResourceHost:
    return ResourceHost.own(_STDERR, _OUTPUT_STREAM)


def _empty(caller: WasiCaller, store: Any) -> list[Any]:
    return []


def _no_terminal(caller: WasiCaller, store: Any) -> None:
    return None


def _exit(caller: WasiCaller, store: Any, status: Any) -> None:
    raise HostRefusal(FailureName.GUEST_EXIT, "the workflow called exit(); a workflow ends by returning or raising")


# -- wasi:sockets ----------------------------------------------------------------------------------


def _instance_network(caller: WasiCaller, store: Any) -> ResourceHost:
    return ResourceHost.own(0, _NETWORK)


def _access_denied(caller: WasiCaller, store: Any, *args: Any) -> str:
    return "access-denied"


WasiFunc = Callable[..., Any]

FUNCTIONS: dict[str, dict[str, WasiFunc]] = {
    "wasi:io/poll": {"[method]pollable.block": _block, "poll": _poll},
    "wasi:clocks/monotonic-clock": {
        "now": _monotonic_now,
        "resolution": _resolution,
        "subscribe-instant": _subscribe_instant,
        "subscribe-duration": _subscribe_duration,
    },
    "wasi:clocks/wall-clock": {"now": _wall_now, "resolution": _wall_resolution},
    "wasi:random/random": {"get-random-bytes": _random_bytes},
    "wasi:io/streams": {
        "[method]input-stream.read": _read,
        "[method]input-stream.blocking-read": _read,
        "[method]input-stream.subscribe": _stream_pollable,
        "[method]output-stream.check-write": _check_write,
        "[method]output-stream.write": _write,
        "[method]output-stream.blocking-write-and-flush": _write,
        "[method]output-stream.flush": _flush,
        "[method]output-stream.blocking-flush": _flush,
        "[method]output-stream.subscribe": _stream_pollable,
    },
    "wasi:cli/stdin": {"get-stdin": _stdin},
    "wasi:cli/stdout": {"get-stdout": _stdout},
    "wasi:cli/stderr": {"get-stderr": _stderr},
    "wasi:cli/environment": {"get-environment": _empty, "get-arguments": _empty, "initial-cwd": _no_terminal},
    "wasi:cli/exit": {"exit": _exit},
    "wasi:cli/terminal-stdin": {"get-terminal-stdin": _no_terminal},
    "wasi:cli/terminal-stdout": {"get-terminal-stdout": _no_terminal},
    "wasi:cli/terminal-stderr": {"get-terminal-stderr": _no_terminal},
    "wasi:filesystem/preopens": {"get-directories": _empty},
    "wasi:sockets/instance-network": {"instance-network": _instance_network},
    "wasi:sockets/tcp-create-socket": {"create-tcp-socket": _access_denied},
    "wasi:sockets/udp-create-socket": {"create-udp-socket": _access_denied},
    "wasi:sockets/ip-name-lookup": {"resolve-addresses": _access_denied},
}


def _unavailable(call: str) -> WasiFunc:
    def refuse(caller: WasiCaller, store: Any, *args: Any) -> Any:
        raise invalid_call(call, "this WASI function is not available in the sandbox")

    return refuse


@dataclass(frozen=True)
class Import:
    """One WASI import of the component, with what implements it."""

    interface: str
    name: str
    func: WasiFunc | None = None
    resource: int | None = None


def imports(component: Component, engine: wasmtime.Engine, skip: str) -> dict[str, list[Import]]:
    """What to link for each WASI interface the component imports (all but `skip`)."""
    linked: dict[str, list[Import]] = {}
    for interface, item in component.type.imports(engine).items():
        if interface == skip:
            continue
        base = interface.partition("@")[0]
        if not base.startswith("wasi:"):
            raise RuntimeError(f"the guest imports {interface}, which the sandbox does not provide")
        entries: list[Import] = []
        defined = _DEFINED.get(base, {})
        instance_type = item.ty
        if not isinstance(instance_type, ComponentInstanceType):
            raise RuntimeError(f"the guest imports {interface} as something other than an instance")
        for name, export in instance_type.exports(engine).items():
            ty = export.ty
            if isinstance(ty, FuncType):
                func = FUNCTIONS.get(base, {}).get(name) or _unavailable(f"{base}.{name}")
                entries.append(Import(interface, name, func=func))
            elif isinstance(ty, ResourceType) and name in defined:
                entries.append(Import(interface, name, resource=defined[name]))
        linked[interface] = entries
    return linked
