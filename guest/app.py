"""The guest harness: compiles the tenant's source and runs its workflow.

Everything imported here is loaded at build time and lands in componentize-py's
pre-initialized snapshot, so a fresh isolate starts with it already imported.
"""

import asyncio
import base64  # noqa: F401  (preloaded for tenant code)
import collections  # noqa: F401
import dataclasses  # noqa: F401
import datetime  # noqa: F401
import functools  # noqa: F401
import gc
import hashlib  # noqa: F401
import itertools  # noqa: F401
import json
import linecache
import marshal
import math  # noqa: F401
import random  # noqa: F401  (in the snapshot: tenantflow._streams rebinds its functions)
import re  # noqa: F401
import secrets  # noqa: F401
import sys
import time
import traceback
import typing  # noqa: F401
import uuid  # noqa: F401

import tenantflow
import tenantflow._codec
import tenantflow._loop  # noqa: F401
import tenantflow.transport
import wit_world
from componentize_py_types import Err
from tenantflow._errors import RollbackError, Unwind
from tenantflow._streams import Streams, install
from tenantflow._wit import WitTransport
from tenantflow._workflow import find_entrypoint, is_async
from tenantflow.transport import host_text
from wit_world.imports import host

# The SDK's durable calls go to the host's functions; installed here, so it is in the snapshot.
_transport = WitTransport()
tenantflow.transport.install(_transport)
# `random` draws from the workflow's stream outside step bodies and a body's own inside them. Each run seeds it from the
# run's seed at its first draw (`_guarded_run`); componentize-py's reseed at the isolate's first call (`prepare`) is
# skipped.
_streams = Streams(_transport.seed_bytes, skip_first_reseed=True)
install(_streams)

FILENAME = "workflow.py"


class _HostStream:
    """sys.stdout/sys.stderr for tenant code: every write goes to the host's bounded log."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, text: str) -> int:
        if text:
            _transport.log(self.fd, host_text(text))
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


def _error(name: str, message: str, tb: str = "", line: int | None = None) -> Err:
    return Err(wit_world.RunError(name, host_text(message), host_text(tb), line))


def _tenant_line(error: BaseException) -> int | None:
    if isinstance(error, SyntaxError) and error.filename == FILENAME:
        return error.lineno
    if isinstance(error, tenantflow.StepError | tenantflow.NonRetryableError) and error.__cause__ is not None:
        # A step that failed for good, raised from what its body raised: the line in the body.
        inside = _tenant_line(error.__cause__)
        if inside is not None:
            return inside
    line = None
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename == FILENAME:
            line = frame.lineno
    return line


def _tenant_traceback(error: BaseException) -> str:
    """The traceback with the harness's and the SDK's frames left out (in the exceptions it chains too: a
    step that failed for good is raised from what its body raised)."""
    summary = traceback.TracebackException.from_exception(error)
    chained: traceback.TracebackException | None = summary
    while chained is not None:
        chained.stack = traceback.StackSummary.from_list([f for f in chained.stack if f.filename == FILENAME])
        chained = chained.__cause__ or chained.__context__
    return "".join(summary.format())


def _from_exception(error: BaseException) -> Err:
    """The run-error for an exception from tenant code; it does not raise, not even out of memory."""
    # The traceback keeps the tenant's frames alive and with them its data (e.g. the list that used
    # up the memory): clear their locals first so that formatting has memory to work with.
    traceback.clear_frames(error.__traceback__)
    if error.__cause__ is not None:  # a failed step's body
        traceback.clear_frames(error.__cause__.__traceback__)
    name = type(error).__name__
    if isinstance(error, RecursionError):
        name = "StackOverflow"
    elif isinstance(error, Unwind):
        name = "Terminated"
    try:
        if isinstance(error, tenantflow.StepError | tenantflow.NonRetryableError):
            name = error.name[:256]
            message = error.message[:16384]
        else:
            message = str(error)[:16384]
    except BaseException:
        message = "(the error's message could not be rendered)"
    try:
        return _error(name, message, _tenant_traceback(error)[-16384:], _tenant_line(error))
    except BaseException:
        return _error(name, message)


def _compile(source: str) -> typing.Any:
    try:
        return compile(source, FILENAME, "exec")
    except SyntaxError as error:
        raise _error("WorkflowCodeError", f"SyntaxError: {error.msg} (line {error.lineno})",
                     "".join(traceback.format_exception_only(error)), error.lineno)


def _load(source: str, code: typing.Any) -> typing.Callable[..., typing.Any]:
    """The workflow's entry point: a module-level run(event, step) or a WorkflowEntrypoint class."""
    linecache.cache[FILENAME] = (len(source), None, source.splitlines(True), FILENAME)
    namespace: dict[str, typing.Any] = {"__name__": "workflow", "__file__": FILENAME}
    try:
        exec(code, namespace)
    except BaseException as error:
        namespace.clear()  # let go of whatever the module built before formatting the error
        err = _from_exception(error)
        if not isinstance(error, (MemoryError, RecursionError)):  # limits keep their own names
            err.value.message = f"{err.value.name}: {err.value.message}"
            err.value.name = "WorkflowCodeError"
        raise err
    entry = find_entrypoint(namespace)
    if entry is not None:
        return entry
    raise _error("WorkflowCodeError",
                 "the workflow defines neither run(event, step) nor a WorkflowEntrypoint subclass")


def _roll_back(step: tenantflow.Step, cause: BaseException, loop: typing.Any = None) -> None:
    """The rollbacks of the run's completed steps; a rollback that fails for good is the run's error.
    An async workflow's (`loop` given) run on its loop, once the tasks it left running are cancelled."""
    # Let go of the tenant's data held by the failed frames first: the rollbacks need the memory.
    traceback.clear_frames(cause.__traceback__)
    try:
        if loop is None:
            step._roll_back(cause)
        else:
            from tenantflow import _loop

            _loop.cancel_all(loop)
            _loop.run(loop, step._roll_back_async(cause))
    except RollbackError as failed:
        raise _error("RollbackError", str(failed), _tenant_traceback(cause)[-16384:], _tenant_line(cause))
    except BaseException as error:  # the workflow's code raised in a rollback outside the durable calls
        raise _from_exception(error)


class WitWorld(wit_world.WitWorld):
    def check(self, source: str) -> bytes:
        try:
            code = _compile(source)
            _load(source, code)
            return marshal.dumps(code)
        except Err:
            raise
        except BaseException as error:  # e.g. MemoryError compiling a huge source
            raise _from_exception(error)

    def prepare(self) -> None:
        """Nothing of its own: componentize-py's runtime does its set-up at an isolate's first call (the environment
        and the arguments from the host, a reseed of `random`: its runtime, not an API), and the host makes that
        call here, ahead of the activation that will run in the isolate."""

    def run(self, source: str, event: str) -> str:
        return self._guarded_run(source, None, event)

    def run_compiled(self, source: str, code: str, event: str) -> str:
        return self._guarded_run(source, code.encode("latin-1"), event)

    def _run_async(self, entry: typing.Callable[..., typing.Any], started: tenantflow.Event) -> typing.Any:
        """An `async def run`: on an asyncio loop whose I/O is the host's; its steps may run side by side."""
        from tenantflow import _loop  # loaded by async workflows only: the snapshot stays small

        _transport.concurrent()
        step = tenantflow.Step(streams=_streams, concurrent=True)
        loop = _loop.HostLoop(_transport)
        try:
            result = _loop.run(loop, entry(started, step))
            if step.stopped:
                raise Unwind("the instance is terminated with a rollback")
            return result
        except BaseException as error:
            if isinstance(error, Exception | Unwind):
                _roll_back(step, error, loop)
            raise _from_exception(error)

    def _guarded_run(self, source: str, code: bytes | None, event: str) -> str:
        try:
            # The workflow's stream, from the host's `run-seed` (the instance's seed, outside step bodies: so every
            # replay draws the same), at its first draw: in the module, which may draw, or later, or never.
            _streams.seed_at_first_draw(_transport.run_seed)
            return self._run(source, _compile(source) if code is None else marshal.loads(code), event)
        except Err:
            raise
        except BaseException as error:  # never let an exception escape the export: that aborts the guest
            raise _from_exception(error)

    def _run(self, source: str, code: typing.Any, event: str) -> str:
        entry = _load(source, code)
        data = tenantflow._codec.loads(event)
        started = tenantflow.Event(data.get("payload"), data.get("timestamp", 0.0), data.get("instance_id", ""))
        if is_async(entry):
            result = self._run_async(entry, started)
        else:
            step = tenantflow.Step(streams=_streams)
            try:
                result = entry(started, step)
                if step.stopped:  # the workflow caught the unwinding and returned
                    raise Unwind("the instance is terminated with a rollback")
            except BaseException as error:
                if isinstance(error, Exception | Unwind):
                    _roll_back(step, error)
                raise _from_exception(error)
        try:
            text = tenantflow._codec.dumps(result)
        except (TypeError, ValueError) as error:
            raise _error("OutputNotSerializable", f"the workflow's return value is not JSON: {error}")
        except BaseException as error:  # MemoryError, RecursionError: let go of the value first
            del result
            raise _from_exception(error)
        if len(text) > tenantflow.MAX_RESULT_BYTES:
            raise _error("OutputLimitExceeded",
                         f"the workflow's output is at most {tenantflow.MAX_RESULT_BYTES} bytes of JSON, got {len(text)}")
        return text


_WARM_SOURCES = (
    """
def run(event, step):
    done = [step.do(f"s{i}", lambda: {"i": i, "ok": True}) for i in range(event.payload["steps"])]
    print("done", len(done))
    return {"steps": done}
""",
    """
import asyncio

async def run(event, step):
    done = [await step.do(f"s{i}", lambda: {"i": i, "ok": True}) for i in range(event.payload["steps"])]
    both = await asyncio.gather(step.do("a", lambda: 1), step.do("b", lambda: 2))
    print("done", len(done))
    return {"steps": done, "both": both}
""",
)


def _warm() -> None:
    """Run short workflows once, at build time, against stand-ins for the host's functions: the snapshot then holds
    the harness's and the SDK's bytecode specialized (CPython's adaptive interpreter rewrites an instruction the first
    times it runs it), which every run would otherwise redo in its fresh isolate. A plain workflow and an async one
    (its loop, its tasks side by side). They leave nothing of their own behind: no source in `linecache`, `random`'s
    streams as they were, no event loop set, the host's functions put back."""
    stand_ins = {
        "step_begin": lambda name, config: host.Plan_Run(1),
        "step_complete": lambda name, count, attempt: host.Plan_Done(attempt.value),
        "log": lambda fd, text: None,
        "concurrent": lambda: None,
        "enter": lambda name, count: None,
        "leave": lambda: None,
        "poll": lambda timeout_ms: host.Polled(0, []),
    }
    imports = {name: getattr(host, name) for name in stand_ins}
    for name, fn in stand_ins.items():
        setattr(host, name, fn)
    try:
        event = json.dumps({"payload": {"steps": 8}, "timestamp": 0.0, "instance_id": "warm"})
        for source in _WARM_SOURCES:
            WitWorld()._run(source, _compile(source), event)
            if source is _WARM_SOURCES[1]:
                asyncio.get_event_loop().close()
                asyncio.set_event_loop(None)
    finally:
        for name, fn in imports.items():
            setattr(host, name, fn)
        linecache.cache.pop(FILENAME, None)
        _streams.forget_bodies()


_warm()
# What the snapshot holds is moved out of the collector's reach: a collection in an activation walks only what the
# activation made, and neither spends the tenant's fuel on the harness's objects nor writes to their pages (a page an
# isolate wrote is copied back from the image when the isolate is dropped; one it only read is not).
gc.collect()
gc.freeze()
