"""The core-module prototype's guest harness (runs inside CPython 3.11 for WASI, see tfcore.c).

A small counterpart of guest/app.py: it compiles the tenant's source (or loads the code `check` compiled and
marshalled, as `run-compiled` does), runs `run(event, step)` with the real author SDK (guest/tenantflow) over
a transport that calls the core imports of module "tenantflow" (through the builtin module `_tfhost`), and
answers (status, text): 0 and the result's JSON, 1 and an error's JSON, or 2 and the JSON of what a suspended
workflow waits for; `check` answers 3 and the marshalled code (bytes).

Suspension at an export boundary: when `run` is a generator function, each `yield value` ends the export
with status 2; `resume(json)` sends the decoded value back into the generator. Between the two exports no
wasm frame is live, so linear memory (plus the module's globals) is the isolate's whole state: it can be
saved, the instance dropped, and a fresh instance restored from it and resumed. Everything imported here is
in Wizer's snapshot.
"""

from __future__ import annotations

import base64  # noqa: F401  (preloaded for tenant code, as guest/app.py does)
import collections  # noqa: F401
import dataclasses  # noqa: F401
import datetime  # noqa: F401
import functools  # noqa: F401
import hashlib  # noqa: F401
import itertools  # noqa: F401
import json
import marshal
import math  # noqa: F401
import random  # noqa: F401
import re  # noqa: F401
import sys
import time
import traceback
import types
import typing
import uuid  # noqa: F401

import _tfhost
import tenantflow
import tenantflow.transport as transport
from tenantflow._streams import Streams, install
from tenantflow._workflow import find_entrypoint
from tenantflow.transport import STOPPED, Done, Failed, Failure, Ok, Retryable, Run

FILENAME = "workflow.py"


def _plan(text: str) -> transport.Plan:
    tag, rest = text[:1], text[1:]
    if tag == "D":
        return Done(rest)
    if tag == "R":
        return Run(int(rest))
    if tag == "F":
        name, _, message = rest.partition("\n")
        return Failed(Failure(name, message))
    return STOPPED


def _outcome(outcome: transport.Outcome) -> str:
    if isinstance(outcome, Ok):
        return "O" + outcome.result
    failure = f"{outcome.failure.name}\n{outcome.failure.message}"
    if isinstance(outcome, Retryable):
        return f"R{failure}" if outcome.delay_ms is None else f"T{outcome.delay_ms}\n{failure}"
    return "X" + failure


class CoreTransport:
    """`tenantflow.transport.Transport` over the core module's imports (pointers and lengths, text answers)."""

    def step_begin(self, name: str, config: str) -> transport.Plan:
        return _plan(_tfhost.step_begin(name, config))

    def rollback_begin(self, name: str, config: str) -> transport.Plan:
        return Failed(Failure("NotImplemented", "the core-module prototype has no rollbacks"))

    def step_complete(self, name: str, count: int, outcome: transport.Outcome) -> transport.Plan:
        return _plan(_tfhost.step_complete(name, _outcome(outcome)))

    def step_again(self, name: str, count: int) -> transport.Plan:
        return Failed(Failure("NotImplemented", "the core-module prototype has no retry back-offs"))

    # Async workflows (steps side by side) are not in the prototype: these are the sync path's no-ops.
    def concurrent(self) -> None:
        raise RuntimeError("the core-module prototype runs no async workflows")

    def enter(self, name: str, count: int) -> None:
        pass

    def leave(self) -> None:
        pass

    def abandon(self, name: str, count: int) -> None:
        pass

    def sleep(self, name: str, duration_ms: int) -> bool:
        return bool(_tfhost.sleep(name, duration_ms))

    def sleep_until(self, name: str, wake_at_ms: int) -> bool:
        return bool(_tfhost.sleep(name, wake_at_ms - int(time.time() * 1000)))

    def wait_for_event(self, name: str, event_type: str, timeout_ms: int | None) -> str | Failure | transport.Stopped:
        text = _tfhost.wait_for_event(name, event_type, -1 if timeout_ms is None else timeout_ms)
        tag, rest = text[:1], text[1:]
        if tag == "E":
            return rest
        if tag == "T":
            name, _, message = rest.partition("\n")
            return Failure(name, message)
        return STOPPED

    def call(self, capability: str, request: str) -> str | Failure:
        return Failure("CapabilityError", "the core-module prototype grants no capabilities")

    def call_start(self, capability: str, request: str) -> int | Failure:
        return Failure("CapabilityError", "the core-module prototype grants no capabilities")

    def poll(self, timeout_ms: int | None) -> typing.Any:
        raise RuntimeError("the core-module prototype starts no calls")

    def log(self, fd: int, text: str) -> None:
        _tfhost.log(fd, text)


_transport = CoreTransport()
transport.install(_transport)
_streams = Streams()
install(_streams)


class _HostStream:
    """sys.stdout/sys.stderr for tenant code: every write goes to the host's `log`."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, text: str) -> int:
        if text:
            _tfhost.log(self.fd, transport.host_text(text))
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def _no_sleep(seconds: float) -> None:
    raise RuntimeError("time.sleep blocks the worker; use step.sleep(name, duration) in workflows")


sys.stdout = _HostStream(1)
sys.stderr = _HostStream(2)
time.sleep = _no_sleep

_suspended: types.GeneratorType[typing.Any, typing.Any, typing.Any] | None = None


def _error(error: BaseException) -> tuple[int, str]:
    traceback.clear_frames(error.__traceback__)
    name = "StackOverflow" if isinstance(error, RecursionError) else type(error).__name__
    try:
        message = str(error)[:16384]
        tb = "".join(traceback.format_exception(error))[-16384:]
    except BaseException:
        message, tb = "(the error's message could not be rendered)", ""
    return 1, json.dumps({"name": name, "message": message, "traceback": tb})


def _finish(result: typing.Any) -> tuple[int, str]:
    try:
        return 0, json.dumps(result)
    except (TypeError, ValueError) as error:
        return 1, json.dumps({"name": "OutputNotSerializable", "message": str(error), "traceback": ""})


def _drive(generator: types.GeneratorType[typing.Any, typing.Any, typing.Any], value: typing.Any) -> tuple[int, str]:
    global _suspended
    try:
        waiting_for = generator.send(value)
    except StopIteration as done:
        _suspended = None
        return _finish(done.value)
    _suspended = generator
    return 2, json.dumps(waiting_for)


def _no_entry() -> tuple[int, str]:
    return 1, json.dumps({"name": "WorkflowCodeError", "message": "no run(event, step)", "traceback": ""})


def check(source: str) -> tuple[int, str | bytes]:
    """Compile `source`, run its module once and check it defines a workflow: (3, the code object marshalled),
    or (1, the error's JSON). guest/app.py's `check`: code objects are this interpreter's (marshal's format and
    the bytecode are version-specific), so the host compiles a version here, once, and hands the bytes to
    `run_compiled` for every activation."""
    try:
        code = compile(source, FILENAME, "exec")
        namespace: dict[str, typing.Any] = {"__name__": "workflow", "__file__": FILENAME}
        exec(code, namespace)
        if find_entrypoint(namespace) is None:
            return _no_entry()
        return 3, marshal.dumps(code)
    except BaseException as error:
        return _error(error)


def run(source: str, event: str) -> tuple[int, str]:
    """Compile `source` and run its workflow with `event` (JSON)."""
    try:
        return _run(compile(source, FILENAME, "exec"), event)
    except BaseException as error:
        return _error(error)


def run_compiled(source: str, code: bytes, event: str) -> tuple[int, str]:
    """`run` with the code `check` made (marshalled): loaded instead of compiled (guest/app.py's `run-compiled`;
    `source` is passed as there, for parity, and not compiled)."""
    try:
        return _run(marshal.loads(code), event)
    except BaseException as error:
        return _error(error)


def _run(code: types.CodeType, event: str) -> tuple[int, str]:
    try:
        namespace: dict[str, typing.Any] = {"__name__": "workflow", "__file__": FILENAME}
        exec(code, namespace)
        entry = find_entrypoint(namespace)
        if entry is None:
            return _no_entry()
        data = json.loads(event)
        started = tenantflow.Event(data.get("payload"), data.get("timestamp", 0.0), data.get("instance_id", ""))
        _streams.seed()
        result = entry(started, tenantflow.Step(streams=_streams))
        if isinstance(result, types.GeneratorType):
            return _drive(result, None)
        return _finish(result)
    except BaseException as error:
        return _error(error)


def resume(value: str) -> tuple[int, str]:
    """Send `value` (JSON) into the suspended workflow."""
    if _suspended is None:
        return 1, json.dumps({"name": "NotSuspended", "message": "no workflow is suspended", "traceback": ""})
    try:
        return _drive(_suspended, json.loads(value))
    except BaseException as error:
        return _error(error)


def _warm_up() -> None:
    """Run at build time what tenant code and this harness import lazily, so that it is in the snapshot."""
    try:
        raise ValueError("warm-up")
    except ValueError as error:
        traceback.format_exception(error)
    json.loads(json.dumps({"a": [1, 2.5, None, "x"]}))
    marshal.loads(marshal.dumps(compile("def run(event, step):\n    return 1\n", FILENAME, "exec")))
    datetime.datetime.fromtimestamp(0.0, datetime.UTC).isoformat()
    re.compile(r"[a-z]+\d*").match("warm1")


_warm_up()
# No filesystem at run time (no preopens): a module not imported by now is not found, rather than an OSError
# from a lookup in the build's directories.
sys.path.clear()
sys.path_importer_cache.clear()
